// Large transfers end to end through SealRPC (issue 6: "1 MiB and 64 MiB through SealRPC
// buffers >= 1.5x faster than copying through the socket").
//
//   BM_SealRPC_Transfer/<bytes>   per iteration, interleaved so all see the same machine
//   state (counters: mean µs of each, and ratios):
//     shared  Echo.produce on sealrpc_small_server: the server writes <bytes> straight
//             into an owner-revocable buffer it reuses, attaches it with share(); the
//             client (buffer mapping cache on, the default) takes it, reads every byte
//             and releases it. One RPC round trip + BUFFER_RELEASE per transfer.
//     sync    the same with the generated synchronous call (EchoClient::produce(n, fill, ec):
//             the client thread does the socket I/O itself, no event loop).
//     socket  the baseline: a producer thread writes its buffer and sends it through an
//             AF_UNIX stream socket (4 MiB socket buffers) into a pre-faulted receive
//             buffer, which the consumer reads (bench/transfer_util.hpp).
//   ratio_socket_over_shared > 1 means SealRPC buffers are faster.
#include "contenders.hpp"
#include "transfer_util.hpp"

#include "bench_echo.capnp.sealrpc.h"

#include <sealrpc/client.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <string>

#ifndef SEALRPC_BENCH_SERVER_sealrpc_small_server
#define SEALRPC_BENCH_SERVER_sealrpc_small_server ""
#endif

namespace {

namespace sb = sealrpc::bench;
namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

void BM_SealRPC_Transfer(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::shared_ptr<const sb::ScopedServer> server;
  asio::io_context io(1);
  std::optional<sealbench::EchoClient> client;
  try {
    server = sb::shared_server("sealrpc", [] {
      return sb::spawn_server(sb::server_exe("sealrpc_small_server", SEALRPC_BENCH_SERVER_sealrpc_small_server), {"{socket}"});
    });
    sealrpc::ClientOptions o;
    o.single_threaded = true;
    o.default_timeout = std::chrono::seconds(60);
    bool done = false;
    boost::system::error_code ec;
    sealrpc::Client::async_connect(io.get_executor(), server->socket_path(), o, [&](boost::system::error_code e, sealrpc::Client c) {
      ec = e;
      client.emplace(std::move(c));
      done = true;
    });
    while (!done && io.run_one() != 0) {
    }
    if (ec) throw boost::system::system_error(ec, "connect");
  } catch (const std::exception& e) {
    sb::fail(state, std::string("transfer: ") + e.what());
    for (auto _ : state) {
    }
    return;
  }

  std::vector<std::byte> src(n), dst(n, std::byte{1});  // dst pre-faulted
  sb::SocketPair chan;
  sb::widen_socket_buffers(chan.a.get(), chan.b.get());
  sb::SocketWriter writer(chan.a.get(), src);

  // One SealRPC transfer: produce, take, read all, release. Returns false on failure.
  std::uint64_t sink = 0;
  std::uint8_t fill = 0;
  auto shared_once = [&]() -> bool {
    ++fill;
    bool done = false, ok = false;
    client->async_produce(n, fill, [&](boost::system::error_code ec, sealrpc::Response<sealbench::Echo::ProduceResults> r) {
      if (!ec) {
        try {
          sealrpc::ReceivedBuffer b = r.buffer(r.get().getBuf());
          const auto d = b.data();
          sink += sb::read_all(d);
          ok = d.size() == n && d.front() == std::byte{fill} && d.back() == std::byte{fill};
        } catch (const std::exception&) {
        }
      }
      done = true;
    });
    while (!done && io.run_one() != 0) {
    }
    return ok;
  };
  // The same through the synchronous call. Its BUFFER_RELEASE goes with the next call.
  auto sync_once = [&]() -> bool {
    ++fill;
    boost::system::error_code ec;
    auto r = client->produce(n, fill, ec);
    if (ec) return false;
    try {
      sealrpc::ReceivedBuffer b = r.buffer(r.get().getBuf());
      const auto d = b.data();
      sink += sb::read_all(d);
      return d.size() == n && d.front() == std::byte{fill} && d.back() == std::byte{fill};
    } catch (const std::exception&) {
      return false;
    }
  };
  for (int i = 0; i < 3; ++i)
    if (!shared_once() || !sync_once()) {
      sb::fail(state, "transfer: produce failed during warm-up");
      for (auto _ : state) {
      }
      return;
    }

  double shared_s = 0, sync_s = 0, socket_s = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    if (!shared_once()) {
      state.SkipWithError("transfer: produce failed or wrong bytes");
      break;
    }
    const auto ts = clock_type::now();
    if (!sync_once()) {
      state.SkipWithError("transfer: synchronous produce failed or wrong bytes");
      break;
    }
    const auto t1 = clock_type::now();
    writer.send_once();
    if (!sb::recv_all(chan.b.get(), dst)) {
      state.SkipWithError("transfer: socket recv failed");
      break;
    }
    sink += sb::read_all(dst);
    const auto t2 = clock_type::now();
    shared_s += std::chrono::duration<double>(ts - t0).count();
    sync_s += std::chrono::duration<double>(t1 - ts).count();
    socket_s += std::chrono::duration<double>(t2 - t1).count();
    state.SetIterationTime(std::chrono::duration<double>(t2 - t0).count());
  }
  benchmark::DoNotOptimize(sink);
  const double it = state.iterations() > 0 ? static_cast<double>(state.iterations()) : 1.0;
  state.counters["shared_us"] = shared_s / it * 1e6;
  state.counters["socket_us"] = socket_s / it * 1e6;
  state.counters["ratio_socket_over_shared"] = shared_s > 0 ? socket_s / shared_s : 0;
  state.counters["sync_us"] = sync_s / it * 1e6;
  state.counters["ratio_socket_over_sync"] = sync_s > 0 ? socket_s / sync_s : 0;
  client->client().close();
  io.restart();
  io.poll();
}

SEALRPC_BENCH_REGISTRAR([](const sb::SuiteConfig&) {
  if (std::getenv("SEALRPC_BENCH_FIXED_CALLS")) return;  // scripts/bench-callgrind runs only BM_Fixed
  for (const std::int64_t mib : {1, 16, 64}) {
    benchmark::RegisterBenchmark("BM_SealRPC_Transfer", BM_SealRPC_Transfer)
        ->Arg(mib << 20)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
});

}  // namespace
