// Asio contender client. Deliberately synchronous Asio (asio::write / asio::read on
// a local::stream_protocol::socket, no io_context running): the client pattern is
// one blocking call at a time, so a synchronous client measures the Asio server
// design without adding client-side event-loop costs, and its own cost is close to
// the raw client's (the same gathered write; two reads, header then payload).
#include "../contenders.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <stdexcept>
#include <vector>

#ifndef SEALRPC_BENCH_ASIO_SERVER
#define SEALRPC_BENCH_ASIO_SERVER ""
#endif

namespace sealrpc::bench {
namespace {

namespace asio = boost::asio;
using stream = asio::local::stream_protocol;

class AsioConnection final : public EchoConnection {
 public:
  explicit AsioConnection(const std::string& path) : sock_(io_), body_(64 * 1024) {
    sock_.connect(stream::endpoint(path));
  }

  std::span<const std::byte> call(std::span<const std::byte> request) override {
    std::array<unsigned char, 4> header{};
    const auto n = static_cast<std::uint32_t>(request.size());
    for (int i = 0; i < 4; ++i) header[static_cast<std::size_t>(i)] = static_cast<unsigned char>(n >> (8 * i));
    const std::array<asio::const_buffer, 2> out{asio::buffer(header), asio::buffer(request.data(), request.size())};
    asio::write(sock_, out);
    asio::read(sock_, asio::buffer(header));
    const std::uint32_t len = static_cast<std::uint32_t>(header[0]) | static_cast<std::uint32_t>(header[1]) << 8 |
                              static_cast<std::uint32_t>(header[2]) << 16 |
                              static_cast<std::uint32_t>(header[3]) << 24;
    if (body_.size() < len) body_.resize(len);
    asio::read(sock_, asio::buffer(body_.data(), len));
    return {body_.data(), len};
  }

 private:
  asio::io_context io_;
  stream::socket sock_;
  std::vector<std::byte> body_;
};

}  // namespace

SEALRPC_BENCH_CONTENDER([] {
  Contender c;
  c.name = "asio";
  c.order = 10;
  c.description = "Boost.Asio server (single-threaded io_context, C++20 coroutines); sync Asio client";
  c.start = [] { return spawn_server(server_exe("sealrpc_bench_asio_server", SEALRPC_BENCH_ASIO_SERVER)); };
  c.connect = [](const ScopedServer& s) -> std::unique_ptr<EchoConnection> {
    return std::make_unique<AsioConnection>(s.socket_path());
  };
  return c;
}());

}  // namespace sealrpc::bench
