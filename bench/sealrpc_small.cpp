// SealRPC in the contender suite, plus SealRPC-only end-to-end benchmarks.
//
//   BM_Contender/sealrpc/<bytes>, BM_ContenderConcurrent/sealrpc/<n>
//       the standard client pattern against bench/sealrpc_small_server.cpp (generated Echo,
//       access rule, audit on). Client: the generated EchoClient on sealrpc::Client, one
//       dedicated io_context(1) per connection (= per benchmark thread), driven with
//       run_one() until the call's completion handler has run. Why run_one: the client
//       runtime is asynchronous only (strand + read-loop coroutine); a synchronous caller
//       must run *some* event loop. run_one() on a private io_context in the calling
//       thread adds no thread hop and no cross-thread wake-up (use_future would add both),
//       and it is measured against run()+stop()+restart() in BM_SealRPC_Variant/run_stop.
//   BM_SealRPC_Pipelined/<depth>        <depth> calls in flight on one connection; each
//       completion issues the next call. p50.. = issue-to-completion latency.
//   BM_SealRPC_Connect/<what>            connection setup: sealrpc (connect, SO_PEERCRED +
//       groups + pidfd + label on both sides, allow-list, audit, HELLO), sealrpc_first_call
//       (the same + one 32 B call), asio_connect_echo (connect + one 32 B echo with the
//       asio contender), raw_connect_accept (socket+connect+accept4+close, in-process).
//   BM_SealRPC_Variant/<variant>/32      ablations of the 32 B call (what each cost is):
//       default, no_deadline (ClientOptions::default_timeout = 0: no timer on either side),
//       audit_all (server writes every record, no rate limit), audit_off, run_stop,
//       client_strand (ClientOptions::single_threaded = false: the client's own strand).
//   BM_SealRPC_IdleConns/<n>             the 32 B sealrpc call with <n> idle connections
//       open on the same server (0 and 1000).
//   BM_SealRPC_InProcess/<bytes>         server and client on one io_context in the
//       benchmark thread, over a real socket: allocs_per_call counts BOTH sides.
//   BM_Fixed/<contender>/<calls>         only when $SEALRPC_BENCH_FIXED_CALLS is set
//       (e.g. "2000,12000"): exactly <calls> timed calls of 32 B for raw, asio and sealrpc
//       ($SEALRPC_BENCH_FIXED_CONTENDERS overrides the list); scripts/bench-callgrind runs
//       them under callgrind/strace/memcheck and takes differences, so start-up cancels.
#include "contenders.hpp"

#include "bench_echo.capnp.sealrpc.h"

#include <sealrpc/audit.hpp>
#include <sealrpc/busy_poll.hpp>
#include <sealrpc/client.hpp>
#include <sealrpc/endpoint.hpp>
#include <sealrpc/server.hpp>
#include <sealrpc/unique_fd.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#ifndef SEALRPC_BENCH_SERVER_sealrpc_small_server
#define SEALRPC_BENCH_SERVER_sealrpc_small_server ""
#endif
#ifndef SEALRPC_BENCH_ASIO_SERVER
#define SEALRPC_BENCH_ASIO_SERVER ""
#endif

