// Sealed memfd primitives. See memfd.hpp; every syscall result is checked.
#include "buffers/memfd.hpp"

#include "os/syscall.hpp"

#include <sodium.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <utility>

namespace sealrpc::buffers {
namespace {

// Fixed and meaningless: memfd names are visible in /proc/<pid>/fd and maps.
constexpr const char* kName = "sealrpc-buffer";

Mapping map_fd(int fd, std::uint64_t size, int prot) {
  if (size == 0) return {};
  if (size > std::numeric_limits<std::size_t>::max()) throw BufferError("buffer too large to map");
  void* p = ::mmap(nullptr, static_cast<std::size_t>(size), prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw BufferError("buffer cannot be mapped");
  Mapping m(p, static_cast<std::size_t>(size));
  // Not in core dumps (M12), and not inherited by children (K29: a child's copy of the
  // owner's pre-seal mapping could be made writable).
  if (::madvise(p, m.size(), MADV_DONTDUMP) != 0) os::throw_errno("madvise(MADV_DONTDUMP)");
  if (::madvise(p, m.size(), MADV_DONTFORK) != 0) os::throw_errno("madvise(MADV_DONTFORK)");
  return m;
}

}  // namespace

void secure_zero(void* p, std::size_t n) noexcept {
  if (p && n) ::sodium_memzero(p, n);
}

Mapping::Mapping(Mapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    reset();
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}
void Mapping::reset() noexcept {
  // munmap of a range we mapped can only fail on ENOMEM (VMA split limit); nothing a
  // destructor could do about it.
  if (p_) (void)::munmap(p_, n_);
  p_ = nullptr;
  n_ = 0;
}

UniqueFd create_memfd(std::uint64_t size) {
  if (size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) throw std::length_error("buffer too large");
  int fd = ::memfd_create(kName, MFD_CLOEXEC | MFD_ALLOW_SEALING | kMfdNoexecSeal);
  if (fd < 0 && errno == EINVAL) fd = ::memfd_create(kName, MFD_CLOEXEC | MFD_ALLOW_SEALING);  // < 6.3
  if (fd < 0) os::throw_errno("memfd_create");
  UniqueFd owned(fd);
  os::check("ftruncate(memfd)", [&] { return ::ftruncate(owned.get(), static_cast<off_t>(size)); });
  return owned;
}

Verified verify(int fd, std::optional<std::uint64_t> announced, std::uint64_t max) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw BufferError("buffer fd cannot be inspected");
  if (!S_ISREG(st.st_mode)) throw BufferError("buffer is not a memfd (not a regular file)");
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) throw BufferError("buffer is not a memfd (no seals)");
  const auto s = static_cast<unsigned>(seals);
  if ((s & kSealsBase) != kSealsBase) throw BufferError("buffer lacks a required seal (shrink, grow and seal)");
  Kind kind;
  if (s & kSealWrite) kind = Kind::immutable;
  else if (s & kSealFutureWrite) kind = Kind::revocable;
  else throw BufferError("buffer lacks a write seal (write or future-write)");
  if (st.st_size < 0) throw BufferError("buffer size is invalid");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max) throw BufferError("buffer larger than the maximum");
  if (announced && *announced != size) throw BufferError("buffer size does not match the announced size");
  const std::uint64_t allocated = st.st_blocks > 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
  return {kind, size, s, st.st_dev, st.st_ino, allocated};
}

std::shared_ptr<const SealedRegion> MappingCache::open(UniqueFd fd, std::optional<std::uint64_t> announced,
                                                        std::uint64_t max) {
  const Verified v = verify(fd.get(), announced, max);
  return open(std::move(fd), v);
}

