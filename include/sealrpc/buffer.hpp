// Explicit shared buffers: large byte ranges that travel beside a message as sealed
// memfds (docs/buffers.md; guarantees in docs/security.md "Large buffers").
//
// Writer:                                    Receiver:
//   auto w = WritableBuffer::create(n);        ReceivedBuffer b = ctx.buffer(params.getBlob());
//   fill(w.data());                            use(b.data());   // span<const std::byte>
//   SealedBuffer s = std::move(w).seal();      b.release();     // or let it go out of scope
//   auto i = req.attach(std::move(s));
//   s.describe(params.initBlob(), i);   // fills the IDL SharedBuffer {size, fdIndex, kind, leaseMs}
//
// Kinds (SECURITY.md §4):
//   owner_revocable  the owner keeps one RW mapping made before sealing (FUTURE_WRITE);
//                    on release, call end, connection drop, lease expiry or revoke() it
//                    zeroes the pages through it, so every holder then reads zeros.
//                    Default for what a server hands to clients.
//   immutable        WRITE-sealed: nobody, the owner included, can change (or wipe) it.
//                    The only kind a server parses in place when a client sends it; a
//                    revocable buffer from a client is copied into server memory first
//                    (so is an immutable one with holes, docs/security.md "Resources").
#pragma once

#include "sealrpc/unique_fd.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stdexcept>
#include <vector>

namespace sealrpc {

// Numeric values match idl/sealrpc.capnp BufferKind.
enum class BufferKind : std::uint16_t { immutable = 0, owner_revocable = 1 };

struct BufferOptions {
  BufferKind kind = BufferKind::owner_revocable;
  // How long a receiver may hold an owner-revocable buffer the server hands out; 0 means
  // the server's default (ServerOptions::buffer_lease). Wiped when it ends.
  std::chrono::milliseconds lease{0};
  // mlock the owner's mapping (secret data, M12). Fails if over RLIMIT_MEMLOCK.
  bool lock_memory = false;
};

namespace buffers {
class MappingCache;
}

namespace detail {
struct OwnedState;
struct ReceivedState;
}  // namespace detail

// Revokes (wipes now) an owner-revocable buffer from any thread. Harmless after the
// buffer is already wiped. Holds no reference that keeps the buffer alive.
class BufferRevoker {
 public:
  BufferRevoker() = default;
  explicit BufferRevoker(std::weak_ptr<detail::OwnedState> s) : s_(std::move(s)) {}
  void revoke() noexcept;
  // True once the buffer was wiped (by any path).
  bool revoked() const noexcept;

 private:
  std::weak_ptr<detail::OwnedState> s_;
};

class SealedBuffer;

// A buffer being filled by its owner. Move-only.
class WritableBuffer {
 public:
  // size >= 1. Throws std::system_error (memfd_create, mmap, mlock) or std::invalid_argument.
  static WritableBuffer create(std::size_t size, BufferOptions opts = {});
  WritableBuffer(WritableBuffer&&) noexcept = default;
  WritableBuffer& operator=(WritableBuffer&&) noexcept = default;
  ~WritableBuffer();

  std::span<std::byte> data() noexcept;
  std::size_t size() const noexcept;
  // Seals it (revocable: the owner's mapping stays for the wipe; immutable: the mapping
  // is dropped first). The writable view is invalid afterwards.
  SealedBuffer seal() &&;

 private:
  explicit WritableBuffer(std::shared_ptr<detail::OwnedState> s) : s_(std::move(s)) {}
  std::shared_ptr<detail::OwnedState> s_;
};

// A sealed buffer, ready to attach to a request (Request::attach) or to a call's
// results (CallContext::attach). Move-only. Destroying the last owner wipes a
// revocable buffer; the framework holds it until the receiver releases it.
class SealedBuffer {
 public:
  SealedBuffer() = default;
  SealedBuffer(SealedBuffer&&) noexcept = default;
  SealedBuffer& operator=(SealedBuffer&&) noexcept = default;
  ~SealedBuffer();

  bool valid() const noexcept { return s_ != nullptr; }
  std::uint64_t size() const noexcept;
  BufferKind kind() const noexcept;
  std::chrono::milliseconds lease() const noexcept;
  BufferRevoker revoker() const;
  // Wipes (revocable) and drops the buffer now. Same as revoker().revoke(). On a
  // handle from share(): drops that handle only (the owner decides when to wipe).
  void revoke() noexcept;
  // A handle to the same buffer for attaching to one call while the owner keeps it
  // (a reused buffer: the receiver's mapping of it stays warm, docs/buffers.md). The
  // call's end, BUFFER_RELEASE, lease expiry and revoke() on it only drop the handle;
  // the buffer is wiped when the owner revokes it or the last handle goes.
  SealedBuffer share() const;
  bool is_shared_handle() const noexcept { return borrowed_; }
  // Owner-revocable buffers only: the owner's own mapping, still writable after the
  // seal (FUTURE_WRITE stops everyone else). Lets a producer write the next contents
  // straight into a reused buffer. Receivers that do not trust the owner copy such
  // buffers before they look at them. Empty for immutable or wiped buffers.
  std::span<std::byte> writable() noexcept;
  // A new fd for the same memfd (for inspection and tests). Throws after a wipe.
  UniqueFd dup_fd() const;

