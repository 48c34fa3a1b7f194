// Large-buffer layer benchmark (issues 4 and 6): moving N bytes from a producer to a
// consumer. In every variant the producer writes all N bytes (a fill that changes per
// transfer) and the consumer reads every byte, so each column is "produce, move,
// consume":
//   memfd_fresh   a new owner-revocable memfd per transfer: create, fill, seal, send
//                 the fd (SCM_RIGHTS), receiver verifies + maps read-only + reads all,
//                 unmaps; the owner wipes and frees it
//   memfd_pio     a new immutable memfd per transfer, never mapped: the producer fills
//                 its buffer and pwrite()s it, seals, sends the fd; the receiver
//                 verifies, pread()s into its own buffer and reads it (SealRPC's
//                 out-of-line message path since mmap/munmap proved slow here)
//   memfd_reused  one pre-faulted owner-revocable buffer: the owner rewrites it through
//                 its mapping, sends a dup'ed fd, the receiver verifies + maps + reads
//                 + unmaps (every transfer faults the receiver's pages in again)
//   memfd_cached  as memfd_reused, but the receiver keeps its mapping of that memfd
//                 (buffers::MappingCache, what SealRPC's receive path does): verify the
//                 new fd, find the inode mapped already, read through the warm mapping
//   socket        the producer fills its buffer, the bytes are copied through an
//                 AF_UNIX stream socket (4 MiB socket buffers) into a pre-faulted
//                 receive buffer, then read
// All three run inside every iteration of BM_LayerMemfd/transfer/<bytes>, so they see the
// same machine state; the counters are the mean time of each in µs and the ratios
// socket/memfd (> 1: memfd is faster). BM_LayerMemfd/wipe/<bytes> measures the owner's
// wipe (sodium_memzero through its mapping) as µs per MiB.
#include "buffers/memfd.hpp"
#include "sealrpc/buffer.hpp"
#include "transfer_util.hpp"

#include <benchmark/benchmark.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <semaphore>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
namespace bf = sealrpc::buffers;
using sealrpc::bench::read_all;
using sealrpc::bench::SocketPair;
using sealrpc::bench::SocketWriter;

void send_fd(int sock, int fd) {
  char byte = 'm';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (::sendmsg(sock, &m, MSG_NOSIGNAL) != 1) throw std::runtime_error("sendmsg");
}

sealrpc::UniqueFd recv_fd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  if (::recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1) throw std::runtime_error("recvmsg");
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  if (!c || c->cmsg_type != SCM_RIGHTS) throw std::runtime_error("no fd");
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return sealrpc::UniqueFd(fd);
}

