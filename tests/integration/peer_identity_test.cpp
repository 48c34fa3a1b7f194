// Kernel-verified peers with real processes and real uids/gids (issue 2 "Must show").
// Root bypasses file permissions (K1), so every access test runs the client as a
// non-root uid created with setgroups/setresgid/setresuid.
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

using namespace sealrpc;
using namespace testutil;

namespace {

constexpr uid_t kAlice = 4243;    // allowed by uid on the test methods
constexpr uid_t kBob = 4244;      // no grants of its own
constexpr gid_t kReaders = 4242;  // group granted on echo/groupOnly

void require_root() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create real other-uid processes";
}

EndpointOptions open_to(std::vector<uid_t> users, std::vector<gid_t> groups = {}) {
  EndpointOptions o;
  o.acl_users = std::move(users);
  o.acl_groups = std::move(groups);
  return o;
}

}  // namespace

TEST(PeerIdentity, SameUserCallSucceedsAndSeesKernelIdentity) {
  TestServer s(listen_private());
  auto r = call_once(s.path(), 0, "hello");
  ASSERT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.data, "hello");
  EXPECT_EQ(r.uid, ::geteuid());
  EXPECT_TRUE(s.audit().has("connect", true, ::geteuid()));
  EXPECT_TRUE(s.audit().has("call", true, ::geteuid(), "Test.echo"));
}

TEST(PeerIdentity, OtherUserIsRefusedByThe0600Socket) {
  require_root();
  TestServer s(listen_private());
  const int rc = run_as({kAlice, kAlice, {}}, [&] { return outcome(call_once(s.path(), 0).ec); });
  EXPECT_EQ(rc, kErrnoBase + EACCES);
}

TEST(PeerIdentity, OtherUserIsRefusedByTheAllowListWhenPermissionsLetItIn) {
  require_root();
  TestServer s(listen_private("sealrpc", open_to({kBob})));  // default allow-list: same user only
  const int rc = run_as({kBob, kBob, {}}, [&] { return outcome(call_once(s.path(), 0).ec); });
  EXPECT_EQ(rc, kClientBase + static_cast<int>(ClientError::refused_by_server));
  EXPECT_TRUE(s.audit().has("connect", false, kBob));
  EXPECT_FALSE(s.audit().has("call", true, kBob));
}

TEST(PeerIdentity, AccessGrantedThroughASupplementaryGroup) {
  require_root();
  ServerOptions o;
  o.allow = AccessRuleSpec{.gids = {kReaders}, .same_user = true};
  TestServer s(listen_private("sealrpc", open_to({}, {kReaders})), o);
  // kBob's primary group is its own; kReaders only supplementary.
  const int with = run_as({kBob, kBob, {kReaders}}, [&] {
    auto r = call_once(s.path(), 4);  // groupOnly
    if (r.ec) return outcome(r.ec);
    return std::find(r.groups.begin(), r.groups.end(), kReaders) != r.groups.end() && r.uid == kBob ? 0 : kOther;
  });
  EXPECT_EQ(with, kOk);
  const int root_only = run_as({kBob, kBob, {kReaders}}, [&] { return outcome(call_once(s.path(), 3).ec); });
  EXPECT_EQ(root_only, kRpcBase + static_cast<int>(StatusCode::permission_denied));
  // Without the supplementary group (and with file permissions opened by ACL to the
  // group only, so connect itself fails): refused.
  const int without = run_as({kBob, kBob, {}}, [&] { return outcome(call_once(s.path(), 4).ec); });
  EXPECT_NE(without, kOk);
  EXPECT_TRUE(s.audit().has("call", true, kBob, "Test.groupOnly"));
  EXPECT_TRUE(s.audit().has("call", false, kBob, "Test.rootOnly"));
}

