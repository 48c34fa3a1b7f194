// The buffer side of dispatch, kept out of server.cpp/client.cpp (which call it from
// one line each): decoding out-of-line requests/responses with their buffer fds,
// encoding replies with attached buffers, and the server's per-connection table of
// owner-revocable buffers it must wipe on release, drop, lease expiry (docs/buffers.md).
#pragma once

#include "sealrpc/buffer.hpp"
#include "sealrpc/client.hpp"
#include "sealrpc/server.hpp"
#include "transport/out_of_line.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <memory>

namespace sealrpc::detail {

// Owner-revocable buffers one connection's client still holds. Destroying or clearing
// the table wipes them all (connection drop). Use on the connection's strand only.
class LeaseTable {
 public:
  explicit LeaseTable(boost::asio::any_io_executor ex);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // Holds `buf` until release(rid, index), clear() or `lease` passes; then wipes it.
  void add(std::uint32_t rid, std::uint8_t index, SealedBuffer buf, std::chrono::milliseconds lease);
  void release(std::uint32_t rid, std::uint8_t index);
  void clear() noexcept;
  std::size_t size() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

wire::OutOfLineOptions out_of_line_options(const ServerOptions& o);
wire::OutOfLineOptions out_of_line_options(const ClientOptions& o);

// Server: decodes a request's params (inline or out of line; a client-owned revocable
// memfd is copied first) and moves its buffer fds into `bufs`. Throws
// std::invalid_argument (buffers::BufferError has a message safe to return).
IncomingMessage take_request(wire::Frame& f, const ServerOptions& o, CallBuffers& bufs);

// Server: the OK response frame for `results` plus the buffers the handler attached.
// Revocable ones are handed to `leases`. Throws std::length_error (RESOURCE_EXHAUSTED).
wire::EncodedFrame encode_response(std::uint32_t rid, capnp::MessageBuilder& results, const ServerOptions& o,
                                   CallBuffers& bufs, LeaseTable& leases, std::vector<std::byte> reuse = {});

// Client: the request frame for `msg` plus the attached buffers (the caller keeps
// `bufs` alive until the call ends). Throws std::length_error / std::system_error.
wire::EncodedFrame encode_request(wire::FrameHeader h, capnp::MessageBuilder& msg, const ClientOptions& o,
                                  const std::vector<SealedBuffer>& bufs, std::vector<std::byte> reuse = {});

// Client: decodes an OK response's results (the server is the trusted owner: its memfds
// are parsed in place) and its buffers. `on_release(index)` tells the server that
// buffer #index may be wiped. Throws std::invalid_argument.
std::pair<IncomingMessage, IncomingBuffers> take_response(wire::Frame& f, const ClientOptions& o,
                                                          std::function<void(std::uint8_t)> on_release,
                                                          std::shared_ptr<buffers::MappingCache> cache = nullptr);

}  // namespace sealrpc::detail
