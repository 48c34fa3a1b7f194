// Resource limits (SECURITY.md D1, D3, D5, R8, F5): fd exhaustion in the accept loop,
// the per-uid and total connection caps, the in-flight calls cap per connection, the
// outbound byte cap and the per-peer cap on fds passed but not read. Real sockets, real
// processes; no timing thresholds: conditions are polled with a generous overall timeout.
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "buffers/buffer_service.hpp"
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"
#include "transport/capnp_codec.hpp"
#include "transport/frame.hpp"
#include "transport/limits.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>

using namespace sealrpc;
using namespace testutil;
using testsvc::EchoParams;
using testsvc::EchoResults;
namespace asio = boost::asio;

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

constexpr uid_t kAlice = 4243;  // may call Test.echo (by uid)
constexpr uid_t kBob = 4244;
constexpr uid_t kCarol = 4245;

// Runs fn in a child process as `uid` (run_as), or without changing credentials when
// `uid` is ours.
int as_uid(uid_t uid, const std::function<int()>& fn) {
  return uid == ::geteuid() ? run_child(fn) : run_as({uid, uid, {}}, fn);
}

int recv_fd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  if (::recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1) return -1;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) return -1;
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

// A raw connection made by a process running as `uid` and handed back to us with
// SCM_RIGHTS: the kernel recorded that uid at connect (SO_PEERCRED), so the server
// counts this connection against `uid` while this process holds it. -1 on failure.
int connect_as(const std::string& path, uid_t uid) {
  if (uid == ::geteuid()) return raw_connect(path);
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) return -1;
  const int rc = run_as({uid, uid, {}}, [&] {
    const int fd = raw_connect(path);
    if (fd < 0) return static_cast<int>(kOther);
    return send_with_fds(sp[1], {std::byte{1}}, {fd}) ? static_cast<int>(kOk) : static_cast<int>(kOther);
  });
  ::close(sp[1]);
  const int fd = rc == kOk ? recv_fd(sp[0]) : -1;
  ::close(sp[0]);
  return fd;
}

// One long-lived, well-behaved Client connection on its own io_context thread. Calls
// are started on that thread and return futures; cancel() emits a call's signal there.
class ClientThread {
 public:
  explicit ClientThread(const std::string& path, ClientOptions opts = {}) {
    auto connected = std::make_shared<std::promise<boost::system::error_code>>();
    auto f = connected->get_future();
    Client::async_connect(io_.get_executor(), path, std::move(opts), [this, connected](boost::system::error_code ec, Client c) {
      client_ = std::move(c);
      connected->set_value(ec);
    });
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(io_);
      io_.run();
    });
    connect_ec = f.get();
  }
  ~ClientThread() {
    auto closed = std::make_shared<std::promise<void>>();
    auto f = closed->get_future();
    asio::post(io_, [this, closed] {
      client_.close();
      closed->set_value();
    });
    f.wait();
    io_.stop();
    thread_.join();
  }

  // Test.<ordinal>(data, delayMs); `cancel`, if given, must outlive the call.
  std::future<CallResult> call(std::uint16_t ordinal, std::string data, std::uint32_t delay_ms = 0,
                               asio::cancellation_signal* cancel = nullptr) {
    auto p = std::make_shared<std::promise<CallResult>>();
    auto f = p->get_future();
    asio::post(io_, [this, p, ordinal, data = std::move(data), delay_ms, cancel] {
      Request<EchoParams> req;
      req.params().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
      req.params().setDelayMs(delay_ms);
      auto done = [p](boost::system::error_code ec, Response<EchoResults> r) {
        CallResult res;
        res.ec = ec;
        res.message = r.status().message;
        if (!ec) {
          auto v = r.get();
          res.data.assign(reinterpret_cast<const char*>(v.getData().begin()), v.getData().size());
          res.uid = v.getUid();
        }
        p->set_value(std::move(res));
      };
      const MethodId id{testsvc::kTestInterface, ordinal};
      if (cancel) client_.async_call<EchoResults>(id, std::move(req), asio::bind_cancellation_slot(cancel->slot(), std::move(done)));
      else client_.async_call<EchoResults>(id, std::move(req), std::move(done));
    });
    return f;
  }
  void cancel(asio::cancellation_signal& s) {
    asio::post(io_, [&s] { s.emit(asio::cancellation_type::terminal); });
  }
  bool is_open() const { return client_.is_open(); }

  boost::system::error_code connect_ec;

 private:
  asio::io_context io_;
  Client client_;
  std::thread thread_;
};

