// The server's per-connection runners (lib/rpc/server.cpp, class Connection): calls run
// inline in the runner that read them, and a standby starts another runner only when a
// handler suspends. These tests pin the two cases where that could go wrong:
//  * requests that arrived in the same read as a call whose handler suspends are
//    already in our buffer, so socket readiness never fires for them;
//  * a runner whose call was cancelled keeps serving: its cancellation state must not
//    leak into the next call it runs.
#include "sealrpc/endpoint.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"
#include "transport/capnp_codec.hpp"
#include "transport/frame.hpp"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>

using namespace sealrpc;
using namespace testutil;

namespace {

std::vector<std::byte> echo_request(std::uint32_t rid, std::uint16_t ordinal, const std::string& data, std::uint32_t delay_ms,
                                    std::uint32_t timeout_ms = 0) {
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<testsvc::EchoParams>();
  p.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  p.setDelayMs(delay_ms);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.request_id = rid;
  h.interface_id = testsvc::kTestInterface;
  h.ordinal = ordinal;
  h.timeout_ms = timeout_ms;
  std::vector<std::byte> b;
  wire::append_frame(b, h, payload);
  return b;
}

struct RawReply {
  std::uint32_t rid;
  std::uint16_t status;
  friend bool operator==(const RawReply&, const RawReply&) = default;
};

// RESPONSE frames from a raw socket, in arrival order. Keeps the bytes of a frame not
// yet complete for the next read.
class RawReader {
 public:
  explicit RawReader(int fd) : fd_(fd) {}
  // The next `n` responses (fewer if the socket closes or `timeout_ms` passes without a
  // byte; 0: only what has already arrived).
  std::vector<RawReply> next(std::size_t n, int timeout_ms) {
    std::vector<RawReply> out;
    while (out.size() < n) {
      while (out.size() < n && buf_.size() >= limits::kHeaderBytes) {
        const auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(
            reinterpret_cast<const std::byte*>(buf_.data()), limits::kHeaderBytes));
        if (buf_.size() < limits::kHeaderBytes + h.payload_len) break;
        if (h.type == wire::FrameType::response) out.push_back({h.request_id, h.status});
        buf_.erase(0, limits::kHeaderBytes + h.payload_len);
      }
      if (out.size() == n) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) break;
      char tmp[65536];
      const ssize_t got = ::read(fd_, tmp, sizeof tmp);
      if (got <= 0) break;
      buf_.append(tmp, static_cast<std::size_t>(got));
    }
    return out;
  }

 private:
  int fd_;
  std::string buf_;
};

constexpr std::uint16_t kStatusOk = 0;

}  // namespace

// A slow call (Test.sleep, 3 s) and a fast one sent in ONE sendmsg reach the server in
// one read: when the slow handler suspends, the fast request is already in the
// connection's buffer, where socket readiness never fires again. The posted standby
// must start a reader for it, so the fast reply comes first, long before the slow one.
// Without it (a readiness standby only) the fast call would wait the full 3 s.
TEST(Runners, RequestsBufferedBehindASuspendedHandlerAreServedAtOnce) {
  TestServer s(listen_private());
  const int fd = raw_connect(s.path());
  ASSERT_GE(fd, 0);
  auto burst = echo_request(1, 1, "slow", 3000);
  const auto fast = echo_request(2, 0, "fast", 0);
  burst.insert(burst.end(), fast.begin(), fast.end());
  ASSERT_TRUE(send_with_fds(fd, burst));
  RawReader reader(fd);
  const auto first = reader.next(1, 2000);  // well under the slow call's 3 s
  ASSERT_EQ(first.size(), 1u) << "the fast call waited for the suspended slow one";
  EXPECT_EQ(first[0], (RawReply{2, kStatusOk}));
  EXPECT_EQ(reader.next(1, 10'000), std::vector<RawReply>{(RawReply{1, kStatusOk})});
  ::close(fd);
}

// Runner A runs X (sleep 5 s, server deadline 100 ms) and suspends; runner B runs Y
// (sleep 2 s) and suspends. At X's deadline the server cancels X through A's
// cancellation slot; A finishes X while B is still inside Y, so A becomes the reader
// again and runs the next call, Z, which waits on a timer. Z must succeed: if A kept X's
// cancellation state, Z's first wait would throw operation_aborted (INTERNAL). Raw
// frames: a Client would also cancel X itself at the deadline, and that CANCEL frame
// would start a fresh runner instead.
TEST(Runners, ARunnerWhoseCallWasCancelledServesTheNextCallNormally) {
  ServerOptions so;
  so.single_threaded = true;  // one thread: the runners take turns as described
  TestServer s(listen_private(), so);
  auto& svc = static_cast<testsvc::TestService&>(*s.service);
  const int fd = raw_connect(s.path());
  ASSERT_GE(fd, 0);
  RawReader reader(fd);
  ASSERT_TRUE(send_with_fds(fd, echo_request(1, 1, "x", 5000, 100)));
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == 1; }));
  ASSERT_TRUE(send_with_fds(fd, echo_request(2, 1, "y", 2000)));
  ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == 2; })) << "Y did not start while X was suspended";
  EXPECT_EQ(reader.next(1, 3000), std::vector<RawReply>{(RawReply{1, static_cast<std::uint16_t>(StatusCode::deadline_exceeded)})});
  ASSERT_TRUE(wait_until([&] { return svc.cancellations_seen.load() == 1; }));

  ASSERT_TRUE(send_with_fds(fd, echo_request(3, 1, "z", 50)));
  // Z's reply first (Y still sleeps), and OK.
  EXPECT_EQ(reader.next(1, 1500), std::vector<RawReply>{(RawReply{3, kStatusOk})});
  EXPECT_EQ(reader.next(1, 5000), std::vector<RawReply>{(RawReply{2, kStatusOk})});
  EXPECT_EQ(svc.cancellations_seen.load(), 1);
  ::close(fd);
}

