// gRPC contender client: synchronous unary calls on a channel to "unix:<path>".
// Each connection is its own channel with a local subchannel pool, so N client
// threads really use N sockets (gRPC would otherwise share one subchannel between
// channels with identical arguments).
#include "../contenders.hpp"
#include "echo.grpc.pb.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <stdexcept>

#ifndef SEALRPC_BENCH_GRPC_SERVER
#define SEALRPC_BENCH_GRPC_SERVER ""
#endif

namespace sealrpc::bench {
namespace {

class GrpcConnection final : public EchoConnection {
 public:
  explicit GrpcConnection(const std::string& path) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel("unix:" + path, grpc::InsecureChannelCredentials(), args);
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      throw std::runtime_error("grpc: channel to unix:" + path + " did not connect");
    }
    stub_ = sealrpc_bench::Echo::NewStub(channel_);
  }

  std::span<const std::byte> call(std::span<const std::byte> request) override {
    grpc::ClientContext ctx;
    request_.set_data(request.data(), request.size());  // reuses the string's capacity
    const grpc::Status st = stub_->Echo(&ctx, request_, &reply_);
    if (!st.ok()) throw std::runtime_error("grpc: " + st.error_message());
    const std::string& d = reply_.data();
    return {reinterpret_cast<const std::byte*>(d.data()), d.size()};
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<sealrpc_bench::Echo::Stub> stub_;
  sealrpc_bench::EchoMessage request_;
  sealrpc_bench::EchoMessage reply_;
};

}  // namespace

SEALRPC_BENCH_CONTENDER([] {
  Contender c;
  c.name = "grpc";
  c.order = 30;
  c.description = "gRPC C++ synchronous unary over unix:";
  c.start = [] { return spawn_server(server_exe("sealrpc_bench_grpc_server", SEALRPC_BENCH_GRPC_SERVER)); };
  c.connect = [](const ScopedServer& s) -> std::unique_ptr<EchoConnection> {
    return std::make_unique<GrpcConnection>(s.socket_path());
  };
  return c;
}());

}  // namespace sealrpc::bench
