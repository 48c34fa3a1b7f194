// FrameChannel: the single recvmsg read path and the sendmsg write path.
#include "transport/channel.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace sealrpc::transport {
namespace asio = boost::asio;

namespace {
constexpr std::size_t kSpareBytes = 4096;
}
using namespace asio::experimental::awaitable_operators;

FrameChannel::FrameChannel(asio::any_io_executor ex, UniqueFd fd, std::uint32_t max_payload)
    : socket_(ex), read_timer_(ex), reader_(max_payload) {
  boost::system::error_code ec;
  socket_.assign(asio::local::stream_protocol(), fd.release(), ec);  // ownership moves to Asio
  if (ec) throw boost::system::system_error(ec, "assign socket");
  socket_.non_blocking(true);
}

FrameChannel::~FrameChannel() = default;

bool FrameChannel::recv_some() {
  auto space = reader_.prepare(16 * 1024);
  iovec iov{space.data(), space.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * limits::kRecvControlFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket_.native_handle(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    throw boost::system::system_error(errno, boost::system::system_category(), "recvmsg");
  }
  // Own every fd the kernel installed before looking at anything else (K17: count from
  // cmsg_len, which may hold more than we asked for).
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) throw wire::ProtocolError("control data truncated (too many fds)");
  if (n == 0) {
    if (reader_.has_partial()) throw wire::ProtocolError("connection closed in the middle of a frame");
    throw PeerClosed();
  }
  // A short read without fds means the receive queue was empty: unix stream recvmsg
  // only stops early after an skb that carried fds or before one from another writer
  // (different creds), and then the remaining data is a later epoll edge's, not ours.
  // read_frame then waits without a speculative recvmsg that would return EAGAIN.
  drained_ = static_cast<std::size_t>(n) < space.size() && fds.empty();
  reader_.commit(static_cast<std::size_t>(n), std::move(fds));
  return true;
}

void FrameChannel::set_cipher(std::unique_ptr<FrameCipher> cipher) { cipher_ = std::move(cipher); }

wire::Frame FrameChannel::open_frame(wire::Frame f) {
  const bool sealed = (f.header.flags & wire::kFlagEncrypted) != 0;
  if (!cipher_) {
    if (sealed) throw wire::ProtocolError("encrypted frame on a plaintext connection");
    return f;
  }
  if (!sealed) throw IntegrityError();  // a plaintext frame after the handshake: injected
  cipher_->open(f.header, f.payload, opened_);
  f.header.flags &= static_cast<std::uint8_t>(~wire::kFlagEncrypted);
  f.header.payload_len = static_cast<std::uint32_t>(opened_.size());
  f.payload = opened_;
  return f;
}

void FrameChannel::seal_frames(std::vector<std::byte>& bytes) {
  if (!cipher_ || bytes.empty()) return;
  const auto first = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(bytes.data(), limits::kHeaderBytes));
  if (limits::kHeaderBytes + first.payload_len == bytes.size()) {  // the usual case: one frame, sealed in place
    cipher_->seal(bytes, 0);
    return;
  }
  std::vector<std::byte> sealed;
  sealed.reserve(bytes.size() + limits::kSealOverheadBytes);
  for (std::size_t at = 0; at < bytes.size();) {  // callers may queue several frames at once
    const auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(bytes.data() + at, limits::kHeaderBytes));
    const std::size_t end = at + limits::kHeaderBytes + h.payload_len;
    if (end > bytes.size()) throw std::logic_error("send: bytes are not whole frames");
    const std::size_t out = sealed.size();
    sealed.insert(sealed.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at), bytes.begin() + static_cast<std::ptrdiff_t>(end));
    cipher_->seal(sealed, out);
    at = end;
  }
  bytes.swap(sealed);
}

std::optional<wire::Frame> FrameChannel::poll_frame() {
  for (;;) {
    if (auto f = reader_.next()) return open_frame(std::move(*f));
    if (!open_) throw PeerClosed();
    if (std::exchange(drained_, false) || !recv_some()) return std::nullopt;
  }
}

// Not a coroutine in the common case: returns the socket wait itself.
asio::awaitable<void> FrameChannel::wait_frame(std::chrono::milliseconds partial_timeout) {
  if (!reader_.has_partial()) return socket_.async_wait(asio::socket_base::wait_read, asio::use_awaitable);
  return wait_partial(partial_timeout);
}

asio::awaitable<void> FrameChannel::wait_partial(std::chrono::milliseconds partial_timeout) {
  read_timer_.expires_after(partial_timeout);
  auto r = co_await (socket_.async_wait(asio::socket_base::wait_read, asio::use_awaitable) ||
                     read_timer_.async_wait(asio::use_awaitable));
  // Only a frame still half in is late: a synchronous call (Client::call) may have read
  // the rest itself meanwhile.
  if (r.index() == 1 && reader_.has_partial()) throw wire::ProtocolError("frame not completed in time");
}

