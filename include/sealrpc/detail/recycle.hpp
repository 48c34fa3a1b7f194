// Per-thread recycling of small heap blocks, so a steady stream of calls allocates
// nothing (issue #6: allocation-free small-call path).
//
// Blocks of up to kMaxRecycledBytes are rounded up to a size class (64 B .. 4 KiB) and,
// when freed, kept in a small cache of the freeing thread (8 per class) for the next
// allocation of that class; larger blocks and overflow go to operator new/delete. Same
// idea as Asio's recycling allocator (whose cache only holds blocks below 1 KiB and
// only inside io_context::run()), used for SealRPC's own per-call objects: request
// builders, completions, incoming message storage and readers.
//
// Blocks are not wiped on recycling (as with malloc); types that hold secrets wipe
// themselves before they free (IncomingMessage::wipe_on_destroy, SealedBuffer).
#pragma once

#include <cstddef>
#include <new>

namespace sealrpc::detail {

inline constexpr std::size_t kMaxRecycledBytes = 4096;

void* recycled_allocate(std::size_t bytes);
void recycled_deallocate(void* p, std::size_t bytes) noexcept;

// Minimal allocator over the recycler, for containers of per-call data.
template <typename T>
struct RecyclingAllocator {
  using value_type = T;
  RecyclingAllocator() noexcept = default;
  template <typename U>
  RecyclingAllocator(const RecyclingAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(recycled_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { recycled_deallocate(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const RecyclingAllocator<U>&) const noexcept { return true; }
};

// Base for classes allocated with new/delete that should recycle (sized delete: the
// deleting destructor passes the dynamic type's size, so derived classes work too).
struct Recycled {
  static void* operator new(std::size_t n) { return recycled_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { recycled_deallocate(p, n); }
};

}  // namespace sealrpc::detail