// Waits for a call's result; a call that never completes is reported, not hung on.
CallResult get(std::future<CallResult> f) {
  if (f.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "call did not complete";
    return {.ec = make_error_code(ClientError::connection_closed), .message = "hung"};
  }
  return f.get();
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

// SECURITY.md D1 (connection flood): the server-wide cap. Three slots are held by three
// different uids, so no uid is anywhere near the per-uid cap (4096): a fourth peer, of a
// uid holding no connection at all, is refused only because of the total. The refusal is
// a clear REFUSED frame (ClientError::refused_by_server for a Client) and an audit
// record; refused attempts take no slot; closing a held connection frees its slot.
// Without the check in on_accept the fourth connection would be served.
TEST(Limits, TotalConnectionCapRefusesAnyUidAndFreesTheSlotOnClose) {
  const uid_t self = ::geteuid();
  const bool root = self == 0;  // as root, real other-uid processes hold the slots
  const std::vector<uid_t> holders = root ? std::vector<uid_t>{self, kBob, kCarol} : std::vector<uid_t>{self, self, self};
  const uid_t newcomer = root ? kAlice : self;  // holds no connection when refused
  ServerOptions o;
  o.max_connections = 3;
  ASSERT_GT(o.max_connections_per_uid, 3u);
  o.allow = AccessRuleSpec{.uids = {kAlice, kBob, kCarol}, .same_user = true};
  EndpointOptions e;
  if (root) e.acl_users = {kAlice, kBob, kCarol};
  TestServer s(listen_private("sealrpc", e), o);
  const auto count_is = [&](std::size_t n) { return wait_until([&] { return s.server().connection_count() == n; }); };

  std::vector<int> held;
  for (uid_t u : holders) {
    held.push_back(connect_as(s.path(), u));
    ASSERT_GE(held.back(), 0) << "uid " << u;
  }
  ASSERT_TRUE(count_is(3));

  // A Client of a uid with no connection is refused with a clear error.
  EXPECT_EQ(as_uid(newcomer, [&] { return outcome(call_once(s.path(), 0).ec); }),
            kClientBase + static_cast<int>(ClientError::refused_by_server));
  // A raw peer sees the REFUSED frame and its reason, then EOF; repeated attempts take
  // no slot.
  for (int i = 0; i < 10; ++i) {
    const int extra = raw_connect(s.path());
    ASSERT_GE(extra, 0);
    auto [type, reason] = read_reply(extra);
    const bool refused = type == static_cast<int>(wire::FrameType::refused);
    EXPECT_TRUE(refused) << "attempt " << i << ": frame type " << type;
    EXPECT_NE(reason.find("too many connections"), std::string::npos) << reason;
    if (refused) {
      EXPECT_EQ(read_reply(extra).first, 0) << "refused connection not closed";
    }
    ::close(extra);
    if (!refused) break;
  }
  EXPECT_EQ(s.server().connection_count(), 3u);
  // The audit log names the total cap, not the per-uid one, for the newcomer's uid.
  bool total = false, per_uid = false;
  for (const auto& r : s.audit().records()) {
    if (r.event != "connect" || r.allowed) continue;
    total = total || (r.uid == newcomer && r.reason == "server connection limit reached");
    per_uid = per_uid || r.reason == "per-uid connection limit reached";
  }
  EXPECT_TRUE(total) << "no audit record of the total-cap refusal";
  EXPECT_FALSE(per_uid);

  // Closing one held connection frees its slot: the newcomer is served.
  ::close(held[1]);
  held.erase(held.begin() + 1);
  ASSERT_TRUE(count_is(2));
  EXPECT_EQ(as_uid(newcomer, [&] {
              auto r = call_once(s.path(), 0, "after");
              return r.ec ? outcome(r.ec) : (r.data == "after" ? static_cast<int>(kOk) : static_cast<int>(kOther));
            }),
            kOk);
  EXPECT_TRUE(s.audit().has("connect", true, newcomer));
  // The freed slot is counted exactly once: taking it again makes the cap bite again.
  ASSERT_TRUE(count_is(2));
  held.push_back(connect_as(s.path(), newcomer));
  ASSERT_GE(held.back(), 0);
  ASSERT_TRUE(count_is(3));
  const int extra = raw_connect(s.path());
  EXPECT_EQ(read_reply(extra).first, static_cast<int>(wire::FrameType::refused));
  ::close(extra);
  for (int fd : held) ::close(fd);
  EXPECT_TRUE(count_is(0));
}

// SECURITY.md D5 (task exhaustion through many concurrent long calls), per connection:
// with max_inflight_per_connection = 4, four Test.sleep calls that only end when
// cancelled hold every slot; the fifth call on that connection is answered
// RESOURCE_EXHAUSTED "too many calls in flight" without running its handler, while the
// connection stays up and another connection is served. Each finished call frees its
// slot. Without the check in Connection::on_request the fifth call would run.
TEST(Limits, InflightCapPerConnectionAnswersResourceExhaustedAndFreesSlots) {
  constexpr int kCap = 4;
  ServerOptions o;
  o.max_inflight_per_connection = kCap;
  TestServer s(listen_private(), o);
  auto& svc = static_cast<testsvc::TestService&>(*s.service);
  ClientOptions co;
  co.default_timeout = std::chrono::minutes(30);  // held calls end by cancellation only
  ClientThread c(s.path(), co);
  ASSERT_FALSE(c.connect_ec) << c.connect_ec.message();
  constexpr std::uint32_t kForever = 20 * 60 * 1000;  // ms; far beyond the test

  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
  std::vector<std::future<CallResult>> held;
  const auto hold = [&] {
    signals.push_back(std::make_unique<asio::cancellation_signal>());
    held.push_back(c.call(1, "held", kForever, signals.back().get()));
  };
  for (int i = 0; i < kCap; ++i) hold();
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == kCap; }));

  // Over the cap: refused with a clear status; the handler never runs.
  auto over = get(c.call(0, "over"));
  EXPECT_EQ(over.ec, make_error_code(StatusCode::resource_exhausted)) << over.ec.message();
  EXPECT_EQ(over.message, "too many calls in flight");
  auto over_sleep = get(c.call(1, "over", 1));
  EXPECT_EQ(over_sleep.ec, make_error_code(StatusCode::resource_exhausted)) << over_sleep.ec.message();
  EXPECT_EQ(svc.calls_started.load(), kCap);
  // Audited as refused calls, with the reason, never as allowed ones.
  int refused = 0;
  for (const auto& r : s.audit().records()) refused += r.event == "call" && !r.allowed && r.reason == "too many calls in flight";
  EXPECT_EQ(refused, 2);
  const auto allowed_calls = [&] {
    int n = 0;
    for (const auto& r : s.audit().records()) n += r.event == "call" && r.allowed;
    return n;
  };
  EXPECT_EQ(allowed_calls(), kCap) << "a refused call was audited as allowed";
  // The connection survives and the held calls are still running; another connection
  // is not limited by this one's calls.
  EXPECT_TRUE(c.is_open());
  for (auto& f : held) EXPECT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  auto other = call_once(s.path(), 0, "other");
  EXPECT_FALSE(other.ec) << other.ec.message();
  EXPECT_EQ(other.data, "other");

  // One held call ends (the client cancels it: CANCEL reaches the server before the next
  // request on the same stream): its slot is free for the next call.
  c.cancel(*signals[0]);
  EXPECT_EQ(get(std::move(held[0])).ec, make_error_code(StatusCode::cancelled));
  auto after_one = get(c.call(0, "after one"));
  EXPECT_FALSE(after_one.ec) << after_one.ec.message();
  EXPECT_EQ(after_one.data, "after one");
  // Filling that slot again makes the cap bite again: the count is exact.
  hold();
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == kCap + 1; }));
  EXPECT_EQ(get(c.call(0, "over again")).ec, make_error_code(StatusCode::resource_exhausted));

  // All held calls end; then as many calls as the cap allows run at once again.
  for (std::size_t i = 1; i < held.size(); ++i) {
    c.cancel(*signals[i]);
    EXPECT_EQ(get(std::move(held[i])).ec, make_error_code(StatusCode::cancelled));
  }
  ASSERT_TRUE(wait_until([&] { return svc.cancellations_seen.load() == kCap + 1; }));  // handlers ended
  std::vector<std::future<CallResult>> burst;
  for (int i = 0; i < kCap; ++i) burst.push_back(c.call(1, std::to_string(i), 1));
  for (int i = 0; i < kCap; ++i) {
    auto r = get(std::move(burst[static_cast<std::size_t>(i)]));
    EXPECT_FALSE(r.ec) << i << ": " << r.ec.message();
  }
  auto last = get(c.call(0, "last"));
  EXPECT_FALSE(last.ec) << last.ec.message();
  EXPECT_TRUE(c.is_open());
}