namespace {

namespace sb = sealrpc::bench;
namespace asio = boost::asio;
using Reply = sealrpc::Response<sealbench::Echo::EchoResults>;

constexpr const char* kServer = "sealrpc_small_server";

sb::ScopedServer start_server(const char* audit_mode = nullptr, std::chrono::microseconds busy_poll = {}) {
  sb::SpawnOptions o;
  if (audit_mode) o.env.push_back(std::string("SEALRPC_BENCH_AUDIT=") + audit_mode);
  if (busy_poll.count() > 0) o.env.push_back("SEALRPC_BENCH_BUSY_POLL=" + std::to_string(busy_poll.count()));
  return sb::spawn_server(sb::server_exe(kServer, SEALRPC_BENCH_SERVER_sealrpc_small_server), {"{socket}"}, o);
}

kj::ArrayPtr<const kj::byte> as_kj(std::span<const std::byte> s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

// Runs `io` in this thread until `done`. run_one() blocks in epoll_wait when idle.
void run_until(asio::io_context& io, const bool& done) {
  if (io.stopped()) io.restart();  // a poll()/run() that ran out of work leaves it stopped
  while (!done) {
    if (io.run_one() == 0) throw std::runtime_error("sealrpc client: io_context out of work");
  }
}

struct ClientMode {
  std::chrono::milliseconds default_timeout{30'000};  // sealrpc::ClientOptions' default
  bool run_stop = false;                               // run()+stop()+restart() instead of run_one()
  // ClientOptions::single_threaded: the io_context is private to this thread, so the
  // connection needs no strand (like the server's single_threaded, and like the asio
  // contender). The client_strand variant measures the strand.
  bool single_threaded = true;
  // > 0: both sides run sealrpc::BusyPoller (low-latency mode) with this max_spin.
  std::chrono::microseconds busy_poll{0};
  // The generated synchronous call (sealrpc::Client::call): the calling thread does the
  // socket I/O itself, no event loop (needs single_threaded).
  bool blocking = false;
};

sealbench::EchoClient connect_client(asio::io_context& io, const std::string& path, const ClientMode& mode) {
  sealrpc::ClientOptions o;
  o.default_timeout = mode.default_timeout;
  o.single_threaded = mode.single_threaded;
  bool done = false;
  boost::system::error_code ec;
  sealrpc::Client client;
  sealrpc::Client::async_connect(io.get_executor(), path, o, [&](boost::system::error_code e, sealrpc::Client c) {
    ec = e;
    client = std::move(c);
    done = true;
  });
  run_until(io, done);
  if (ec) throw boost::system::system_error(ec, "sealrpc connect " + path);
  return sealbench::EchoClient(std::move(client));
}

void close_client(asio::io_context& io, sealbench::EchoClient& c) noexcept {
  try {
    c.client().close();
    io.restart();
    io.poll();  // runs the close on the connection's strand; read loop ends
  } catch (const std::exception&) {
  }
}

// The synchronous EchoConnection the suite drives.
class SealConnection final : public sb::EchoConnection {
 public:
  explicit SealConnection(const std::string& path, ClientMode mode = {})
      : mode_(mode), client_(connect_client(io_, path, mode)) {}
  ~SealConnection() override { close_client(io_, client_); }

  std::span<const std::byte> call(std::span<const std::byte> request) override {
    if (mode_.blocking) {
      reply_ = client_.echo(as_kj(request), ec_);
    } else {
      call_async(request);
    }
    if (ec_) throw boost::system::system_error(ec_, "sealrpc echo");
    const auto d = reply_.get().getData();
    return {reinterpret_cast<const std::byte*>(d.begin()), d.size()};
  }

 private:
  void call_async(std::span<const std::byte> request) {
    done_ = false;
    client_.async_echo(as_kj(request), Handler{this});
    if (mode_.run_stop) {
      io_.restart();
      io_.run();  // the handler calls stop()
      if (!done_) throw std::runtime_error("sealrpc client: io_context out of work");
    } else if (poller_) {
      if (!poller_->run_until([this] { return done_; })) throw std::runtime_error("sealrpc client: io_context out of work");
    } else {
      run_until(io_, done_);
    }
  }
  struct Handler {
    SealConnection* self;
    void operator()(boost::system::error_code ec, Reply r) const {
      self->ec_ = ec;
      self->reply_ = std::move(r);
      self->done_ = true;
      if (self->mode_.run_stop) self->io_.stop();
    }
  };
  asio::io_context io_{1};  // concurrency hint 1: one thread, no internal locking
  ClientMode mode_;
  std::optional<sealrpc::BusyPoller> poller_ =
      mode_.busy_poll.count() > 0 ? std::optional<sealrpc::BusyPoller>(std::in_place, io_, sealrpc::BusyPollOptions{mode_.busy_poll})
                                  : std::nullopt;
  sealbench::EchoClient client_;
  Reply reply_;  // the returned bytes point into it until the next call
  boost::system::error_code ec_;
  bool done_ = false;
};

sb::Contender make_contender(std::string name, const char* audit_mode, ClientMode mode, std::string description) {
  sb::Contender c;
  c.name = std::move(name);
  c.order = 40;
  c.description = std::move(description);
  c.start = [audit_mode, spin = mode.busy_poll] { return start_server(audit_mode, spin); };
  c.connect = [mode](const sb::ScopedServer& s) -> std::unique_ptr<sb::EchoConnection> {
    return std::make_unique<SealConnection>(s.socket_path(), mode);
  };
  return c;
}

SEALRPC_BENCH_CONTENDER(make_contender(
    "sealrpc", nullptr, {},
    "SealRPC: generated Echo, sameUser rule, audit (rate-limited, JSON to /dev/null); sync client = run_one() on a private io_context"));

// The opt-in low-latency mode: the same server and client, both event loops run by
// sealrpc::BusyPoller (adaptive busy-poll, max 50 µs spin before sleeping).
SEALRPC_BENCH_CONTENDER([] {
  ClientMode m;
  m.busy_poll = std::chrono::microseconds(50);
  auto c = make_contender("sealrpc_busypoll", nullptr, m,
                          "SealRPC low-latency mode: both event loops in sealrpc::BusyPoller (spin <= 50 us before sleeping)");
  c.order = 41;
  c.concurrent = false;
  return c;
}());

// The generated synchronous call (EchoClient::echo(data, ec) = sealrpc::Client::call): the
// client pattern of the raw and gRPC contenders (one blocking call at a time).
SEALRPC_BENCH_CONTENDER([] {
  ClientMode m;
  m.blocking = true;
  auto c = make_contender("sealrpc_sync", nullptr, m,
                          "SealRPC, synchronous client (Client::call: poll + recvmsg in the calling thread, no event loop)");
  c.order = 42;
  return c;
}());

// ---- pipelined -------------------------------------------------------------------------

void BM_SealRPC_Pipelined(benchmark::State& state) {
  static sb::LatencyRecorder rec;
  const auto depth = static_cast<std::size_t>(state.range(0));
  std::vector<std::byte> payload(32, std::byte{0x5a});
  std::shared_ptr<const sb::ScopedServer> server;
  asio::io_context io(1);
  std::optional<sealbench::EchoClient> client;
  try {
    server = sb::shared_server("sealrpc", [] { return start_server(); });
    client.emplace(connect_client(io, server->socket_path(), {}));
  } catch (const std::exception& e) {
    sb::fail(state, std::string("sealrpc pipelined: ") + e.what());
    for (auto _ : state) {
    }
    return;
  }
  auto& samples = rec.begin(state);
  const std::size_t capacity = static_cast<std::size_t>(state.max_iterations);
  std::size_t issued = 0, completed = 0;
  bool timing = false, bad = false;
  auto issue = [&] {
    const auto t0 = sb::Clock::now();
    client->async_echo(as_kj(payload), [&, t0](boost::system::error_code ec, Reply r) {
      if (timing && samples.size() < capacity) samples.record_since(t0);
      if (ec || r.get().getData().size() != payload.size()) bad = true;
      ++completed;
    });
    ++issued;
  };
  try {
    for (std::size_t i = 0; i < 16; ++i) issue();  // warm-up
    while (completed < issued) io.run_one();
    for (std::size_t i = 0; i < depth; ++i) issue();
    timing = true;
    sb::AllocProbe allocs;
    for (auto _ : state) {
      // One iteration = one completion consumed and one call issued: `depth` stay in flight.
      while (completed + depth < issued + 1) io.run_one();
      issue();
    }
    allocs.report(state);
    timing = false;
    while (completed < issued) io.run_one();
  } catch (const std::exception& e) {
    sb::fail(state, std::string("sealrpc pipelined: ") + e.what());
  }
  if (bad) sb::fail(state, "sealrpc pipelined: wrong or failed reply");
  rec.report(state);
  close_client(io, *client);
}

// ---- connection setup ------------------------------------------------------------------

void BM_SealRPC_Connect(benchmark::State& state, int what) {
  // what: 0 sealrpc, 1 sealrpc_first_call, 2 asio_connect_echo, 3 raw_connect_accept
  static sb::LatencyRecorder rec;
  std::vector<std::byte> payload(32, std::byte{0x33});
  std::shared_ptr<const sb::ScopedServer> server;
  sealrpc::Listener local;
  try {
    if (what <= 1) server = sb::shared_server("sealrpc", [] { return start_server(); });
    if (what == 2)
      server = sb::shared_server("asio", [] {
        return sb::spawn_server(sb::server_exe("sealrpc_bench_asio_server", SEALRPC_BENCH_ASIO_SERVER));
      });
    if (what == 3) local = sealrpc::listen_private("sealrpc-bench-connect");
  } catch (const std::exception& e) {
    sb::fail(state, std::string("connect: ") + e.what());
    for (auto _ : state) {
    }
    return;
  }
  auto& samples = rec.begin(state);
  asio::io_context io(1);
  bool failed = false;
  sb::AllocProbe allocs;
  for (auto _ : state) {
    if (failed) continue;
    try {
      const auto t0 = sb::Clock::now();
      if (what <= 1) {
        auto c = connect_client(io, server->socket_path(), {});
        if (what == 1) {
          bool done = false;
          bool ok = false;
          c.async_echo(as_kj(payload), [&](boost::system::error_code ec, Reply r) {
            ok = !ec && r.get().getData().size() == payload.size();
            done = true;
          });
          run_until(io, done);
          if (!ok) throw std::runtime_error("first call failed");
        }
        samples.record_since(t0);
        close_client(io, c);
      } else if (what == 2) {
        asio::local::stream_protocol::socket s(io);
        s.connect(asio::local::stream_protocol::endpoint(server->socket_path()));
        std::array<unsigned char, 4> h{32, 0, 0, 0};
        const std::array<asio::const_buffer, 2> out{asio::buffer(h), asio::buffer(payload)};
        asio::write(s, out);
        std::array<std::byte, 36> in{};
        asio::read(s, asio::buffer(in));
        samples.record_since(t0);
      } else {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::memcpy(a.sun_path, local.path().c_str(), std::min(local.path().size(), sizeof a.sun_path - 1));
        if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
          throw std::system_error(errno, std::generic_category(), "connect");
        const int peer = ::accept4(local.fd(), nullptr, nullptr, SOCK_CLOEXEC);
        if (peer < 0) throw std::system_error(errno, std::generic_category(), "accept4");
        samples.record_since(t0);
        ::close(peer);
        ::close(fd);
      }
    } catch (const std::exception& e) {
      failed = true;
      sb::fail(state, std::string("connect: ") + e.what());
    }
  }
  allocs.report(state);
  rec.report(state);
}

// ---- idle connections ----------------------------------------------------------------

// The standard 32 B sealrpc call while <n> other connections sit idle on the same
// server (connected, accepted, HELLO received, then silent). Shows whether per-connection
// state costs the active caller anything (issue #6: p50 with 1,000 idle within 1.2x of
// the p50 with none; the report divides the two).
void BM_SealRPC_IdleConns(benchmark::State& state) {
  const auto idle = static_cast<std::size_t>(state.range(0));
  const sb::Contender* sealrpc = nullptr;
  const auto all = sb::contenders();
  for (const auto& c : all)
    if (c.name == "sealrpc") sealrpc = &c;
  std::vector<sealrpc::UniqueFd> held;
  try {
    if (!sealrpc) throw std::runtime_error("no sealrpc contender");
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < idle + 256 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, idle + 256);
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) throw std::system_error(errno, std::generic_category(), "setrlimit");
    }
    const auto server = sb::shared_server(sealrpc->name, sealrpc->start);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const auto& path = server->socket_path();
    std::memcpy(a.sun_path, path.c_str(), std::min(path.size(), sizeof a.sun_path - 1));
    for (std::size_t i = 0; i < idle; ++i) {
      sealrpc::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (fd.get() < 0 || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0)
        throw std::system_error(errno, std::generic_category(), "connect idle");
      held.push_back(std::move(fd));
    }
    for (auto& fd : held) {  // the first HELLO byte: the server accepted and set it up
      std::byte b{};
      if (::recv(fd.get(), &b, 1, 0) != 1) throw std::runtime_error("idle connection: no HELLO from the server");
    }
  } catch (const std::exception& e) {
    sb::fail(state, std::string("idle connections: ") + e.what());
    for (auto _ : state) {
    }
    return;
  }
  sb::run_echo_benchmark(state, *sealrpc, 32);
  state.counters["idle_connections"] = static_cast<double>(idle);
}

