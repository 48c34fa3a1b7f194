// Sealed memfd primitives (DESIGN "Large buffers", SECURITY.md §2.4, §2.5, §4).
//
// This is the only code that calls memfd_create, F_ADD_SEALS and mmap for buffers.
// Two owner-side shapes and one receiver-side shape:
//  * OwnedBuffer  the owner's memfd plus exactly one RW mapping made before sealing
//                 (MADV_DONTFORK | MADV_DONTDUMP, optional mlock). seal_revocable()
//                 keeps the mapping so wipe() can zero the shared pages later (K30);
//                 seal_immutable() unmaps first, because F_SEAL_WRITE fails with EBUSY
//                 while any shared mapping exists (K26).
//  * SealedRegion a received fd, verified (fstat S_ISREG, F_GET_SEALS, size) and
//                 mapped PROT_READ | MAP_SHARED only, MADV_DONTDUMP.
// Verification never reads or writes the fd, so a pipe or socket cannot block us
// (F6), and the size is sealed before we map, so access can never SIGBUS (K33, K34).
#pragma once

#include "sealrpc/unique_fd.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

#include <sys/types.h>

namespace sealrpc::buffers {

// Linux values; Debian 12 headers may lack the newer ones (K35b).
inline constexpr unsigned kSealSeal = 0x0001;
inline constexpr unsigned kSealShrink = 0x0002;
inline constexpr unsigned kSealGrow = 0x0004;
inline constexpr unsigned kSealWrite = 0x0008;
inline constexpr unsigned kSealFutureWrite = 0x0010;
inline constexpr unsigned kSealExec = 0x0020;
inline constexpr unsigned kMfdNoexecSeal = 0x0008;

// Seals every buffer must carry: its size can never change under a mapping and no
// receiver can add seals that would block the owner's wipe (K27, K32).
inline constexpr unsigned kSealsBase = kSealShrink | kSealGrow | kSealSeal;
inline constexpr unsigned kSealsImmutable = kSealsBase | kSealWrite;
inline constexpr unsigned kSealsRevocable = kSealsBase | kSealFutureWrite;

enum class Kind : std::uint8_t { immutable = 0, revocable = 1 };

// A received buffer failed verification. The message is safe to send to the peer.
class BufferError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Zeroes memory in a way the compiler may not elide (sodium_memzero).
void secure_zero(void* p, std::size_t n) noexcept;

// One mmap; munmap on destruction. Move-only.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(void* p, std::size_t n) noexcept : p_(p), n_(n) {}
  Mapping(Mapping&& o) noexcept;
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }
  void reset() noexcept;
  std::byte* data() const noexcept { return static_cast<std::byte*>(p_); }
  std::size_t size() const noexcept { return n_; }
  bool valid() const noexcept { return p_ != nullptr; }

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

// memfd_create(name without secrets, MFD_CLOEXEC|MFD_ALLOW_SEALING|MFD_NOEXEC_SEAL),
// retried without MFD_NOEXEC_SEAL on EINVAL (kernels < 6.3), then ftruncate(size).
UniqueFd create_memfd(std::uint64_t size);

// A sealed immutable memfd of `size` bytes written by `fill(fd)` with pwrite: never
// mapped, so no mmap/munmap (each costs hundreds of µs on some VMs, see
// docs/performance.md "Out-of-line messages"). `fill` must write all `size` bytes.
UniqueFd create_immutable(std::uint64_t size, const std::function<void(int fd)>& fill);
// pwrite all of `bytes` at `offset`; throws std::system_error.
void pwrite_all(int fd, std::span<const std::byte> bytes, std::uint64_t offset);
// pread exactly dst.size() bytes at offset 0; throws BufferError on a short file.
void pread_all(int fd, std::span<std::byte> dst);

// What verify() found.
struct Verified {
  Kind kind;
  std::uint64_t size;
  unsigned seals;
  dev_t dev;  // identity of the memfd's inode (MappingCache)
  ino_t ino;
  // Bytes of pages the file has (st_blocks * 512, swapped-out pages included). Less than
  // the size: it has holes, and reading a hole through a shared mapping allocates a
  // page charged to the reader's memory cgroup, which then stays in the owner's file
  // (pread reads holes as zeros without allocating). WRITE and FUTURE_WRITE seals stop
  // hole punching, so a sealed buffer never loses pages after this check.
  std::uint64_t allocated = 0;
  bool sparse() const noexcept { return allocated < size; }
};
// Receiver checks, in order: fstat S_ISREG; F_GET_SEALS works (memfd); SHRINK|GROW|SEAL
// present; WRITE (immutable) or FUTURE_WRITE (revocable) present; size <= max; size ==
// announced when given. Throws BufferError. Never does I/O on the fd.
Verified verify(int fd, std::optional<std::uint64_t> announced, std::uint64_t max);

