// Every limit of the wire protocol on one screen (STYLE practice 7). A reviewer should
// see the attack surface here; each limit has a one-line reason.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace sealrpc::limits {

// Header is fixed-size and validated before any allocation.
inline constexpr std::size_t kHeaderBytes = 32;
// Hard ceiling for one inline frame payload. Bigger messages go out of line (memfd).
inline constexpr std::uint32_t kMaxPayloadBytes = 16u * 1024 * 1024;
// An encrypted frame's payload_len counts the AEAD tag too: the limit above binds the
// plaintext, so the wire allows it plus this many bytes (docs/protocol-crypto.md).
inline constexpr std::uint32_t kSealOverheadBytes = 16;
// Inbound fds per frame: low on purpose (dbus uses 16, capnp maxFdsPerMessage).
// Counts every fd of a request/response: the out-of-line message memfd plus buffers.
inline constexpr std::uint8_t kMaxFdsPerFrame = 8;
// Out-of-line (memfd) messages: default size above which a message leaves the frame,
// and the hard ceiling for one such message or explicit buffer (configurable lower).
inline constexpr std::size_t kDefaultOutOfLineThreshold = 64 * 1024;
inline constexpr std::uint64_t kMaxOutOfLineBytes = std::uint64_t{1} << 30;
// Owner-revocable buffers a server holds for one connection until released (M9), and
// how long a client may keep one when the handler set no lease.
inline constexpr std::size_t kMaxLeasedBuffersPerConnection = 1024;
inline constexpr std::chrono::milliseconds kDefaultBufferLease{30'000};
// Control buffer leaves room for more than kMaxFdsPerFrame so extras are *seen*
// (and closed) instead of silently truncated; truncation still counts as an error.
inline constexpr std::size_t kRecvControlFds = 32;
// capnp segment table bounds (DESIGN: read and bound the table ourselves).
inline constexpr std::uint32_t kMaxSegments = 64;
// Status message text in a response: short and safe.
inline constexpr std::size_t kMaxStatusMessageBytes = 1024;
// Per connection: calls the server runs at once before answering RESOURCE_EXHAUSTED.
inline constexpr std::size_t kMaxInflightPerConnection = 256;
// Per connection: frame bytes queued for sending; a peer that lets more pile up is
// dropped (R8, D3).
inline constexpr std::size_t kMaxOutboundBytes = 32u * 1024 * 1024;
// Per connection: fds (out-of-line replies, buffers) waiting in our send queue because
// the peer's socket buffer is full. A peer over the cap is dropped: it is not reading,
// and unread fds are charged to the *sender's* uid (K23), so such a peer could otherwise
// make every sendmsg with fds fail (F5), each fd holding a memfd's pages. The fds already
// in the peer's receive queue are bounded by the socket buffer (each one rides on an skb
// counted against it), so unread fds per peer stay below that bound plus this cap.
// (Only the queue is counted: a peer that reads, however slowly, is never dropped.)
inline constexpr std::size_t kMaxFdsInFlightPerPeer = 256;
// Server-wide and per-uid connection caps (varlink: 1024 per uid; dbus: 256).
inline constexpr std::size_t kMaxConnections = 16384;
inline constexpr std::size_t kMaxConnectionsPerUid = 4096;
// Connection rate limit (D2): uids with a token bucket of their own at once; beyond
// that, uids share one bucket (lib/rpc/connection_rate.hpp). ~64 B each.
inline constexpr std::size_t kMaxRateLimitedUids = 4096;
// A connection must complete a frame within this once its first byte arrived (slowloris).
inline constexpr std::chrono::milliseconds kFrameReadTimeout{10'000};
// Longest deadline a caller may ask for.
inline constexpr std::chrono::milliseconds kMaxCallTimeout{24 * 3600 * 1000};
// Back-off for accept() on EMFILE/ENFILE, so a full fd table never spins the CPU.
inline constexpr std::chrono::milliseconds kAcceptBackoff{50};

}  // namespace sealrpc::limits
