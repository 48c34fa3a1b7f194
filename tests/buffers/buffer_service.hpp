// A small service and helpers for the shared-buffer tests (header-only so the test list
// in tests/CMakeLists.txt is the only build change). Interface kBufferInterface:
//   0 sum   reads params.blob through ctx.buffer(); returns digest, copied, and (with
//           readTwiceMs) whether a second read after a pause saw the same bytes
//   1 make  creates a buffer of params.size/kind/lease filled with pattern(seed) and
//           attaches it to the results; keeps a dup'ed fd and a revoker for the test
//   2 reuse one owner-revocable buffer kept by the service (made on first use with
//           params.size): rewritten in place with pattern(seed) and attached through
//           share(), so every reply carries the same memfd
#pragma once

#include "sealrpc/buffer.hpp"
#include "sealrpc/client.hpp"
#include "sealrpc/service.hpp"

#include "support/testsvc.capnp.h"
#include "support/test_util.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>

namespace buftest {

inline constexpr std::uint64_t kBufferInterface = 0xd00dfeedcafe0002ull;
inline constexpr uid_t kMallory = 4244;  // hostile, non-root

inline std::byte pattern(std::uint64_t i, std::uint8_t seed) {
  return static_cast<std::byte>((i * 131 + seed + (i >> 12)) & 0xff);
}
inline void fill(std::span<std::byte> s, std::uint8_t seed) {
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = pattern(i, seed);
}
inline bool matches(std::span<const std::byte> s, std::uint8_t seed) {
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] != pattern(i, seed)) return false;
  return true;
}
inline std::uint64_t digest(std::span<const std::byte> s) {
  std::uint64_t h = 1469598103934665603ull;
  for (auto b : s) h = (h ^ static_cast<std::uint8_t>(b)) * 1099511628211ull;
  return h;
}
inline bool all_zero(std::span<const std::byte> s) {
  for (auto b : s)
    if (b != std::byte{0}) return false;
  return true;
}
// pread the whole fd and check it is all zeros.
inline bool fd_reads_zero(int fd, std::size_t size) {
  std::vector<std::byte> buf(size);
  std::size_t off = 0;
  while (off < size) {
    const ssize_t n = ::pread(fd, buf.data() + off, size - off, static_cast<off_t>(off));
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return all_zero(buf);
}
// /proc/self/maps lines of memfd mappings (leak check).
inline int count_memfd_maps() {
  std::ifstream in("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find("/memfd:") != std::string::npos) ++n;
  return n;
}

class BufferService final : public sealrpc::Service {
 public:
  BufferService() {
    sealrpc::AccessRuleSpec rule{.uids = {4243, kMallory}, .same_user = true};
    methods_.push_back(row(0, "sum", rule, &sum));
    methods_.push_back(row(1, "make", rule, &make));
    methods_.push_back(row(2, "reuse", rule, &reuse));
  }
  std::span<const sealrpc::MethodInfo> sealrpc_methods() const override { return methods_; }

  std::mutex mu;
  sealrpc::UniqueFd last_fd;          // dup of the last buffer made (guarded by mu)
  sealrpc::BufferRevoker last_revoker;
  std::atomic<int> sums{0};
  sealrpc::SealedBuffer reused;  // method 2's buffer (guarded by mu)

 private:
  static sealrpc::MethodInfo row(std::uint16_t ord, const char* name, sealrpc::AccessRuleSpec rule, sealrpc::Invoker inv) {
    sealrpc::MethodInfo m;
    m.id = {kBufferInterface, ord};
    m.interface_name = "Buffers";
    m.method_name = name;
    m.schema_file = "tests/buffers/buffer_service.hpp";
    m.rule = std::move(rule);
    m.invoke = inv;
    m.params_schema = capnp::Schema::from<testsvc::BlobParams>();
    return m;
  }

  static boost::asio::awaitable<sealrpc::Status> sum(sealrpc::Service& svc, sealrpc::CallContext& ctx,
                                                       capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
    auto& self = static_cast<BufferService&>(svc);
    auto params = p.getAs<testsvc::BlobParams>();
    sealrpc::ReceivedBuffer b;
    try {
      b = ctx.buffer(params.getBlob());
    } catch (const std::invalid_argument& e) {
      co_return sealrpc::Status{sealrpc::StatusCode::invalid_argument, e.what()};
    }
    const std::uint64_t d1 = digest(b.data());
    bool stable = true;
    if (params.getReadTwiceMs() > 0) {
      boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
      t.expires_after(std::chrono::milliseconds(params.getReadTwiceMs()));
      co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      stable = digest(b.data()) == d1;
    }
    auto res = r.initAs<testsvc::BlobResults>();
    res.setDigest(d1);
    res.setCopied(b.copied());
    res.setStable(stable);
    res.setSize(b.size());
    ++self.sums;
    co_return sealrpc::Status::ok();
  }

  static boost::asio::awaitable<sealrpc::Status> make(sealrpc::Service& svc, sealrpc::CallContext& ctx,
                                                        capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
    auto& self = static_cast<BufferService&>(svc);
    auto params = p.getAs<testsvc::BlobParams>();
    sealrpc::BufferOptions o;
    o.kind = params.getKind() == testsvc::BufKind::IMMUTABLE ? sealrpc::BufferKind::immutable
                                                            : sealrpc::BufferKind::owner_revocable;
    o.lease = std::chrono::milliseconds(params.getLeaseMs());
    auto w = sealrpc::WritableBuffer::create(params.getSize(), o);
    fill(w.data(), params.getSeed());
    auto sealed = std::move(w).seal();
    {
      std::lock_guard lock(self.mu);
      self.last_fd = sealed.dup_fd();
      self.last_revoker = sealed.revoker();
    }
    auto res = r.initAs<testsvc::BlobResults>();
    const std::uint8_t index = ctx.attach(std::move(sealed));
    // describe() needs the sealed buffer; fill the reference by hand after the move.
    auto ref = res.initBlob();
    ref.setSize(params.getSize());
    ref.setFdIndex(index);
    ref.setKind(params.getKind());
    ref.setLeaseMs(params.getLeaseMs());
    co_return sealrpc::Status::ok();
  }

  static boost::asio::awaitable<sealrpc::Status> reuse(sealrpc::Service& svc, sealrpc::CallContext& ctx,
                                                         capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
    auto& self = static_cast<BufferService&>(svc);
    auto params = p.getAs<testsvc::BlobParams>();
    sealrpc::SealedBuffer handle;
    {
      std::lock_guard lock(self.mu);
      if (!self.reused.valid()) self.reused = sealrpc::WritableBuffer::create(params.getSize()).seal();
      if (self.reused.size() != params.getSize()) co_return sealrpc::Status{sealrpc::StatusCode::invalid_argument, "size"};
      fill(self.reused.writable(), params.getSeed());  // the producer writes straight into it
      handle = self.reused.share();
    }
    auto res = r.initAs<testsvc::BlobResults>();
    const std::uint8_t index = ctx.attach(std::move(handle));
    auto ref = res.initBlob();
    ref.setSize(params.getSize());
    ref.setFdIndex(index);
    ref.setKind(testsvc::BufKind::OWNER_REVOCABLE);
    co_return sealrpc::Status::ok();
  }

  std::vector<sealrpc::MethodInfo> methods_;
};

// A connected client with its own io thread and blocking calls.
class SyncClient {
 public:
  explicit SyncClient(const std::string& path, sealrpc::ClientOptions opts = {}) {
    thread_ = std::thread([this] { io_.run(); });
    std::promise<void> done;
    sealrpc::Client::async_connect(io_.get_executor(), path, opts, [&](boost::system::error_code ec, sealrpc::Client c) {
      ec_ = ec;
      client_ = c;
      done.set_value();
    });
    done.get_future().wait();
  }
  ~SyncClient() {
    client_.close();
    guard_.reset();
    thread_.join();
  }
  boost::system::error_code connect_error() const { return ec_; }
  sealrpc::Client& client() { return client_; }

  template <typename Results>
  std::pair<boost::system::error_code, sealrpc::Response<Results>> call(std::uint64_t iface, std::uint16_t ordinal,
                                                                        sealrpc::RequestMessage req) {
    std::promise<std::pair<boost::system::error_code, sealrpc::Response<Results>>> p;
    client_.async_call<Results>({iface, ordinal}, std::move(req),
                                [&](boost::system::error_code ec, sealrpc::Response<Results> r) {
                                  p.set_value({ec, std::move(r)});
                                });
    return p.get_future().get();
  }

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_{io_.get_executor()};
  std::thread thread_;
  sealrpc::Client client_;
  boost::system::error_code ec_;
};

// --- raw frames for hostile peers -----------------------------------------------------

inline void put64(std::vector<std::byte>& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

// A request header (32 bytes, framing v1) with the given flags and fd count.
inline std::vector<std::byte> raw_header(std::uint64_t iface, std::uint16_t ordinal, std::uint8_t flags,
                                         std::uint8_t fd_count, std::uint32_t payload_len, std::uint32_t rid = 7) {
  std::vector<std::byte> b(32, std::byte{0});
  const std::uint32_t magic = 0x43505253;
  std::memcpy(b.data(), &magic, 4);
  b[4] = std::byte{1};
  b[5] = std::byte{3};  // request
  b[6] = static_cast<std::byte>(fd_count);
  b[7] = static_cast<std::byte>(flags);
  std::memcpy(b.data() + 8, &payload_len, 4);
  std::memcpy(b.data() + 12, &ordinal, 2);
  std::memcpy(b.data() + 16, &rid, 4);
  put64(b, 24, iface);
  return b;
}

// header + 16-byte out-of-line descriptor {size, reserved}.
inline std::vector<std::byte> ool_request(std::uint64_t iface, std::uint16_t ordinal, std::uint64_t size,
                                          std::uint8_t fd_count = 1, std::uint64_t reserved = 0) {
  auto b = raw_header(iface, ordinal, 0x01, fd_count, 16);
  b.resize(48);
  put64(b, 32, size);
  put64(b, 40, reserved);
  return b;
}

using testutil::send_with_fds;

struct RawReply {
  int type = -1;       // frame type, 0 on EOF, -1 on timeout
  int status = -1;     // response status
  int flags = 0;
  int fds = 0;         // fds that came with it (closed)
  std::string payload;
};
// Reads frames (recvmsg, so fds are seen and closed) until the first non-HELLO one.
inline RawReply read_raw(int sock, int timeout_ms = 5000) {
  std::string buf;
  RawReply r;
  for (;;) {
    while (buf.size() >= 32) {
      std::uint32_t len;
      std::memcpy(&len, buf.data() + 8, 4);
      if (buf.size() < 32 + len) break;
      const int type = static_cast<unsigned char>(buf[5]);
      if (type != 1) {
        std::uint16_t st;
        std::memcpy(&st, buf.data() + 14, 2);
        r.type = type;
        r.status = st;
        r.flags = static_cast<unsigned char>(buf[7]);
        r.payload = buf.substr(32, len);
        return r;
      }
      buf.erase(0, 32 + len);
    }
    pollfd p{sock, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return r;
    char tmp[65536];
    iovec iov{tmp, sizeof tmp};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < k; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        ::close(fd);
        ++r.fds;
      }
    }
    if (n <= 0) {
      r.type = 0;
      return r;
    }
    buf.append(tmp, static_cast<std::size_t>(n));
  }
}

}  // namespace buftest
