// Owned request builders and bounded incoming messages.
#include "sealrpc/message.hpp"

#include "buffers/memfd.hpp"
#include "transport/limits.hpp"

#include <stdexcept>

namespace sealrpc {

RequestMessage::RequestMessage() : builder_(std::make_unique<Builder>()) {}
RequestMessage::~RequestMessage() = default;

std::uint8_t RequestMessage::attach(SealedBuffer&& buffer) {
  if (!buffer.valid()) throw std::invalid_argument("attach of an empty SealedBuffer");
  // One fd of the frame stays free for the out-of-line message itself.
  if (buffers_.size() + 1 >= 8) throw std::length_error("too many buffers attached to one request");
  buffers_.push_back(std::move(buffer));
  return static_cast<std::uint8_t>(buffers_.size() - 1);
}

struct IncomingMessage::Reader : detail::Recycled {
  Reader(const capnp::word* base, std::span<const std::pair<std::uint32_t, std::uint32_t>> table, capnp::ReaderOptions opts)
      : count(fill(base, table)), reader(kj::arrayPtr(segments, count), opts) {}
  std::size_t fill(const capnp::word* base, std::span<const std::pair<std::uint32_t, std::uint32_t>> table) {
    if (table.size() > std::size(segments)) throw std::invalid_argument("too many segments");
    for (std::size_t i = 0; i < table.size(); ++i) segments[i] = kj::arrayPtr(base + table[i].first, table[i].second);
    return table.size();
  }
  kj::ArrayPtr<const capnp::word> segments[limits::kMaxSegments];
  std::size_t count;
  capnp::SegmentArrayMessageReader reader;
};
void IncomingMessage::ReaderDeleter::operator()(Reader* r) const noexcept { delete r; }

IncomingMessage::IncomingMessage(Words words,
                                 std::span<const std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits)
    : words_(std::move(words)) {
  init(words_.data(), segments, limits);
}

IncomingMessage::IncomingMessage(std::shared_ptr<const void> keep, const capnp::word* base,
                                 std::span<const std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits)
    : keep_(std::move(keep)) {
  init(base, segments, limits);
}

void IncomingMessage::init(const capnp::word* base, std::span<const std::pair<std::uint32_t, std::uint32_t>> segments,
                           ReaderLimits limits) {
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_limit_words;
  opts.nestingLimit = limits.nesting_limit;
  reader_.reset(new Reader(base, segments, opts));
}

// The reader points into words_ and its own segment table, whose heap blocks move with
// the owning pointers.
IncomingMessage::IncomingMessage(IncomingMessage&&) noexcept = default;
IncomingMessage& IncomingMessage::operator=(IncomingMessage&& o) noexcept {
  reader_.reset();  // drop the old reader before the storage it reads
  if (wipe_) buffers::secure_zero(words_.data(), words_.size() * sizeof(capnp::word));
  words_ = std::move(o.words_);
  keep_ = std::move(o.keep_);
  wipe_ = std::exchange(o.wipe_, false);
  reader_ = std::move(o.reader_);
  return *this;
}
void IncomingMessage::reset() noexcept {
  reader_.reset();  // drop the reader before the storage it reads
  if (std::exchange(wipe_, false)) buffers::secure_zero(words_.data(), words_.size() * sizeof(capnp::word));
  Words().swap(words_);  // the storage goes back to the per-thread pool now
  keep_.reset();
}
IncomingMessage::~IncomingMessage() {
  reader_.reset();
  if (wipe_) buffers::secure_zero(words_.data(), words_.size() * sizeof(capnp::word));
}

capnp::AnyPointer::Reader IncomingMessage::root() { return reader_->reader.getRoot<capnp::AnyPointer>(); }

}  // namespace sealrpc
