// Shared by the large-transfer benchmarks (sealrpc_memfd.cpp, sealrpc_transfer.cpp):
// the socket-copy baseline (a producer thread that fills its buffer and sends it
// through an AF_UNIX stream socket) and the consumer's read of every byte.
#pragma once

#include "sealrpc/unique_fd.hpp"

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <semaphore>
#include <span>
#include <stdexcept>
#include <thread>

namespace sealrpc::bench {

inline std::uint64_t read_all(std::span<const std::byte> s) {
  std::uint64_t sum = 0;
  const auto* w = reinterpret_cast<const std::uint64_t*>(s.data());
  for (std::size_t i = 0; i < s.size() / 8; ++i) sum += w[i];
  return sum;
}

struct SocketPair {
  sealrpc::UniqueFd a, b;
  SocketPair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

// The producer of the socket baseline: a thread that, each time it is released, writes
// new contents into `src` and sends all of it.
class SocketWriter {
 public:
  SocketWriter(int sock, std::span<std::byte> src) : sock_(sock), src_(src), t_([this] { run(); }) {}
  ~SocketWriter() {
    stop_ = true;
    go_.release();
    t_.join();
  }
  void send_once() { go_.release(); }

 private:
  void run() {
    for (unsigned char fill = 1;; ++fill) {
      go_.acquire();
      if (stop_) return;
      std::memset(src_.data(), fill, src_.size());  // the producer writes
      std::size_t off = 0;
      while (off < src_.size()) {
        const ssize_t k = ::send(sock_, src_.data() + off, src_.size() - off, MSG_NOSIGNAL);
        if (k <= 0) return;
        off += static_cast<std::size_t>(k);
      }
    }
  }
  int sock_;
  std::span<std::byte> src_;
  std::binary_semaphore go_{0};
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// Receives exactly dst.size() bytes from `sock`; false on EOF or error.
inline bool recv_all(int sock, std::span<std::byte> dst) {
  std::size_t off = 0;
  while (off < dst.size()) {
    const ssize_t k = ::recv(sock, dst.data() + off, dst.size() - off, 0);
    if (k <= 0) return false;
    off += static_cast<std::size_t>(k);
  }
  return true;
}

// Large socket buffers on both ends: the socket path's best case.
inline void widen_socket_buffers(int a, int b) {
  const int big = 4 << 20;
  for (int s : {a, b}) {
    (void)::setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    (void)::setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  }
}

}  // namespace sealrpc::bench