// ---- in-process: both sides in this thread ----------------------------------------------

class EchoImpl final : public sealbench::EchoService {
 public:
  asio::awaitable<sealrpc::Status> echo(sealrpc::CallContext&, sealbench::Echo::EchoParams::Reader params,
                                        sealbench::Echo::EchoResults::Builder results) override {
    results.setData(params.getData());
    co_return sealrpc::Status::ok();
  }
};

// The same audit front as sealrpc_small_server (default rate limit, JSON to /dev/null).
std::shared_ptr<sealrpc::AuditLog> limited_audit() {
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto sink = std::make_shared<sealrpc::CallbackSink>([fd](const sealrpc::AuditRecord& r) {
    std::string line = sealrpc::format_json(r);
    line += '\n';
    (void)!::write(fd, line.data(), line.size());
  });
  return std::make_shared<sealrpc::AuditLog>(std::vector<std::shared_ptr<sealrpc::AuditSink>>{sink});
}

void BM_SealRPC_InProcess(benchmark::State& state) {
  static sb::LatencyRecorder rec;
  std::vector<std::byte> payload(static_cast<std::size_t>(state.range(0)), std::byte{0x42});
  asio::io_context io(1);
  std::optional<sealrpc::Server> server;
  std::optional<sealbench::EchoClient> client;
  try {
    sealrpc::ServerOptions o;
    o.audit = limited_audit();
    server.emplace(io.get_executor(), sealrpc::listen_private("sealrpc-bench-inproc"), std::move(o));
    server->add_service(std::make_shared<EchoImpl>());
    server->start();
    client.emplace(connect_client(io, server->path(), {}));
  } catch (const std::exception& e) {
    sb::fail(state, std::string("in-process: ") + e.what());
    for (auto _ : state) {
    }
    return;
  }
  auto& samples = rec.begin(state);
  bool done = false, bad = false;
  Reply reply;
  auto one = [&] {
    done = false;
    client->async_echo(as_kj(payload), [&](boost::system::error_code ec, Reply r) {
      bad = bad || ec;
      reply = std::move(r);
      done = true;
    });
    run_until(io, done);
    bad = bad || reply.get().getData().size() != payload.size();
  };
  try {
    for (int i = 0; i < 16; ++i) one();
    sb::AllocProbe allocs;
    for (auto _ : state) {
      const auto t0 = sb::Clock::now();
      one();
      samples.record_since(t0);
    }
    allocs.report(state);
  } catch (const std::exception& e) {
    sb::fail(state, std::string("in-process: ") + e.what());
  }
  if (bad) sb::fail(state, "in-process: wrong or failed reply");
  rec.report(state);
  close_client(io, *client);
  server->stop();
  io.restart();
  io.poll();
}

