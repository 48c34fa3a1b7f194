// Framing v1 codec and the fd-attributing frame reader. See frame.hpp for invariants.
#include "transport/frame.hpp"

#include <cstring>

namespace sealrpc::wire {
namespace {

bool is_handshake_type(std::uint8_t t) noexcept { return t == 8 || t == 9; }

template <typename T>
void put(std::byte* p, T v) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff);
}
template <typename T>
T get(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return static_cast<T>(v);
}

bool is_known_type(std::uint8_t t) noexcept { return (t >= 1 && t <= 7) || is_handshake_type(t); }

}  // namespace

void encode_header(const FrameHeader& h, std::byte* out) noexcept {
  put<std::uint32_t>(out + 0, kMagic);
  put<std::uint8_t>(out + 4, kVersion);
  put<std::uint8_t>(out + 5, static_cast<std::uint8_t>(h.type));
  put<std::uint8_t>(out + 6, h.fd_count);
  put<std::uint8_t>(out + 7, h.flags);
  put<std::uint32_t>(out + 8, h.payload_len);
  put<std::uint16_t>(out + 12, h.ordinal);
  put<std::uint16_t>(out + 14, h.status);
  put<std::uint32_t>(out + 16, h.request_id);
  put<std::uint32_t>(out + 20, h.timeout_ms);
  put<std::uint64_t>(out + 24, h.interface_id);
}

FrameHeader decode_header(std::span<const std::byte, limits::kHeaderBytes> in) {
  const std::byte* p = in.data();
  if (get<std::uint32_t>(p) != kMagic) throw ProtocolError("bad frame magic");
  if (get<std::uint8_t>(p + 4) != kVersion) throw ProtocolError("unsupported protocol version");
  const auto type = get<std::uint8_t>(p + 5);
  if (!is_known_type(type)) throw ProtocolError("unknown frame type");
  FrameHeader h;
  h.type = static_cast<FrameType>(type);
  h.fd_count = get<std::uint8_t>(p + 6);
  h.flags = get<std::uint8_t>(p + 7);
  h.payload_len = get<std::uint32_t>(p + 8);
  h.ordinal = get<std::uint16_t>(p + 12);
  h.status = get<std::uint16_t>(p + 14);
  h.request_id = get<std::uint32_t>(p + 16);
  h.timeout_ms = get<std::uint32_t>(p + 20);
  h.interface_id = get<std::uint64_t>(p + 24);
  if ((h.flags & ~(kFlagEncrypted | buffer_flags(h.type))) != 0) throw ProtocolError("reserved frame flags set");
  if (h.fd_count > limits::kMaxFdsPerFrame) throw ProtocolError("too many fds declared in frame");
  check_buffer_rules(h);  // per-type fd and out-of-line rules (docs/protocol-buffers.md)
  return h;
}

void append_frame(std::vector<std::byte>& out, FrameHeader h, std::span<const std::byte> payload) {
  h.payload_len = static_cast<std::uint32_t>(payload.size());
  const auto at = out.size();
  out.resize(at + limits::kHeaderBytes + payload.size());
  encode_header(h, out.data() + at);
  if (!payload.empty()) std::memcpy(out.data() + at + limits::kHeaderBytes, payload.data(), payload.size());
}

namespace {
constexpr std::size_t kIdleBufferBytes = 64 * 1024;
}  // namespace

FrameReader::FrameReader(std::uint32_t max_payload) : max_payload_(max_payload) {}

std::span<std::byte> FrameReader::prepare(std::size_t min_bytes) {
  if (begin_ == end_) {  // empty: rewind for free, and drop the memory of a big frame
    base_ += begin_;
    begin_ = end_ = 0;
    if (cap_ > kIdleBufferBytes && min_bytes <= kIdleBufferBytes) {
      buf_.reset();
      cap_ = 0;
    }
  }
  if (cap_ - end_ < min_bytes) {
    if (begin_ > 0) {  // compact
      std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
      base_ += begin_;
      end_ -= begin_;
      begin_ = 0;
    }
    if (cap_ - end_ < min_bytes) {
      const std::size_t want = end_ + min_bytes;
      auto grown = std::make_unique_for_overwrite<std::byte[]>(want);
      if (end_ > 0) std::memcpy(grown.get(), buf_.get(), end_);
      buf_ = std::move(grown);
      cap_ = want;
    }
  }
  return {buf_.get() + end_, cap_ - end_};
}

void FrameReader::commit(std::size_t n, std::vector<UniqueFd> fds) {
  const std::uint64_t first = base_ + end_;
  end_ += n;
  if (fds.empty()) return;
  // More fds in one recvmsg than any frame may carry: close them all (they are owned
  // by `fds` and close when it goes out of scope) and fail.
  if (fds.size() > limits::kMaxFdsPerFrame) throw ProtocolError("too many fds in one message");
  if (n == 0) throw ProtocolError("fds without data");
  batches_.push_back(FdBatch{first, first + n - 1, std::move(fds)});
}

std::optional<Frame> FrameReader::next() {
  if (!pending_) {
    if (end_ - begin_ < limits::kHeaderBytes) return std::nullopt;
    pending_ = decode_header(std::span<const std::byte, limits::kHeaderBytes>(buf_.get() + begin_, limits::kHeaderBytes));
    // An encrypted payload carries its AEAD tag on top of the plaintext limit.
    const std::uint32_t seal = (pending_->flags & kFlagEncrypted) ? limits::kSealOverheadBytes : 0;
    if (pending_->payload_len > max_payload_ + seal) throw ProtocolError("frame payload larger than the maximum");
  }
  const std::size_t total = limits::kHeaderBytes + pending_->payload_len;
  if (end_ - begin_ < total) {
    // Make room for the whole frame now that its (bounded) size is known.
    if (cap_ - begin_ < total) prepare(total - (end_ - begin_));
    return std::nullopt;
  }
  const std::uint64_t s = base_ + begin_;
  const std::uint64_t e = s + total;  // one past the frame's last byte

  Frame f;
  f.header = *pending_;
  pending_.reset();
  // Attribute fd batches by stream position. The kernel returns an fd-carrying skb as
  // the *last* part of a recvmsg (K21), and our sender puts fds on a frame's first
  // byte, so a batch belongs to the frame holding its last byte and that frame must
  // start inside the batch's recvmsg.
  while (!batches_.empty() && batches_.front().last < e) {
    FdBatch b = std::move(batches_.front());
    batches_.pop_front();
    if (b.last < s) throw ProtocolError("fds arrived outside any frame");
    if (b.first > s) throw ProtocolError("fds not attached to the frame's first byte");
    if (!f.fds.empty()) throw ProtocolError("fds split across messages");
    f.fds = std::move(b.fds);
  }
  if (f.fds.size() != f.header.fd_count) throw ProtocolError("fd count does not match the frame header");
  f.payload = {buf_.get() + begin_ + limits::kHeaderBytes, f.header.payload_len};
  begin_ += total;
  return f;
}

}  // namespace sealrpc::wire
