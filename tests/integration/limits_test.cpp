// Resource limits: fd exhaustion in the accept loop (K47, D1) and connection caps.
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "support/test_util.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

using namespace sealrpc;
using namespace testutil;

namespace {

long cpu_ticks(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  std::istringstream in(s.substr(s.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

}  // namespace

TEST(Limits, AcceptLoopSurvivesFdExhaustionWithoutSpinning) {
  int to_parent[2], to_child[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    ServerOptions o;
    o.raise_fd_limit = false;
    TestServer s(listen_private(), o);
    // A little headroom above what this process already uses (sanitizer builds use more).
    const rlim_t cap = static_cast<rlim_t>(count_fds() + 24);
    rlimit rl{cap, cap};
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(1);
    const std::string p = s.path() + "\n";
    if (::write(to_parent[1], p.data(), p.size()) < 0) ::_exit(1);
    char c;
    (void)::read(to_child[0], &c, 1);
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  std::string path;
  char c;
  while (::read(to_parent[0], &c, 1) == 1 && c != '\n') path += c;
  ::close(to_parent[0]);
  ASSERT_FALSE(path.empty());

  std::vector<int> conns;
  for (int i = 0; i < 120; ++i) {
    const int fd = raw_connect(path);  // the backlog takes them even when accept fails
    if (fd >= 0) conns.push_back(fd);
  }
  ::usleep(200'000);
  const long before = cpu_ticks(child);
  ::usleep(1'000'000);
  const long used = cpu_ticks(child) - before;
  EXPECT_LT(used, sysconf(_SC_CLK_TCK) / 4) << "accept loop spins on EMFILE";
  for (int fd : conns) ::close(fd);
  // Once fds are free again, new clients are served.
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    served = !call_once(path, 0).ec;
    if (!served) ::usleep(100'000);
  }
  EXPECT_TRUE(served);
  EXPECT_EQ(::waitpid(child, nullptr, WNOHANG), 0) << "server exited";
  ::close(to_child[1]);
  int st;
  ::waitpid(child, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(Limits, PerUidConnectionCapRefusesWithAClearReason) {
  ServerOptions o;
  o.max_connections_per_uid = 3;
  TestServer s(listen_private(), o);
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(raw_connect(s.path()));
  for (int i = 0; i < 100 && s.server().connection_count() < 3; ++i) ::usleep(10'000);
  const int extra = raw_connect(s.path());
  auto [type, reason] = read_reply(extra);
  EXPECT_EQ(type, 2);  // refused
  EXPECT_NE(reason.find("too many connections"), std::string::npos) << reason;
  ::close(extra);
  for (int fd : held) ::close(fd);
  for (int i = 0; i < 100 && s.server().connection_count() != 0; ++i) ::usleep(10'000);
  EXPECT_FALSE(call_once(s.path(), 0).ec);
}
