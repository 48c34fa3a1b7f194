// Raw contender client: blocking AF_UNIX stream socket; one sendmsg (header +
// payload gathered) per request, then recv until the echoed frame is complete.
#include "../contenders.hpp"
#include "frame_io.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>
#include <system_error>

#ifndef SEALRPC_BENCH_RAW_SERVER
#define SEALRPC_BENCH_RAW_SERVER ""
#endif

namespace sealrpc::bench {
namespace {

class RawConnection final : public EchoConnection {
 public:
  explicit RawConnection(const std::string& path) : buf_(64 * 1024 + server::kHeaderSize) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path - 1));
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      const int err = errno;
      ::close(fd_);
      throw std::system_error(err, std::generic_category(), "connect " + path);
    }
  }
  ~RawConnection() override { ::close(fd_); }

  std::span<const std::byte> call(std::span<const std::byte> request) override {
    std::byte header[server::kHeaderSize];
    frame_io::store_le32(header, static_cast<std::uint32_t>(request.size()));
    iovec iov[2] = {{header, sizeof header}, {const_cast<std::byte*>(request.data()), request.size()}};
    if (!frame_io::send_all(fd_, iov, 2)) throw std::system_error(errno, std::generic_category(), "raw send");
    const long len = frame_io::read_frame(fd_, buf_, have_);
    if (len < 0) throw std::runtime_error("raw: connection closed by server");
    const std::size_t frame = server::kHeaderSize + static_cast<std::size_t>(len);
    // The client is synchronous, so nothing follows the reply and consume() never
    // moves bytes; the payload stays in place until the next call.
    frame_io::consume(buf_, have_, frame);
    return {buf_.data() + server::kHeaderSize, static_cast<std::size_t>(len)};
  }

 private:
  int fd_ = -1;
  std::vector<std::byte> buf_;
  std::size_t have_ = 0;
};

}  // namespace

SEALRPC_BENCH_CONTENDER([] {
  Contender c;
  c.name = "raw";
  c.order = 0;
  c.description = "blocking AF_UNIX stream, length-prefixed, thread per connection (the floor)";
  c.start = [] { return spawn_server(server_exe("sealrpc_bench_raw_server", SEALRPC_BENCH_RAW_SERVER)); };
  c.connect = [](const ScopedServer& s) -> std::unique_ptr<EchoConnection> {
    return std::make_unique<RawConnection>(s.socket_path());
  };
  return c;
}());

}  // namespace sealrpc::bench
