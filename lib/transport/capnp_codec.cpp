// Bounded segment-table codec for capnp messages. See capnp_codec.hpp.
#include "transport/capnp_codec.hpp"

#include "transport/limits.hpp"

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
  auto segs = msg.getSegmentsForOutput();
  const std::size_t at = out.size();
  const std::size_t tb = table_bytes(segs.size());
  std::size_t total = tb;
  for (auto s : segs) total += s.size() * sizeof(capnp::word);
  out.resize(at + total);  // value-initialised: the table padding is zero (no slack leak)
  std::byte* p = out.data() + at;
  write_u32(p, static_cast<std::uint32_t>(segs.size() - 1));
  for (std::size_t i = 0; i < segs.size(); ++i) write_u32(p + 4 + 4 * i, static_cast<std::uint32_t>(segs[i].size()));
  p += tb;
  for (auto s : segs) {
    std::memcpy(p, s.begin(), s.size() * sizeof(capnp::word));
    p += s.size() * sizeof(capnp::word);
  }
}

IncomingMessage decode_message(std::span<const std::byte> payload, ReaderLimits limits) {
  if (payload.size() < 8 || payload.size() % 8 != 0) throw std::invalid_argument("message size is not a whole number of words");
  const std::uint32_t count_minus_one = read_u32(payload.data());
  if (count_minus_one >= limits::kMaxSegments) throw std::invalid_argument("too many segments");
  const std::size_t count = std::size_t{count_minus_one} + 1;
  const std::size_t tb = table_bytes(count);
  if (payload.size() < tb) throw std::invalid_argument("segment table truncated");
  std::vector<std::pair<std::uint32_t, std::uint32_t>> segments;
  segments.reserve(count);
  std::uint64_t words = 0;  // 64-bit sum of <=64 u32 values cannot overflow
  const std::uint64_t body_words = (payload.size() - tb) / 8;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t w = read_u32(payload.data() + 4 + 4 * i);
    if (w > body_words - words) throw std::invalid_argument("segment sizes exceed the message");
    segments.emplace_back(static_cast<std::uint32_t>(words), w);
    words += w;
  }
  if (words != body_words) throw std::invalid_argument("segment sizes do not match the message");
  if (words == 0) throw std::invalid_argument("empty message");
  std::vector<capnp::word> storage(words);
  std::memcpy(storage.data(), payload.data() + tb, words * 8);
  return IncomingMessage(std::move(storage), std::move(segments), limits);
}

}  // namespace sealrpc::wire
