// One deadline timer per connection instead of one steady_timer per call.
//
// Calls are kept ordered by deadline; the single timer is armed for the earliest. Erasing
// a call never touches the timer: it may then fire early, finds nothing due and re-arms
// for the new earliest. With a constant timeout every new deadline is the latest, so the
// timer is set about once per timeout period instead of twice per call (timerfd_settime).
// All members must be used on the owner's executor (its strand).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>
#include <memory>

namespace sealrpc::detail {

class DeadlineQueue {
 public:
  using clock = std::chrono::steady_clock;
  using Handle = std::multimap<clock::time_point, std::uint32_t>::iterator;

  explicit DeadlineQueue(boost::asio::any_io_executor ex) : timer_(std::move(ex)) {}

  // Adds call `id`. When it is due, owner->on_deadline(id) runs on the timer's executor
  // (after the entry was removed: the handle is then invalid). The timer holds only a
  // weak reference to the owner, which must own this queue.
  template <typename Owner>
  Handle add(clock::time_point deadline, std::uint32_t id, const std::shared_ptr<Owner>& owner) {
    Handle h;
    if (free_.empty()) {
      h = q_.emplace(deadline, id);
    } else {  // reuse the node of a finished call: no allocation per call
      auto node = std::move(free_.back());
      free_.pop_back();
      node.key() = deadline;
      node.mapped() = id;
      h = q_.insert(std::move(node));
    }
    if (deadline < armed_) arm(deadline, std::weak_ptr<Owner>(owner));
    return h;
  }
  void erase(Handle h) {
    auto node = q_.extract(h);
    if (free_.size() < kFreeNodes) free_.push_back(std::move(node));
  }
  void clear() {
    q_.clear();
    free_.clear();
    armed_ = clock::time_point::max();
    timer_.cancel();
  }

 private:
  template <typename Owner>
  void arm(clock::time_point t, std::weak_ptr<Owner> owner) {
    armed_ = t;
    timer_.expires_at(t);  // cancels the previous wait, whose handler then does nothing
    timer_.async_wait([this, owner = std::move(owner)](boost::system::error_code ec) {
      if (ec) return;
      const auto self = owner.lock();  // alive, so `this` is too
      if (!self) return;
      armed_ = clock::time_point::max();
      const auto now = clock::now();
      while (!q_.empty() && q_.begin()->first <= now) {
        const std::uint32_t id = q_.begin()->second;
        q_.erase(q_.begin());
        self->on_deadline(id);
      }
      if (!q_.empty() && q_.begin()->first < armed_) arm(q_.begin()->first, owner);
    });
  }

  boost::asio::steady_timer timer_;
  std::multimap<clock::time_point, std::uint32_t> q_;
  static constexpr std::size_t kFreeNodes = 4;
  std::vector<decltype(q_)::node_type> free_;  // nodes of erased entries, for add()
  clock::time_point armed_ = clock::time_point::max();  // expiry of the pending wait
};

}  // namespace sealrpc::detail
