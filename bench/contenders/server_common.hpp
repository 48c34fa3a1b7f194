// Helpers for benchmark server executables spawned by sealrpc::bench::spawn_server().
//
//   int main(int argc, char** argv) {
//     const std::string path = sealrpc::bench::server::socket_arg(argc, argv);
//     sealrpc::bench::server::init(path);   // first: watchdog, SIGPIPE ignored
//     ... bind + listen on path ...
//     sealrpc::bench::server::notify_ready();
//     ... serve forever; SIGTERM (default action) ends the process ...
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sealrpc::bench::server {

// argv[1], or exits with a usage message.
std::string socket_arg(int argc, char** argv);

// Ignores SIGPIPE and, when started by the harness ($SEALRPC_BENCH_PARENT_PID set),
// starts a watchdog thread that waits (pidfd, no polling; getppid() polling as a
// fallback) for the benchmark process to die, then removes socket_path and its
// directory and _exit(0)s. So a crashed or SIGKILLed sealrpc_bench leaves nothing
// running behind.
void init(const std::string& socket_path);

// Tells the harness the socket listens: writes one byte to $SEALRPC_BENCH_READY_FD
// and closes it. A no-op when the variable is unset (server started by hand).
void notify_ready();

// Frame format shared by the raw and asio contenders: a 4-byte little-endian length
// followed by that many payload bytes; the reply is the same frame echoed.
inline constexpr std::size_t kHeaderSize = 4;
inline constexpr std::uint32_t kMaxFrame = 64u << 20;

}  // namespace sealrpc::bench::server
