// Waiting for a socket to become readable by parking a coroutine's continuation
// instead of awaiting the wait itself: the server's idle reader (one readiness wait per
// call also serves as the call's standby, lib/rpc/server.cpp) and the client's read
// loop (lib/rpc/client.cpp).
//
// The parked continuation lives in the owner (`parked_`), outside any Asio queue. The
// wait's handler is what Asio owns: when it runs, it calls owner->on_readable(); if
// Asio destroys it unrun (io_context shutdown), it destroys the parked continuation
// too, whose frames hold the owner and would otherwise never be resumed or freed.
#pragma once

#include "sealrpc/detail/recycle.hpp"
#include "transport/channel.hpp"

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>
#include <optional>

namespace sealrpc::detail {

using ParkedCoroutine = boost::asio::async_result<boost::asio::use_awaitable_t<>, void()>::handler_type;
using IoStrand = boost::asio::strand<boost::asio::io_context::executor_type>;

// Owner: std::optional<ParkedCoroutine> parked_; void on_readable(); (befriend this).
template <typename Owner>
struct ReadinessWait {
  std::shared_ptr<Owner> owner;
  bool ran = false;
  explicit ReadinessWait(std::shared_ptr<Owner> o) noexcept : owner(std::move(o)) {}
  ReadinessWait(ReadinessWait&& o) noexcept : owner(std::move(o.owner)), ran(o.ran) {}
  ReadinessWait& operator=(ReadinessWait&&) = delete;
  ~ReadinessWait() {
    if (owner && !ran) owner->parked_.reset();
  }
  void operator()(const boost::system::error_code&) {
    ran = true;
    owner->on_readable();  // also on close (operation_aborted): the resumed loop sees it
  }
};

// Arms one readiness wait on `chan`. With `strand` (the connection's strand as its own
// type) the completion runs through it with our recycling allocator: through
// any_io_executor, Asio would type-erase and allocate it on every call.
template <typename Owner>
void wait_readable(transport::FrameChannel& chan, const std::optional<IoStrand>& strand, std::shared_ptr<Owner> owner) {
  if (strand)
    chan.async_wait_readable(boost::asio::bind_executor(
        *strand, boost::asio::bind_allocator(RecyclingAllocator<void>{}, ReadinessWait<Owner>(std::move(owner)))));
  else
    chan.async_wait_readable(ReadinessWait<Owner>(std::move(owner)));
}

// co_await park(slot): suspends the calling coroutine until resume(slot).
inline auto park(std::optional<ParkedCoroutine>& slot) {
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void()>(
      [&slot](ParkedCoroutine h) { slot.emplace(std::move(h)); }, boost::asio::use_awaitable);
}

// Resumes the parked coroutine here, if there is one.
inline bool resume(std::optional<ParkedCoroutine>& slot) {
  if (!slot) return false;
  ParkedCoroutine h = std::move(*slot);
  slot.reset();
  std::move(h)();
  return true;
}

// The strand of `ex` as its own type, when it is one over an io_context.
inline std::optional<IoStrand> io_strand_of(const boost::asio::any_io_executor& ex) {
  if (const auto* s = ex.target<IoStrand>()) return *s;
  return std::nullopt;
}

}  // namespace sealrpc::detail
