// Bounded segment-table codec for capnp messages. See capnp_codec.hpp.
#include "transport/capnp_codec.hpp"

#include "transport/limits.hpp"
#include "buffers/memfd.hpp"

#include <array>
#include <cstring>
#include <stdexcept>

namespace sealrpc::wire {
namespace {

std::uint32_t read_u32(const std::byte* p) noexcept {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
void write_u32(std::byte* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
// Table: u32 (count-1), then count u32 sizes in words, padded to a whole word.
std::size_t table_bytes(std::size_t count) noexcept { return ((count + 2) / 2) * 8; }

}  // namespace

std::size_t encoded_size(capnp::MessageBuilder& msg) {
  auto segs = msg.getSegmentsForOutput();
  std::size_t n = table_bytes(segs.size());
  for (auto s : segs) n += s.size() * sizeof(capnp::word);
  return n;
}

void append_message(std::vector<std::byte>& out, capnp::MessageBuilder& msg) {
  const std::size_t at = out.size();
  out.resize(at + encoded_size(msg));  // value-initialised: the table padding is zero (no slack leak)
  write_message(out.data() + at, msg);
}

void write_message(std::byte* p, capnp::MessageBuilder& msg) {
  auto segs = msg.getSegmentsForOutput();
  const std::size_t tb = table_bytes(segs.size());
  std::memset(p, 0, tb);  // table padding is zero (no slack leak)
  write_u32(p, static_cast<std::uint32_t>(segs.size() - 1));
  for (std::size_t i = 0; i < segs.size(); ++i) write_u32(p + 4 + 4 * i, static_cast<std::uint32_t>(segs[i].size()));
  p += tb;
  for (auto s : segs) {
    std::memcpy(p, s.begin(), s.size() * sizeof(capnp::word));
    p += s.size() * sizeof(capnp::word);
  }
}

void write_message_to_fd(int fd, capnp::MessageBuilder& msg) {
  auto segs = msg.getSegmentsForOutput();
  std::vector<std::byte> table(table_bytes(segs.size()));  // zero padding (no slack leak)
  write_u32(table.data(), static_cast<std::uint32_t>(segs.size() - 1));
  for (std::size_t i = 0; i < segs.size(); ++i) write_u32(table.data() + 4 + 4 * i, static_cast<std::uint32_t>(segs[i].size()));
  std::uint64_t at = 0;
  buffers::pwrite_all(fd, table, at);
  at += table.size();
  for (auto s : segs) {
    const auto bytes = std::as_bytes(std::span(s.begin(), s.size()));
    buffers::pwrite_all(fd, bytes, at);
    at += bytes.size();
  }
}

namespace {

// On the stack: no allocation per decoded message.
struct SegmentTable {
  std::array<std::pair<std::uint32_t, std::uint32_t>, limits::kMaxSegments> v;
  std::size_t n = 0;
  std::span<const std::pair<std::uint32_t, std::uint32_t>> span() const { return {v.data(), n}; }
};

// Validates the segment table; returns it and the table's size in bytes.
std::pair<SegmentTable, std::size_t> parse_table(std::span<const std::byte> payload) {
  if (payload.size() < 8 || payload.size() % 8 != 0) throw std::invalid_argument("message size is not a whole number of words");
  const std::uint32_t count_minus_one = read_u32(payload.data());
  if (count_minus_one >= limits::kMaxSegments) throw std::invalid_argument("too many segments");
  const std::size_t count = std::size_t{count_minus_one} + 1;
  const std::size_t tb = table_bytes(count);
  if (payload.size() < tb) throw std::invalid_argument("segment table truncated");
  SegmentTable segments;
  std::uint64_t words = 0;  // 64-bit sum of <=64 u32 values cannot overflow
  const std::uint64_t body_words = (payload.size() - tb) / 8;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t w = read_u32(payload.data() + 4 + 4 * i);
    if (w > body_words - words) throw std::invalid_argument("segment sizes exceed the message");
    segments.v[segments.n++] = {static_cast<std::uint32_t>(words), w};
    words += w;
  }
  if (words != body_words) throw std::invalid_argument("segment sizes do not match the message");
  if (words == 0) throw std::invalid_argument("empty message");
  return {segments, tb};
}

}  // namespace

IncomingMessage decode_message(std::span<const std::byte> payload, ReaderLimits limits, bool wipe) {
  auto [segments, tb] = parse_table(payload);
  const std::size_t words = (payload.size() - tb) / 8;
  IncomingMessage::Words storage(words);
  std::memcpy(storage.data(), payload.data() + tb, words * 8);
  IncomingMessage m(std::move(storage), segments.span(), limits);
  if (wipe) m.wipe_on_destroy();
  return m;
}

IncomingMessage decode_message_in_place(std::span<const std::byte> bytes, std::shared_ptr<const void> keep, ReaderLimits limits) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(capnp::word) != 0)
    throw std::invalid_argument("message is not word-aligned");
  auto [segments, tb] = parse_table(bytes);
  return IncomingMessage(std::move(keep), reinterpret_cast<const capnp::word*>(bytes.data() + tb), segments.span(), limits);
}

}  // namespace sealrpc::wire
