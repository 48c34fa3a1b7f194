// Endpoints: private dirs, fixed paths and the path attacks of SECURITY.md P1-P7.
#include "sealrpc/endpoint.hpp"

#include "support/test_util.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

using namespace sealrpc;
namespace fs = std::filesystem;

namespace {

constexpr uid_t kOther = 4243;

class TempDir {
 public:
  explicit TempDir(mode_t mode = 0755) {
    char tmpl[] = "/tmp/sealrpc-ep-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), mode);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string path;
};

int errno_of(const std::function<void()>& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const EndpointError& e) {
    if (what) *what = e.what();
    return e.code().value();
  }
  return 0;
}

// A raw listening socket at `path` (not through our code), optionally left stale.
int raw_listener(const std::string& path, bool listen_too) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  if (listen_too) {
    EXPECT_EQ(::listen(fd, 4), 0);
  }
  return fd;
}

}  // namespace

TEST(PrivateEndpoint, DirectoryIs0700AndSocketIs0600AssertedWithLstat) {
  std::string path, dir;
  {
    Listener l = listen_private("sealrpc-test");
    path = l.path();
    dir = fs::path(path).parent_path();
    struct stat st {};
    ASSERT_EQ(::lstat(dir.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    EXPECT_EQ(st.st_uid, ::geteuid());
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_NE(fs::path(dir).filename().string(), "sealrpc-test-");  // random suffix
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(dir));  // shutdown removes exactly what it created
}

TEST(PrivateEndpoint, TwoEndpointsGetDifferentUnpredictableDirectories) {
  Listener a = listen_private(), b = listen_private();
  EXPECT_NE(a.path(), b.path());
}

TEST(FixedEndpoint, SymlinkAtSocketPathIsRefusedAndNotFollowedOrRemoved) {
  TempDir d, target;
  const std::string link = d.path + "/api.sock";
  ASSERT_EQ(::symlink((target.path + "/victim").c_str(), link.c_str()), 0);
  EXPECT_EQ(errno_of([&] { listen_at(link); }), ELOOP);
  struct stat st {};
  EXPECT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_FALSE(fs::exists(target.path + "/victim"));
}

TEST(FixedEndpoint, SymlinkedParentIsRefused) {
  TempDir real, holder;
  const std::string linkdir = holder.path + "/link";
  ASSERT_EQ(::symlink(real.path.c_str(), linkdir.c_str()), 0);
  std::string what;
  EXPECT_EQ(errno_of([&] { listen_at(linkdir + "/api.sock"); }, &what), ELOOP);
  EXPECT_NE(what.find("symlink"), std::string::npos) << what;
  EXPECT_TRUE(fs::is_empty(real.path));
}

TEST(FixedEndpoint, WorldWritableParentWithoutStickyIsRefused) {
  TempDir d(0777);
  std::string what;
  EXPECT_EQ(errno_of([&] { listen_at(d.path + "/api.sock"); }, &what), EPERM);
  EXPECT_NE(what.find("writable by others"), std::string::npos) << what;
  EXPECT_TRUE(fs::is_empty(d.path));
}

TEST(FixedEndpoint, StickyWorldWritableParentIsAccepted) {
  TempDir d(01777);
  Listener l = listen_at(d.path + "/api.sock");
  EXPECT_TRUE(fs::exists(d.path + "/api.sock"));
}

TEST(FixedEndpoint, ParentOwnedByAnotherUserIsRefused) {
  TempDir d(0755);
  ASSERT_EQ(::chown(d.path.c_str(), kOther, kOther), 0);
  EXPECT_EQ(errno_of([&] { listen_at(d.path + "/api.sock"); }), EPERM);
}

TEST(FixedEndpoint, PreExistingRegularFileIsRefusedAndKept) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  { std::FILE* f = std::fopen(p.c_str(), "w"); std::fputs("keep me", f); std::fclose(f); }
  EXPECT_EQ(errno_of([&] { listen_at(p); }), EEXIST);
  EXPECT_TRUE(fs::is_regular_file(p));
  EXPECT_EQ(fs::file_size(p), 7u);
}

TEST(FixedEndpoint, LiveServerOnThePathMakesTheNewOneFail) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  const int live = raw_listener(p, true);
  std::string what;
  EXPECT_EQ(errno_of([&] { listen_at(p); }, &what), EADDRINUSE);
  EXPECT_NE(what.find("already listening"), std::string::npos) << what;
  EXPECT_TRUE(fs::exists(p));
  ::close(live);
}

