// Asio contender server: the floor for any Boost.Asio design. One single-threaded
// io_context, one C++20 coroutine per connection, async length-prefixed echo
// (async_read header, async_read payload, one gathered async_write).
#include "server_common.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

namespace {

std::uint32_t load_le32(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}

asio::awaitable<void> session(stream::socket sock) {
  std::array<unsigned char, sealrpc::bench::server::kHeaderSize> header{};
  std::vector<unsigned char> body(64 * 1024);
  try {
    for (;;) {
      co_await asio::async_read(sock, asio::buffer(header), asio::use_awaitable);
      const std::uint32_t len = load_le32(header.data());
      if (len > sealrpc::bench::server::kMaxFrame) co_return;
      if (body.size() < len) body.resize(len);
      co_await asio::async_read(sock, asio::buffer(body.data(), len), asio::use_awaitable);
      const std::array<asio::const_buffer, 2> out{asio::buffer(header), asio::buffer(body.data(), len)};
      co_await asio::async_write(sock, out, asio::use_awaitable);
    }
  } catch (const std::exception&) {
    // EOF or reset: the client went away.
  }
}

asio::awaitable<void> accept_loop(stream::acceptor acceptor) {
  for (;;) {
    stream::socket sock = co_await acceptor.async_accept(asio::use_awaitable);
    asio::co_spawn(acceptor.get_executor(), session(std::move(sock)), asio::detached);
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace srv = sealrpc::bench::server;
  const std::string path = srv::socket_arg(argc, argv);
  srv::init(path);
  try {
    asio::io_context io(1);  // concurrency hint 1: single-threaded, no internal locking
    stream::acceptor acceptor(io, stream::endpoint(path));
    srv::notify_ready();
    asio::co_spawn(io, accept_loop(std::move(acceptor)), [](const std::exception_ptr& e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
