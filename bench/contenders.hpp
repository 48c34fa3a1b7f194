// sealrpc_bench contender API: spawn a server process, connect to it, and have the
// suite register the standard BM_Contender / BM_ContenderConcurrent benchmarks for
// it, interleaved with the other contenders. See bench/README.md.
//
// Adding a contender (e.g. from a bench/sealrpc_*.cpp file):
//
//   namespace sb = sealrpc::bench;
//   class MyConnection final : public sb::EchoConnection {
//     std::span<const std::byte> call(std::span<const std::byte> request) override;
//   };
//   SEALRPC_BENCH_CONTENDER([] {
//     sb::Contender c;
//     c.name = "sealrpc";            // -> BM_Contender/sealrpc/<bytes> ...
//     c.order = 40;                  // raw 0, asio 10, capnp 20, grpc 30
//     c.start = [] { return sb::spawn_server(sb::server_exe("sealrpc_echo_server")); };
//     c.connect = [](const sb::ScopedServer& s) { return std::make_unique<MyConnection>(s.socket_path()); };
//     return c;
//   }());
#pragma once

#include "harness.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sealrpc::bench {

// ---- server processes ---------------------------------------------------------------

struct SpawnOptions {
  // How the harness knows the server listens:
  //  notify_fd:   the server writes one byte to the fd named by $SEALRPC_BENCH_READY_FD
  //               (bench/contenders/server_common.hpp: server::notify_ready());
  //  connectable: the harness connect()s a SOCK_STREAM unix socket to socket_path
  //               until it succeeds (one throw-away connection the server must accept).
  enum class Ready { notify_fd, connectable };
  Ready ready = Ready::notify_fd;
  std::chrono::milliseconds ready_timeout{10000};
  // File name of the socket inside the server's private directory.
  std::string socket_name = "server.sock";
  // Extra environment entries for the server, "NAME=value".
  std::vector<std::string> env;
};

// A running server process. Move-only; the destructor stops it: SIGTERM, up to 2 s
// for it to exit, then SIGKILL; waitpid always; then the private directory (created
// by mkdtemp) is removed with everything in it. Servers are also killed if
// sealrpc_bench gets SIGINT/SIGTERM/SIGHUP, and servers that use
// server::init() exit by themselves when sealrpc_bench dies any other way.
class ScopedServer {
 public:
  ScopedServer() = default;
  ScopedServer(pid_t pid, std::string dir, std::string socket_path, std::string exe);
  ScopedServer(ScopedServer&& other) noexcept;
  ScopedServer& operator=(ScopedServer&& other) noexcept;
  ScopedServer(const ScopedServer&) = delete;
  ScopedServer& operator=(const ScopedServer&) = delete;
  ~ScopedServer();

  const std::string& socket_path() const noexcept { return socket_path_; }
  const std::string& dir() const noexcept { return dir_; }
  const std::string& exe() const noexcept { return exe_; }
  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return pid_ > 0; }
  // Idempotent. Returns the wait status (or -1 if nothing was running).
  int stop() noexcept;

 private:
  pid_t pid_ = -1;
  std::string dir_;
  std::string socket_path_;
  std::string exe_;
};

// Spawns `exe` with posix_spawn in a fresh private directory (mkdtemp under
// $TMPDIR or /tmp) and waits until it is ready. In `args`, "{socket}" is replaced by
// the socket path and "{dir}" by the directory. The server's environment is ours plus
// SEALRPC_BENCH_READY_FD=3 and SEALRPC_BENCH_PARENT_PID=<our pid> plus opts.env.
// Throws std::runtime_error (with the server's exit status) on failure.
ScopedServer spawn_server(const std::string& exe, const std::vector<std::string>& args = {"{socket}"},
                          const SpawnOptions& opts = {});

// Absolute path of a server executable named `name`, looked up in order:
//   $SEALRPC_BENCH_SERVER_DIR/name, the directory of the running sealrpc_bench
//   binary, then `fallback` (the build tree path compiled in; may be empty).
// Throws std::runtime_error listing the places tried.
std::string server_exe(std::string_view name, std::string_view fallback = {});

