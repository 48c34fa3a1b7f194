// Owned request builders and bounded incoming messages.
#include "sealrpc/message.hpp"

namespace sealrpc {

RequestMessage::RequestMessage() : builder_(std::make_unique<capnp::MallocMessageBuilder>()) {}
RequestMessage::~RequestMessage() = default;

IncomingMessage::IncomingMessage(std::vector<capnp::word> words,
                                 std::vector<std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits)
    : words_(std::move(words)) {
  segments_.reserve(segments.size());
  for (auto [off, len] : segments) segments_.push_back(kj::arrayPtr(words_.data() + off, len));
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
  words_ = std::move(o.words_);
  segments_ = std::move(o.segments_);
  reader_ = std::move(o.reader_);
  return *this;
}
IncomingMessage::~IncomingMessage() { reader_.reset(); }

capnp::AnyPointer::Reader IncomingMessage::root() { return reader_->getRoot<capnp::AnyPointer>(); }

}  // namespace sealrpc