namespace {

// Peak resident set of this process (the in-process server included), in bytes; reset
// with reset_peak_rss() (clear_refs "5", Linux >= 4.0).
std::size_t peak_rss() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

enum class Sent { all, dropped, stalled };

// Writes all of `b` to the non-reading peer's socket, waiting for room.
// What a peer that never read finds in its receive queue once it is dropped: response
// frames, how many carried the out-of-line flag or a non-OK status, and every fd that
// came with them (received with recvmsg, counted and closed), then EOF or a reset.
struct Unread {
  std::uint32_t replies = 0, out_of_line = 0, not_ok = 0, other_frames = 0, fds = 0;
  bool eof = false;
};
Unread read_unread(int fd) {
  Unread u;
  std::string buf;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10'000) <= 0) break;
    char tmp[64 * 1024];
    iovec iov{tmp, sizeof tmp};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * limits::kRecvControlFds)];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    for (cmsghdr* c = n >= 0 ? CMSG_FIRSTHDR(&m) : nullptr; c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
        int passed;
        std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
        ::close(passed);
        ++u.fds;
      }
    }
    if (n <= 0) {
      u.eof = n == 0 || errno == ECONNRESET;
      break;
    }
    buf.append(tmp, static_cast<std::size_t>(n));
    while (buf.size() >= limits::kHeaderBytes) {
      std::uint32_t len;
      std::memcpy(&len, buf.data() + 8, 4);
      if (buf.size() < limits::kHeaderBytes + len) break;
      const auto type = static_cast<wire::FrameType>(buf[5]);
      std::uint16_t status;
      std::memcpy(&status, buf.data() + 14, 2);
      if (type == wire::FrameType::response) {
        ++u.replies;
        if (status != 0) ++u.not_ok;
        if (static_cast<std::uint8_t>(buf[7]) & wire::kFlagOutOfLine) ++u.out_of_line;
      } else if (type != wire::FrameType::hello) {
        ++u.other_frames;
      }
      buf.erase(0, limits::kHeaderBytes + len);
    }
  }
  return u;
}

Sent send_all(int fd, const std::vector<std::byte>& b) {
  std::size_t off = 0;
  while (off < b.size()) {
    pollfd p{fd, POLLOUT, 0};
    const int n = ::poll(&p, 1, 60'000);
    if (n == 0) return Sent::stalled;  // the server neither reads nor drops us
    if (n < 0) continue;
    if (p.revents & (POLLHUP | POLLERR)) return Sent::dropped;
    const ssize_t w = ::send(fd, b.data() + off, b.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) return Sent::dropped;
      ADD_FAILURE() << "send: " << std::strerror(errno);
      return Sent::stalled;
    }
    off += static_cast<std::size_t>(w);
  }
  return Sent::all;
}

}  // namespace

