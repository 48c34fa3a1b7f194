// Cost of payload encryption (docs/protocol-crypto.md).
//
//   BM_Crypto_Ratio/<bytes>/real_time     one run, two connections to one in-process
//       server (plaintext and encrypted NK), calls alternate between them. Counters:
//       plain_us / encrypted_us per round trip, plain_Bps / encrypted_Bps (payload bytes
//       each way per second) and ratio = encrypted time / plaintext time. Sizes 32, 1024
//       and 65536; payloads stay inline (out_of_line_threshold = max on both sides), so
//       the 64 KiB case measures encryption, not memfd passing.
//   BM_Crypto_Seal/32, BM_Crypto_SealOpen/32   raw cost of sealing (and opening) one
//       32-byte-payload frame with SecureChannel, no I/O.
#include "security/crypto.hpp"
#include "transport/frame.hpp"

#include <sealrpc/audit.hpp>
#include <sealrpc/client.hpp>
#include <sealrpc/endpoint.hpp>
#include <sealrpc/keys.hpp>
#include <sealrpc/server.hpp>
#include <sealrpc/service.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <capnp/any.h>

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <thread>

namespace {
namespace asio = boost::asio;
using namespace sealrpc;

constexpr std::uint64_t kInterface = 0xc0ffee00c0ffee01ull;

// params/results: a struct with one pointer field holding Data.
asio::awaitable<Status> echo(Service&, CallContext&, capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
  auto in = p.getAs<capnp::AnyStruct>().getPointerSection()[0];
  r.initAsAnyStruct(0, 1).getPointerSection()[0].set(in);
  co_return Status::ok();
}

class EchoService final : public Service {
 public:
  EchoService() {
    MethodInfo m;
    m.id = {kInterface, 0};
    m.interface_name = "CryptoBench";
    m.method_name = "echo";
    m.rule = same_user_only();
    m.invoke = echo;
    methods_.push_back(std::move(m));
  }
  std::span<const MethodInfo> sealrpc_methods() const override { return methods_; }

