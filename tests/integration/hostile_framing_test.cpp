// Hostile framing (SECURITY.md F1-F3, R1-R5): each abuse gets a clear error and a
// close, the server keeps serving a canary, and no fd is leaked (T1, T3).
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"
#include "transport/capnp_codec.hpp"
#include "transport/frame.hpp"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

using namespace sealrpc;
using testsvc::EchoParams;
using testsvc::EchoResults;
using testsvc::Nested;
using namespace testutil;

namespace {

class HostileFraming : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions o;
    o.frame_timeout = std::chrono::milliseconds(300);
    server_ = std::make_unique<TestServer>(listen_private(), o);
    ASSERT_FALSE(call_once(server_->path(), 0).ec);  // warm up: lazily created fds exist now
    wait_idle();
    baseline_ = count_fds();
  }
  void TearDown() override {
    // The canary is served, and the server holds no more fds than before.
    auto r = call_once(server_->path(), 0, "canary");
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.data, "canary");
    wait_idle();
    EXPECT_EQ(count_fds(), baseline_) << "fd leak";
  }
  void wait_idle() {
    for (int i = 0; i < 300 && server_->server().connection_count() != 0; ++i) ::usleep(10'000);
    ASSERT_EQ(server_->server().connection_count(), 0u);
  }
  static std::vector<std::byte> header(wire::FrameHeader h) {
    std::vector<std::byte> b(limits::kHeaderBytes);
    wire::encode_header(h, b.data());
    return b;
  }
  static void send_bytes(int fd, const std::vector<std::byte>& b, const std::vector<int>& fds = {}) {
    ASSERT_TRUE(send_with_fds(fd, b, fds));
  }
  // Sends raw bytes and expects a GOODBYE whose reason contains `expect`, then EOF.
  void expect_goodbye(const std::vector<std::byte>& bytes, const std::string& expect, const std::vector<int>& fds = {}) {
    const int fd = raw_connect(server_->path());
    ASSERT_GE(fd, 0);
    send_bytes(fd, bytes, fds);
    auto [type, reason] = read_reply(fd);
    EXPECT_EQ(type, static_cast<int>(wire::FrameType::goodbye));
    EXPECT_NE(reason.find(expect), std::string::npos) << "reason: " << reason;
    EXPECT_EQ(read_reply(fd).first, 0) << "connection not closed";
    ::close(fd);
  }
  // A request frame around an arbitrary payload.
  static std::vector<std::byte> request(std::uint16_t ordinal, std::span<const std::byte> payload) {
    wire::FrameHeader h;
    h.type = wire::FrameType::request;
    h.request_id = 7;
    h.interface_id = testsvc::kTestInterface;
    h.ordinal = ordinal;
    std::vector<std::byte> b;
    wire::append_frame(b, h, payload);
    return b;
  }
  // Sends a request and returns (status, message) of the response.
  std::pair<int, std::string> call_raw(const std::vector<std::byte>& frame) {
    const int fd = raw_connect(server_->path());
    send_bytes(fd, frame);
    const int fd2 = fd;
    std::string buf;
    std::pair<int, std::string> out{-1, ""};
    for (;;) {
      char tmp[4096];
      const ssize_t n = ::read(fd2, tmp, sizeof tmp);
      if (n <= 0) break;
      buf.append(tmp, static_cast<std::size_t>(n));
      bool got = false;
      while (buf.size() >= 32) {
        std::uint32_t len;
        std::memcpy(&len, buf.data() + 8, 4);
        if (buf.size() < 32 + len) break;
        if (buf[5] == static_cast<char>(wire::FrameType::response)) {
          std::uint16_t st;
          std::memcpy(&st, buf.data() + 14, 2);
          out = {st, buf.substr(32, len)};
          got = true;
        }
        buf.erase(0, 32 + len);
      }
      if (got) break;
    }
    ::close(fd);
    return out;
  }

  std::unique_ptr<TestServer> server_;
  int baseline_ = 0;
};

std::vector<int> open_devnull(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  return v;
}
void close_all(const std::vector<int>& v) {
  for (int fd : v) ::close(fd);
}

}  // namespace

TEST_F(HostileFraming, OversizedLengthIsRefusedBeforeAllocation) {
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.payload_len = 0xFFFFFFFFu;
  expect_goodbye(header(h), "larger than the maximum");
}

TEST_F(HostileFraming, BadMagic) {
  auto b = header({});
  b[0] = std::byte{'Z'};
  expect_goodbye(b, "bad frame magic");
}

TEST_F(HostileFraming, BadVersion) {
  auto b = header({});
  b[4] = std::byte{9};
  expect_goodbye(b, "unsupported protocol version");
}

TEST_F(HostileFraming, FrameTypeTheServerDoesNotAccept) {
  wire::FrameHeader h;
  h.type = wire::FrameType::response;
  expect_goodbye(header(h), "not allowed from a client");
}

