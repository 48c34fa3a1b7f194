// Out-of-line messages over sealed memfds. See out_of_line.hpp.
#include "transport/out_of_line.hpp"

#include "buffers/memfd.hpp"
#include "transport/capnp_codec.hpp"

#include <cstring>
#include <memory>
#include <stdexcept>

namespace sealrpc::wire {
namespace {

void put_u64(std::byte* p, std::uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
std::uint64_t get_u64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

EncodedFrame encode_frame(FrameHeader h, capnp::MessageBuilder& msg, const OutOfLineOptions& o,
                          std::vector<UniqueFd> buffer_fds, std::vector<std::byte> reuse) {
  const std::size_t size = encoded_size(msg);
  const std::size_t inline_max = std::min<std::size_t>(o.threshold, limits::kMaxPayloadBytes);
  EncodedFrame out;
  out.bytes = std::move(reuse);
  out.bytes.clear();
  if (size <= inline_max) {
    h.payload_len = static_cast<std::uint32_t>(size);
    out.bytes.resize(limits::kHeaderBytes + size);
    write_message(out.bytes.data() + limits::kHeaderBytes, msg);
  } else {
    if (size > o.max_bytes) throw std::length_error("message larger than the out-of-line maximum");
    // Written with pwrite (never mapped, so no writable mapping can outlive F_SEAL_WRITE,
    // K26), then sealed immutable.
    out.fds.push_back(buffers::create_immutable(size, [&](int fd) { write_message_to_fd(fd, msg); }));
    h.flags |= kFlagOutOfLine;
    h.payload_len = kOutOfLineDescriptorBytes;
    out.bytes.resize(limits::kHeaderBytes + kOutOfLineDescriptorBytes);
    put_u64(out.bytes.data() + limits::kHeaderBytes, size);
    put_u64(out.bytes.data() + limits::kHeaderBytes + 8, 0);
  }
  for (auto& fd : buffer_fds) out.fds.push_back(std::move(fd));
  if (out.fds.size() > limits::kMaxFdsPerFrame) throw std::length_error("too many fds for one frame");
  h.fd_count = static_cast<std::uint8_t>(out.fds.size());
  encode_header(h, out.bytes.data());
  return out;
}

IncomingMessage decode_frame_message(Frame& f, ReaderLimits limits, std::uint64_t max_bytes) {
  IncomingMessage msg;
  if (f.header.flags & kFlagOutOfLine) {
    // decode_header guaranteed fd_count >= 1 and the descriptor size; FrameReader that
    // the fds match fd_count.
    if (f.fds.empty() || f.payload.size() != kOutOfLineDescriptorBytes)
      throw buffers::BufferError("out-of-line message without its memfd");
    UniqueFd fd = std::move(f.fds.front());
    f.fds.erase(f.fds.begin());
    const std::uint64_t size = get_u64(f.payload.data());
    if (get_u64(f.payload.data() + 8) != 0) throw buffers::BufferError("out-of-line descriptor has reserved bits set");
    if (size == 0 || size % 8 != 0) throw buffers::BufferError("out-of-line message size is not a whole number of words");
    // Read with pread into our own memory, never mapped: on the machines measured, one
    // mmap + fault-in + munmap cost far more than the copy (docs/performance.md). Any
    // kind is safe to parse then: what we validate is our copy (M3). A revocable
    // message's copy is wiped when the message goes, as the owner would wipe its own.
    const buffers::Verified v = buffers::verify(fd.get(), size, max_bytes);
    const std::size_t words = static_cast<std::size_t>(size / 8);
    const bool wipe = v.kind == buffers::Kind::revocable;
    std::shared_ptr<capnp::word[]> copy(new capnp::word[words], [words, wipe](capnp::word* p) {
      if (wipe) buffers::secure_zero(p, words * sizeof(capnp::word));
      delete[] p;
    });
    const std::span<std::byte> bytes(reinterpret_cast<std::byte*>(copy.get()), static_cast<std::size_t>(size));
    buffers::pread_all(fd.get(), bytes);
    fd.reset();
    msg = decode_message_in_place(bytes, std::move(copy), limits);
  } else {
    msg = decode_message(f.payload, limits);
  }
  return msg;
}

std::uint64_t announced_out_of_line_size(const Frame& f) noexcept {
  if (!(f.header.flags & kFlagOutOfLine) || f.payload.size() != kOutOfLineDescriptorBytes) return 0;
  return get_u64(f.payload.data());
}

std::vector<std::byte> encode_buffer_release(std::uint32_t request_id, std::uint8_t index) {
  FrameHeader h;
  h.type = FrameType::buffer_release;
  h.request_id = request_id;
  std::byte payload[kBufferReleaseBytes] = {};
  payload[0] = static_cast<std::byte>(index);
  std::vector<std::byte> out;
  append_frame(out, h, payload);
  return out;
}

std::optional<std::uint8_t> decode_buffer_release(std::span<const std::byte> payload) {
  if (payload.size() != kBufferReleaseBytes) return std::nullopt;
  for (std::size_t i = 1; i < payload.size(); ++i)
    if (payload[i] != std::byte{0}) return std::nullopt;
  return static_cast<std::uint8_t>(payload[0]);
}

}  // namespace sealrpc::wire