// SECURITY.md D5 (many concurrent long calls): the per-uid cap on calls in progress,
// over all of a uid's connections (ServerOptions::max_inflight_per_uid). This process's
// uid holds the cap with slow calls on two connections; a call on either, or on a third
// connection, is refused RESOURCE_EXHAUSTED with the reason and audited as refused,
// while another uid (a real process, as root) is served. A cancelled call keeps its
// place until its handler has returned; then the place is free exactly once. Without
// the check every call below would run.
TEST(Limits, InflightCapPerUidSpansConnectionsAndFreesPlacesWhenHandlersReturn) {
  constexpr int kCap = 4;
  ServerOptions o;
  o.max_inflight_per_uid = kCap;
  ASSERT_GT(o.max_inflight_per_connection, static_cast<std::size_t>(kCap));
  o.allow = AccessRuleSpec{.uids = {kAlice}, .same_user = true};
  EndpointOptions e;
  const bool root = ::geteuid() == 0;
  if (root) e.acl_users = {kAlice};
  TestServer s(listen_private("sealrpc", e), o);
  auto& svc = static_cast<testsvc::TestService&>(*s.service);
  ClientOptions co;
  co.default_timeout = std::chrono::minutes(30);  // held calls end by cancellation only
  ClientThread a(s.path(), co), b(s.path(), co);
  ASSERT_FALSE(a.connect_ec) << a.connect_ec.message();
  ASSERT_FALSE(b.connect_ec) << b.connect_ec.message();
  constexpr std::uint32_t kForever = 20 * 60 * 1000;  // ms; far beyond the test

  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;
  std::vector<std::future<CallResult>> held;
  std::vector<ClientThread*> on;
  const auto hold = [&](ClientThread& c) {
    signals.push_back(std::make_unique<asio::cancellation_signal>());
    held.push_back(c.call(1, "held", kForever, signals.back().get()));
    on.push_back(&c);
  };
  hold(a);
  hold(a);
  hold(b);
  hold(b);
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == kCap; }));

  constexpr std::string_view kReason = "too many calls in flight for this uid";
  const auto refused = [&](CallResult r) {
    EXPECT_EQ(r.ec, make_error_code(StatusCode::resource_exhausted)) << r.ec.message();
    EXPECT_EQ(r.message, kReason);
  };
  refused(get(a.call(0, "over")));
  refused(get(b.call(0, "over")));
  refused(call_once(s.path(), 0, "over"));  // a third connection of the same uid
  EXPECT_EQ(svc.calls_started.load(), kCap);
  int audited = 0;
  for (const auto& r : s.audit().records()) audited += r.event == "call" && !r.allowed && r.reason == kReason;
  EXPECT_EQ(audited, 3);
  // Another uid is not limited by this one's calls.
  if (root) {
    EXPECT_EQ(as_uid(kAlice, [&] {
                auto r = call_once(s.path(), 0, "canary");
                return r.ec ? outcome(r.ec) : (r.data == "canary" ? static_cast<int>(kOk) : static_cast<int>(kOther));
              }),
              kOk);
  }
  EXPECT_TRUE(a.is_open());
  EXPECT_TRUE(b.is_open());

  // One held call is cancelled; once its handler has returned, its place is free.
  on[0]->cancel(*signals[0]);
  EXPECT_EQ(get(std::move(held[0])).ec, make_error_code(StatusCode::cancelled));
  ASSERT_TRUE(wait_until([&] { return svc.cancellations_seen.load() == 1; }));
  ASSERT_TRUE(wait_until([&] { return !get(b.call(0, "probe")).ec; }));  // the runner let go of the Call
  // Exactly one place: taking it again makes the cap bite again.
  hold(b);
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == kCap + 1; }));
  refused(get(a.call(0, "over again")));

  // All held calls end; then kCap calls run at once again, over both connections.
  for (std::size_t i = 1; i < held.size(); ++i) {
    on[i]->cancel(*signals[i]);
    EXPECT_EQ(get(std::move(held[i])).ec, make_error_code(StatusCode::cancelled));
  }
  ASSERT_TRUE(wait_until([&] { return svc.cancellations_seen.load() == kCap + 1; }));
  ASSERT_TRUE(wait_until([&] { return !get(a.call(0, "probe")).ec; }));
  std::vector<std::future<CallResult>> burst;
  for (int i = 0; i < kCap; ++i) burst.push_back((i % 2 ? a : b).call(1, std::to_string(i), 50));
  for (auto& f : burst) {
    auto r = get(std::move(f));
    EXPECT_FALSE(r.ec) << r.ec.message();
  }
}