TEST(PeerIdentity, ClientRefusesAServerRunByAnUnexpectedUid) {
  require_root();
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  int done[2];
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // an impostor server running as kAlice
    ::close(pipefd[0]);
    ::close(done[1]);
    if (::setgroups(0, nullptr) || ::setresgid(kAlice, kAlice, kAlice) || ::setresuid(kAlice, kAlice, kAlice)) ::_exit(100);
    ::unsetenv("XDG_RUNTIME_DIR");
    {
      ServerOptions o;
      o.allow = AccessRuleSpec{.root = true};
      TestServer s(listen_private(), o);
      const std::string p = s.path() + "\n";
      if (::write(pipefd[1], p.data(), p.size()) < 0) ::_exit(101);
      char c;
      (void)::read(done[0], &c, 1);
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  ::close(done[0]);
  std::string path;
  char c;
  while (::read(pipefd[0], &c, 1) == 1 && c != '\n') path += c;
  ASSERT_FALSE(path.empty());
  auto r = call_once(path, 0);  // default expectation: our own uid (0) or root
  EXPECT_EQ(r.ec, make_error_code(ClientError::server_identity_mismatch)) << r.ec.message();
  ClientOptions trusting;
  trusting.expected_server_uid = kAlice;
  auto ok = call_once(path, 3, "x", trusting);  // rootOnly, as root, to the server we now expect
  EXPECT_FALSE(ok.ec) << ok.ec.message();
  ::close(done[1]);
  int st;
  ::waitpid(child, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST(PeerIdentity, RootInsideAUserNamespaceIsSeenAsItsRealUid) {
  require_root();
  ServerOptions o;
  o.allow = AccessRuleSpec{.uids = {kAlice}, .root = true};
  TestServer s(listen_private("sealrpc", open_to({kAlice})), o);
  const int rc = run_as({kAlice, kAlice, {}}, [&] {
    // setresuid from root cleared the dumpable flag, which makes /proc/self/*_map
    // root-owned; restore it so we may write our own maps.
    if (::prctl(PR_SET_DUMPABLE, 1) != 0) return kOther + 9;
    if (::unshare(CLONE_NEWUSER) != 0) return kOther + 10;
    { std::ofstream("/proc/self/setgroups") << "deny"; }
    { std::ofstream("/proc/self/uid_map") << "0 " << kAlice << " 1"; }
    { std::ofstream("/proc/self/gid_map") << "0 " << kAlice << " 1"; }
    if (::geteuid() != 0) return kOther + 11;  // we are "root" in here
    ClientOptions co;
    co.expected_server_uid = 65534;  // the real root maps to the overflow uid in here (K13)
    auto who = call_once(s.path(), 0, "x", co);
    if (who.ec) return outcome(who.ec);
    if (who.uid != kAlice) return kOther + 12;
    return outcome(call_once(s.path(), 3, "x", co).ec);  // rootOnly
  });
  EXPECT_EQ(rc, kRpcBase + static_cast<int>(StatusCode::permission_denied));
  EXPECT_TRUE(s.audit().has("call", false, kAlice, "Test.rootOnly"));
  EXPECT_FALSE(s.audit().has("call", true, 0, "Test.rootOnly"));
}

// K10: the peer connects and is reaped before we accept. SO_PEERCRED still names its
// (now free) pid; the pidfd must say it is gone.
TEST(PeerIdentity, PeerThatExitedBeforeAcceptIsSeenAsExitedThroughItsPidfd) {
  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Listener l = listen_private();
  const int before = count_fds();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const int fd = raw_connect(l.path());
    ::_exit(fd >= 0 ? 0 : 1);
  }
  int st;
  ::waitpid(child, &st, 0);
  ASSERT_EQ(WEXITSTATUS(st), 0);
  {
    UniqueFd conn(::accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(conn.valid());
    PeerCredentials pc = read_peer_credentials(conn.get());
    EXPECT_EQ(pc.uid, ::geteuid());
    EXPECT_EQ(pc.pid, child);
    if (pc.pidfd) {
      ASSERT_TRUE(pc.has_exited().has_value());
      EXPECT_TRUE(*pc.has_exited());
    }
  }
  EXPECT_EQ(count_fds(), before);
  ::close(lfd);
}

TEST(PeerIdentity, PeerThatExitsRightAfterConnectingLeavesNoLeakAndServerServes) {
  TestServer s(listen_private());
  const int rc = run_child([&] { return raw_connect(s.path()) >= 0 ? 0 : 1; });
  ASSERT_EQ(rc, 0);
  for (int i = 0; i < 200 && s.server().connection_count() != 0; ++i) ::usleep(10'000);
  EXPECT_EQ(s.server().connection_count(), 0u);
  EXPECT_FALSE(call_once(s.path(), 0).ec);
}