// A verified, read-only view of a received buffer. Move-only.
class SealedRegion {
 public:
  SealedRegion() = default;
  // verify() + mmap(PROT_READ, MAP_SHARED) + MADV_DONTDUMP. Throws BufferError; the fd
  // is closed on every failure (it is owned by the argument).
  static SealedRegion open(UniqueFd fd, std::optional<std::uint64_t> announced, std::uint64_t max);
  // The same for an fd the caller has just verify()'d (`v` is that result): no second
  // fstat/F_GET_SEALS. The seals verify() requires freeze size and kind meanwhile.
  static SealedRegion open(UniqueFd fd, const Verified& v);

  std::span<const std::byte> bytes() const noexcept { return {map_.data(), size_}; }
  Kind kind() const noexcept { return kind_; }
  std::uint64_t size() const noexcept { return size_; }
  int fd() const noexcept { return fd_.get(); }  // borrowed

 private:
  UniqueFd fd_;
  Mapping map_;
  std::uint64_t size_ = 0;
  Kind kind_ = Kind::immutable;
};

// Receiver-side cache of read-only mappings, keyed by the memfd's inode, so a peer that
// sends the same buffer again (a reused, pre-faulted buffer) is read through the mapping
// made the first time: no mmap, no munmap, and above all no page faults, which cost
// more than copying the bytes through a socket (docs/performance.md, large buffers).
//
// Every fd is still verify()'d (seals, size) before the lookup. A hit needs the same
// inode, size and kind; the seals required by verify() (SEAL, SHRINK, GROW) freeze
// both, and the cached mapping holds a reference to the file, so its (st_dev, st_ino)
// cannot be handed to another file while the entry exists. The new fd is closed; the
// cached region's fd is kept (SealedRegion::fd()). Bounded in entries and mapped
// bytes; least recently used entries go first; a region handed out stays valid after
// its entry is evicted (shared ownership). Thread-safe (a mutex: replies' buffers may
// be taken on any thread).
class MappingCache {
 public:
  MappingCache(std::size_t max_entries, std::uint64_t max_bytes) : max_entries_(max_entries), max_bytes_(max_bytes) {}
  // verify() + the cached region for that inode, or a new mapping (then cached if it
  // fits the bounds). Throws BufferError like SealedRegion::open.
  std::shared_ptr<const SealedRegion> open(UniqueFd fd, std::optional<std::uint64_t> announced,
                                           std::uint64_t max = std::uint64_t{1} << 30);
  // The same for an fd the caller has just verify()'d (`v` is that result).
  std::shared_ptr<const SealedRegion> open(UniqueFd fd, const Verified& v);
  std::size_t entries() const {
    std::lock_guard lock(mu_);
    return entries_.size();
  }
  std::uint64_t mapped_bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
  }
  std::uint64_t hits() const {
    std::lock_guard lock(mu_);
    return hits_;
  }
  void clear() {
    std::lock_guard lock(mu_);
    entries_.clear();
    bytes_ = 0;
  }

 private:
  struct Entry {
    dev_t dev;
    ino_t ino;
    std::shared_ptr<const SealedRegion> region;
    std::uint64_t last_use;
  };
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // a handful: linear search
  std::size_t max_entries_;
  std::uint64_t max_bytes_;
  std::uint64_t bytes_ = 0;
  std::uint64_t clock_ = 0;
  std::uint64_t hits_ = 0;
};

// The owner's side of a buffer. Move-only; the destructor wipes (see wipe()).
class OwnedBuffer {
 public:
  OwnedBuffer() = default;
  // A fresh memfd of `size` bytes (>= 1) with its one RW mapping (MADV_DONTFORK,
  // MADV_DONTDUMP; mlock when `lock` is set, within RLIMIT_MEMLOCK, else throws).
  static OwnedBuffer create(std::uint64_t size, bool lock = false);
  OwnedBuffer(OwnedBuffer&&) noexcept = default;
  OwnedBuffer& operator=(OwnedBuffer&& o) noexcept;
  ~OwnedBuffer() { wipe(); }

  // Valid until sealed immutable or wiped.
  std::span<std::byte> writable() noexcept { return {map_.data(), map_.size()}; }
  // SHRINK|GROW|FUTURE_WRITE|SEAL; the RW mapping stays (it predates the seal) for wipe().
  void seal_revocable();
  // Unmaps (K26), then SHRINK|GROW|WRITE|SEAL. Nobody can change or wipe it any more.
  void seal_immutable();
  // Revocable: sodium_memzero through the mapping, so every holder reads zeros (K30);
  // then munlock/munmap/close. Immutable: close only (its pages live until the last
  // holder closes; nobody can wipe them, K27). Idempotent, noexcept.
  void wipe() noexcept;

  std::uint64_t size() const noexcept { return size_; }
  bool sealed() const noexcept { return sealed_; }
  bool wiped() const noexcept { return !fd_.valid(); }
  std::optional<Kind> kind() const noexcept { return kind_; }
  // A new reference to the memfd (F_DUPFD_CLOEXEC), e.g. to send it. Throws if wiped.
  UniqueFd dup_fd() const;

 private:
  UniqueFd fd_;
  Mapping map_;
  std::uint64_t size_ = 0;
  bool locked_ = false;
  bool sealed_ = false;
  std::optional<Kind> kind_;
};

}  // namespace sealrpc::buffers