 private:
  std::vector<MethodInfo> methods_;
};

class NullSink final : public AuditSink {
 public:
  void write(const AuditRecord&) override {}
};

// One in-process server (encryption optional, static key) on its own thread.
class BenchServer {
 public:
  BenchServer() {
    char t[] = "/tmp/sealrpc-crypto-bench-XXXXXX";
    dir_ = ::mkdtemp(t);
    (void)keygen(dir_ + "/k", dir_ + "/k.pub");
    ServerOptions o;
    o.encryption = EncryptionMode::optional;
    o.static_key_file = dir_ + "/k";
    o.out_of_line_threshold = std::numeric_limits<std::size_t>::max();
    o.audit = std::make_shared<AuditLog>(std::vector<std::shared_ptr<AuditSink>>{std::make_shared<NullSink>()});
    server_ = std::make_unique<Server>(io_.get_executor(), listen_private("crypto-bench"), o);
    server_->add_service(std::make_shared<EchoService>());
    server_->start();
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
  }
  ~BenchServer() {
    server_->stop();
    io_.stop();
    thread_.join();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  const std::string& path() const { return server_->path(); }
  std::string public_key() const { return dir_ + "/k.pub"; }

 private:
  std::string dir_;
  asio::io_context io_{1};
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

// A synchronous client on a private io_context, driven with run_one().
class BenchClient {
 public:
  BenchClient(const BenchServer& s, bool encrypted) {
    ClientOptions o;
    o.encryption = encrypted ? EncryptionMode::required : EncryptionMode::off;
    if (encrypted) o.pinned_server_key_file = s.public_key();
    o.out_of_line_threshold = std::numeric_limits<std::size_t>::max();
    boost::system::error_code ec;
    bool done = false;
    Client::async_connect(io_.get_executor(), s.path(), o, [&](boost::system::error_code e, Client c) {
      ec = e;
      client_ = c;
      done = true;
    });
    while (!done) io_.run_one();
    if (ec) throw boost::system::system_error(ec, "connect");
    if (client_.is_encrypted() != encrypted) throw std::runtime_error("unexpected encryption state");
  }
  ~BenchClient() {
    client_.close();
    io_.poll();
  }
  // One round trip; returns false on any error or a wrong echo.
  bool call(const std::string& payload) {
    RequestMessage req;
    req.message().getRoot<capnp::AnyPointer>().initAsAnyStruct(0, 1).getPointerSection()[0].setAs<capnp::Data>(
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(payload.data()), payload.size()));
    bool done = false, ok = false;
    client_.async_call<capnp::AnyStruct>({kInterface, 0}, std::move(req),
                                         [&](boost::system::error_code ec, Response<capnp::AnyStruct> r) {
                                           done = true;
                                           if (ec) return;
                                           auto d = r.get().getPointerSection()[0].getAs<capnp::Data>();
                                           ok = d.size() == payload.size() && std::memcmp(d.begin(), payload.data(), d.size()) == 0;
                                         });
    while (!done) io_.run_one();
    return ok;
  }

 private:
  asio::io_context io_{1};
  Client client_;
};

void BM_Crypto_Ratio(benchmark::State& state) {
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'x');
  BenchServer server;
  BenchClient plain(server, false), sealed(server, true);
  using clock = std::chrono::steady_clock;
  clock::duration plain_time{}, sealed_time{};
  std::int64_t n = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    const bool a = plain.call(payload);
    const auto t1 = clock::now();
    const bool b = sealed.call(payload);
    const auto t2 = clock::now();
    if (!a || !b) {
      state.SkipWithError("call failed or wrong echo");
      break;
    }
    plain_time += t1 - t0;
    sealed_time += t2 - t1;
    ++n;
  }
  if (n == 0) return;
  const double p = std::chrono::duration<double>(plain_time).count() / static_cast<double>(n);
  const double s = std::chrono::duration<double>(sealed_time).count() / static_cast<double>(n);
  state.counters["plain_us"] = p * 1e6;
  state.counters["encrypted_us"] = s * 1e6;
  state.counters["plain_Bps"] = static_cast<double>(payload.size()) / p;
  state.counters["encrypted_Bps"] = static_cast<double>(payload.size()) / s;
  state.counters["ratio"] = s / p;
}
BENCHMARK(BM_Crypto_Ratio)->Arg(32)->Arg(1024)->Arg(65536)->UseRealTime();

struct ChannelPair {
  std::unique_ptr<security::SecureChannel> client, server;
  ChannelPair() {
    const auto key = security::StaticKeyPair::generate();
    security::HandshakeBinding b{::geteuid(), ::geteuid(), security::encode_hello_offer({EncryptionMode::required, true})};
    security::ClientKeyExchange kx(b, key.public_key);
    auto accepted = security::accept_key_exchange(b, &key, kx.first_message());
    server = std::move(accepted.channel);
    client = kx.finish(accepted.reply);
  }
};

std::vector<std::byte> frame32() {
  std::vector<std::byte> f;
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  std::vector<std::byte> payload(32, std::byte{0x5a});
  wire::append_frame(f, h, payload);
  return f;
}

void BM_Crypto_Seal(benchmark::State& state) {
  ChannelPair p;
  const auto plain = frame32();
  std::vector<std::byte> f;
  f.reserve(plain.size() + 16);
  for (auto _ : state) {
    f.assign(plain.begin(), plain.end());
    p.client->seal(f, 0);
    benchmark::DoNotOptimize(f.data());
  }
  state.SetBytesProcessed(state.iterations() * 32);
}
BENCHMARK(BM_Crypto_Seal)->Arg(32);

void BM_Crypto_SealOpen(benchmark::State& state) {
  ChannelPair p;
  const auto plain = frame32();
  std::vector<std::byte> f, out;
  f.reserve(plain.size() + 16);
  for (auto _ : state) {
    f.assign(plain.begin(), plain.end());
    p.client->seal(f, 0);
    const auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(f.data(), limits::kHeaderBytes));
    p.server->open(h, std::span<const std::byte>(f).subspan(limits::kHeaderBytes), out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * 32);
}
BENCHMARK(BM_Crypto_SealOpen)->Arg(32);

}  // namespace
