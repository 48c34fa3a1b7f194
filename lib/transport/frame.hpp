// Framing v1 (docs/PROTOCOL.md): a fixed 32-byte little-endian header, then the
// payload; fds ride on the frame's first byte and are counted in the header.
//
// FrameReader is pure (no I/O): the socket layer appends what one recvmsg returned,
// bytes plus the fds of that recvmsg, and pulls complete frames. Invariants:
//  * a header is fully validated before anything is allocated for its payload;
//  * every received fd is owned (UniqueFd) from the moment it is handed in, and is
//    either attached to the one frame it arrived with or closed by a ProtocolError;
//  * fds are attributed to frames by stream position, never by read boundaries (K21).
#pragma once

#include "sealrpc/unique_fd.hpp"
#include "transport/limits.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace sealrpc::wire {

inline constexpr std::uint32_t kMagic = 0x43505253;  // "SRPC" in little-endian byte order
inline constexpr std::uint8_t kVersion = 1;

enum class FrameType : std::uint8_t {
  hello = 1,     // server -> client: connection accepted
  refused = 2,   // server -> client: allow-list said no; payload = reason; then close
  request = 3,   // client -> server
  response = 4,  // server -> client; status field; payload = results (OK) or message
  cancel = 5,    // client -> server; request_id only
  goodbye = 6,   // either way: protocol error or shutdown; payload = reason; then close
  buffer_release = 7,  // either way: the receiver is done with buffer #index of request_id
  handshake_client = 8,  // client -> server, first frame: key exchange (docs/protocol-crypto.md)
  handshake_server = 9,  // server -> client: reply to handshake_client
};

// Header flag: the payload is AEAD ciphertext, the header its additional data
// (docs/protocol-crypto.md). Set and checked only by FrameChannel's cipher.
inline constexpr std::uint8_t kFlagEncrypted = 0x02;

struct FrameHeader {
  FrameType type = FrameType::request;
  std::uint8_t fd_count = 0;
  std::uint8_t flags = 0;
  std::uint32_t payload_len = 0;
  std::uint16_t ordinal = 0;
  std::uint16_t status = 0;
  std::uint32_t request_id = 0;
  std::uint32_t timeout_ms = 0;
  std::uint64_t interface_id = 0;
};

// A framing violation: the connection must be closed. The message is safe to log and
// to send to the peer (it never contains payload bytes).
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void encode_header(const FrameHeader& h, std::byte* out) noexcept;
// Header flag on request/response: the message travels in a sealed memfd, fd #0 of the
// frame; the payload is the 16-byte out-of-line descriptor (docs/protocol-buffers.md).
inline constexpr std::uint8_t kFlagOutOfLine = 0x01;
inline constexpr std::uint32_t kOutOfLineDescriptorBytes = 16;
inline constexpr std::uint32_t kBufferReleaseBytes = 8;
// Flags a frame type may carry besides kFlagEncrypted, and the per-type fd rules:
// fds only on request/response; out of line => at least one fd and a descriptor-sized
// payload; buffer_release => an 8-byte payload. Throws ProtocolError.
std::uint8_t buffer_flags(FrameType type) noexcept;
void check_buffer_rules(const FrameHeader& h);

// Validates magic, version, type, flags, payload bound and fd count bound.
// Throws ProtocolError.
FrameHeader decode_header(std::span<const std::byte, limits::kHeaderBytes> in);

struct Frame {
  FrameHeader header;
  std::span<const std::byte> payload;  // valid until the next FrameReader call
  std::vector<UniqueFd> fds;
};

class FrameReader {
 public:
  explicit FrameReader(std::uint32_t max_payload = limits::kMaxPayloadBytes);

  // Writable space of at least `min_bytes` at the tail of the buffer.
  std::span<std::byte> prepare(std::size_t min_bytes);
  // `n` bytes were written into the prepared space by one recvmsg that also returned
  // `fds` (possibly none). Throws ProtocolError (closing the fds) on an fd-count abuse.
  void commit(std::size_t n, std::vector<UniqueFd> fds);
  // The next complete frame, or nullopt. Throws ProtocolError.
  std::optional<Frame> next();
  // True when some bytes of an incomplete frame are buffered (slowloris timer).
  bool has_partial() const noexcept { return end_ > begin_; }
  std::size_t buffered() const noexcept { return end_ - begin_; }

 private:
  struct FdBatch {
    std::uint64_t first;  // stream offset of the first byte of that recvmsg
    std::uint64_t last;   // stream offset of its last byte
    std::vector<UniqueFd> fds;
  };
  std::uint32_t max_payload_;
  // Uninitialised storage, allocated on first use and given back once a large frame is
  // consumed: an idle connection holds at most kIdleBufferBytes, mostly untouched.
  std::unique_ptr<std::byte[]> buf_;
  std::size_t cap_ = 0;
  std::size_t begin_ = 0, end_ = 0;
  std::uint64_t base_ = 0;  // stream offset of buf_[0]
  std::deque<FdBatch> batches_;
  std::optional<FrameHeader> pending_;  // header of the frame being assembled
};

// Appends header + payload to `out` (no fds; those go with sendmsg).
void append_frame(std::vector<std::byte>& out, FrameHeader h, std::span<const std::byte> payload);

}  // namespace sealrpc::wire
