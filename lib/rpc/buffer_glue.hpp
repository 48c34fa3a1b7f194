// The buffer side of dispatch, kept out of server.cpp/client.cpp (which call it from
// one line each): decoding out-of-line requests/responses with their buffer fds,
// encoding replies with attached buffers, and the server's per-connection table of
// owner-revocable buffers it must wipe on release, drop, lease expiry (docs/buffers.md).
#pragma once

#include "sealrpc/buffer.hpp"
#include "sealrpc/client.hpp"
#include "sealrpc/server.hpp"
#include "transport/out_of_line.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace sealrpc::detail {

// Owner-revocable buffers one connection's client still holds. Destroying or clearing
// the table wipes them all (connection drop). Use on the connection's strand only.
class LeaseTable {
 public:
  explicit LeaseTable(boost::asio::any_io_executor ex);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // Holds `buf` until release(rid, index), clear() or `lease` passes; then wipes it.
  void add(std::uint32_t rid, std::uint8_t index, SealedBuffer buf, std::chrono::milliseconds lease);
  void release(std::uint32_t rid, std::uint8_t index);
  void clear() noexcept;
  std::size_t size() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Per-uid account of what calls in progress make the server hold because of client
// memfds (SECURITY.md M9, the dbus-broker BYTES/FDS slots): bytes of out-of-line
// request messages (copied into server memory) and of request buffers (mapped or
// copied when the handler takes them), and the number of those memfds. Shared by all
// connections of a server; thread-safe. A uid has an entry only while it holds
// something, so the map never has more entries than uids with a call in progress.
class BufferQuota {
 public:
  BufferQuota(std::uint64_t max_bytes, std::size_t max_buffers) : max_bytes_(max_bytes), max_buffers_(max_buffers) {}
  // Adds bytes/buffers to uid's usage; false (nothing added, `why` set) if either
  // total would go over its limit.
  bool try_charge(uid_t uid, std::uint64_t bytes, std::size_t buffers, const char** why) noexcept;
  void release(uid_t uid, std::uint64_t bytes, std::size_t buffers) noexcept;
  struct Usage {
    std::uint64_t bytes = 0;
    std::size_t buffers = 0;
  };
  Usage usage(uid_t uid) const;
  std::size_t uids() const;  // entries in the map (uids holding something)

 private:
  const std::uint64_t max_bytes_;
  const std::size_t max_buffers_;
  mutable std::mutex mu_;
  std::unordered_map<uid_t, Usage> used_;  // guarded by mu_; no entry at zero
};

// A call went over its uid's quota: answered RESOURCE_EXHAUSTED with what() (ours, safe).
class QuotaExceeded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One call's share of its uid's BufferQuota. Move-only; gives back everything it holds
// exactly once: on reset() or destruction (the Call's, after its params and buffers).
class QuotaCharge {
 public:
  QuotaCharge() noexcept = default;
  QuotaCharge(std::shared_ptr<BufferQuota> q, uid_t uid) noexcept : quota_(std::move(q)), uid_(uid) {}
  QuotaCharge(QuotaCharge&& o) noexcept
      : quota_(std::move(o.quota_)), uid_(o.uid_), bytes_(std::exchange(o.bytes_, 0)), buffers_(std::exchange(o.buffers_, 0)) {}
  QuotaCharge& operator=(QuotaCharge&& o) noexcept {
    if (this != &o) {
      reset();
      quota_ = std::move(o.quota_);
      uid_ = o.uid_;
      bytes_ = std::exchange(o.bytes_, 0);
      buffers_ = std::exchange(o.buffers_, 0);
    }
    return *this;
  }
  ~QuotaCharge() { reset(); }
  // Adds to this charge; throws QuotaExceeded (nothing added) over the uid's quota.
  void add(std::uint64_t bytes, std::size_t buffers);
  void reset() noexcept;
  std::uint64_t bytes() const noexcept { return bytes_; }
  std::size_t buffers() const noexcept { return buffers_; }

 private:
  std::shared_ptr<BufferQuota> quota_;
  uid_t uid_ = 0;
  std::uint64_t bytes_ = 0;
  std::size_t buffers_ = 0;
};

wire::OutOfLineOptions out_of_line_options(const ServerOptions& o);
wire::OutOfLineOptions out_of_line_options(const ClientOptions& o);

// Server: decodes a request's params (inline or out of line; a client-owned revocable
// memfd is copied first) and moves its buffer fds into `bufs`. A frame with memfds is
// charged to `quota` for `uid` into `charge` (its fds and the out-of-line size before
// the message is read; the buffers' verified sizes before any is mapped); frames
// without fds cost nothing. Throws QuotaExceeded, or std::invalid_argument
// (buffers::BufferError has a message safe to return).
IncomingMessage take_request(wire::Frame& f, const ServerOptions& o, CallBuffers& bufs,
                             const std::shared_ptr<BufferQuota>& quota, uid_t uid, QuotaCharge& charge);

// Server: the OK response frame for `results` plus the buffers the handler attached.
// Revocable ones are handed to `leases`. Throws std::length_error (RESOURCE_EXHAUSTED).
wire::EncodedFrame encode_response(std::uint32_t rid, capnp::MessageBuilder& results, const ServerOptions& o,
                                   CallBuffers& bufs, LeaseTable& leases, std::vector<std::byte> reuse = {});

// Client: the request frame for `msg` plus the attached buffers (the caller keeps
// `bufs` alive until the call ends). Throws std::length_error / std::system_error.
wire::EncodedFrame encode_request(wire::FrameHeader h, capnp::MessageBuilder& msg, const ClientOptions& o,
                                  const std::vector<SealedBuffer>& bufs, std::vector<std::byte> reuse = {});

// Client: decodes an OK response's results (the server is the trusted owner: its memfds
// are parsed in place) and its buffers. `on_release(index)` tells the server that
// buffer #index may be wiped. Throws std::invalid_argument.
std::pair<IncomingMessage, IncomingBuffers> take_response(wire::Frame& f, const ClientOptions& o,
                                                          std::function<void(std::uint8_t)> on_release,
                                                          std::shared_ptr<buffers::MappingCache> cache = nullptr);

}  // namespace sealrpc::detail
