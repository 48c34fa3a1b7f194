// Per-thread block recycler (include/sealrpc/detail/recycle.hpp).
#include "sealrpc/detail/recycle.hpp"

#include <bit>
#include <cstdint>

namespace sealrpc::detail {
namespace {

constexpr std::size_t kMinClassBytes = 64;
constexpr std::size_t kClasses = 7;  // 64, 128, 256, 512, 1024, 2048, 4096
constexpr std::size_t kPerClass = 8;
static_assert(kMinClassBytes << (kClasses - 1) == kMaxRecycledBytes);

struct Cache {
  void* blocks[kClasses][kPerClass] = {};
  std::uint8_t count[kClasses] = {};
  ~Cache();
};

// Set by ~Cache. Trivially destructible, so it stays readable while thread_local
// destructors that run after ~Cache free their blocks (those go to operator delete).
constinit thread_local bool t_cache_gone = false;
thread_local Cache t_cache;  // constructed on first use in each thread

Cache::~Cache() {
  t_cache_gone = true;
  for (std::size_t c = 0; c < kClasses; ++c)
    for (std::size_t i = 0; i < count[c]; ++i) ::operator delete(blocks[c][i], kMinClassBytes << c);
}

std::size_t class_of(std::size_t bytes) noexcept {
  if (bytes <= kMinClassBytes) return 0;
  return static_cast<std::size_t>(std::bit_width((bytes - 1) / kMinClassBytes));
}

Cache* cache() noexcept { return t_cache_gone ? nullptr : &t_cache; }

}  // namespace

void* recycled_allocate(std::size_t bytes) {
  if (bytes > kMaxRecycledBytes) return ::operator new(bytes);
  const std::size_t c = class_of(bytes);
  if (Cache* k = cache(); k && k->count[c] > 0) return k->blocks[c][--k->count[c]];
  return ::operator new(kMinClassBytes << c);
}

void recycled_deallocate(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes > kMaxRecycledBytes) {
    ::operator delete(p, bytes);
    return;
  }
  const std::size_t c = class_of(bytes);
  if (Cache* k = cache(); k && k->count[c] < kPerClass) {
    k->blocks[c][k->count[c]++] = p;
    return;
  }
  ::operator delete(p, kMinClassBytes << c);
}

}  // namespace sealrpc::detail
