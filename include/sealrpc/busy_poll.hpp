// Opt-in low-latency event loop: adaptive busy-polling before sleeping.
//
// io_context::run() sleeps in epoll_wait whenever no handler is ready, and every reply
// then pays the scheduler's wake-up (several µs on a VM, more than the RPC itself). A
// BusyPoller runs the same io_context, but after each handler it keeps polling
// (io_context::poll_one(): ready handlers, then epoll_wait with a zero timeout) for up
// to a spin budget before it blocks. The budget adapts, so an idle loop stops spinning:
//   * a poll that finds work sets the budget to max_spin;
//   * a spin that runs out without work halves it (below 1 µs it is 0: no spinning);
//   * a wake-up after blocking for less than max_spin (a spin would have caught that
//     event) sets it to max_spin again; a longer sleep leaves it as it is.
// CPU is bounded: at most max_spin of spinning per wait, and with events further apart
// than max_spin the spin shrinks geometrically to nothing (max_spin·(1/2+1/4+…) < 2·max_spin
// in all) until traffic is fast again.
//
// Use it instead of io_context::run() in the thread(s) that run a latency-critical
// server or client; everything else stays the same. It trades a core's idle time for
// latency: use it where a core is to spare (docs/performance.md, "Low-latency mode").
#pragma once

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstddef>

namespace sealrpc {

struct BusyPollOptions {
  // Longest spin before blocking; 0 makes the poller behave like run()/run_one().
  std::chrono::microseconds max_spin{50};
};

class BusyPoller {
 public:
  explicit BusyPoller(boost::asio::io_context& io, BusyPollOptions opts = {}) : io_(io), opts_(opts), budget_(opts.max_spin) {}

  // Like io_context::run_one(): runs one handler, spinning before it blocks. Returns 0
  // when the io_context is stopped or out of work.
  std::size_t run_one();
  // Like io_context::run(): until stopped or out of work. Returns handlers run.
  std::size_t run();
  // Runs handlers until done() is true. Returns false if the io_context stopped or ran
  // out of work first. For synchronous callers waiting on one completion.
  template <typename Done>
  bool run_until(Done&& done) {
    while (!done())
      if (run_one() == 0) return false;
    return true;
  }

  std::chrono::nanoseconds budget() const noexcept { return budget_; }

 private:
  boost::asio::io_context& io_;
  BusyPollOptions opts_;
  std::chrono::nanoseconds budget_;
};

}  // namespace sealrpc