// SECURITY.md R8 (pipelining without reading replies) and D3 (a slow reader): a raw
// client pipelines thousands of Test.echo calls whose 48 KiB replies go inline, and
// never reads a byte. The replies the server cannot send queue in user space up to
// kMaxOutboundBytes (32 MiB); the next one makes FrameChannel::send fail and the server
// drops that connection: the client sees the hang-up while it still has not read, the
// server unregisters it, and whatever the client reads afterwards is a small prefix of
// the replies (the rest was discarded, not kept). A well-behaved Client on its own
// connection is served throughout. Without the cap the server would read every request
// and queue every reply (~140 MiB here) and never drop the peer: the hang-up assertion
// fails, and in builds without ASan the peak RSS assertion does too.
TEST(Limits, OutboundByteCapDropsAPeerThatNeverReadsItsReplies) {
  TestServer s(listen_private());
  ClientThread canary(s.path());
  ASSERT_FALSE(canary.connect_ec) << canary.connect_ec.message();
  const auto canary_ok = [&](const std::string& tag) {
    auto r = get(canary.call(0, tag));
    EXPECT_FALSE(r.ec) << tag << ": " << r.ec.message();
    EXPECT_EQ(r.data, tag);
  };
  canary_ok("before");
  ASSERT_TRUE(wait_until([&] { return s.server().connection_count() == 1; }));
  const int fds_before = count_fds();

  // One echo request; its reply (the data plus the caller's identity) stays under the
  // 64 KiB out-of-line threshold, so it travels inline in the connection's queue.
  constexpr std::size_t kData = 48 * 1024;
  static_assert(kData + 1024 < limits::kDefaultOutOfLineThreshold);
  capnp::MallocMessageBuilder m;
  auto params = m.initRoot<EchoParams>();
  params.initData(kData);
  for (std::size_t i = 0; i < kData; ++i) params.getData()[i] = static_cast<kj::byte>(i * 131);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  // Far more reply bytes than the cap plus any kernel socket buffer.
  constexpr std::uint32_t kRequests = 3000;
  static_assert(std::uint64_t{kRequests} * kData > 4 * std::uint64_t{limits::kMaxOutboundBytes});

  const bool measure_rss = reset_peak_rss();
  const std::size_t rss_before = peak_rss();

  const int fd = raw_connect(s.path());  // never reads, not even HELLO
  ASSERT_GE(fd, 0);
  std::uint32_t sent = 0;
  Sent state = Sent::all;
  for (std::uint32_t i = 1; i <= kRequests && state == Sent::all; ++i) {
    wire::FrameHeader h;
    h.type = wire::FrameType::request;
    h.request_id = i;
    h.interface_id = testsvc::kTestInterface;
    h.ordinal = 0;
    std::vector<std::byte> frame;
    wire::append_frame(frame, h, payload);
    state = send_all(fd, frame);
    if (state == Sent::all) sent = i;
    if (i % 500 == 0) canary_ok(std::to_string(i));
  }
  ASSERT_NE(state, Sent::stalled) << "the server stopped reading without dropping the peer";

  // The server hangs up on us while we still have not read anything. POLLIN is not
  // asked for: unread replies do not count, only the hang-up (or a reset) does.
  bool dropped = state == Sent::dropped;
  for (int i = 0; i < 30 && !dropped; ++i) {
    pollfd p{fd, POLLRDHUP, 0};
    dropped = ::poll(&p, 1, 1000) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
  }
  EXPECT_TRUE(dropped) << "a peer that never reads was not dropped after " << sent << " requests";
  // The drop came from the byte cap: not before the server had produced a cap's worth
  // of replies (each at most kData + 1 KiB), so not for some other reason.
  EXPECT_GE(sent, limits::kMaxOutboundBytes / (kData + 1024)) << "dropped too early";
  // The server let go of the connection although our end is still open.
  if (dropped) {
    EXPECT_TRUE(wait_until([&] { return s.server().connection_count() == 1; })) << s.server().connection_count();
  }
  const std::size_t rss_peak = peak_rss();

  // What we can still read is a prefix of OK replies (what the kernel held), then EOF
  // or a reset: the queued rest was discarded, and no GOODBYE (it was not a protocol
  // error).
  const Unread u = read_unread(fd);
  EXPECT_TRUE(u.eof) << "no EOF/ECONNRESET after " << u.replies << " replies";
  EXPECT_LT(u.replies, sent) << "every reply was delivered: nothing was dropped";
  EXPECT_EQ(u.not_ok, 0u);
  EXPECT_EQ(u.other_frames, 0u);
  ::close(fd);

  // Bounded memory: the queue stopped at the cap (measured: about cap + 24 MiB; without
  // the cap about 170 MiB). Only without ASan, whose quarantine keeps every freed
  // request buffer resident.
#if !defined(__SANITIZE_ADDRESS__)
  if (measure_rss && rss_before > 0) {
    EXPECT_LT(rss_peak - rss_before, 3 * limits::kMaxOutboundBytes)
        << "peak RSS grew by " << (rss_peak - rss_before) / 1024 << " KiB";
  }
#else
  (void)measure_rss;
  (void)rss_peak;
#endif

  // The well-behaved client was never affected and is still served; nothing leaked.
  canary_ok("after");
  EXPECT_TRUE(canary.is_open());
  EXPECT_EQ(s.server().connection_count(), 1u);
  EXPECT_TRUE(wait_until([&] { return count_fds() == fds_before; })) << count_fds() << " vs " << fds_before;
  std::printf("[ info ] sent %u requests before the drop; read %u replies after it; peak RSS +%zu KiB\n", sent, u.replies,
              (rss_peak - rss_before) / 1024);
}

namespace {

// One request frame (framing v1, inline) carrying the capnp message `m`.
std::vector<std::byte> request_frame(std::uint64_t iface, std::uint16_t ordinal, std::uint32_t rid,
                                     const std::vector<std::byte>& payload) {
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.request_id = rid;
  h.interface_id = iface;
  h.ordinal = ordinal;
  std::vector<std::byte> frame;
  wire::append_frame(frame, h, payload);
  return frame;
}

// True once the server hung up on `fd` (or reset it); unread data does not count.
bool hung_up(int fd, Sent state) {
  bool dropped = state == Sent::dropped;
  for (int i = 0; i < 30 && !dropped; ++i) {
    pollfd p{fd, POLLRDHUP, 0};
    dropped = ::poll(&p, 1, 1000) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
  }
  return dropped;
}


}  // namespace

