// Owned capnp messages as they cross the API: a request being built by a client and a
// decoded reply. Incoming bytes are always read through ReaderOptions with tight
// traversal and nesting limits, over a segment table we validated ourselves
// (lib/transport/capnp_codec.cpp), never through capnp's stream reader.
#pragma once

#include "sealrpc/buffer.hpp"
#include "sealrpc/detail/recycle.hpp"
#include "sealrpc/status.hpp"

#include <capnp/message.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace sealrpc {

struct ReaderLimits {
  std::uint64_t traversal_limit_words = 8u * 1024 * 1024;  // 64 MiB of reads per message
  int nesting_limit = 64;
};

// A request under construction. Move-only; consumed by Client::async_call.
class RequestMessage {
 public:
  RequestMessage();
  RequestMessage(RequestMessage&&) noexcept = default;
  RequestMessage& operator=(RequestMessage&&) noexcept = default;
  ~RequestMessage();

  capnp::MessageBuilder& message() { return builder_->builder; }
  // 0 means: the client's default timeout. The deadline travels with the call and is
  // enforced by both sides.
  std::chrono::milliseconds timeout{0};

  // Attaches a sealed buffer (include/sealrpc/buffer.hpp) to this request and returns
  // its index, to be written into the params' SharedBuffer.fdIndex (SealedBuffer::
  // describe). At most 7 per request. A revocable buffer is wiped when the call ends.
  std::uint8_t attach(SealedBuffer&& buffer);
  std::vector<SealedBuffer>& buffers() noexcept { return buffers_; }

 private:
  // The builder and a zeroed first segment in one allocation: a small request is
  // built without the default 8 KiB calloc. Larger ones grow into heap segments.
  struct Builder : detail::Recycled {
    // Declared first so it is zeroed (value-initialized) before the builder uses it, as
    // capnp requires; ~MallocMessageBuilder re-zeroes the part it used.
    capnp::word scratch[64] = {};
    capnp::MallocMessageBuilder builder{kj::arrayPtr(scratch, 64), capnp::AllocationStrategy::GROW_HEURISTICALLY};
  };
  std::unique_ptr<Builder> builder_;
  std::vector<SealedBuffer> buffers_;
};

template <typename Params>
class Request : public RequestMessage {
 public:
  Request() : params_(message().initRoot<Params>()) {}
  typename Params::Builder params() { return params_; }

 private:
  typename Params::Builder params_;
};

// A decoded message received from the peer: word-aligned storage plus a reader bounded
// by ReaderLimits. Move-only.
class IncomingMessage {
 public:
  // Word storage of a received message (recycled per thread: no malloc per call).
  using Words = std::vector<capnp::word, detail::RecyclingAllocator<capnp::word>>;
  IncomingMessage() = default;
  // Takes validated, word-aligned bytes (see capnp_codec) and their segment table.
  IncomingMessage(Words words, std::span<const std::pair<std::uint32_t, std::uint32_t>> segments,
                  ReaderLimits limits);
  // Zero copy: segments point into `base`, memory that `keep` keeps alive (a read-only
  // mapping of a sealed memfd).
  IncomingMessage(std::shared_ptr<const void> keep, const capnp::word* base,
                  std::span<const std::pair<std::uint32_t, std::uint32_t>> segments, ReaderLimits limits);
  IncomingMessage(IncomingMessage&&) noexcept;
  IncomingMessage& operator=(IncomingMessage&&) noexcept;
  ~IncomingMessage();

  bool empty() const noexcept { return reader_ == nullptr; }
  // Back to empty (wiping first if asked), as assigning IncomingMessage{} would.
  void reset() noexcept;
  // Throws kj::Exception (caught by the runtime and mapped to INVALID_ARGUMENT) when
  // the message is malformed or exceeds the limits.
  capnp::AnyPointer::Reader root();
  // The owned copy is zeroed (sodium_memzero) when the message is destroyed.
  void wipe_on_destroy() noexcept { wipe_ = true; }

 private:
  void init(const capnp::word* base, std::span<const std::pair<std::uint32_t, std::uint32_t>> segments,
            ReaderLimits limits);
  Words words_;
  std::shared_ptr<const void> keep_;
  bool wipe_ = false;
  // The segment table and the reader over it in one allocation; it never moves, so
  // readers taken from root() stay valid when the message is moved.
  struct Reader;
  struct ReaderDeleter {
    void operator()(Reader* r) const noexcept;
  };
  std::unique_ptr<Reader, ReaderDeleter> reader_;
};

// A reply as the client sees it: the status the server sent and, when OK, the results.
class ResponseMessage {
 public:
  ResponseMessage() = default;
  ResponseMessage(Status status, IncomingMessage&& msg) : status_(std::move(status)), msg_(std::move(msg)) {}
  const Status& status() const noexcept { return status_; }
  capnp::AnyPointer::Reader root() { return msg_.root(); }
  bool has_results() const noexcept { return !msg_.empty(); }

  // Buffer #index that came with the results, verified against the announced size and
  // kind and mapped read-only. Throws std::invalid_argument (bad index, taken twice,
  // wrong type, seals, size). Buffers not taken are released when the response goes.
  ReceivedBuffer buffer(std::uint8_t index, std::uint64_t size, BufferKind kind) {
    return buffers_.take(index, size, kind);
  }
  // Same, from an IDL SharedBuffer reader.
  template <typename SharedBufferReader>
  ReceivedBuffer buffer(SharedBufferReader desc) {
    return buffer(desc.getFdIndex(), desc.getSize(), static_cast<BufferKind>(desc.getKind()));
  }
  std::size_t buffer_count() const noexcept { return buffers_.count(); }
  void set_buffers(detail::IncomingBuffers b) { buffers_ = std::move(b); }

 private:
  Status status_;
  IncomingMessage msg_;
  detail::IncomingBuffers buffers_;
};

template <typename Results>
class Response : public ResponseMessage {
 public:
  Response() = default;
  explicit Response(ResponseMessage&& m) : ResponseMessage(std::move(m)) {}
  // Valid only when status().is_ok(). Throws kj::Exception on a malformed reply.
  typename Results::Reader get() { return root().template getAs<Results>(); }
};

}  // namespace sealrpc
