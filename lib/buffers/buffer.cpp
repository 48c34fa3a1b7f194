// Public buffer types over the memfd primitives (include/sealrpc/buffer.hpp).
#include "sealrpc/buffer.hpp"

#include "buffers/memfd.hpp"

#include <cstring>
#include <memory>
#include <mutex>

namespace sealrpc {
namespace detail {

// The owner's buffer. Shared by the SealedBuffer / framework lease that keeps it alive
// and (weakly) by revokers; the mutex makes wipe() safe from any thread.
struct OwnedState {
  std::mutex mu;
  buffers::OwnedBuffer buf;  // guarded by mu
  BufferKind kind = BufferKind::owner_revocable;
  std::chrono::milliseconds lease{0};
  std::uint64_t size = 0;

  void wipe() noexcept {
    std::lock_guard lock(mu);
    buf.wipe();
  }
  ~OwnedState() { wipe(); }
};

// The receiver's side: a verified read-only mapping, or a private copy (wiped).
struct ReceivedState {
  std::shared_ptr<const buffers::SealedRegion> region;  // possibly shared with a MappingCache
  std::unique_ptr<std::byte[]> copy;
  std::size_t copy_size = 0;
  BufferKind kind = BufferKind::immutable;
  std::function<void()> on_release;

  std::span<const std::byte> data() const noexcept {
    if (copy) return {copy.get(), copy_size};
    return region ? region->bytes() : std::span<const std::byte>{};
  }
  ~ReceivedState() {
    if (copy) buffers::secure_zero(copy.get(), copy_size);
    region.reset();  // unmap and close (unless cached) before telling the owner
    if (on_release) on_release();
  }
};

}  // namespace detail

void BufferRevoker::revoke() noexcept {
  if (auto s = s_.lock()) s->wipe();
}

bool BufferRevoker::revoked() const noexcept {
  auto s = s_.lock();
  if (!s) return true;
  std::lock_guard lock(s->mu);
  return s->buf.wiped();
}

WritableBuffer WritableBuffer::create(std::size_t size, BufferOptions opts) {
  auto s = std::make_shared<detail::OwnedState>();
  s->buf = buffers::OwnedBuffer::create(size, opts.lock_memory);
  s->kind = opts.kind;
  s->lease = opts.lease;
  s->size = size;
  return WritableBuffer(std::move(s));
}

WritableBuffer::~WritableBuffer() = default;

std::span<std::byte> WritableBuffer::data() noexcept { return s_ ? s_->buf.writable() : std::span<std::byte>{}; }
std::size_t WritableBuffer::size() const noexcept { return s_ ? s_->size : 0; }

SealedBuffer WritableBuffer::seal() && {
  if (!s_) throw std::logic_error("seal of an empty WritableBuffer");
  {
    std::lock_guard lock(s_->mu);
    if (s_->kind == BufferKind::immutable) s_->buf.seal_immutable();
    else s_->buf.seal_revocable();
  }
  return SealedBuffer(std::move(s_));
}

SealedBuffer::~SealedBuffer() = default;
std::uint64_t SealedBuffer::size() const noexcept { return s_ ? s_->size : 0; }
BufferKind SealedBuffer::kind() const noexcept { return s_ ? s_->kind : BufferKind::immutable; }
std::chrono::milliseconds SealedBuffer::lease() const noexcept { return s_ ? s_->lease : std::chrono::milliseconds{0}; }
BufferRevoker SealedBuffer::revoker() const { return BufferRevoker(s_); }
void SealedBuffer::revoke() noexcept {
  if (s_ && !borrowed_) s_->wipe();
  s_.reset();
}
SealedBuffer SealedBuffer::share() const {
  if (!s_) throw std::logic_error("share of an empty SealedBuffer");
  return SealedBuffer(s_, true);
}
std::span<std::byte> SealedBuffer::writable() noexcept {
  if (!s_ || s_->kind != BufferKind::owner_revocable) return {};
  std::lock_guard lock(s_->mu);
  return s_->buf.wiped() ? std::span<std::byte>{} : s_->buf.writable();
}
UniqueFd SealedBuffer::dup_fd() const {
  if (!s_) throw std::logic_error("empty SealedBuffer");
  std::lock_guard lock(s_->mu);
  return s_->buf.dup_fd();
}

ReceivedBuffer::ReceivedBuffer() = default;
ReceivedBuffer::ReceivedBuffer(std::unique_ptr<detail::ReceivedState> s) : s_(std::move(s)) {}
ReceivedBuffer::ReceivedBuffer(ReceivedBuffer&&) noexcept = default;
ReceivedBuffer& ReceivedBuffer::operator=(ReceivedBuffer&&) noexcept = default;
ReceivedBuffer::~ReceivedBuffer() = default;
std::span<const std::byte> ReceivedBuffer::data() const noexcept { return s_ ? s_->data() : std::span<const std::byte>{}; }
BufferKind ReceivedBuffer::kind() const noexcept { return s_ ? s_->kind : BufferKind::immutable; }
bool ReceivedBuffer::copied() const noexcept { return s_ && s_->copy != nullptr; }
int ReceivedBuffer::fd() const noexcept { return s_ && !s_->copy && s_->region ? s_->region->fd() : -1; }
void ReceivedBuffer::release() noexcept { s_.reset(); }

namespace detail {

struct IncomingBuffers::State {
  std::vector<UniqueFd> fds;
  std::vector<buffers::Verified> verified;  // of fds[i], when they arrived
  std::vector<bool> taken;
  BufferPolicy policy;
  std::function<void(std::uint8_t)> on_release;
  std::shared_ptr<buffers::MappingCache> cache;
};

IncomingBuffers::IncomingBuffers() noexcept = default;
IncomingBuffers::IncomingBuffers(IncomingBuffers&&) noexcept = default;

IncomingBuffers::IncomingBuffers(std::vector<UniqueFd> fds, BufferPolicy policy, std::function<void(std::uint8_t)> on_release,
                                 std::shared_ptr<buffers::MappingCache> cache) {
  if (fds.empty()) return;
  std::vector<buffers::Verified> verified;
  verified.reserve(fds.size());
  for (const auto& fd : fds) verified.push_back(buffers::verify(fd.get(), std::nullopt, policy.max_bytes));  // throws: fds close
  s_ = std::make_unique<State>();
  s_->taken.assign(fds.size(), false);
  s_->fds = std::move(fds);
  s_->verified = std::move(verified);
  s_->policy = policy;
  s_->on_release = std::move(on_release);
  s_->cache = std::move(cache);
}

IncomingBuffers& IncomingBuffers::operator=(IncomingBuffers&& o) noexcept {
  if (this != &o) {
    drop();
    s_ = std::move(o.s_);
  }
  return *this;
}

IncomingBuffers::~IncomingBuffers() { drop(); }

std::size_t IncomingBuffers::count() const noexcept { return s_ ? s_->fds.size() : 0; }

std::uint64_t IncomingBuffers::total_bytes() const noexcept {
  std::uint64_t n = 0;
  if (s_)
    for (const auto& v : s_->verified) n += v.size;  // each <= policy.max_bytes (1 GiB), at most 8
  return n;
}

void IncomingBuffers::drop() noexcept {
  if (!s_) return;
  for (std::size_t i = 0; i < s_->fds.size(); ++i) {
    if (s_->taken[i]) continue;
    s_->fds[i].reset();
    if (s_->on_release) s_->on_release(static_cast<std::uint8_t>(i));
  }
  s_.reset();
}

ReceivedBuffer IncomingBuffers::take(std::uint8_t index, std::uint64_t size, BufferKind kind) {
  if (!s_ || index >= s_->fds.size()) throw buffers::BufferError("buffer index out of range");
  if (s_->taken[index]) throw buffers::BufferError("buffer already taken");
  s_->taken[index] = true;
  UniqueFd fd = std::move(s_->fds[index]);  // closed on every failure below
  // Verified on arrival; the seals verify() requires (SEAL, SHRINK, GROW) freeze the
  // seals and the size since, so only the announced size is left to compare.
  const buffers::Verified& v = s_->verified[index];
  if (v.size != size) throw buffers::BufferError("buffer size does not match the announced size");
  const bool immutable = v.kind == buffers::Kind::immutable;
  if (kind == BufferKind::immutable && !immutable) throw buffers::BufferError("buffer announced immutable is not write-sealed");
  if (kind != BufferKind::immutable && kind != BufferKind::owner_revocable) throw buffers::BufferError("unknown buffer kind");
  if (immutable && !s_->policy.accept_immutable) throw buffers::BufferError("immutable buffers are not accepted here");
  if (!immutable && !s_->policy.accept_revocable) throw buffers::BufferError("owner-revocable buffers are not accepted here");
  auto st = std::make_unique<ReceivedState>();
  st->kind = immutable ? BufferKind::immutable : BufferKind::owner_revocable;
  const bool copy = size > 0 && ((!immutable && s_->policy.copy_revocable) || (v.sparse() && s_->policy.copy_sparse));
  if (copy) {
    // One pass into our own memory; validation and parsing see only the copy (M3). With
    // pread, not through a mapping: holes read as zeros without allocating pages (M9).
    st->copy = std::make_unique_for_overwrite<std::byte[]>(size);
    st->copy_size = size;
    buffers::pread_all(fd.get(), {st->copy.get(), static_cast<std::size_t>(size)});
    fd.reset();
  } else if (s_->cache) {
    st->region = s_->cache->open(std::move(fd), v);  // a reused buffer: warm mapping
  } else {
    st->region = std::make_shared<const buffers::SealedRegion>(buffers::SealedRegion::open(std::move(fd), v));
  }
  if (!immutable && s_->on_release) st->on_release = [f = s_->on_release, index] { f(index); };
  return ReceivedBuffer(std::move(st));
}

}  // namespace detail
}  // namespace sealrpc