void BM_transfer(benchmark::State& state, std::size_t n) {
  std::vector<std::byte> src(n, std::byte{0x5a});
  std::vector<std::byte> dst(n, std::byte{0});  // pre-faulted receive buffer
  SocketPair fds_chan, copy_chan;
  sealrpc::bench::widen_socket_buffers(copy_chan.a.get(), copy_chan.b.get());
  SocketWriter writer(copy_chan.a.get(), src);

  auto reused = bf::OwnedBuffer::create(n);
  std::memset(reused.writable().data(), 1, n);  // pre-fault the owner's pages
  reused.seal_revocable();

  auto cached = bf::OwnedBuffer::create(n);
  std::memset(cached.writable().data(), 1, n);
  cached.seal_revocable();
  bf::MappingCache cache(8, std::uint64_t{1} << 30);

  double fresh_s = 0, pio_s = 0, reused_s = 0, cached_s = 0, socket_s = 0;
  std::vector<std::byte> pio_src(n), pio_dst(n, std::byte{1});
  std::uint64_t sink = 0;
  unsigned char fill = 0;
  for (auto _ : state) {
    ++fill;
    // memfd, fresh per transfer.
    auto t0 = clock_type::now();
    {
      auto buf = bf::OwnedBuffer::create(n);
      std::memset(buf.writable().data(), fill, n);
      buf.seal_revocable();
      send_fd(fds_chan.a.get(), buf.dup_fd().get());
      auto region = bf::SealedRegion::open(recv_fd(fds_chan.b.get()), n, std::uint64_t{1} << 30);
      sink += read_all(region.bytes());
    }  // region unmapped; buf wiped, unmapped, closed
    auto tp = clock_type::now();
    {
      std::memset(pio_src.data(), fill, n);
      auto fd = bf::create_immutable(n, [&](int f) { bf::pwrite_all(f, pio_src, 0); });
      send_fd(fds_chan.a.get(), fd.get());
      auto got = recv_fd(fds_chan.b.get());
      (void)bf::verify(got.get(), n, std::uint64_t{1} << 30);
      bf::pread_all(got.get(), pio_dst);
      sink += read_all(pio_dst);
    }
    auto t1 = clock_type::now();
    // memfd, reused pre-faulted buffer, mapped anew by the receiver each time.
    std::memset(reused.writable().data(), fill, n);
    send_fd(fds_chan.a.get(), reused.dup_fd().get());
    {
      auto region = bf::SealedRegion::open(recv_fd(fds_chan.b.get()), n, std::uint64_t{1} << 30);
      sink += read_all(region.bytes());
    }
    auto tc = clock_type::now();
    // memfd, reused buffer, receiver's mapping cached.
    std::memset(cached.writable().data(), fill, n);
    send_fd(fds_chan.a.get(), cached.dup_fd().get());
    {
      auto region = cache.open(recv_fd(fds_chan.b.get()), n);
      sink += read_all(region->bytes());
    }
    auto t2 = clock_type::now();
    // socket copy.
    writer.send_once();
    if (!sealrpc::bench::recv_all(copy_chan.b.get(), dst)) {
      state.SkipWithError("socket recv failed");
      return;
    }
    sink += read_all(dst);
    auto t3 = clock_type::now();
    fresh_s += std::chrono::duration<double>(tp - t0).count();
    pio_s += std::chrono::duration<double>(t1 - tp).count();
    reused_s += std::chrono::duration<double>(tc - t1).count();
    cached_s += std::chrono::duration<double>(t2 - tc).count();
    socket_s += std::chrono::duration<double>(t3 - t2).count();
    state.SetIterationTime(std::chrono::duration<double>(t3 - t0).count());
  }
  benchmark::DoNotOptimize(sink);
  const double it = static_cast<double>(state.iterations());
  state.counters["memfd_fresh_us"] = fresh_s / it * 1e6;
  state.counters["memfd_reused_us"] = reused_s / it * 1e6;
  state.counters["socket_us"] = socket_s / it * 1e6;
  state.counters["ratio_socket_over_fresh"] = socket_s / fresh_s;
  state.counters["ratio_socket_over_reused"] = socket_s / reused_s;
  state.counters["memfd_cached_us"] = cached_s / it * 1e6;
  state.counters["memfd_pio_us"] = pio_s / it * 1e6;
  state.counters["ratio_socket_over_pio"] = socket_s / pio_s;
  state.counters["ratio_socket_over_cached"] = socket_s / cached_s;
}

void BM_wipe(benchmark::State& state, std::size_t n) {
  auto buf = bf::OwnedBuffer::create(n);
  std::memset(buf.writable().data(), 1, n);
  buf.seal_revocable();
  double total = 0;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    bf::secure_zero(buf.writable().data(), n);  // what OwnedBuffer::wipe() does before munmap
    auto t1 = clock_type::now();
    total += std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  state.counters["wipe_us_per_MiB"] = total / static_cast<double>(state.iterations()) * 1e6 / (static_cast<double>(n) / (1 << 20));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n));
}

const bool registered = [] {
  for (std::int64_t mib : {1, 16, 64}) {
    benchmark::RegisterBenchmark(("BM_LayerMemfd/transfer/" + std::to_string(mib << 20)).c_str(), BM_transfer,
                                 static_cast<std::size_t>(mib << 20))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  for (std::int64_t mib : {1, 16, 64}) {
    benchmark::RegisterBenchmark(("BM_LayerMemfd/wipe/" + std::to_string(mib << 20)).c_str(), BM_wipe,
                                 static_cast<std::size_t>(mib << 20))
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