// ---- registration ------------------------------------------------------------------------

std::vector<std::string> split(const char* s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* p = s; p && *p; ++p) {
    if (*p == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += *p;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

SEALRPC_BENCH_REGISTRAR([](const sb::SuiteConfig&) {
  // Fixed-count runs for scripts/bench-callgrind: none of the benchmarks below then.
  if (const char* fixed = std::getenv("SEALRPC_BENCH_FIXED_CALLS")) {
    const char* list = std::getenv("SEALRPC_BENCH_FIXED_CONTENDERS");
    const auto names = split(list ? list : "raw,asio,sealrpc");
    for (const auto& n : split(fixed)) {
      const long calls = std::strtol(n.c_str(), nullptr, 10);
      if (calls <= 0) continue;
      for (const auto& c : sb::contenders()) {
        if (std::find(names.begin(), names.end(), c.name) == names.end()) continue;
        benchmark::RegisterBenchmark(("BM_Fixed/" + c.name).c_str(),
                                     [c](benchmark::State& st) { sb::run_echo_benchmark(st, c, 32); })
            ->Arg(calls)
            ->Iterations(calls)
            ->Repetitions(1)
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
    return;
  }

  for (const int depth : {16, 128}) {
    benchmark::RegisterBenchmark("BM_SealRPC_Pipelined", BM_SealRPC_Pipelined)
        ->Arg(depth)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  for (const int idle : {0, 1000}) {
    benchmark::RegisterBenchmark("BM_SealRPC_IdleConns", BM_SealRPC_IdleConns)
        ->Arg(idle)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  const char* connect_names[] = {"sealrpc", "sealrpc_first_call", "asio_connect_echo", "raw_connect_accept"};
  for (int i = 0; i < 4; ++i) {
    benchmark::RegisterBenchmark((std::string("BM_SealRPC_Connect/") + connect_names[i]).c_str(),
                                 [i](benchmark::State& st) { BM_SealRPC_Connect(st, i); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  // Ablations: each variant is its own server process (audit mode) or client mode; the
  // default variant is re-measured here so the ratios come from the same stretch of time.
  struct V {
    const char* name;
    const char* audit;
    ClientMode mode;
  };
  const V variants[] = {
      {"default", nullptr, {}},
      {"no_deadline", nullptr, {std::chrono::milliseconds(0), false}},
      {"audit_all", "all", {}},
      {"audit_off", "off", {}},
      {"run_stop", nullptr, {std::chrono::milliseconds(30'000), true}},
      {"client_strand", nullptr, {std::chrono::milliseconds(30'000), false, false}},
  };
  for (const auto& v : variants) {
    // Server cache key: one server per audit mode.
    auto c = make_contender(std::string("sealrpc_audit_") + (v.audit ? v.audit : "limited"), v.audit, v.mode, v.name);
    benchmark::RegisterBenchmark((std::string("BM_SealRPC_Variant/") + v.name).c_str(),
                                 [c](benchmark::State& st) { sb::run_echo_benchmark(st, c, 32); })
        ->Arg(32)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }

  for (const int size : {32, 65536}) {
    benchmark::RegisterBenchmark("BM_SealRPC_InProcess", BM_SealRPC_InProcess)
        ->Arg(size)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
});

}  // namespace