TEST(FixedEndpoint, SecondInstanceIsRefusedByTheLock) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  Listener first = listen_at(p);
  EXPECT_EQ(errno_of([&] { listen_at(p); }), EADDRINUSE);
  EXPECT_TRUE(fs::exists(p));
}

TEST(FixedEndpoint, StaleSocketIsReplaced) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  ::close(raw_listener(p, true));  // server died without cleaning up
  Listener l = listen_at(p);
  struct stat st {};
  ASSERT_EQ(::lstat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(testutil::raw_connect(p) >= 0, true);
}

TEST(FixedEndpoint, SocketOwnedByAnotherUserIsNotRemoved) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  ::close(raw_listener(p, true));
  ASSERT_EQ(::lchown(p.c_str(), kOther, kOther), 0);
  EXPECT_EQ(errno_of([&] { listen_at(p); }), EPERM);
  EXPECT_TRUE(fs::exists(p));
}

TEST(FixedEndpoint, PathTooLongIsAClearErrorNotTruncation) {
  TempDir d;
  const std::string p = d.path + "/" + std::string(120, 'a');
  std::string what;
  EXPECT_EQ(errno_of([&] { listen_at(p); }, &what), ENAMETOOLONG);
  EXPECT_NE(what.find("too long"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(d.path));
}

TEST(FixedEndpoint, ShutdownRemovesExactlyWhatItCreated) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  { std::FILE* f = std::fopen((d.path + "/other").c_str(), "w"); std::fclose(f); }
  {
    Listener l = listen_at(p);
    EXPECT_TRUE(fs::exists(p));
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".lock"));
  EXPECT_TRUE(fs::exists(d.path + "/other"));
}

TEST(FixedEndpoint, ShutdownDoesNotRemoveAReplacement) {
  TempDir d;
  const std::string p = d.path + "/api.sock";
  {
    Listener l = listen_at(p);
    ASSERT_EQ(::unlink(p.c_str()), 0);
    std::FILE* f = std::fopen(p.c_str(), "w");  // someone else's file now
    std::fclose(f);
  }
  EXPECT_TRUE(fs::is_regular_file(p));
}

TEST(AbstractEndpoint, RefusedUnlessExplicitlyEnabled) {
  EXPECT_EQ(errno_of([&] { listen_abstract("sealrpc-test-abstract"); }), EPERM);
  EndpointOptions o;
  o.allow_abstract = true;
  Listener l = listen_abstract("sealrpc-test-abstract-" + std::to_string(::getpid()), o);
  EXPECT_EQ(l.path()[0], '@');
  // A squatter (here: ourselves) makes the next bind a hard error.
  EXPECT_EQ(errno_of([&] { listen_abstract("sealrpc-test-abstract-" + std::to_string(::getpid()), o); }), EADDRINUSE);
}

TEST(EndpointPermissions, OtherUserIsRefusedBy0600PermissionsEvenInAnOpenDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a real other-uid process";
  TempDir d(0755);
  Listener l = listen_at(d.path + "/api.sock");
  const int rc = testutil::run_as({kOther, kOther, {}}, [&] {
    const int fd = testutil::raw_connect(l.path());
    return fd >= 0 ? 0 : testutil::kErrnoBase + errno;
  });
  EXPECT_EQ(rc, testutil::kErrnoBase + EACCES);
}

// P1: a non-root client hammering connect() while the server starts (1000 restarts)
// never gets in, even with a permissive umask in force.
TEST(EndpointPermissions, HammeringConnectWhileTheServerStartsNeverGetsIn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a real other-uid process";
  TempDir d(0755);
  const std::string p = d.path + "/api.sock";
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipefd[1]);
    if (::setgroups(0, nullptr) || ::setresgid(kOther, kOther, kOther) || ::setresuid(kOther, kOther, kOther)) ::_exit(100);
    ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    int successes = 0;
    char c;
    while (::read(pipefd[0], &c, 1) != 0) {  // until the parent closes the pipe
      const int fd = testutil::raw_connect(p);
      if (fd >= 0) { ++successes; ::close(fd); }
    }
    ::_exit(successes > 0 ? 1 : 0);
  }
  ::close(pipefd[0]);
  const mode_t old = ::umask(0);  // a naive bind would now create a 0777 socket
  for (int i = 0; i < 1000; ++i) {
    Listener l = listen_at(p);
  }
  ::umask(old);
  ::close(pipefd[1]);
  int st = 0;
  ::waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "another uid connected during startup";
}
