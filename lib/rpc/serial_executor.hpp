// A strand over `ex` that does not allocate when copied.
//
// any_io_executor stores executors of up to 24 bytes inline. strand<any_io_executor> is
// larger, so every copy Asio makes of it (each async operation, co_await, post, and the
// outstanding_work.tracked preference) went to the heap: ~25 allocations per small call
// (heaptrack, BM_SealRPC_InProcess). strand<io_context::executor_type> is 24 bytes and
// stays inline, so when `ex` is an io_context executor (the common case) we strand that.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace sealrpc::detail {

inline boost::asio::any_io_executor make_serial_executor(const boost::asio::any_io_executor& ex) {
  if (const auto* io = ex.target<boost::asio::io_context::executor_type>())
    return boost::asio::make_strand(*io);
  return boost::asio::make_strand(ex);
}

}  // namespace sealrpc::detail
