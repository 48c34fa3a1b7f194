// UniqueFd: closes exactly once. close() errors other than EINTR are not recoverable
// for the caller (the fd is gone either way on Linux), so they are ignored here.
#include "sealrpc/unique_fd.hpp"

#include <unistd.h>

namespace sealrpc {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);  // Linux: never retry close on EINTR
  fd_ = fd;
}

}  // namespace sealrpc