  // Fills an IDL SharedBuffer builder (any type with setSize/setFdIndex/setKind/
  // setLeaseMs): `index` is what attach() returned.
  template <typename Builder>
  void describe(Builder b, std::uint8_t index) const {
    b.setSize(size());
    b.setFdIndex(index);
    b.setKind(static_cast<decltype(b.getKind())>(kind()));
    b.setLeaseMs(static_cast<std::uint32_t>(lease().count()));
  }

 private:
  friend class WritableBuffer;
  explicit SealedBuffer(std::shared_ptr<detail::OwnedState> s, bool borrowed = false) : s_(std::move(s)), borrowed_(borrowed) {}
  std::shared_ptr<detail::OwnedState> s_;
  bool borrowed_ = false;
};

// The receiver's read-only view of a buffer it got. Move-only; its lifetime is the
// receiver's to choose. Destroying it or release() drops the mapping and fd and, for an
// owner-revocable buffer from a server, tells the owner it may wipe (BUFFER_RELEASE).
class ReceivedBuffer {
 public:
  ReceivedBuffer();
  explicit ReceivedBuffer(std::unique_ptr<detail::ReceivedState> s);
  ReceivedBuffer(ReceivedBuffer&&) noexcept;
  ReceivedBuffer& operator=(ReceivedBuffer&&) noexcept;
  ~ReceivedBuffer();

  std::span<const std::byte> data() const noexcept;
  std::size_t size() const noexcept { return data().size(); }
  BufferKind kind() const noexcept;
  // True when the bytes are this process's private copy (an owner-revocable or sparse
  // buffer sent by an untrusted owner); such copies are wiped when released.
  bool copied() const noexcept;
  // Borrowed fd of the mapped memfd, -1 for copies and after release.
  int fd() const noexcept;
  void release() noexcept;

 private:
  std::unique_ptr<detail::ReceivedState> s_;
};

// Shown to users as the "shared view" of a received buffer.
using SharedBufferView = ReceivedBuffer;

namespace detail {

// Which kinds a receiver accepts and how (SECURITY.md §4.2).
struct BufferPolicy {
  bool accept_immutable = true;
  bool accept_revocable = true;
  // Revocable buffers are copied (then wiped on release) instead of mapped in place:
  // the server's setting, because a client owner could change them while we read.
  bool copy_revocable = false;
  // Sparse buffers (holes: pages never written) are copied with pread too instead of
  // mapped, so reading them never makes this process allocate pages in the owner's
  // memfd (M9). The server's setting: a client could send a 1 GiB hole.
  bool copy_sparse = false;
  std::uint64_t max_bytes = std::uint64_t{1} << 30;
};

// Buffer fds that arrived with one frame, handed out by index. Indices not taken are
// released (on_release) when this goes away.
class IncomingBuffers {
 public:
  IncomingBuffers() noexcept;
  // Verifies every fd at once (memfd, seals, size <= policy.max_bytes; throws
  // std::invalid_argument, a buffers BufferError with a safe message), so a bad fd fails
  // the whole message even if nobody takes it; take() reuses that result. `cache`:
  // mapped buffers are looked up in / added to it (see buffers::MappingCache); copies
  // never are.
  IncomingBuffers(std::vector<UniqueFd> fds, BufferPolicy policy, std::function<void(std::uint8_t)> on_release = {},
                  std::shared_ptr<buffers::MappingCache> cache = nullptr);
  IncomingBuffers(IncomingBuffers&&) noexcept;
  IncomingBuffers& operator=(IncomingBuffers&&) noexcept;
  ~IncomingBuffers();

  std::size_t count() const noexcept;
  // Sum of the verified sizes of all the fds (taken or not).
  std::uint64_t total_bytes() const noexcept;
  // Verifies fd `index` against the announced size and kind and the policy, then maps
  // it (or copies it). Throws std::invalid_argument (a buffers BufferError) with a safe
  // message: index out of range, taken twice, wrong type, seals, size or kind.
  ReceivedBuffer take(std::uint8_t index, std::uint64_t size, BufferKind kind);

 private:
  void drop() noexcept;
  struct State;  // lib/buffers/buffer.cpp
  // Null when the frame carried no buffer fds (nearly every call): moving and
  // destroying cost a pointer, and nothing is allocated.
  std::unique_ptr<State> s_;
};

// The buffer side of one server call.
struct CallBuffers {
  IncomingBuffers in;
  std::vector<SealedBuffer> out;
};

}  // namespace detail
}  // namespace sealrpc
