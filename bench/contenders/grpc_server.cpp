// gRPC contender server: synchronous unary service on "unix:<path>" with the gRPC
// defaults (sync server thread pool, insecure credentials).
#include "echo.grpc.pb.h"
#include "server_common.hpp"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <cstdio>
#include <memory>

namespace {

class EchoService final : public sealrpc_bench::Echo::Service {
  grpc::Status Echo(grpc::ServerContext* /*ctx*/, const sealrpc_bench::EchoMessage* request,
                    sealrpc_bench::EchoMessage* reply) override {
    reply->set_data(request->data());
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  namespace srv = sealrpc::bench::server;
  const std::string path = srv::socket_arg(argc, argv);
  srv::init(path);
  EchoService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + path, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "grpc_server: failed to listen on unix:%s\n", path.c_str());
    return 1;
  }
  srv::notify_ready();
  server->Wait();
  return 0;
}