// SECURITY.md R8 (pipelining without reading replies) for *out-of-line* replies, and D3:
// a raw client pipelines Test.echo calls with 100 KiB of data, so every reply leaves the
// frame (a 16-byte descriptor plus one sealed memfd fd), and never reads. Such replies
// add almost nothing to the outbound byte cap; what bounds them is the per-peer cap on
// fds waiting in the server's send queue once the peer's socket buffer is full
// (kMaxFdsInFlightPerPeer = 256; the socket buffer bounds the fds already sent). Shown: the server drops that peer after about that many
// replies (well before the 3000 requests the client would send), the server's fd count
// (this process: TestServer is in-process) stays within baseline + 2 * cap while the
// peer floods and returns to the baseline after it, what the peer finds unread is at
// most a cap's worth of out-of-line replies, and a well-behaved Client is served (small
// and out-of-line replies) throughout and after. Without the cap (no fd check on the
// queue) the server reads every request and queues every reply with its memfd: the
// peer is never dropped and the server holds one fd per unread reply (thousands).
TEST(Limits, OutOfLineRepliesCountTowardTheOutboundCaps) {
  TestServer s(listen_private());
  ClientThread canary(s.path());
  ASSERT_FALSE(canary.connect_ec) << canary.connect_ec.message();
  const std::string big(100 * 1024, 'b');  // its echo reply goes out of line
  static_assert(100 * 1024 > limits::kDefaultOutOfLineThreshold);
  const auto canary_ok = [&](const std::string& tag) {
    auto r = get(canary.call(0, tag));
    EXPECT_FALSE(r.ec) << tag << ": " << r.ec.message();
    EXPECT_EQ(r.data, tag);
    auto b = get(canary.call(0, big));
    EXPECT_FALSE(b.ec) << tag << " (out of line): " << b.ec.message();
    EXPECT_TRUE(b.data == big) << tag << ": out-of-line reply differs";
  };
  canary_ok("before");
  ASSERT_FALSE(get(canary.call(0, "baseline")).ec);  // the out-of-line reply's fds are gone by now
  ASSERT_TRUE(wait_until([&] { return s.server().connection_count() == 1; }));
  const int fds_before = count_fds();

  capnp::MallocMessageBuilder m;
  auto params = m.initRoot<EchoParams>();
  params.initData(big.size());
  for (std::size_t i = 0; i < big.size(); ++i) params.getData()[i] = static_cast<kj::byte>(i * 131);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  constexpr std::uint32_t kRequests = 3000;
  // One fd per reply: far more fds than the cap; and too few reply bytes for the byte
  // cap to fire (each reply frame is a header and a 16-byte descriptor).
  static_assert(kRequests > 10 * limits::kMaxFdsInFlightPerPeer);
  static_assert(kRequests * (limits::kHeaderBytes + 64) < limits::kMaxOutboundBytes);

  const int fd = raw_connect(s.path());  // never reads
  ASSERT_GE(fd, 0);
  std::uint32_t sent = 0;
  int fds_peak = count_fds();
  Sent state = Sent::all;
  for (std::uint32_t i = 1; i <= kRequests && state == Sent::all; ++i) {
    state = send_all(fd, request_frame(testsvc::kTestInterface, 0, i, payload));
    if (state == Sent::all) sent = i;
    fds_peak = std::max(fds_peak, count_fds());
    if (i % 100 == 0) canary_ok(std::to_string(i));
  }
  ASSERT_NE(state, Sent::stalled) << "the server stopped reading without dropping the peer";
  const bool dropped = hung_up(fd, state);
  fds_peak = std::max(fds_peak, count_fds());
  EXPECT_TRUE(dropped) << "a peer that never reads its out-of-line replies was not dropped after " << sent
                       << " requests";
  // Dropped by the fd cap: not before a cap's worth of replies, long before all 3000.
  EXPECT_GE(sent, limits::kMaxFdsInFlightPerPeer) << "dropped too early";
  EXPECT_LT(sent, kRequests);
  // The server's fds stayed bounded: at most a cap's worth queued, plus slack for the
  // call in progress, the canary's calls and this peer's socket (not one per reply).
  EXPECT_LT(fds_peak, fds_before + 2 * static_cast<int>(limits::kMaxFdsInFlightPerPeer))
      << "the server held " << fds_peak - fds_before << " more fds while the peer did not read";
  if (dropped) {
    EXPECT_TRUE(wait_until([&] { return s.server().connection_count() == 1; })) << s.server().connection_count();
  }

  // What is left unread is what the peer's socket buffer held (one fd per OK reply;
  // the socket buffer bounds it: 277 with Linux's default 208 KiB); the server's own
  // queue, at most the cap, was discarded with the connection.
  const Unread u = read_unread(fd);
  ::close(fd);
  EXPECT_TRUE(u.eof) << "no EOF/ECONNRESET after " << u.replies << " replies";
  EXPECT_LE(u.fds, 2 * limits::kMaxFdsInFlightPerPeer);
  EXPECT_EQ(u.fds, u.replies);
  EXPECT_EQ(u.out_of_line, u.replies);
  EXPECT_LT(u.replies, sent);
  EXPECT_EQ(u.not_ok, 0u);
  EXPECT_EQ(u.other_frames, 0u);

  canary_ok("after");
  EXPECT_TRUE(canary.is_open());
  EXPECT_EQ(s.server().connection_count(), 1u);
  EXPECT_TRUE(wait_until([&] { return count_fds() == fds_before; })) << count_fds() << " vs " << fds_before;
  std::printf("[ info ] sent %u requests before the drop; server fds peaked at baseline + %d; %u replies (%u fds) "
              "left unread\n",
              sent, fds_peak - fds_before, u.replies, u.fds);
}