// A connection's reader parks on the socket standby, outside any Asio queue. When the
// io_context is destroyed without running the connections' closes (TestServer stops it
// right after Server::stop), the standby's handler is destroyed unrun and must take
// the parked reader with it: otherwise the reader's frames keep the Connection (and its
// socket) alive forever. Checked with one idle connection and one whose handler is
// suspended on a timer; every fd the server had must be closed afterwards.
TEST(Runners, DestroyingTheIoContextFreesParkedAndSuspendedRunners) {
  const int before = count_fds();
  int idle = -1, busy = -1;
  {
    auto s = std::make_unique<TestServer>(listen_private());
    auto& svc = static_cast<testsvc::TestService&>(*s->service);
    idle = raw_connect(s->path());
    busy = raw_connect(s->path());
    ASSERT_GE(idle, 0);
    ASSERT_GE(busy, 0);
    ASSERT_TRUE(send_with_fds(busy, echo_request(1, 1, "held", 60'000)));
    ASSERT_TRUE(wait_until([&] { return svc.calls_started.load() == 1; }));
    ASSERT_EQ(s->server().connection_count(), 2u);
  }
  ::close(idle);
  ::close(busy);
  EXPECT_EQ(count_fds(), before) << "a connection outlived its io_context";
}

// Fairness: a runner yields to the event loop after kMaxFramesPerTurn (32) frames in a
// row. A peer that keeps its socket full of pipelined requests (20,000 echo requests in
// one write, far more than the server handles per wake-up) must not starve another
// connection on the same single-threaded server: the other peer's call is answered
// while most of the flood is still unanswered. Without the yield, the flooding
// connection's reader would keep the thread until its socket ran dry.
TEST(Runners, APeerFloodingRequestsDoesNotStarveAnotherConnection) {
  ServerOptions so;
  so.single_threaded = true;
  TestServer s(listen_private(), so);
  constexpr std::uint32_t kFlood = 20'000;
  std::vector<std::byte> flood;
  for (std::uint32_t rid = 1; rid <= kFlood; ++rid) {
    const auto f = echo_request(rid, 0, "flood", 0);
    flood.insert(flood.end(), f.begin(), f.end());
  }
  const int a = raw_connect(s.path());
  const int b = raw_connect(s.path());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // The whole flood sits in the kernel at once (we are root: SO_SNDBUFFORCE), so every
  // read the server makes is a full one and its socket never looks drained.
  const int sndbuf = 8 << 20;
  ASSERT_EQ(::setsockopt(a, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf), 0) << std::strerror(errno);
  ASSERT_TRUE(send_with_fds(a, flood));
  // Once the flood is being served, B asks once.
  auto& svc = static_cast<testsvc::TestService&>(*s.service);
  ASSERT_TRUE(wait_until([&] { return svc.echo_calls.load() >= 100; })) << "the flood is not being served";
  RawReader from_b(b);
  ASSERT_TRUE(send_with_fds(b, echo_request(1, 0, "other", 0)));
  ASSERT_EQ(from_b.next(1, 10'000).size(), 1u);
  // Counted in the server: A's replies may wait in its send queue.
  const int served_by_then = svc.echo_calls.load();
  EXPECT_LT(served_by_then, static_cast<int>(kFlood / 2)) << "B waited for most of A's flood";
  ASSERT_TRUE(wait_until([&] { return svc.echo_calls.load() == static_cast<int>(kFlood) + 1; }));
  ::close(a);
  ::close(b);
}
