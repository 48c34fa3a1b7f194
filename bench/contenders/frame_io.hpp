// Blocking length-prefixed frame I/O on a stream socket, shared by the raw
// contender's server and client (the floor: as few syscalls as a blocking design
// can do: one sendmsg per frame, usually one recv).
#pragma once

#include "server_common.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace sealrpc::bench::frame_io {

inline void store_le32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}
inline std::uint32_t load_le32(const std::byte* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

// Sends all of the iovecs (partial writes resumed). Returns false on error/peer gone.
inline bool send_all(int fd, iovec* iov, int iovcnt) {
  while (iovcnt > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    auto left = static_cast<std::size_t>(n);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

// Reads one frame into buf (header included), growing buf only when a frame is larger
// than any seen before. `have` carries bytes already read past the previous frame.
// Returns the payload length, or -1 on EOF/error/oversized frame.
inline long read_frame(int fd, std::vector<std::byte>& buf, std::size_t& have) {
  auto fill_to = [&](std::size_t want) {
    while (have < want) {
      const ssize_t n = ::recv(fd, buf.data() + have, buf.size() - have, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      have += static_cast<std::size_t>(n);
    }
    return true;
  };
  if (buf.size() < server::kHeaderSize) buf.resize(4096);
  if (!fill_to(server::kHeaderSize)) return -1;
  const std::uint32_t len = load_le32(buf.data());
  if (len > server::kMaxFrame) return -1;
  const std::size_t need = server::kHeaderSize + len;
  if (buf.size() < need) buf.resize(need);
  if (!fill_to(need)) return -1;
  return static_cast<long>(len);
}

// Drops the frame of `frame_size` bytes at the front of buf, keeping any extra bytes.
inline void consume(std::vector<std::byte>& buf, std::size_t& have, std::size_t frame_size) {
  if (have > frame_size) std::memmove(buf.data(), buf.data() + frame_size, have - frame_size);
  have -= frame_size;
}

}  // namespace sealrpc::bench::frame_io