namespace {

// A canary in its own process (another uid when we are root): on each command byte
// (a seed) it calls Buffers.make for an immutable and an owner-revocable buffer and
// Buffers.reuse, takes each ReceivedBuffer and checks its size and contents; it answers
// 1 when all was right, 0 otherwise (after a fence call, see round()). Command 0 ends it.
class BufferCanary {
 public:
  // Forks at once and does not wait. Make it before the test starts a server: with
  // GCC 12's ASan, a fork while another thread allocates can leave the child with a
  // locked allocator (seen: the canary hung in its first malloc), so the child is made
  // while this process has no other thread. It drops to `uid` as run_as() does, then
  // waits for connect().
  explicit BufferCanary(uid_t uid) {
    if (::pipe2(cmd_, O_CLOEXEC) != 0 || ::pipe2(res_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      int rc = kOther;
      try {
        rc = child(uid);
      } catch (...) {
      }
      ::_exit(rc);
    }
    ::close(cmd_[0]);
    ::close(res_[1]);
    cmd_[0] = res_[1] = -1;
  }
  ~BufferCanary() {
    if (pid_ > 0) (void)finish();
  }
  // The canary connects to `path` (its own Client connection); true once connected.
  bool connect(const std::string& path) {
    const std::uint16_t n = static_cast<std::uint16_t>(path.size());
    if (::write(cmd_[1], &n, sizeof n) != sizeof n || ::write(cmd_[1], path.data(), n) != n) return false;
    return answer();
  }
  // One round in the canary process; false if any buffer was missing or wrong (or the
  // canary did not answer within a minute: a hang guard, not a timing assertion).
  bool check(std::uint8_t seed) {
    if (seed == 0) seed = 1;
    return ::write(cmd_[1], &seed, 1) == 1 && answer();
  }
  // Ends the canary; its exit code (kOk when it ran to the end).
  int finish() {
    const std::uint8_t quit = 0;
    (void)!::write(cmd_[1], &quit, 1);
    ::close(cmd_[1]);  // EOF for a canary that missed the quit byte
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    ::close(res_[0]);
    cmd_[1] = res_[0] = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

  static constexpr std::size_t kSize = 64 * 1024;

 private:
  bool answer() {
    pollfd p{res_[0], POLLIN, 0};
    std::uint8_t ok = 0;
    return ::poll(&p, 1, 60'000) == 1 && ::read(res_[0], &ok, 1) == 1 && ok == 1;
  }
  int child(uid_t uid) {
    ::close(cmd_[1]);
    ::close(res_[0]);
    if (uid != ::geteuid()) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) return kOther + 1;
      if (::geteuid() != uid || ::getuid() != uid) return kOther + 2;
    }
    std::uint16_t n = 0;
    if (::read(cmd_[0], &n, sizeof n) != sizeof n) return kOther + 3;
    std::string path(n, '\0');
    if (::read(cmd_[0], path.data(), n) != n) return kOther + 3;
    buftest::SyncClient c(path);
    const std::uint8_t connected = c.connect_error() ? 0 : 1;
    if (::write(res_[1], &connected, 1) != 1 || !connected) return kOther + 4;
    for (;;) {
      std::uint8_t seed;
      if (::read(cmd_[0], &seed, 1) != 1) return kOther + 5;
      if (seed == 0) return kOk;
      const std::uint8_t ok = round(c, seed) ? 1 : 0;
      if (::write(res_[1], &ok, 1) != 1) return kOther + 6;
    }
  }
  static bool take_and_check(buftest::SyncClient& c, std::uint16_t ordinal, std::uint8_t seed, testsvc::BufKind kind) {
    Request<testsvc::BlobParams> req;
    req.params().setSize(kSize);
    req.params().setSeed(seed);
    req.params().setKind(kind);
    auto [ec, resp] = c.call<testsvc::BlobResults>(buftest::kBufferInterface, ordinal, std::move(req));
    if (ec) {
      std::fprintf(stderr, "canary: call %u failed: %s\n", ordinal, ec.message().c_str());
      return false;
    }
    try {
      ReceivedBuffer b = resp.buffer(resp.get().getBlob());
      const bool good = b.size() == kSize && buftest::matches(b.data(), seed);
      if (!good) std::fprintf(stderr, "canary: buffer of call %u is wrong\n", ordinal);
      return good;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "canary: no buffer from call %u: %s\n", ordinal, e.what());
      return false;
    }
  }
  static bool round(buftest::SyncClient& c, std::uint8_t seed) {
    const bool a = take_and_check(c, 1, seed, testsvc::BufKind::IMMUTABLE);
    const bool b = take_and_check(c, 1, static_cast<std::uint8_t>(seed + 1), testsvc::BufKind::OWNER_REVOCABLE);
    const bool r = take_and_check(c, 2, static_cast<std::uint8_t>(seed + 2), testsvc::BufKind::OWNER_REVOCABLE);
    // A fence: the releases of the buffers above went out before this request, so once
    // its answer (sum of no buffer: INVALID_ARGUMENT) is back the server dropped their
    // leases and fds, and the parent counts fds at a quiet point.
    auto [ec, resp] = c.call<testsvc::BlobResults>(buftest::kBufferInterface, 0, Request<testsvc::BlobParams>());
    const bool fenced = ec == make_error_code(StatusCode::invalid_argument);
    if (!fenced) std::fprintf(stderr, "canary: fence call: %s\n", ec.message().c_str());
    return a && b && r && fenced;
  }

  int cmd_[2] = {-1, -1}, res_[2] = {-1, -1};
  pid_t pid_ = -1;
};

// connect_as() made ahead of time: forks at once (before the server, see BufferCanary),
// drops to `uid` in the child, which waits for a path, connects to it and hands the
// raw connection back over a socketpair; get() returns it (-1 on failure).
class PendingConnectAs {
 public:
  explicit PendingConnectAs(uid_t uid) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp_) != 0) throw std::runtime_error("socketpair");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::close(sp_[0]);
      if (uid != ::geteuid() &&
          (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0 ||
           ::geteuid() != uid || ::getuid() != uid))
        ::_exit(kOther + 1);
      char path[256];
      const ssize_t n = ::read(sp_[1], path, sizeof path - 1);
      if (n <= 0) ::_exit(kOther + 2);
      path[n] = '\0';
      const int fd = raw_connect(path);
      ::_exit(fd >= 0 && send_with_fds(sp_[1], {std::byte{1}}, {fd}) ? kOk : kOther + 3);
    }
    ::close(sp_[1]);
  }
  ~PendingConnectAs() {
    if (pid_ > 0) (void)get("");
  }
  int get(const std::string& path) {
    const bool asked = !path.empty() && path.size() < 256 &&
                       ::write(sp_[0], path.data(), path.size()) == static_cast<ssize_t>(path.size());
    const int fd = asked ? recv_fd(sp_[0]) : -1;
    ::close(sp_[0]);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return fd;
  }

 private:
  int sp_[2] = {-1, -1};
  pid_t pid_ = -1;
};

}  // namespace

