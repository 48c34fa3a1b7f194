#include "server_common.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace sealrpc::bench::server {

std::string socket_arg(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '\0') {
    std::fprintf(stderr, "usage: %s SOCKET_PATH\n", argc > 0 ? argv[0] : "server");
    std::exit(2);
  }
  return argv[1];
}

namespace {
[[noreturn]] void parent_gone(const std::string& socket_path) {
  ::unlink(socket_path.c_str());
  const auto slash = socket_path.rfind('/');
  if (slash != std::string::npos && slash > 0) ::rmdir(socket_path.substr(0, slash).c_str());
  ::_exit(0);
}
}  // namespace

void init(const std::string& socket_path) {
  ::signal(SIGPIPE, SIG_IGN);
  const char* ppid_env = std::getenv("SEALRPC_BENCH_PARENT_PID");
  if (ppid_env == nullptr || *ppid_env == '\0') return;
  const auto parent = static_cast<pid_t>(std::strtol(ppid_env, nullptr, 10));
  if (parent <= 1) return;
  int pidfd = -1;
#ifdef SYS_pidfd_open
  pidfd = static_cast<int>(::syscall(SYS_pidfd_open, parent, 0));
#endif
  if (::getppid() != parent) parent_gone(socket_path);  // died before we looked
  std::thread([pidfd, parent, socket_path] {
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
      }
    } else {
      while (::getppid() == parent) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    parent_gone(socket_path);
  }).detach();
}

void notify_ready() {
  const char* fd_env = std::getenv("SEALRPC_BENCH_READY_FD");
  if (fd_env == nullptr || *fd_env == '\0') return;
  const int fd = static_cast<int>(std::strtol(fd_env, nullptr, 10));
  const char c = 'R';
  while (::write(fd, &c, 1) < 0 && errno == EINTR) {
  }
  ::close(fd);
}

}  // namespace sealrpc::bench::server