std::shared_ptr<const SealedRegion> MappingCache::open(UniqueFd fd, const Verified& v) {
  std::lock_guard lock(mu_);
  ++clock_;
  for (auto& e : entries_) {
    if (e.dev == v.dev && e.ino == v.ino && e.region->size() == v.size && e.region->kind() == v.kind) {
      e.last_use = clock_;
      ++hits_;
      return e.region;  // `fd` (another reference to the same file) closes here
    }
  }
  auto region = std::make_shared<SealedRegion>(SealedRegion::open(std::move(fd), v));
  if (max_entries_ == 0 || v.size > max_bytes_) return region;  // too big to keep
  while (!entries_.empty() && (entries_.size() >= max_entries_ || bytes_ + v.size > max_bytes_)) {
    auto lru = std::min_element(entries_.begin(), entries_.end(),
                                [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
    bytes_ -= lru->region->size();
    entries_.erase(lru);
  }
  entries_.push_back(Entry{v.dev, v.ino, region, clock_});
  bytes_ += v.size;
  return region;
}

SealedRegion SealedRegion::open(UniqueFd fd, std::optional<std::uint64_t> announced, std::uint64_t max) {
  const Verified v = verify(fd.get(), announced, max);
  return open(std::move(fd), v);
}

SealedRegion SealedRegion::open(UniqueFd fd, const Verified& v) {
  SealedRegion r;
  r.map_ = map_fd(fd.get(), v.size, PROT_READ);  // read-only, shared: never a private writable copy
  r.fd_ = std::move(fd);
  r.size_ = v.size;
  r.kind_ = v.kind;
  return r;
}

OwnedBuffer OwnedBuffer::create(std::uint64_t size, bool lock) {
  if (size == 0) throw std::invalid_argument("buffer size must be at least 1 byte");
  OwnedBuffer b;
  b.fd_ = create_memfd(size);
  b.size_ = size;
  // MAP_POPULATE: the owner fills it anyway; one populate is far cheaper than a fault per page.
  void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b.fd_.get(), 0);
  if (p == MAP_FAILED) os::throw_errno("mmap(memfd)");
  b.map_ = Mapping(p, static_cast<std::size_t>(size));
  if (::madvise(p, b.map_.size(), MADV_DONTFORK) != 0) os::throw_errno("madvise(MADV_DONTFORK)");
  if (::madvise(p, b.map_.size(), MADV_DONTDUMP) != 0) os::throw_errno("madvise(MADV_DONTDUMP)");
  if (lock) {
    if (::mlock(p, b.map_.size()) != 0) os::throw_errno("mlock(buffer)");
    b.locked_ = true;
  }
  return b;
}

OwnedBuffer& OwnedBuffer::operator=(OwnedBuffer&& o) noexcept {
  if (this != &o) {
    wipe();
    fd_ = std::move(o.fd_);
    map_ = std::move(o.map_);
    size_ = std::exchange(o.size_, 0);
    locked_ = std::exchange(o.locked_, false);
    sealed_ = std::exchange(o.sealed_, false);
    kind_ = std::exchange(o.kind_, std::nullopt);
  }
  return *this;
}

UniqueFd create_immutable(std::uint64_t size, const std::function<void(int fd)>& fill) {
  UniqueFd fd = create_memfd(size);
  fill(fd.get());
  os::check("fcntl(F_ADD_SEALS immutable)", [&] { return ::fcntl(fd.get(), F_ADD_SEALS, kSealsImmutable); });
  return fd;
}

void pwrite_all(int fd, std::span<const std::byte> bytes, std::uint64_t offset) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      os::throw_errno("pwrite(memfd)");
    }
    if (n == 0) os::throw_errno("pwrite(memfd) wrote nothing");
    bytes = bytes.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

void pread_all(int fd, std::span<std::byte> dst) {
  std::uint64_t offset = 0;
  while (!dst.empty()) {
    const ssize_t n = ::pread(fd, dst.data(), dst.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw BufferError("buffer cannot be read");
    }
    if (n == 0) throw BufferError("buffer shorter than announced");
    dst = dst.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
}

void OwnedBuffer::seal_revocable() {
  if (sealed_ || !fd_.valid()) throw std::logic_error("buffer already sealed or wiped");
  os::check("fcntl(F_ADD_SEALS revocable)", [&] { return ::fcntl(fd_.get(), F_ADD_SEALS, kSealsRevocable); });
  sealed_ = true;
  kind_ = Kind::revocable;
}

void OwnedBuffer::seal_immutable() {
  if (sealed_ || !fd_.valid()) throw std::logic_error("buffer already sealed or wiped");
  if (locked_) (void)::munlock(map_.data(), map_.size());
  locked_ = false;
  map_.reset();  // K26: F_SEAL_WRITE is EBUSY while any shared mapping exists
  os::check("fcntl(F_ADD_SEALS immutable)", [&] { return ::fcntl(fd_.get(), F_ADD_SEALS, kSealsImmutable); });
  sealed_ = true;
  kind_ = Kind::immutable;
}

void OwnedBuffer::wipe() noexcept {
  if (map_.valid()) {
    secure_zero(map_.data(), map_.size());
    if (locked_) (void)::munlock(map_.data(), map_.size());
    locked_ = false;
    map_.reset();
  }
  fd_.reset();
}

UniqueFd OwnedBuffer::dup_fd() const {
  if (!fd_.valid()) throw std::logic_error("buffer was wiped");
  return UniqueFd(os::check("fcntl(F_DUPFD_CLOEXEC)", [&] { return ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0); }));
}

}  // namespace sealrpc::buffers
