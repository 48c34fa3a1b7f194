// What a handler knows about the call it serves. Identity comes from the kernel at
// accept time (peer.hpp); nothing here is read from the caller's bytes.
#pragma once

#include "sealrpc/buffer.hpp"
#include "sealrpc/peer.hpp"

#include <atomic>
#include <chrono>
#include <compare>
#include <cstdint>

namespace sealrpc {

struct MethodId {
  std::uint64_t interface_id = 0;  // capnp interface id (64-bit, from the schema)
  std::uint16_t ordinal = 0;       // method ordinal within that interface
  friend auto operator<=>(const MethodId&, const MethodId&) = default;
};

struct MethodInfo;

class CallContext {
 public:
  using clock = std::chrono::steady_clock;

  CallContext(const PeerCredentials& peer, const MethodInfo& method, clock::time_point deadline,
              std::uint64_t connection_id, bool encrypted) noexcept
      : peer_(&peer), method_(&method), deadline_(deadline), connection_id_(connection_id),
        encrypted_(encrypted) {}

  const PeerCredentials& peer() const noexcept { return *peer_; }
  uid_t uid() const noexcept { return peer_->uid; }
  gid_t gid() const noexcept { return peer_->gid; }
  const std::vector<gid_t>& groups() const noexcept { return peer_->groups; }
  pid_t pid() const noexcept { return peer_->pid; }  // logging only
  // Borrowed pidfd of the caller, or -1 when the kernel gave none.
  int pidfd() const noexcept { return peer_->pidfd ? peer_->pidfd->get() : -1; }
  const std::string& label() const noexcept { return peer_->security_label; }
  const MethodInfo& method() const noexcept { return *method_; }
  // clock::time_point::max() when the caller set no deadline.
  clock::time_point deadline() const noexcept { return deadline_; }
  std::uint64_t connection_id() const noexcept { return connection_id_; }
  bool encrypted() const noexcept { return encrypted_; }

  // Set when the caller cancelled, the deadline passed or the connection closed.
  // Asio operations awaited inside the handler are also cancelled (terminal).
  bool is_cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }
  void mark_cancelled() noexcept { cancelled_.store(true, std::memory_order_relaxed); }

  // Shared buffers (include/sealrpc/buffer.hpp, docs/buffers.md).
  // Buffer #index of the request, verified against the announced size and kind and the
  // server's policy; immutable ones are mapped read-only in place, owner-revocable ones
  // copied. Throws std::invalid_argument with a message safe to return to the caller.
  ReceivedBuffer buffer(std::uint8_t index, std::uint64_t size, BufferKind kind) {
    if (!buffers_) throw std::invalid_argument("no buffers on this call");
    return buffers_->in.take(index, size, kind);
  }
  // Same, from an IDL SharedBuffer reader.
  template <typename SharedBufferReader>
  ReceivedBuffer buffer(SharedBufferReader desc) {
    return buffer(desc.getFdIndex(), desc.getSize(), static_cast<BufferKind>(desc.getKind()));
  }
  std::size_t buffer_count() const noexcept { return buffers_ ? buffers_->in.count() : 0; }
  // Attaches a sealed buffer to the results; returns the index for SharedBuffer.fdIndex.
  // Sent only with an OK status. An owner-revocable buffer is wiped when the client
  // releases it, the connection drops, its lease ends or it is revoked.
  std::uint8_t attach(SealedBuffer&& b) {
    if (!buffers_) throw std::logic_error("no buffers on this call");
    if (!b.valid()) throw std::invalid_argument("attach of an empty SealedBuffer");
    if (buffers_->out.size() + 1 >= 8) throw std::length_error("too many buffers attached to one reply");
    buffers_->out.push_back(std::move(b));
    return static_cast<std::uint8_t>(buffers_->out.size() - 1);
  }
  void set_buffers(detail::CallBuffers* b) noexcept { buffers_ = b; }

 private:
  detail::CallBuffers* buffers_ = nullptr;
  const PeerCredentials* peer_;
  const MethodInfo* method_;
  clock::time_point deadline_;
  std::uint64_t connection_id_;
  bool encrypted_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace sealrpc
