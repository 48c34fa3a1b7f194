// Allocation counter for benchmarks.
//
// bench/alloc_counter.cpp replaces the global operator new/delete (every form:
// plain, array, nothrow, aligned, sized) and the C allocator (malloc, calloc,
// realloc, memalign, aligned_alloc, posix_memalign, free) for the whole sealrpc_bench
// binary, shared libraries included, and counts calls in thread-local counters. The counters are per thread on purpose:
// no shared cache line is touched on the hot path, and a client benchmark thread
// sees exactly the allocations its own calls made (a library's background threads,
// e.g. gRPC's, are not counted; say so when you publish the number).
#pragma once

#include <cstdint>

namespace benchmark {
class State;
}

namespace sealrpc::bench {

// Number of successful allocations (operator new of any form, malloc family) made by the calling
// thread since it started.
std::uint64_t alloc_count() noexcept;
// Bytes requested by those allocations.
std::uint64_t alloc_bytes() noexcept;
// Number of operator delete calls on a non-null pointer made by the calling thread.
std::uint64_t free_count() noexcept;

// Measures the calling thread's allocations over a region, usually the benchmark
// loop:
//
//   AllocProbe allocs;               // right before `for (auto _ : state)`
//   for (auto _ : state) { ... }
//   allocs.report(state);            // sets allocs_per_call and alloc_bytes_per_call
//
// Counters are set on every thread with kAvgThreads, so with ->Threads(n) they are
// the average over threads of each thread's allocations per call.
class AllocProbe {
 public:
  AllocProbe() noexcept : count0_(alloc_count()), bytes0_(alloc_bytes()) {}
  std::uint64_t allocations() const noexcept { return alloc_count() - count0_; }
  std::uint64_t bytes() const noexcept { return alloc_bytes() - bytes0_; }
  // Publishes allocs_per_call (and alloc_bytes_per_call) = delta / iterations.
  void report(benchmark::State& state) const;

 private:
  std::uint64_t count0_;
  std::uint64_t bytes0_;
};

}  // namespace sealrpc::bench
