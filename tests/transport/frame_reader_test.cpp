// Framing v1: header validation before allocation and fd attribution by stream position.
#include "transport/frame.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

using namespace sealrpc;
using namespace sealrpc::wire;

namespace {

std::vector<std::byte> frame_bytes(FrameHeader h, std::string_view payload) {
  std::vector<std::byte> out;
  append_frame(out, h, std::as_bytes(std::span(payload.data(), payload.size())));
  return out;
}

void feed(FrameReader& r, std::span<const std::byte> bytes, std::vector<UniqueFd> fds = {}) {
  auto space = r.prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  r.commit(bytes.size(), std::move(fds));
}

std::vector<UniqueFd> make_fds(int n) {
  std::vector<UniqueFd> v;
  for (int i = 0; i < n; ++i) v.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  return v;
}

int open_fd_count() {
  int n = 0;
  for (int fd = 0; fd < 1024; ++fd)
    if (::fcntl(fd, F_GETFD) != -1) ++n;
  return n;
}

}  // namespace

TEST(FrameReader, ParsesFramesRegardlessOfChunking) {
  std::vector<std::byte> stream;
  for (int i = 0; i < 50; ++i) {
    FrameHeader h;
    h.type = FrameType::request;
    h.request_id = static_cast<std::uint32_t>(i);
    auto b = frame_bytes(h, std::string(static_cast<std::size_t>(i * 7), 'x'));
    stream.insert(stream.end(), b.begin(), b.end());
  }
  for (std::size_t chunk : {std::size_t{1}, std::size_t{143}, std::size_t{137}, std::size_t{32}, stream.size()}) {
    FrameReader r;
    int seen = 0;
    for (std::size_t off = 0; off < stream.size(); off += chunk) {
      feed(r, std::span(stream).subspan(off, std::min(chunk, stream.size() - off)));
      while (auto f = r.next()) {
        EXPECT_EQ(f->header.request_id, static_cast<std::uint32_t>(seen));
        EXPECT_EQ(f->payload.size(), static_cast<std::size_t>(seen * 7));
        ++seen;
      }
    }
    EXPECT_EQ(seen, 50) << "chunk " << chunk;
  }
}

TEST(FrameReader, RejectsBadMagicVersionTypeFlags) {
  FrameHeader h;
  auto good = frame_bytes(h, "");
  auto expect_error = [&](std::size_t at, std::byte value, const char* what) {
    auto b = good;
    b[at] = value;
    FrameReader r;
    feed(r, b);
    try {
      (void)r.next();
      FAIL() << "accepted: " << what;
    } catch (const ProtocolError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(0, std::byte{'X'}, "magic");
  expect_error(4, std::byte{2}, "version");
  expect_error(5, std::byte{77}, "type");
  expect_error(7, std::byte{0x80}, "flags");
}

TEST(FrameReader, OversizedLengthRejectedBeforeAllocation) {
  FrameHeader h;
  h.payload_len = 0xFFFFFFFFu;
  std::byte raw[limits::kHeaderBytes];
  encode_header(h, raw);
  FrameReader r;
  feed(r, raw);
  EXPECT_THROW((void)r.next(), ProtocolError);
  EXPECT_LT(r.buffered(), std::size_t{1024});  // nothing was reserved for the claimed size
}

TEST(FrameReader, TruncatedHeaderIsIncompleteNotAFrame) {
  FrameHeader h;
  auto b = frame_bytes(h, "");
  FrameReader r;
  feed(r, std::span(b).first(20));
  EXPECT_FALSE(r.next().has_value());
  EXPECT_TRUE(r.has_partial());
}

TEST(FrameReader, FdsOnAFrameTypeThatTakesNoneAreRejectedAndClosed) {
  const int before = open_fd_count();
  {
    FrameHeader h;
    auto b = frame_bytes(h, "abc");
    FrameReader r;
    feed(r, b, make_fds(2));
    EXPECT_THROW((void)r.next(), ProtocolError);
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FrameReader, TooManyFdsInOneMessageRejectedAndClosed) {
  const int before = open_fd_count();
  {
    FrameHeader h;
    auto b = frame_bytes(h, "");
    FrameReader r;
    auto space = r.prepare(b.size());
    std::memcpy(space.data(), b.data(), b.size());
    EXPECT_THROW(r.commit(b.size(), make_fds(limits::kMaxFdsPerFrame + 1)), ProtocolError);
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FrameReader, DeclaredFdCountAboveLimitRejected) {
  FrameHeader h;
  h.fd_count = limits::kMaxFdsPerFrame + 1;
  std::byte raw[limits::kHeaderBytes];
  encode_header(h, raw);
  FrameReader r;
  feed(r, raw);
  EXPECT_THROW((void)r.next(), ProtocolError);
}

TEST(FrameReader, DeclaredFdsThatNeverArriveAreAnError) {
  FrameHeader h;
  h.fd_count = 1;
  std::byte raw[limits::kHeaderBytes];
  encode_header(h, raw);
  FrameReader r;
  feed(r, raw);
  EXPECT_THROW((void)r.next(), ProtocolError);
}
