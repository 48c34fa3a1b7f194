#include "contenders.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

extern char** environ;

namespace sealrpc::bench {

namespace {

[[noreturn]] void throw_errno(const std::string& what, int err = errno) {
  throw std::system_error(err, std::generic_category(), what);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// ---- live server table, readable from a signal handler ----------------------------

struct LiveEntry {
  std::atomic<pid_t> pid{0};
  char socket_path[sizeof(sockaddr_un::sun_path) + 1];
  char dir[4096];
};
constexpr int kMaxLive = 64;
LiveEntry g_live[kMaxLive];
std::mutex g_live_mu;  // serialises writers only

void live_add(pid_t pid, const std::string& dir, const std::string& sock) {
  std::lock_guard lk(g_live_mu);
  for (auto& e : g_live) {
    if (e.pid.load(std::memory_order_relaxed) == 0) {
      std::snprintf(e.socket_path, sizeof e.socket_path, "%s", sock.c_str());
      std::snprintf(e.dir, sizeof e.dir, "%s", dir.c_str());
      e.pid.store(pid, std::memory_order_release);
      return;
    }
  }
}

void live_remove(pid_t pid) {
  std::lock_guard lk(g_live_mu);
  for (auto& e : g_live) {
    if (e.pid.load(std::memory_order_relaxed) == pid) e.pid.store(0, std::memory_order_release);
  }
}

extern "C" void cleanup_on_signal(int sig) {
  // Async-signal-safe only: kill, waitpid, unlink, rmdir, signal, raise.
  for (auto& e : g_live) {
    const pid_t pid = e.pid.exchange(0, std::memory_order_acq_rel);
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st = 0;
      ::waitpid(pid, &st, 0);
      ::unlink(e.socket_path);
      ::rmdir(e.dir);
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::string substitute(std::string s, const std::string& key, const std::string& value) {
  for (std::size_t pos = 0; (pos = s.find(key, pos)) != std::string::npos; pos += value.size()) {
    s.replace(pos, key.size(), value);
  }
  return s;
}

bool is_executable(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

bool try_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// Waits up to `timeout` for pid to exit; returns true and sets status if it did.
bool wait_exit(pid_t pid, std::chrono::milliseconds timeout, int& status) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) {
      status = 0;
      return true;  // not our child any more (already reaped)
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int kill_and_reap(pid_t pid) {
  int status = 0;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

// ---- ScopedServer ------------------------------------------------------------------------

ScopedServer::ScopedServer(pid_t pid, std::string dir, std::string socket_path, std::string exe)
    : pid_(pid), dir_(std::move(dir)), socket_path_(std::move(socket_path)), exe_(std::move(exe)) {}

ScopedServer::ScopedServer(ScopedServer&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      dir_(std::move(o.dir_)),
      socket_path_(std::move(o.socket_path_)),
      exe_(std::move(o.exe_)) {
  o.dir_.clear();
}

ScopedServer& ScopedServer::operator=(ScopedServer&& o) noexcept {
  if (this != &o) {
    stop();
    pid_ = std::exchange(o.pid_, -1);
    dir_ = std::move(o.dir_);
    socket_path_ = std::move(o.socket_path_);
    exe_ = std::move(o.exe_);
    o.dir_.clear();
  }
  return *this;
}

ScopedServer::~ScopedServer() { stop(); }

int ScopedServer::stop() noexcept {
  int status = -1;
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    if (!wait_exit(pid_, std::chrono::seconds(2), status)) status = kill_and_reap(pid_);
    live_remove(pid_);
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }
  return status;
}

// ---- spawn_server -------------------------------------------------------------------------

ScopedServer spawn_server(const std::string& exe, const std::vector<std::string>& args, const SpawnOptions& opts) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/sealrpc-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw_errno("mkdtemp " + tmpl);
  const std::string dir = tmpl;
  struct DirGuard {  // removes the directory on every failure path
    const std::string& dir;
    bool armed = true;
    ~DirGuard() {
      if (armed) {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    }
  } dir_guard{dir};
  const std::string sock = dir + "/" + opts.socket_name;
  if (sock.size() >= sizeof(sockaddr_un::sun_path)) {
    throw std::runtime_error("socket path too long for AF_UNIX: " + sock);
  }

  std::vector<std::string> argv_s{exe};
  for (const auto& a : args) argv_s.push_back(substitute(substitute(a, "{socket}", sock), "{dir}", dir));
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_s;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (v.starts_with("SEALRPC_BENCH_READY_FD=") || v.starts_with("SEALRPC_BENCH_PARENT_PID=")) continue;
    env_s.emplace_back(v);
  }
  env_s.push_back("SEALRPC_BENCH_PARENT_PID=" + std::to_string(::getpid()));
  if (opts.ready == SpawnOptions::Ready::notify_fd) env_s.push_back("SEALRPC_BENCH_READY_FD=3");
  for (const auto& e : opts.env) env_s.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  int pipefd[2] = {-1, -1};
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw_errno("pipe2");
  if (pipefd[1] == 3) {  // dup2(3, 3) would keep FD_CLOEXEC: move it first
    const int moved = ::fcntl(pipefd[1], F_DUPFD_CLOEXEC, 4);
    ::close(pipefd[1]);
    pipefd[1] = moved;
  }
  struct FdCloser {
    int* fds;
    ~FdCloser() {
      for (int i = 0; i < 2; ++i)
        if (fds[i] >= 0) ::close(fds[i]);
    }
  } closer{pipefd};

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (opts.ready == SpawnOptions::Ready::notify_fd) posix_spawn_file_actions_adddup2(&fa, pipefd[1], 3);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Nothing else leaks into the server (e.g. --benchmark_out's file, or sockets
  // opened without CLOEXEC by a library).
  posix_spawn_file_actions_addclosefrom_np(&fa, 4);
#endif
  sigset_t def, empty;
  sigemptyset(&empty);
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);  // we ignore SIGPIPE; the server gets the default back
  sigaddset(&def, SIGINT);
  sigaddset(&def, SIGTERM);
  sigaddset(&def, SIGHUP);
  sigaddset(&def, SIGQUIT);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw_errno("posix_spawn " + exe, rc);
  ::close(pipefd[1]);
  pipefd[1] = -1;
  live_add(pid, dir, sock);

  // On failure: reap (killing if needed) and describe; dir_guard removes the directory.
  auto failure = [&](const std::string& why) -> std::runtime_error {
    int status = 0;
    std::string how;
    if (wait_exit(pid, std::chrono::milliseconds(200), status)) {
      how = describe_status(status);
    } else {
      kill_and_reap(pid);
      how = "killed by the harness";
    }
    live_remove(pid);
    return std::runtime_error("server " + exe + " " + why + " (" + how + ")");
  };

  const auto deadline = Clock::now() + opts.ready_timeout;
  if (opts.ready == SpawnOptions::Ready::notify_fd) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw failure("did not become ready in time");
      pollfd p{pipefd[0], POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(left.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw failure(std::string("poll failed: ") + std::strerror(errno));
      if (n == 0) continue;
      char c = 0;
      const ssize_t r = ::read(pipefd[0], &c, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r == 1) break;
      throw failure("closed its ready fd without reporting ready");
    }
  } else {
    while (!try_connect(sock)) {
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) {
        throw failure("exited before listening");
      }
      if (Clock::now() >= deadline) throw failure("did not accept a connection in time");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  dir_guard.armed = false;
  return ScopedServer(pid, dir, sock, exe);
}

// ---- server_exe ---------------------------------------------------------------------------

std::string server_exe(std::string_view name, std::string_view fallback) {
  std::vector<std::string> tried;
  if (const char* d = std::getenv("SEALRPC_BENCH_SERVER_DIR"); d != nullptr && *d != '\0') {
    tried.push_back(std::string(d) + "/" + std::string(name));
  }
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) tried.push_back((self.parent_path() / std::string(name)).string());
  if (!fallback.empty()) tried.emplace_back(fallback);
  for (const auto& p : tried) {
    if (is_executable(p)) return p;
  }
  std::string msg = "server executable '" + std::string(name) + "' not found; tried:";
  for (const auto& p : tried) msg += " " + p;
  throw std::runtime_error(msg);
}

// ---- shared_server ------------------------------------------------------------------------

namespace {
struct ServerCache {
  std::mutex mu;
  std::string key;
  std::shared_ptr<ScopedServer> server;
  std::string error;
};
ServerCache& server_cache() {
  static ServerCache* c = new ServerCache;  // never destroyed: main() stops servers explicitly
  return *c;
}
}  // namespace

std::shared_ptr<const ScopedServer> shared_server(const std::string& key, const std::function<ScopedServer()>& start) {
  auto& c = server_cache();
  std::lock_guard lk(c.mu);
  if (c.key == key) {
    if (c.server && c.server->running()) {
      // Peek without reaping (WNOWAIT): a dead server stays a zombie until stop() reaps it.
      siginfo_t info{};
      const pid_t pid = c.server->pid();
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != pid) {
        return c.server;
      }
      // It died between benchmarks: report that rather than silently respawning.
      const int status = c.server->stop();
      c.server.reset();
      c.error = "server for '" + key + "' died: " + describe_status(status);
      throw std::runtime_error(c.error);
    }
    if (!c.error.empty()) throw std::runtime_error(c.error);
  }
  c.server.reset();  // exclusive: stop the previous contender's server first
  c.key = key;
  c.error.clear();
  try {
    c.server = std::make_shared<ScopedServer>(start());
  } catch (const std::exception& e) {
    c.error = e.what();
    throw;
  }
  return c.server;
}

void stop_shared_servers() noexcept {
  auto& c = server_cache();
  std::lock_guard lk(c.mu);
  c.server.reset();
  c.key.clear();
  c.error.clear();
}

// ---- registry -----------------------------------------------------------------------------

namespace {
std::vector<Contender>& contender_registry() {
  static std::vector<Contender> v;
  return v;
}
std::vector<std::function<void(const SuiteConfig&)>>& registrars() {
  static std::vector<std::function<void(const SuiteConfig&)>> v;
  return v;
}
}  // namespace

void register_contender(Contender c) { contender_registry().push_back(std::move(c)); }

std::vector<Contender> contenders() {
  auto v = contender_registry();
  std::stable_sort(v.begin(), v.end(), [](const Contender& a, const Contender& b) {
    return a.order != b.order ? a.order < b.order : a.name < b.name;
  });
  return v;
}

void add_registrar(std::function<void(const SuiteConfig&)> fn) { registrars().push_back(std::move(fn)); }

const SuiteConfig& suite_config() { return detail::mutable_suite_config(); }
SuiteConfig& detail::mutable_suite_config() {
  static SuiteConfig cfg;
  return cfg;
}

// ---- the echo benchmark -------------------------------------------------------------------

namespace {
constexpr int kWarmupCalls = 16;

bool echo_matches(std::span<const std::byte> req, std::span<const std::byte> rep) {
  if (req.size() != rep.size()) return false;
  if (req.empty()) return true;
  const std::size_t n = req.size();
  return rep[0] == req[0] && rep[n / 2] == req[n / 2] && rep[n - 1] == req[n - 1];
}
}  // namespace

void run_echo_benchmark(benchmark::State& state, const Contender& contender, std::size_t payload) {
  static LatencyRecorder recorder;
  const int tid = state.thread_index();
  std::vector<std::byte> request(payload);
  for (std::size_t i = 0; i < payload; ++i) {
    request[i] = static_cast<std::byte>((i * 131 + static_cast<std::size_t>(tid) * 7 + 1) & 0xff);
  }

  bool failed = false;
  std::shared_ptr<const ScopedServer> server;
  std::unique_ptr<EchoConnection> conn;
  try {
    server = shared_server(contender.name, contender.start);
    conn = contender.connect(*server);
    for (int i = 0; i < kWarmupCalls; ++i) {
      if (!echo_matches(request, conn->call(request))) throw std::runtime_error("echo mismatch during warm-up");
    }
  } catch (const std::exception& e) {
    failed = true;
    fail(state, contender.name + ": " + e.what());
  }

  LatencySamples& samples = recorder.begin(state);
  const std::span<const std::byte> req(request);
  AllocProbe allocs;
  for (auto _ : state) {
    if (failed) continue;  // not `break`: other threads wait for us at the loop's end
    try {
      const auto t0 = Clock::now();
      const auto reply = conn->call(req);
      samples.record_since(t0);
      if (!echo_matches(req, reply)) {
        failed = true;
        fail(state, contender.name + ": echo mismatch");
      }
    } catch (const std::exception& e) {
      failed = true;
      fail(state, contender.name + ": " + e.what());
    }
  }
  allocs.report(state);
  recorder.report(state);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(2 * payload));
  conn.reset();
}

void detail::register_suite(const SuiteConfig& cfg) {
  const auto all = contenders();
  for (const auto size : cfg.sizes) {
    for (const auto& c : all) {
      benchmark::RegisterBenchmark(("BM_Contender/" + c.name).c_str(),
                                   [c, size](benchmark::State& st) {
                                     run_echo_benchmark(st, c, static_cast<std::size_t>(size));
                                   })
          ->Arg(size)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const int n : cfg.conns) {
    for (const auto& c : all) {
      if (!c.concurrent) continue;
      const auto size = cfg.concurrent_size;
      benchmark::RegisterBenchmark(("BM_ContenderConcurrent/" + c.name).c_str(),
                                   [c, size](benchmark::State& st) {
                                     run_echo_benchmark(st, c, static_cast<std::size_t>(size));
                                   })
          ->Arg(n)
          ->Threads(n)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const auto& r : registrars()) r(cfg);
}

namespace detail {
void install_signal_cleanup() {
  struct sigaction sa {};
  sa.sa_handler = cleanup_on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);
}
}  // namespace detail

}  // namespace sealrpc::bench
