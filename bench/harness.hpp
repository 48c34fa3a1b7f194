// Latency recorder used inside Google Benchmark loops.
//
//   void BM_Thing(benchmark::State& state) {
//     static sealrpc::bench::LatencyRecorder rec;   // static: shared by ->Threads(n)
//     auto& samples = rec.begin(state);             // every thread, before the loop
//     for (auto _ : state) {
//       const auto t0 = sealrpc::bench::Clock::now();
//       do_one_call();
//       samples.record_since(t0);                   // no allocation, no lock
//     }
//     rec.report(state);                            // every thread, after the loop
//   }
//
// begin() pre-sizes (and pre-faults) the calling thread's sample buffer for
// state.max_iterations samples, so record() never allocates. report() on thread 0
// merges every thread's samples of this run (Google Benchmark guarantees all threads
// have left the loop before any thread returns from it) and publishes the counters
//   p50, p90, p99, p999   latency percentiles in microseconds (nearest rank)
//   calls_per_s           iterations x threads, flagged kIsRate: Google Benchmark
//                         divides it by the run's time, which is wall-clock time only
//                         with ->UseRealTime() (use it: these benchmarks wait on I/O)
//   samples_dropped       only if the per-run sample budget was exceeded
// Other threads publish nothing (counters are summed over threads, so thread 0's
// values are the run's values).
//
// A recorder is meant for one benchmark run at a time; runs are sequential within
// a process, so one static recorder can serve every benchmark using that function.
#pragma once

#include "alloc_counter.hpp"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sealrpc::bench {

// steady_clock is CLOCK_MONOTONIC via the vDSO on Linux: no rdtsc calibration, no syscall.
using Clock = std::chrono::steady_clock;

// One thread's samples (nanoseconds). Obtained from LatencyRecorder::begin().
class LatencySamples {
 public:
  void record(Clock::duration d) noexcept {
    if (n_ < data_.size()) {
      data_[n_++] = static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    } else {
      ++dropped_;
    }
  }
  void record_since(Clock::time_point t0) noexcept { record(Clock::now() - t0); }
  // Times one invocation of f and records it.
  template <class F>
  void time(F&& f) {
    const auto t0 = Clock::now();
    static_cast<F&&>(f)();
    record_since(t0);
  }
  std::size_t size() const noexcept { return n_; }
  std::size_t dropped() const noexcept { return dropped_; }

 private:
  friend class LatencyRecorder;
  void reset(std::size_t capacity);
  std::vector<std::int64_t> data_;  // sized (not just reserved) = pre-faulted
  std::size_t n_ = 0;
  std::size_t dropped_ = 0;
};

struct LatencySummary {
  std::size_t samples = 0;
  std::size_t dropped = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0;
  double min_us = 0, max_us = 0, mean_us = 0;
};

// Percentiles (nearest rank) of a set of nanosecond samples. Reorders `ns`.
LatencySummary summarize_ns(std::vector<std::int64_t>& ns);

class LatencyRecorder {
 public:
  static constexpr int kMaxThreads = 1024;
  // Upper bound of samples kept per run over all threads (8 bytes each).
  static constexpr std::size_t kSampleBudget = std::size_t{1} << 23;

  LatencyRecorder();
  LatencyRecorder(const LatencyRecorder&) = delete;
  LatencyRecorder& operator=(const LatencyRecorder&) = delete;
  ~LatencyRecorder();

  // Every thread, before its benchmark loop. Allocates here, never in record().
  LatencySamples& begin(benchmark::State& state);

  // Every thread, after its benchmark loop. Thread 0 merges and publishes counters
  // (names prefixed with `prefix`, e.g. "rpc_" gives rpc_p50 ...); returns the
  // summary on thread 0, an empty one elsewhere.
  LatencySummary report(benchmark::State& state, std::string_view prefix = {});

 private:
  std::vector<std::unique_ptr<LatencySamples>> slots_;  // slot i written only by thread i
  std::vector<std::int64_t> merged_;                     // thread 0's scratch
};

// Marks the benchmark as failed (SkipWithError) and remembers it, so that
// sealrpc_bench exits non-zero at the end (see any_failed()).
void fail(benchmark::State& state, const std::string& message);
bool any_failed() noexcept;

}  // namespace sealrpc::bench
