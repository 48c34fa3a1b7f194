// Small helpers that turn a failed syscall into std::system_error with errno, so no
// result goes unchecked. The message names the operation, never secret data.
#pragma once

#include <cerrno>
#include <system_error>

namespace sealrpc::os {

[[noreturn]] inline void throw_errno(const char* what, int err = errno) {
  throw std::system_error(err, std::generic_category(), what);
}

// Retries on EINTR; throws on any other failure.
template <typename F>
auto check(const char* what, F&& f) {
  for (;;) {
    auto r = f();
    if (r >= 0) return r;
    if (errno != EINTR) throw_errno(what);
  }
}

}  // namespace sealrpc::os
