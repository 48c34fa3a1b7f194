// SealRPC contender server: the generated Echo service (bench/schema/bench_echo.capnp,
// rule sameUser = true) on sealrpc::Server, one single-threaded io_context (like the
// asio contender), every runtime check on: kernel peer credentials and the connection
// allow-list at accept, per-method authorize(), audit of every decision, bounded
// decode and typed validation of the params, per-call deadline.
//
// Audit: an AuditLog with the default rate limiter (burst 10 per key per second, what a
// deployment gets) in front of a sink that formats every record it is given as a JSON
// line (format_json, the JsonLinesSink format) and write()s it to /dev/null. So every
// call pays the record + rate-limiter cost, and the records the limiter lets through
// pay formatting and a write(2). (JsonLinesSink itself refuses /dev/null: it insists
// on a private regular file.)
//
// Environment (ablations, used by bench/sealrpc_small.cpp):
//   SEALRPC_BENCH_AUDIT=limited (default) | all (no rate limit: every call formatted and
//                       written) | off (a sink that drops records; the limiter still runs)
//   SEALRPC_BENCH_BUSY_POLL=<µs>  run the io_context with sealrpc::BusyPoller (the opt-in
//                       low-latency mode) with that max_spin instead of io_context::run()
//
// Usage: sealrpc_small_server <socket path>   (the harness's private directory)
#include "server_common.hpp"

#include "bench_echo.capnp.sealrpc.h"

#include <sealrpc/audit.hpp>
#include <sealrpc/buffer.hpp>
#include <sealrpc/busy_poll.hpp>
#include <sealrpc/endpoint.hpp>
#include <sealrpc/server.hpp>

#include <boost/asio/io_context.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <exception>
#include <limits>
#include <memory>
#include <string>

namespace {

class EchoImpl final : public sealbench::EchoService {
 public:
  boost::asio::awaitable<sealrpc::Status> echo(sealrpc::CallContext&, sealbench::Echo::EchoParams::Reader params,
                                               sealbench::Echo::EchoResults::Builder results) override {
    results.setData(params.getData());
    co_return sealrpc::Status::ok();
  }

  boost::asio::awaitable<sealrpc::Status> produce(sealrpc::CallContext& ctx, sealbench::Echo::ProduceParams::Reader params,
                                                  sealbench::Echo::ProduceResults::Builder results) override {
    const std::uint64_t size = params.getSize();
    if (size == 0 || size > (std::uint64_t{256} << 20)) co_return sealrpc::Status{sealrpc::StatusCode::invalid_argument, "size"};
    auto& buf = buffers_[size];  // one reused buffer per size (a real service: per peer)
    if (!buf.valid()) buf = sealrpc::WritableBuffer::create(size).seal();
    auto out = buf.writable();
    std::memset(out.data(), params.getFill(), out.size());  // the producer writes into the buffer
    auto handle = buf.share();
    const std::uint8_t index = ctx.attach(std::move(handle));
    buf.describe(results.initBuf(), index);
    co_return sealrpc::Status::ok();
  }

 private:
  std::map<std::uint64_t, sealrpc::SealedBuffer> buffers_;
};

std::shared_ptr<sealrpc::AuditLog> make_audit() {
  const char* mode_env = std::getenv("SEALRPC_BENCH_AUDIT");
  const std::string mode = mode_env ? mode_env : "limited";
  sealrpc::AuditRateLimit limit;  // defaults: 1 s interval, burst 10, 4096 keys
  std::shared_ptr<sealrpc::AuditSink> sink;
  if (mode == "off") {
    sink = std::make_shared<sealrpc::CallbackSink>([](const sealrpc::AuditRecord&) {});
  } else {
    if (mode == "all") limit.burst = std::numeric_limits<std::uint32_t>::max();
    else if (mode != "limited") throw std::runtime_error("SEALRPC_BENCH_AUDIT must be limited, all or off");
    const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("open /dev/null");
    sink = std::make_shared<sealrpc::CallbackSink>([fd](const sealrpc::AuditRecord& r) {
      std::string line = sealrpc::format_json(r);
      line += '\n';
      (void)!::write(fd, line.data(), line.size());
    });
  }
  return std::make_shared<sealrpc::AuditLog>(std::vector<std::shared_ptr<sealrpc::AuditSink>>{sink}, limit);
}

}  // namespace

int main(int argc, char** argv) {
  namespace srv = sealrpc::bench::server;
  const std::string path = srv::socket_arg(argc, argv);
  srv::init(path);
  try {
    boost::asio::io_context io(1);  // single-threaded, like the asio contender
    sealrpc::ServerOptions opts;    // allow-list: same user (default)
    opts.audit = make_audit();
    // BM_SealRPC_Connect connects and closes ~10^4 times a second as one uid: exactly the
    // churn the per-uid rate limit (D2) refuses. The benchmark measures connection setup,
    // so the limit is off here; production servers keep the default.
    opts.connection_rate_per_uid = {.burst = 0, .per_second = 0};
    // scripts/bench-idle opens 10^4 idle connections from one uid: the per-uid cap goes up
    // to the total cap for the same reason.
    opts.max_connections_per_uid = opts.max_connections;
    if (std::getenv("SEALRPC_BENCH_STRANDS") == nullptr) opts.single_threaded = true;  // io_context(1), one thread
    // The harness's mkdtemp directory (0700, ours) passes listen_at's path checks.
    sealrpc::Server server(io.get_executor(), sealrpc::listen_at(path), std::move(opts));
    server.add_service(std::make_shared<EchoImpl>());
    server.start();
    srv::notify_ready();
    if (const char* spin = std::getenv("SEALRPC_BENCH_BUSY_POLL")) {
      sealrpc::BusyPoller poller(io, {std::chrono::microseconds(std::strtol(spin, nullptr, 10))});
      poller.run();
    } else {
      io.run();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sealrpc_small_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
