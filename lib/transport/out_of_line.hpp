// Out-of-line messages (DESIGN "Large buffers", docs/protocol-buffers.md): a request or
// response whose encoded message is larger than the threshold travels in a sealed,
// immutable memfd that is fd #0 of its frame; the frame's payload is a 16-byte
// descriptor {u64 size, u64 reserved = 0}. Explicit buffer fds follow it.
#pragma once

#include "sealrpc/message.hpp"
#include "transport/frame.hpp"

#include <capnp/message.h>

#include <cstdint>
#include <vector>

namespace sealrpc::wire {

struct OutOfLineOptions {
  std::size_t threshold = limits::kDefaultOutOfLineThreshold;  // larger messages go out of line
  std::uint64_t max_bytes = limits::kMaxOutOfLineBytes;        // larger messages are refused
};

struct EncodedFrame {
  std::vector<std::byte> bytes;  // header + payload
  std::vector<UniqueFd> fds;     // in frame order
};

// Encodes `h` + `msg`, inline or out of line, followed by `buffer_fds`. Sets flags,
// fd_count and payload_len. Throws std::length_error when the message is larger than
// o.max_bytes or there are too many fds, std::system_error on a failed memfd syscall.
// `reuse`: a spare byte vector whose capacity is reused (FrameChannel::take_spare()).
EncodedFrame encode_frame(FrameHeader h, capnp::MessageBuilder& msg, const OutOfLineOptions& o,
                          std::vector<UniqueFd> buffer_fds = {}, std::vector<std::byte> reuse = {});

// Decodes the message of a request/response frame. Out of line: takes fd #0 out of
// f.fds, verifies it (memfd, seals, size == descriptor, <= max_bytes) and reads it
// with pread into private memory (never mapped; a revocable one's copy is wiped when
// the message goes), then parses the copy. The fds left in f.fds are the explicit
// buffers, checked when they are handed to detail::IncomingBuffers. Throws
// buffers::BufferError / std::invalid_argument (all INVALID_ARGUMENT).
IncomingMessage decode_frame_message(Frame& f, ReaderLimits limits, std::uint64_t max_bytes);

// The size an out-of-line frame's descriptor announces (not yet verified against its
// memfd), or 0 for an inline frame or a malformed descriptor (decoding refuses those).
std::uint64_t announced_out_of_line_size(const Frame& f) noexcept;

// The 8-byte payload of a buffer_release frame: {u32 index, u32 reserved = 0}.
std::vector<std::byte> encode_buffer_release(std::uint32_t request_id, std::uint8_t index);
// Returns the index, or nullopt when the payload is malformed.
std::optional<std::uint8_t> decode_buffer_release(std::span<const std::byte> payload);

}  // namespace sealrpc::wire
