// Per-uid connection rate limit (SECURITY.md D2, connection churn): one token bucket
// per uid, as dbus-broker does. Used by the server's accept loop only, which runs on one
// strand, so there is no lock.
//
// Memory is bounded: at most `max_uids` buckets. A full bucket says nothing an absent
// one would not, so full buckets are what gets evicted: when the table is full, a sweep
// (at most once per second, so its O(n) cost is amortised over the accepts in between)
// drops every bucket that has refilled. Uids that still find the table full share one
// overflow bucket: an attacker with more than `max_uids` uids churning at once (user
// namespaces can give one user many) then slows down new uids, but never a uid already
// tracked, and can grow nothing.
#pragma once

#include "sealrpc/server.hpp"

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <unordered_map>

namespace sealrpc::detail {

class ConnectionRateLimiter {
 public:
  using clock = std::chrono::steady_clock;

  ConnectionRateLimiter(ConnectionRate rate, std::size_t max_uids) : rate_(rate), max_uids_(max_uids) {}

  bool enabled() const noexcept { return rate_.burst != 0 && rate_.per_second != 0; }

  // Takes a token from uid's bucket; false (refuse the connection) when it has none.
  bool admit(uid_t uid, clock::time_point now) {
    if (!enabled()) return true;
    auto it = buckets_.find(uid);
    if (it == buckets_.end()) {
      if (buckets_.size() >= max_uids_) sweep(now);
      if (buckets_.size() >= max_uids_) return take(overflow_, now);
      it = buckets_.emplace(uid, Bucket{static_cast<double>(rate_.burst), now}).first;
    }
    return take(it->second, now);
  }

  std::size_t tracked_uids() const noexcept { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens;
    clock::time_point last;  // when `tokens` was last brought up to date
  };

  void refill(Bucket& b, clock::time_point now) const {
    const double elapsed = std::chrono::duration<double>(now - b.last).count();
    if (elapsed > 0) b.tokens = std::min(static_cast<double>(rate_.burst), b.tokens + elapsed * rate_.per_second);
    b.last = now;
  }
  bool take(Bucket& b, clock::time_point now) {
    refill(b, now);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
  void sweep(clock::time_point now) {
    if (now - last_sweep_ < std::chrono::seconds(1)) return;
    last_sweep_ = now;
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      refill(it->second, now);
      if (it->second.tokens >= rate_.burst) it = buckets_.erase(it);
      else ++it;
    }
  }

  ConnectionRate rate_;
  std::size_t max_uids_;
  std::unordered_map<uid_t, Bucket> buckets_;
  Bucket overflow_{static_cast<double>(rate_.burst), clock::time_point{}};
  clock::time_point last_sweep_{};
};

}  // namespace sealrpc::detail