// SECURITY.md F5 (in-flight fd accounting against the server, K23): a hostile peer (uid
// mallory when we are root) pipelines Buffers.make calls, each returning an
// owner-revocable buffer fd, and never reads. Unread fds are charged to the *server's*
// uid, so unbounded they would make every sendmsg with fds fail (ETOOMANYREFS) for every
// client of a non-root server, and each pins a memfd and a lease. Shown: the per-peer
// cap (kMaxFdsInFlightPerPeer) drops that peer after about a cap's worth of buffers; it
// finds at most a cap's worth of fds unread; a canary in another process (uid alice when
// root) keeps receiving correct buffers (make, both kinds, and reuse) every 32 hostile
// calls and after; and once the hostile peer is gone the server's fd count settles back
// to its baseline (leases wiped, queued buffers closed: no leak). Without the cap the
// peer is never dropped.
TEST(Limits, PeerHoardingFdsIsDroppedAndOthersStillGetBuffers) {
  const bool root = ::geteuid() == 0;
  const uid_t canary_uid = root ? kAlice : ::geteuid();
  const uid_t hostile_uid = root ? buftest::kMallory : ::geteuid();
  // Both forks first, while this process has no other thread (no server yet).
  BufferCanary canary(canary_uid);
  PendingConnectAs hostile(hostile_uid);
  auto svc = std::make_shared<buftest::BufferService>();
  ServerOptions o;
  o.allow = AccessRuleSpec{.uids = {kAlice, buftest::kMallory}, .same_user = true};
  EndpointOptions e;
  if (root) e.acl_users = {kAlice, buftest::kMallory};
  TestServer s(listen_private("sealrpc", e), o, {svc});

  ASSERT_TRUE(canary.connect(s.path()));
  ASSERT_TRUE(canary.check(1)) << "canary before";
  ASSERT_TRUE(wait_until([&] { return s.server().connection_count() == 1; }));
  // Less the connector's socket, which goes when it hands over the hostile connection.
  const int fds_before = count_fds() - 1;

  capnp::MallocMessageBuilder m;
  auto params = m.initRoot<testsvc::BlobParams>();
  params.setSize(4096);
  params.setSeed(77);
  params.setKind(testsvc::BufKind::OWNER_REVOCABLE);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  constexpr std::uint32_t kRequests = 3000;
  static_assert(kRequests > 10 * limits::kMaxFdsInFlightPerPeer);
  // Below the lease cap: the fd cap, not the lease cap, is what must stop this peer.
  static_assert(limits::kMaxFdsInFlightPerPeer < limits::kMaxLeasedBuffersPerConnection);

  const int fd = hostile.get(s.path());  // never reads
  ASSERT_GE(fd, 0);
  std::uint32_t sent = 0, canary_rounds = 0, canary_failures = 0;
  Sent state = Sent::all;
  for (std::uint32_t i = 1; i <= kRequests && state == Sent::all; ++i) {
    state = send_all(fd, request_frame(buftest::kBufferInterface, 1, i, payload));
    if (state == Sent::all) sent = i;
    if (i % 32 == 0) {
      ++canary_rounds;
      if (!canary.check(static_cast<std::uint8_t>(i / 32 % 200 + 1))) ++canary_failures;
    }
  }
  ASSERT_NE(state, Sent::stalled) << "the server stopped reading without dropping the peer";
  const bool dropped = hung_up(fd, state);
  EXPECT_TRUE(dropped) << "a peer hoarding buffer fds was not dropped after " << sent << " requests";
  EXPECT_GE(sent, limits::kMaxFdsInFlightPerPeer) << "dropped too early";
  EXPECT_LT(sent, kRequests);
  EXPECT_GE(canary_rounds, limits::kMaxFdsInFlightPerPeer / 32) << "the canary did not run while the peer hoarded";
  EXPECT_EQ(canary_failures, 0u) << "of " << canary_rounds << " canary rounds during the attack";
  if (dropped) {
    EXPECT_TRUE(wait_until([&] { return s.server().connection_count() == 1; })) << s.server().connection_count();
  }

  // The peer holds at most a cap's worth of our fds, one per OK reply.
  const Unread u = read_unread(fd);
  ::close(fd);
  EXPECT_TRUE(u.eof) << "no EOF/ECONNRESET after " << u.replies << " replies";
  EXPECT_GT(u.fds, 0u);
  EXPECT_LE(u.fds, 2 * limits::kMaxFdsInFlightPerPeer);  // socket-buffer bound, see above
  EXPECT_EQ(u.fds, u.replies);
  EXPECT_EQ(u.not_ok, 0u);
  EXPECT_EQ(u.other_frames, 0u);

  // Others still get buffers, and the server let go of everything the peer cost it.
  for (std::uint8_t seed = 201; seed <= 210; ++seed) EXPECT_TRUE(canary.check(seed)) << "canary after, seed " << int(seed);
  EXPECT_EQ(s.server().connection_count(), 1u);
  EXPECT_TRUE(wait_until([&] { return count_fds() == fds_before; })) << count_fds() << " vs " << fds_before;
  EXPECT_EQ(canary.finish(), kOk);
  std::printf("[ info ] hostile sent %u requests before the drop; %u buffers (%u fds) left unread; %u canary rounds\n",
              sent, u.replies, u.fds, canary_rounds);
}

// The F5 cap must only drop peers that do not read. A real Client keeps 16 calls with
// 100 KiB (out-of-line) replies outstanding and works 2 ms per reply, slower than the
// server, so its receive queue is never empty; it must never be dropped. (An earlier cap
// that counted fds since the queue was last seen empty dropped it after ~242 calls.)
TEST(Limits, SlowButReadingClientWithOutOfLineRepliesIsNeverDropped) {
  TestServer s(listen_private());
  asio::io_context io;
  Client client;
  boost::system::error_code cec;
  bool connected = false;
  Client::async_connect(io.get_executor(), s.path(), {}, [&](boost::system::error_code ec, Client c) { cec = ec; client = std::move(c); connected = true; });
  while (!connected) io.run_one();
  ASSERT_FALSE(cec);
  const std::string big(100 * 1024, 'p');
  std::uint32_t ok = 0, failed = 0, started = 0;
  std::string first_err;
  std::function<void()> start = [&] {
    if (started >= 600 || failed) {
      if (ok + failed >= started) client.close();
      return;
    }
    ++started;
    Request<EchoParams> req;
    req.params().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(big.data()), big.size()));
    client.async_call<EchoResults>(MethodId{testsvc::kTestInterface, 0}, std::move(req), [&](boost::system::error_code ec, Response<EchoResults>) {
      if (ec) { if (!failed++) first_err = ec.message(); client.close(); return; }
      ++ok;
      ::usleep(2000);  // the application's work per reply
      start();
    });
  };
  for (int i = 0; i < 16; ++i) start();
  io.run();
  std::printf("[ info ] slow consumer: %u ok, %u failed (%s)\n", ok, failed, first_err.c_str());
  EXPECT_EQ(failed, 0u);
}