asio::awaitable<wire::Frame> FrameChannel::read_frame(std::chrono::milliseconds partial_timeout) {
  for (;;) {
    if (auto f = poll_frame()) co_return std::move(*f);
    co_await wait_frame(partial_timeout);
  }
}

bool FrameChannel::try_send(Outgoing& out) {
  while (out.sent < out.bytes.size()) {
    iovec iov{out.bytes.data() + out.sent, out.bytes.size() - out.sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * limits::kMaxFdsPerFrame)];
    if (out.sent == 0 && !out.fds.empty()) {  // fds ride on the frame's first byte
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * out.fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * out.fds.size());
      for (std::size_t i = 0; i < out.fds.size(); ++i) {
        const int fd = out.fds[i].get();
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
      }
    }
    const ssize_t n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      throw boost::system::system_error(errno, boost::system::system_category(), "sendmsg");
    }
    if (out.sent == 0) out.fds.clear();  // the kernel holds its own references now
    out.sent += static_cast<std::size_t>(n);
  }
  return true;
}

bool FrameChannel::send(std::vector<std::byte> bytes, std::vector<UniqueFd> fds) {
  if (!open_) return false;
  if (outbound_bytes_ + bytes.size() > limits::kMaxOutboundBytes) return false;
  seal_frames(bytes);  // after the checks: a refused frame must not use up a nonce
  Outgoing out{std::move(bytes), std::move(fds), 0};
  if (queue_.empty()) {
    try {
      if (try_send(out)) {
        // Keep small storage for the next frame (bounded: idle connections stay small).
        if (out.bytes.capacity() <= kSpareBytes && out.bytes.capacity() > spare_.capacity()) spare_ = std::move(out.bytes);
        return true;
      }
    } catch (const boost::system::system_error&) {
      close();
      return false;
    }
  }
  // The peer's socket buffer is full: what goes into our queue now is what it is not
  // reading. Over either cap the caller drops the peer (R8, F5).
  if (queued_fds_ + out.fds.size() > limits::kMaxFdsInFlightPerPeer) return false;
  outbound_bytes_ += out.bytes.size() - out.sent;
  queued_fds_ += out.fds.size();
  queue_.push_back(std::move(out));
  if (!draining_) {
    draining_ = true;
    asio::co_spawn(socket_.get_executor(), drain(shared_from_this()), asio::detached);
  }
  return true;
}

bool FrameChannel::send_queued() {
  while (open_ && !queue_.empty()) {
    auto& out = queue_.front();
    const std::size_t before = out.sent;
    const std::size_t nfds = out.fds.size();
    const bool done = try_send(out);
    outbound_bytes_ -= out.sent - before;
    if (before == 0 && out.sent > 0) queued_fds_ -= nfds;  // the fds went with the first byte
    if (!done) return false;
    queue_.pop_front();
  }
  return true;
}

void FrameChannel::flush() {
  try {
    (void)send_queued();
  } catch (const std::exception&) {
    close();
  }
}

asio::awaitable<void> FrameChannel::drain(std::shared_ptr<FrameChannel> self) {
  (void)self;  // keeps the channel alive while bytes are queued
  try {
    while (!send_queued()) co_await socket_.async_wait(asio::socket_base::wait_write, asio::use_awaitable);
  } catch (const std::exception&) {
    close();
  }
  draining_ = false;
}

void FrameChannel::close_with(wire::FrameType type, std::string_view reason) {
  if (!open_) return;
  std::vector<std::byte> bytes;
  wire::FrameHeader h;
  h.type = type;
  wire::append_frame(bytes, h, std::as_bytes(std::span(reason.data(), std::min(reason.size(), limits::kMaxStatusMessageBytes))));
  seal_frames(bytes);
  Outgoing out{std::move(bytes), {}, 0};
  // Best effort and only between frames: a peer that does not read loses the reason.
  if (queue_.empty()) {
    try {
      (void)try_send(out);
    } catch (const std::exception&) {
    }
  }
  close();
}

void FrameChannel::close() {
  if (!open_) return;
  open_ = false;
  boost::system::error_code ec;
  socket_.shutdown(asio::socket_base::shutdown_both, ec);
  socket_.close(ec);  // cancels pending waits; the fd is closed exactly once, by Asio
  read_timer_.cancel();
  queue_.clear();
  spare_ = {};
  queued_fds_ = 0;
  outbound_bytes_ = 0;
  cipher_.reset();  // wipes the session keys
}

}  // namespace sealrpc::transport