TEST_F(HostileFraming, TruncatedHeaderThenSilenceTimesOut) {
  const int fd = raw_connect(server_->path());
  auto b = header({});
  b.resize(10);
  send_bytes(fd, b);
  auto [type, reason] = read_reply(fd, 5000);  // frame_timeout is 300 ms
  EXPECT_EQ(type, static_cast<int>(wire::FrameType::goodbye));
  EXPECT_NE(reason.find("not completed in time"), std::string::npos) << reason;
  ::close(fd);
}

TEST_F(HostileFraming, TruncatedHeaderThenCloseIsHandled) {
  const int fd = raw_connect(server_->path());
  auto b = header({});
  b.resize(10);
  send_bytes(fd, b);
  ::close(fd);
}

TEST_F(HostileFraming, FdsOnAMessageTypeThatTakesNoneAreClosed) {
  auto fds = open_devnull(1);
  wire::FrameHeader h;
  h.type = wire::FrameType::cancel;
  auto b = header(h);
  b[6] = std::byte{1};  // declared, but cancel frames take no fds
  expect_goodbye(b, "takes none", fds);
  close_all(fds);
}

TEST_F(HostileFraming, UndeclaredFdsAreClosed) {
  for (int n : {1, 2, 7, 8, 9, 17, 31, 32, 33, 253}) {
    auto fds = open_devnull(n);
    wire::FrameHeader h;
    h.type = wire::FrameType::cancel;
    expect_goodbye(header(h), n > 8 && n <= 32 ? "too many fds" : (n > 32 ? "truncated" : "fd count"), fds);
    close_all(fds);
  }
}

TEST_F(HostileFraming, UnknownMethodInAnotherInterfaceLooksLikeADenial) {
  capnp::MallocMessageBuilder m;
  m.initRoot<EchoParams>();
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  auto frame = request(0, payload);
  std::uint64_t other = 0x1234;
  std::memcpy(frame.data() + 24, &other, 8);
  auto [st, msg] = call_raw(frame);
  EXPECT_EQ(st, static_cast<int>(StatusCode::permission_denied));
  EXPECT_EQ(msg, "permission denied");
  auto [st2, msg2] = call_raw(request(5, payload));  // a real method the caller may not call
  EXPECT_EQ(st2, st);
  EXPECT_EQ(msg2, msg);
  auto [st3, msg3] = call_raw(request(99, payload));  // unknown ordinal in a visible interface
  EXPECT_EQ(st3, static_cast<int>(StatusCode::unimplemented));
}

TEST_F(HostileFraming, SegmentCountOverflowIsInvalidArgument) {
  std::vector<std::byte> payload(16, std::byte{0xff});
  auto [st, msg] = call_raw(request(0, payload));
  EXPECT_EQ(st, static_cast<int>(StatusCode::invalid_argument));
}

TEST_F(HostileFraming, BadPointerIsInvalidArgument) {
  // One segment of 1 word holding a struct pointer far outside the segment.
  std::vector<std::byte> payload(16, std::byte{0});
  payload[4] = std::byte{1};
  const std::uint64_t ptr = (std::uint64_t{1} << 32) | (std::uint64_t{1000} << 2);  // offset 1000, 1 data word
  std::memcpy(payload.data() + 8, &ptr, 8);
  auto [st, msg] = call_raw(request(0, payload));
  EXPECT_EQ(st, static_cast<int>(StatusCode::invalid_argument));
  EXPECT_EQ(msg, "malformed request");
}

TEST_F(HostileFraming, DeepNestingIsInvalidArgument) {
  capnp::MallocMessageBuilder m;
  auto n = m.initRoot<Nested>();
  for (int i = 0; i < 100; ++i) n = n.initChild();
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  auto [st, msg] = call_raw(request(0, payload));
  EXPECT_EQ(st, static_cast<int>(StatusCode::invalid_argument));
}

TEST_F(HostileFraming, AmplificationByZeroSizedListIsInvalidArgument) {
  // Root struct with one pointer to a List(Void) of 2^29-1 elements: zero bytes on the
  // wire, half a billion elements to walk (CVE-2015-2312 class).
  std::vector<std::byte> payload(24, std::byte{0});
  payload[4] = std::byte{2};  // one segment of two words
  const std::uint64_t root = std::uint64_t{1} << 48;  // struct, 0 data words, 1 pointer
  const std::uint64_t list = 1 | (std::uint64_t{(1u << 29) - 1} << 35);  // list, void elements
  std::memcpy(payload.data() + 8, &root, 8);
  std::memcpy(payload.data() + 16, &list, 8);
  auto [st, msg] = call_raw(request(0, payload));
  EXPECT_EQ(st, static_cast<int>(StatusCode::invalid_argument));
}
