// Cap'n Proto contender server: kj event loop (single thread), capnp::TwoPartyServer
// listening on "unix:<path>", bootstrap capability Echo.
#include "echo.capnp.h"
#include "server_common.hpp"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <cstdio>

namespace {

class EchoImpl final : public sealrpc_bench::capnp_echo::Echo::Server {
 protected:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setData(context.getParams().getData());
    return kj::READY_NOW;
  }
};

}  // namespace

int main(int argc, char** argv) {
  namespace srv = sealrpc::bench::server;
  const std::string path = srv::socket_arg(argc, argv);
  srv::init(path);
  KJ_IF_MAYBE(exception, kj::runCatchingExceptions([&] {
    auto io = kj::setupAsyncIo();
    auto addr = io.provider->getNetwork().parseAddress(kj::str("unix:", path.c_str())).wait(io.waitScope);
    auto listener = addr->listen();
    capnp::TwoPartyServer server(kj::heap<EchoImpl>());
    srv::notify_ready();
    server.listen(*listener).wait(io.waitScope);
  })) {
    std::fprintf(stderr, "capnp_server: %s\n", kj::str(*exception).cStr());
    return 1;
  }
  return 0;
}
