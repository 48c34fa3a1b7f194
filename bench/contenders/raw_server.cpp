// Raw contender server: blocking AF_UNIX stream sockets, one thread per connection,
// length-prefixed echo. The floor every other design is compared with.
#include "frame_io.hpp"
#include "server_common.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

void serve(int fd) {
  namespace fio = sealrpc::bench::frame_io;
  std::vector<std::byte> buf(64 * 1024 + sealrpc::bench::server::kHeaderSize);
  std::size_t have = 0;
  for (;;) {
    const long len = fio::read_frame(fd, buf, have);
    if (len < 0) break;
    const std::size_t frame = sealrpc::bench::server::kHeaderSize + static_cast<std::size_t>(len);
    iovec iov{buf.data(), frame};
    if (!fio::send_all(fd, &iov, 1)) break;
    fio::consume(buf, have, frame);
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  namespace srv = sealrpc::bench::server;
  const std::string path = srv::socket_arg(argc, argv);
  srv::init(path);

  const int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (lfd < 0 || path.size() >= sizeof addr.sun_path) {
    std::perror("raw_server: socket");
    return 1;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::bind(lfd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, 1024) != 0) {
    std::perror("raw_server: bind/listen");
    return 1;
  }
  srv::notify_ready();
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::perror("raw_server: accept");
      return 1;
    }
    std::thread(serve, fd).detach();
  }
}
