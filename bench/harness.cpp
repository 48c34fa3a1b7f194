#include "harness.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <stdexcept>

namespace sealrpc::bench {

namespace {
std::atomic<int> g_failures{0};

// Nearest-rank index for percentile q in (0, 1] of n samples.
std::size_t rank_index(double q, std::size_t n) {
  auto r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
  if (r == 0) r = 1;
  if (r > n) r = n;
  return r - 1;
}
}  // namespace

void LatencySamples::reset(std::size_t capacity) {
  if (data_.size() < capacity) data_.resize(capacity);  // value-init touches the pages
  n_ = 0;
  dropped_ = 0;
}

LatencySummary summarize_ns(std::vector<std::int64_t>& ns) {
  LatencySummary s;
  s.samples = ns.size();
  if (ns.empty()) return s;
  const std::size_t n = ns.size();
  // Successive nth_element over the remaining right part: O(n) overall.
  const double qs[] = {0.50, 0.90, 0.99, 0.999};
  double* outs[] = {&s.p50_us, &s.p90_us, &s.p99_us, &s.p999_us};
  auto first = ns.begin();
  for (int i = 0; i < 4; ++i) {
    const auto idx = static_cast<std::ptrdiff_t>(rank_index(qs[i], n));
    auto nth = ns.begin() + idx;
    if (nth >= first) {
      std::nth_element(first, nth, ns.end());
      first = nth;
    }
    *outs[i] = static_cast<double>(*nth) / 1000.0;
  }
  const auto [mn, mx] = std::minmax_element(ns.begin(), ns.end());
  s.min_us = static_cast<double>(*mn) / 1000.0;
  s.max_us = static_cast<double>(*mx) / 1000.0;
  long double sum = 0;
  for (auto v : ns) sum += v;
  s.mean_us = static_cast<double>(sum / static_cast<long double>(n)) / 1000.0;
  return s;
}

LatencyRecorder::LatencyRecorder() : slots_(kMaxThreads) {}
LatencyRecorder::~LatencyRecorder() = default;

LatencySamples& LatencyRecorder::begin(benchmark::State& state) {
  const int tid = state.thread_index();
  if (tid < 0 || tid >= kMaxThreads || state.threads() > kMaxThreads) {
    throw std::out_of_range("LatencyRecorder: too many benchmark threads");
  }
  auto& slot = slots_[static_cast<std::size_t>(tid)];
  if (!slot) slot = std::make_unique<LatencySamples>();
  const std::size_t per_thread_budget = kSampleBudget / static_cast<std::size_t>(state.threads());
  const auto wanted = static_cast<std::size_t>(std::max<benchmark::IterationCount>(state.max_iterations, 1));
  slot->reset(std::min(wanted, per_thread_budget));
  return *slot;
}

LatencySummary LatencyRecorder::report(benchmark::State& state, std::string_view prefix) {
  if (state.thread_index() != 0) return {};
  merged_.clear();
  std::size_t dropped = 0;
  for (int t = 0; t < state.threads(); ++t) {
    const auto& slot = slots_[static_cast<std::size_t>(t)];
    if (!slot) continue;
    merged_.insert(merged_.end(), slot->data_.begin(),
                   slot->data_.begin() + static_cast<std::ptrdiff_t>(slot->n_));
    dropped += slot->dropped_;
  }
  LatencySummary s = summarize_ns(merged_);
  s.dropped = dropped;
  const std::string p(prefix);
  state.counters[p + "p50"] = s.p50_us;
  state.counters[p + "p90"] = s.p90_us;
  state.counters[p + "p99"] = s.p99_us;
  state.counters[p + "p999"] = s.p999_us;
  state.counters[p + "calls_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * static_cast<double>(state.threads()), benchmark::Counter::kIsRate);
  if (dropped != 0) state.counters[p + "samples_dropped"] = static_cast<double>(dropped);
  return s;
}

void fail(benchmark::State& state, const std::string& message) {
  if (g_failures.fetch_add(1, std::memory_order_relaxed) < 20) {
    std::fprintf(stderr, "sealrpc_bench: error: %s\n", message.c_str());
  }
  state.SkipWithError(message.c_str());
}

bool any_failed() noexcept { return g_failures.load(std::memory_order_relaxed) != 0; }

}  // namespace sealrpc::bench
