// Global operator new/delete and C allocator (malloc family) replacement that counts
// allocations per thread. Linked directly into sealrpc_bench (an object file, not a
// static library, so the replacement is always the one the program uses). See
// alloc_counter.hpp.
//
// The C functions matter: Asio's recycling allocator uses aligned_alloc, Cap'n Proto's
// segments calloc/malloc, and both live partly in shared libraries. Replacing malloc
// in the executable interposes it for every library (glibc supports replacing the
// whole family); the counted versions forward to glibc's own __libc_* entry points.
#include "alloc_counter.hpp"

#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdlib>
#include <new>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace {

// constinit + trivial type: no TLS guard or constructor on the allocation path.
constinit thread_local std::uint64_t t_allocs = 0;
constinit thread_local std::uint64_t t_bytes = 0;
constinit thread_local std::uint64_t t_frees = 0;

#ifndef SEALRPC_BENCH_NO_NEW_REPLACEMENT
inline void note_alloc(std::size_t n) noexcept {
  ++t_allocs;
  t_bytes += n;
}

void* alloc_or_null(std::size_t n) noexcept {
  if (n == 0) n = 1;
  void* p = __libc_malloc(n);
  if (p != nullptr) note_alloc(n);
  return p;
}

void* alloc_or_throw(std::size_t n) {
  for (;;) {
    if (void* p = alloc_or_null(n)) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

void* aligned_or_null(std::size_t n, std::align_val_t al) noexcept {
  std::size_t a = static_cast<std::size_t>(al);
  if (a < sizeof(void*)) a = sizeof(void*);
  if (n == 0) n = 1;
  void* p = __libc_memalign(a, n);
  if (p == nullptr) return nullptr;
  note_alloc(n);
  return p;
}

void* aligned_or_throw(std::size_t n, std::align_val_t al) {
  for (;;) {
    if (void* p = aligned_or_null(n, al)) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

inline void release(void* p) noexcept {
  if (p == nullptr) return;
  ++t_frees;
  __libc_free(p);
}
#endif

}  // namespace

namespace sealrpc::bench {

std::uint64_t alloc_count() noexcept { return t_allocs; }
std::uint64_t alloc_bytes() noexcept { return t_bytes; }
std::uint64_t free_count() noexcept { return t_frees; }

void AllocProbe::report(benchmark::State& state) const {
  // Read both deltas before touching state.counters (inserting allocates).
  const auto count = static_cast<double>(allocations());
  const auto bytes_ = static_cast<double>(bytes());
  const double iters = state.iterations() > 0 ? static_cast<double>(state.iterations()) : 1.0;
  state.counters["allocs_per_call"] = benchmark::Counter(count / iters, benchmark::Counter::kAvgThreads);
  state.counters["alloc_bytes_per_call"] = benchmark::Counter(bytes_ / iters, benchmark::Counter::kAvgThreads);
}

}  // namespace sealrpc::bench

// ---- replacements -----------------------------------------------------------------
// Left out under sanitizers (SEALRPC_BENCH_NO_NEW_REPLACEMENT, set by CMake when
// SEALRPC_SANITIZE is ON): ASan's own operator new must stay in charge; the counters
// then stay at 0.
#ifndef SEALRPC_BENCH_NO_NEW_REPLACEMENT

void* operator new(std::size_t n) { return alloc_or_throw(n); }
void* operator new[](std::size_t n) { return alloc_or_throw(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return alloc_or_null(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return alloc_or_null(n); }
void* operator new(std::size_t n, std::align_val_t al) { return aligned_or_throw(n, al); }
void* operator new[](std::size_t n, std::align_val_t al) { return aligned_or_throw(n, al); }
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return aligned_or_null(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return aligned_or_null(n, al);
}

void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }

// The C allocator. Not noexcept-annotated beyond what glibc's declarations say.
extern "C" {
void* malloc(std::size_t n) { return alloc_or_null(n); }
void free(void* p) { release(p); }
void* calloc(std::size_t count, std::size_t size) {
  void* p = __libc_calloc(count, size);
  if (p != nullptr) note_alloc(count * size);
  return p;
}
void* realloc(void* old, std::size_t n) {
  void* p = __libc_realloc(old, n);
  if (p != nullptr && p != old) note_alloc(n);  // a move is a new allocation
  return p;
}
void* memalign(std::size_t align, std::size_t n) {
  void* p = __libc_memalign(align, n);
  if (p != nullptr) note_alloc(n);
  return p;
}
void* aligned_alloc(std::size_t align, std::size_t n) { return memalign(align, n); }
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  if (align < sizeof(void*) || (align & (align - 1)) != 0) return EINVAL;
  void* p = memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif  // SEALRPC_BENCH_NO_NEW_REPLACEMENT
