// Cap'n Proto contender client: its own kj event loop per connection (per thread),
// capnp::TwoPartyClient over "unix:<path>", one echo() request per call, waited on
// synchronously (promise.wait()).
#include "../contenders.hpp"
#include "echo.capnp.h"

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <stdexcept>

#ifndef SEALRPC_BENCH_CAPNP_SERVER
#define SEALRPC_BENCH_CAPNP_SERVER ""
#endif

namespace sealrpc::bench {
namespace {

[[noreturn]] void rethrow_kj(const kj::Exception& e) { throw std::runtime_error(kj::str(e).cStr()); }

class CapnpConnection final : public EchoConnection {
 public:
  explicit CapnpConnection(const std::string& path) try : io_(kj::setupAsyncIo()) {
    auto addr = io_.provider->getNetwork().parseAddress(kj::str("unix:", path.c_str())).wait(io_.waitScope);
    stream_ = addr->connect().wait(io_.waitScope);
    client_ = kj::heap<capnp::TwoPartyClient>(*stream_);
    cap_ = client_->bootstrap().castAs<sealrpc_bench::capnp_echo::Echo>();
  } catch (const kj::Exception& e) {
    rethrow_kj(e);
  }

  ~CapnpConnection() noexcept override {  // kj members are noexcept(false)
    // Drop the response, the capability and the connection before the event loop.
    last_ = nullptr;
    cap_ = nullptr;
    client_ = nullptr;
    stream_ = nullptr;
  }

  std::span<const std::byte> call(std::span<const std::byte> request) override {
    try {
      auto req = cap_.echoRequest();
      req.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(request.data()), request.size()));
      last_ = req.send().wait(io_.waitScope);
      KJ_IF_MAYBE(resp, last_) {
        const auto data = resp->getData();
        return {reinterpret_cast<const std::byte*>(data.begin()), data.size()};
      }
      throw std::runtime_error("capnp: no response");
    } catch (const kj::Exception& e) {
      rethrow_kj(e);
    }
  }

 private:
  kj::AsyncIoContext io_;
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyClient> client_;
  sealrpc_bench::capnp_echo::Echo::Client cap_ = nullptr;
  kj::Maybe<capnp::Response<sealrpc_bench::capnp_echo::Echo::EchoResults>> last_;  // keeps the returned bytes alive
};

}  // namespace

SEALRPC_BENCH_CONTENDER([] {
  Contender c;
  c.name = "capnp";
  c.order = 20;
  c.description = "Cap'n Proto RPC (capnp::TwoPartyServer/TwoPartyClient) over a unix socket";
  c.start = [] { return spawn_server(server_exe("sealrpc_bench_capnp_server", SEALRPC_BENCH_CAPNP_SERVER)); };
  c.connect = [](const ScopedServer& s) -> std::unique_ptr<EchoConnection> {
    return std::make_unique<CapnpConnection>(s.socket_path());
  };
  return c;
}());

}  // namespace sealrpc::bench
