// Adaptive busy-poll loop (see include/sealrpc/busy_poll.hpp for the policy).
#include "sealrpc/busy_poll.hpp"


namespace sealrpc {

using namespace std::chrono_literals;

std::size_t BusyPoller::run_one() {
  using clock = std::chrono::steady_clock;
  if (budget_ > 0ns) {
    const auto end = clock::now() + budget_;
    do {
      if (const std::size_t n = io_.poll_one()) {
        budget_ = opts_.max_spin;
        return n;
      }
      if (io_.stopped()) return 0;  // stop() or out of work: do not spin on
    } while (clock::now() < end);
    budget_ /= 2;
    if (budget_ < 1us) budget_ = 0ns;
  }
  const auto slept_from = clock::now();
  const std::size_t n = io_.run_one();
  if (n != 0 && clock::now() - slept_from < opts_.max_spin) budget_ = opts_.max_spin;  // traffic is fast again
  return n;
}

std::size_t BusyPoller::run() {
  std::size_t total = 0;
  while (const std::size_t n = run_one()) total += n;
  return total;
}

}  // namespace sealrpc
