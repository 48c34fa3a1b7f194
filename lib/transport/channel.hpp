// FrameChannel: one connected AF_UNIX stream socket speaking framing v1.
//
// WARNING: this is the *only* place that reads from a SealRPC socket. Every read is a
// recvmsg with control space and MSG_CMSG_CLOEXEC, so passed fds are never dropped
// (K18: Asio's async_read_some and read() silently discard them) and are owned the
// moment they arrive. MSG_CTRUNC is a protocol error (K17, K19, F10).
//
// Threading: all members must be used from the channel's executor (a strand).
// Lifetime: held by shared_ptr; the writer coroutine keeps it alive while sending.
#pragma once

#include "transport/frame.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

namespace sealrpc::transport {

// The peer closed the connection cleanly between frames.
class PeerClosed : public std::runtime_error {
 public:
  PeerClosed() : std::runtime_error("peer closed the connection") {}
};

// A frame failed authentication on an encrypted connection: tampered, replayed,
// reordered, dropped or injected. Nothing of it is delivered; the connection closes.
class IntegrityError : public wire::ProtocolError {
 public:
  IntegrityError() : wire::ProtocolError("frame failed authentication (tampered, replayed, reordered or dropped)") {}
};

// Per-connection frame protection installed after a finished handshake
// (security::SecureChannel). Frames are sealed and opened strictly in wire order.
class FrameCipher {
 public:
  virtual ~FrameCipher() = default;
  // Seals the one encoded frame at `at` in `bytes` (header + plaintext payload, to the
  // end of `bytes`): sets kFlagEncrypted, adds kSealOverheadBytes to payload_len and
  // encrypts the payload with the final header bytes as additional data.
  virtual void seal(std::vector<std::byte>& bytes, std::size_t at) = 0;
  // Opens a received sealed frame into `plaintext`. Throws IntegrityError.
  virtual void open(const wire::FrameHeader& sealed, std::span<const std::byte> ciphertext,
                    std::vector<std::byte>& plaintext) = 0;
};

class FrameChannel : public std::enable_shared_from_this<FrameChannel> {
 public:
  FrameChannel(boost::asio::any_io_executor ex, UniqueFd fd, std::uint32_t max_payload = limits::kMaxPayloadBytes);
  ~FrameChannel();

  boost::asio::any_io_executor get_executor() { return socket_.get_executor(); }
  int native_handle() { return socket_.native_handle(); }

  // The next complete frame. A frame started but not finished within
  // `partial_timeout` is a protocol error (slowloris, R2). Throws PeerClosed,
  // wire::ProtocolError, or boost::system::system_error.
  boost::asio::awaitable<wire::Frame> read_frame(std::chrono::milliseconds partial_timeout);
  // The same in two steps, for read loops (no coroutine frame per frame): poll_frame()
  // returns the next complete frame if one is buffered or arrives with one recvmsg now,
  // else nullopt; wait_frame() then waits for readability (with `partial_timeout` when a
  // frame is half in: a ProtocolError when it runs out). Both throw like read_frame.
  std::optional<wire::Frame> poll_frame();
  boost::asio::awaitable<void> wait_frame(std::chrono::milliseconds partial_timeout);
  // Bytes already read from the socket and not yet returned by poll_frame (a whole
  // frame or part of one). A readiness wait does not fire for them.
  bool has_buffered_input() const noexcept { return reader_.buffered() != 0; }
  // Completes `handler(error_code)` when the socket is readable (or closed), without
  // reading. Several waits may be pending at once; readiness completes them all.
  template <typename Handler>
  void async_wait_readable(Handler&& handler) {
    socket_.async_wait(boost::asio::socket_base::wait_read, std::forward<Handler>(handler));
  }

  // Queues one encoded frame (header + payload) and its fds; fds ride on the frame's
  // first byte. Never blocks; tries to send at once. Returns false if the channel is
  // closed, or the outbound queue is over its byte limit (R8) or holds too many fds
  // waiting for the peer's socket buffer (F5): the caller drops the peer.
  bool send(std::vector<std::byte> bytes, std::vector<UniqueFd> fds = {});
  std::size_t outbound_bytes() const noexcept { return outbound_bytes_; }
  // For a caller that drives the socket itself (Client::call) instead of the event
  // loop: true while frames wait for room in the socket buffer; flush() sends what fits
  // now (never blocks; closes the channel on a fatal error).
  bool has_queued_output() const noexcept { return !queue_.empty(); }
  void flush();
  // An empty byte vector to encode the next frame into: the storage of the last small
  // frame that went out in one sendmsg, so steady small calls reuse one buffer.
  std::vector<std::byte> take_spare() noexcept { return std::move(spare_); }

  // From now on every frame sent is sealed and every frame read must be sealed and
  // authentic (a plaintext frame is an IntegrityError). Call once, between frames,
  // right after the handshake's last plaintext frame was queued or read.
  void set_cipher(std::unique_ptr<FrameCipher> cipher);
  bool is_encrypted() const noexcept { return cipher_ != nullptr; }

  // Sends a goodbye/refused frame best-effort, then shuts the socket down.
  void close_with(wire::FrameType type, std::string_view reason);
  void close();
  bool is_open() const noexcept { return open_; }

 private:
  struct Outgoing {
    std::vector<std::byte> bytes;
    std::vector<UniqueFd> fds;
    std::size_t sent = 0;
  };
  bool recv_some();               // false on EAGAIN
  wire::Frame open_frame(wire::Frame f);           // throws IntegrityError / ProtocolError
  void seal_frames(std::vector<std::byte>& bytes);  // no-op without a cipher
  bool try_send(Outgoing& out);   // true when fully sent; throws on fatal errors
  bool send_queued();             // true when the queue is empty; throws on fatal errors
  boost::asio::awaitable<void> drain(std::shared_ptr<FrameChannel> self);
  boost::asio::awaitable<void> wait_partial(std::chrono::milliseconds partial_timeout);

  boost::asio::local::stream_protocol::socket socket_;
  boost::asio::steady_timer read_timer_;
  wire::FrameReader reader_;
  std::deque<Outgoing> queue_;
  std::size_t outbound_bytes_ = 0;
  std::unique_ptr<FrameCipher> cipher_;
  std::vector<std::byte> opened_;  // plaintext of the last frame read when encrypted
  std::vector<std::byte> spare_;   // see take_spare(); capacity <= kSpareBytes
  std::size_t queued_fds_ = 0;     // fds in queue_ not yet handed to the kernel (F5 cap)
  bool draining_ = false;
  bool drained_ = false;  // the last recvmsg emptied the socket (see recv_some)
  bool open_ = true;
};

}  // namespace sealrpc::transport
