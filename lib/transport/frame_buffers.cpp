// Per-frame-type rules for fds and the out-of-line flag (docs/protocol-buffers.md).
// Kept apart from frame.cpp so the buffer and encryption work touch it independently.
#include "transport/frame.hpp"

namespace sealrpc::wire {

std::uint8_t buffer_flags(FrameType type) noexcept {
  return type == FrameType::request || type == FrameType::response ? kFlagOutOfLine : 0;
}

void check_buffer_rules(const FrameHeader& h) {
  const bool carries_message = h.type == FrameType::request || h.type == FrameType::response;
  if (!carries_message && h.fd_count != 0) throw ProtocolError("fds attached to a frame type that takes none");
  if (h.flags & kFlagOutOfLine) {
    if (h.fd_count == 0) throw ProtocolError("bad frame flags: out-of-line frame without its memfd");
    // The descriptor may be AEAD-sealed (kFlagEncrypted adds the tag).
    const std::uint32_t tag = (h.flags & kFlagEncrypted) ? limits::kSealOverheadBytes : 0;
    if (h.payload_len != kOutOfLineDescriptorBytes + tag) throw ProtocolError("bad frame flags: out-of-line descriptor has the wrong size");
  }
  if (h.type == FrameType::buffer_release) {
    const std::uint32_t tag = (h.flags & kFlagEncrypted) ? limits::kSealOverheadBytes : 0;
    if (h.payload_len != kBufferReleaseBytes + tag) throw ProtocolError("buffer release has the wrong size");
  }
}

}  // namespace sealrpc::wire