// A process-wide cache holding at most one live server: returns the live server for
// `key`, or stops the current one and starts a new one with `start`. Thread-safe, so
// every thread of a ->Threads(n) benchmark can call it before its loop. A start
// failure is remembered for `key` (rethrown to later callers) until another key is
// requested.
std::shared_ptr<const ScopedServer> shared_server(const std::string& key,
                                                  const std::function<ScopedServer()>& start);
// Stops the cached server (main() calls it at the end).
void stop_shared_servers() noexcept;

// ---- contenders ----------------------------------------------------------------------

// One client connection, used by one thread only (created, used and destroyed on it).
class EchoConnection {
 public:
  virtual ~EchoConnection() = default;
  // Sends `request`, waits for the echo and returns it; the returned bytes stay valid
  // until the next call. Throws std::exception on any failure.
  virtual std::span<const std::byte> call(std::span<const std::byte> request) = 0;
};

struct Contender {
  std::string name;  // [a-z0-9_]+, used in benchmark names
  int order = 100;   // registration order; raw 0, asio 10, capnp 20, grpc 30
  std::string description;
  std::function<ScopedServer()> start;
  std::function<std::unique_ptr<EchoConnection>(const ScopedServer&)> connect;
  // Also run in BM_ContenderConcurrent (false for busy-polling clients: n spinning
  // client threads on 2 cores measure the scheduler, not the RPC).
  bool concurrent = true;
};

// Call during static initialisation (see SEALRPC_BENCH_CONTENDER) or before main()
// registers the suite.
void register_contender(Contender c);
// Registered contenders sorted by (order, name).
std::vector<Contender> contenders();

// ---- suite ---------------------------------------------------------------------------

struct SuiteConfig {
  std::vector<std::int64_t> sizes{32, 1024, 65536};  // --sizes=32,1024,65536
  std::vector<int> conns{1, 8, 64};                   // --conns=1,8,64
  std::int64_t concurrent_size = 32;                  // --concurrent_size=32
};
const SuiteConfig& suite_config();

// Functions run by main() after option parsing, in registration order, to register
// more benchmarks with the parsed configuration (e.g. honouring --sizes).
void add_registrar(std::function<void(const SuiteConfig&)> fn);

// The standard contender benchmark body: one connection per thread, warm-up calls,
// then one synchronous call per iteration, with the latency recorder and the
// allocation probe. Exposed so other benchmarks can reuse it.
void run_echo_benchmark(benchmark::State& state, const Contender& contender, std::size_t payload);

namespace detail {
void register_suite(const SuiteConfig& cfg);  // main() only
void install_signal_cleanup();                 // main() only: kill servers on SIGINT/SIGTERM/SIGHUP/SIGQUIT
SuiteConfig& mutable_suite_config();
}  // namespace detail

}  // namespace sealrpc::bench

#define SEALRPC_BENCH_CAT2(a, b) a##b
#define SEALRPC_BENCH_CAT(a, b) SEALRPC_BENCH_CAT2(a, b)
// Registers a contender at static-initialisation time: SEALRPC_BENCH_CONTENDER(expr)
// where expr evaluates to a sealrpc::bench::Contender.
#define SEALRPC_BENCH_CONTENDER(...)                                               \
  [[maybe_unused]] static const bool SEALRPC_BENCH_CAT(sealrpc_bench_contender_, __LINE__) = \
      (::sealrpc::bench::register_contender(__VA_ARGS__), true)
// Registers a registrar at static-initialisation time: SEALRPC_BENCH_REGISTRAR(fn)
// where fn is callable as void(const sealrpc::bench::SuiteConfig&).
#define SEALRPC_BENCH_REGISTRAR(...)                                               \
  [[maybe_unused]] static const bool SEALRPC_BENCH_CAT(sealrpc_bench_registrar_, __LINE__) = \
      (::sealrpc::bench::add_registrar(__VA_ARGS__), true)
