// Owned request builders and bounded incoming messages.
#include "sealrpc/message.hpp"

#include "buffers/memfd.hpp"

#include <stdexcept>

namespace sealrpc {

RequestMessage::RequestMessage() : builder_(std::make_unique<capnp::MallocMessageBuilder>()) {}
RequestMessage::~RequestMessage() = default;

std::uint8_t RequestMessage::attach(SealedBuffer&& buffer) {
  if (!buffer.valid()) throw std::invalid_argument("attach of an empty SealedBuffer");
  // One fd of the frame stays free for the out-of-line message itself.
  if (buffers_.size() + 1 >= 8) throw std::length_error("too many buffers attached to one request");
  buffers_.push_back(std::move(buffer));
  return static_cast<std::uint8_t>(buffers_.size() - 1);
}

IncomingMessage::IncomingMessage(std::vector<capnp::word> words,
                                 std::vector<std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits)
    : words_(std::move(words)) {
  init(words_.data(), segments, limits);
}

IncomingMessage::IncomingMessage(std::shared_ptr<const void> keep, const capnp::word* base,
                                 std::vector<std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits)
    : keep_(std::move(keep)) {
  init(base, segments, limits);
}

void IncomingMessage::init(const capnp::word* base, const std::vector<std::pair<std::uint32_t, std::uint32_t>>& segments,
                           ReaderLimits limits) {
  segments_.reserve(segments.size());
  for (auto [off, len] : segments) segments_.push_back(kj::arrayPtr(base + off, len));
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_limit_words;
  opts.nestingLimit = limits.nesting_limit;
  reader_ = std::make_unique<capnp::SegmentArrayMessageReader>(
      kj::arrayPtr(segments_.data(), segments_.size()), opts);
}

// The reader points into words_/segments_, whose heap buffers move with the vectors.
IncomingMessage::IncomingMessage(IncomingMessage&&) noexcept = default;
IncomingMessage& IncomingMessage::operator=(IncomingMessage&& o) noexcept {
  reader_.reset();  // drop the old reader before the storage it reads
  if (wipe_) buffers::secure_zero(words_.data(), words_.size() * sizeof(capnp::word));
  words_ = std::move(o.words_);
  keep_ = std::move(o.keep_);
  wipe_ = std::exchange(o.wipe_, false);
  segments_ = std::move(o.segments_);
  reader_ = std::move(o.reader_);
  return *this;
}
IncomingMessage::~IncomingMessage() {
  reader_.reset();
  if (wipe_) buffers::secure_zero(words_.data(), words_.size() * sizeof(capnp::word));
}

capnp::AnyPointer::Reader IncomingMessage::root() { return reader_->getRoot<capnp::AnyPointer>(); }

}  // namespace sealrpc
