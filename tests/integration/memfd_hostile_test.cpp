// Hostile peers against the memfd paths (SECURITY.md F6, M1-M6, issue 4 "Must show").
// Every attacker runs as a non-root uid (K1) through an ACL'd endpoint. After each
// attack: a clear error, every received fd closed, no memfd mapping leaked, and the
// server still serves a canary.
#include "sealrpc/buffer.hpp"
#include "sealrpc/endpoint.hpp"

#include "buffers/buffer_service.hpp"
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "transport/capnp_codec.hpp"
#include "transport/limits.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

using namespace sealrpc;
using namespace testutil;
using namespace buftest;

namespace {

constexpr gid_t kReaders = 4242;  // lets mallory call Test.echo as well
const Identity kMal{kMallory, kMallory, {kReaders}};
constexpr unsigned kShrink = 0x2, kGrow = 0x4, kWrite = 0x8, kFuture = 0x10, kSeal = 0x1;
constexpr unsigned kImm = kShrink | kGrow | kWrite | kSeal, kRev = kShrink | kGrow | kFuture | kSeal;

std::vector<std::byte> echo_message(std::size_t n, char c = 'e') {
  capnp::MallocMessageBuilder m;
  std::string data(n, c);
  m.initRoot<testsvc::EchoParams>().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  std::vector<std::byte> out;
  wire::append_message(out, m);
  return out;
}

// A memfd with `content` and `seals`; with `keep_map` the RW mapping made before the
// seals is returned too (so the owner can keep writing under FUTURE_WRITE).
int make_memfd(std::span<const std::byte> content, unsigned seals, void** keep_map = nullptr) {
  const int fd = ::memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(content.size())) != 0) return -1;
  void* p = ::mmap(nullptr, content.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -1;
  std::memcpy(p, content.data(), content.size());
  if (keep_map) *keep_map = p;
  else ::munmap(p, content.size());
  if (seals && ::fcntl(fd, F_ADD_SEALS, seals) != 0) return -1;
  return fd;
}

// Child side: send `frame` with `fds`, expect a response with `status` whose text
// contains `expect`. Returns 0 on success, else a code naming what differed.
int expect_reply(const std::string& path, const std::vector<std::byte>& frame, const std::vector<int>& fds, int status,
                 const std::string& expect) {
  const int s = raw_connect(path);
  if (s < 0) return 90;
  if (!send_with_fds(s, frame, fds)) return 91;
  for (int fd : fds) ::close(fd);
  auto r = read_raw(s);
  ::close(s);
  if (r.type != 4 || r.status != status || r.payload.find(expect) == std::string::npos) {
    std::fprintf(stderr, "  got type=%d status=%d payload='%s' (wanted status %d, '%s')\n", r.type, r.status,
                 r.status == 0 ? "<results>" : r.payload.c_str(), status, expect.c_str());
    return r.type != 4 ? 92 : (r.status != status ? 93 : 94);
  }
  return 0;
}
int expect_goodbye(const std::string& path, const std::vector<std::byte>& frame, const std::vector<int>& fds,
                   const std::string& expect) {
  const int s = raw_connect(path);
  if (s < 0) return 90;
  if (!send_with_fds(s, frame, fds)) return 91;
  for (int fd : fds) ::close(fd);
  auto r = read_raw(s);
  const bool eof = read_raw(s, 2000).type == 0;
  ::close(s);
  if (r.type != 6 || r.payload.find(expect) == std::string::npos || !eof) {
    std::fprintf(stderr, "  got type=%d payload='%s' eof=%d\n", r.type, r.payload.c_str(), eof);
    return 95;
  }
  return 0;
}

// An inline request to Buffers.sum whose blob names fd `index` with `size`/`kind`.
std::vector<std::byte> sum_request(std::uint8_t fd_count, std::uint8_t index, std::uint64_t size, testsvc::BufKind kind,
                                   std::uint32_t read_twice_ms = 0) {
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<testsvc::BlobParams>();
  auto b = p.initBlob();
  b.setSize(size);
  b.setFdIndex(index);
  b.setKind(kind);
  p.setReadTwiceMs(read_twice_ms);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  auto f = raw_header(kBufferInterface, 0, 0, fd_count, static_cast<std::uint32_t>(payload.size()));
  // Not f.insert(end, ...): GCC 12 at -O3 reports a false -Warray-bounds on it.
  f.resize(f.size() + payload.size());
  std::copy_n(payload.data(), payload.size(), f.data() + sealrpc::limits::kHeaderBytes);
  return f;
}

class MemfdHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create non-root attackers";
    start(ServerOptions{});
  }
  void start(ServerOptions o) {
    o.allow = AccessRuleSpec{.uids = {kMallory}, .same_user = true};
    server_.reset();
    svc_ = std::make_shared<BufferService>();
    EndpointOptions eo;
    eo.acl_users = {kMallory};
    server_ = std::make_unique<TestServer>(listen_private("sealrpc", eo), o,
                                           std::vector<std::shared_ptr<Service>>{svc_});
    ASSERT_FALSE(call_once(server_->path(), 0).ec);  // warm up
    settle();
    fds_ = count_fds();
    maps_ = count_memfd_maps();
  }
  void TearDown() override {
    if (!server_) return;
    auto r = call_once(server_->path(), 0, "canary");
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.data, "canary");
    settle();
    EXPECT_EQ(count_fds(), fds_) << "fd leak";
    EXPECT_EQ(count_memfd_maps(), maps_) << "mapping leak";
  }
  void settle() {
    for (int i = 0; i < 300 && (server_->server().connection_count() != 0 || count_fds() > fds_); ++i) ::usleep(10'000);
  }
  const std::string& path() { return server_->path(); }
  int as_mallory(const std::function<int()>& fn) { return run_as(kMal, fn); }

  std::shared_ptr<BufferService> svc_;
  std::unique_ptr<TestServer> server_;
  int fds_ = 0, maps_ = 0;
};

}  // namespace

TEST_F(MemfdHostile, UnsealedMemfdIsRefused) {
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000);
              const int fd = make_memfd(msg, 0);
              return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size()), {fd}, 2, "required seal");
            }),
            0);
}

TEST_F(MemfdHostile, MemfdMissingOneRequiredSealIsRefused) {
  const std::pair<unsigned, const char*> cases[] = {
      {kShrink | kGrow | kWrite, "required seal"},  // no F_SEAL_SEAL (M4)
      {kShrink | kWrite | kSeal, "required seal"},  // no F_SEAL_GROW
      {kGrow | kWrite | kSeal, "required seal"},    // no F_SEAL_SHRINK (M1)
      {kShrink | kGrow | kSeal, "write seal"},      // neither WRITE nor FUTURE_WRITE
  };
  for (auto [seals, expect] : cases) {
    EXPECT_EQ(as_mallory([&] {
                auto msg = echo_message(100'000);
                const int fd = make_memfd(msg, seals);
                return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size()), {fd}, 2, expect);
              }),
              0)
        << "seals " << seals;
  }
}

TEST_F(MemfdHostile, FutureWriteOnlyIsCopiedForMessagesAndNamedBuffersAndRefusedWhenAnnouncedImmutable) {
  // Out-of-line message with FUTURE_WRITE only: parsed from the server's own copy.
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000, 'q');
              const int fd = make_memfd(msg, kRev);
              return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size()), {fd}, 0, "");
            }),
            0);
  // A buffer announced immutable but only FUTURE_WRITE-sealed: refused.
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(1 << 16, std::byte{1});
              const int fd = make_memfd(content, kRev);
              return expect_reply(path(), sum_request(1, 0, content.size(), testsvc::BufKind::IMMUTABLE), {fd}, 2,
                                  "not write-sealed");
            }),
            0);
  // Announced owner-revocable: accepted, as a private copy.
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(1 << 16, std::byte{1});
              const int fd = make_memfd(content, kRev);
              return expect_reply(path(), sum_request(1, 0, content.size(), testsvc::BufKind::OWNER_REVOCABLE), {fd}, 0, "");
            }),
            0);
}

TEST_F(MemfdHostile, RevocableClientBuffersRefusedWhenPolicySaysSo) {
  ServerOptions o;
  o.accept_revocable_buffers = false;
  start(o);
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(4096, std::byte{1});
              const int fd = make_memfd(content, kRev);
              return expect_reply(path(), sum_request(1, 0, content.size(), testsvc::BufKind::OWNER_REVOCABLE), {fd}, 2,
                                  "not accepted");
            }),
            0);
}

// M3: the owner keeps its pre-seal RW mapping and flips bytes while the server reads.
// The server decides on its own copy: two reads 100 ms apart see the same bytes.
TEST_F(MemfdHostile, OwnerFlippingBytesOfAFutureWriteBufferCannotChangeWhatTheServerSees) {
  EXPECT_EQ(as_mallory([&] {
              const std::size_t n = 4 << 20;
              std::vector<std::byte> content(n, std::byte{7});
              void* map = nullptr;
              const int fd = make_memfd(content, kRev, &map);
              if (fd < 0) return 80;
              std::atomic<bool> stop{false};
              std::thread flipper([&] {
                auto* p = static_cast<volatile std::uint8_t*>(map);
                for (std::uint64_t i = 0; !stop; ++i) { const auto k = (i * 4099) % n; p[k] = static_cast<std::uint8_t>(p[k] ^ 0xff); }
              });
              const int s = raw_connect(path());
              const bool sent = send_with_fds(s, sum_request(1, 0, n, testsvc::BufKind::OWNER_REVOCABLE, 100), {fd});
              auto r = read_raw(s);
              stop = true;
              flipper.join();
              ::close(s);
              ::close(fd);
              if (!sent || r.type != 4 || r.status != 0) return 81;
              std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(r.payload.data()), r.payload.size());
              auto msg = wire::decode_message(payload, {});
              auto res = msg.root().getAs<testsvc::BlobResults>();
              return res.getCopied() && res.getStable() ? 0 : 82;
            }),
            0);
  // The same against an out-of-line message: parsed from a copy, no crash, a clean answer.
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(8 << 20, 'f');
              void* map = nullptr;
              const int fd = make_memfd(msg, kRev, &map);
              std::atomic<bool> stop{false};
              std::thread flipper([&] {
                auto* p = static_cast<volatile std::uint8_t*>(map);
                for (std::uint64_t i = 0; !stop; ++i) { const auto k = (i * 4099) % msg.size(); p[k] = static_cast<std::uint8_t>(p[k] ^ 0x55); }
              });
              const int s = raw_connect(path());
              send_with_fds(s, ool_request(testsvc::kTestInterface, 0, msg.size()), {fd});
              auto r = read_raw(s, 10'000);
              stop = true;
              flipper.join();
              ::close(s);
              ::close(fd);
              return r.type == 4 && (r.status == 0 || r.status == 2) ? 0 : 83;
            }),
            0);
}

// M2/K34: sizes that disagree with the memfd never reach mmap, so nothing can SIGBUS.
TEST_F(MemfdHostile, SizeSmallerOrLargerThanAnnouncedIsRefused) {
  for (std::int64_t delta : {-8, 8, 1 << 20}) {
    EXPECT_EQ(as_mallory([&] {
                auto msg = echo_message(100'000);
                const int fd = make_memfd(msg, kImm);
                return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size() + delta), {fd}, 2,
                                    "does not match");
              }),
              0)
        << delta;
  }
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000);
              const int fd = make_memfd(msg, kImm);
              return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, UINT64_MAX - 4095), {fd}, 2, "buffer");
            }),
            0);
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000);
              const int fd = make_memfd(msg, kImm);
              return expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size(), 1, 1), {fd}, 2, "reserved");
            }),
            0);
  for (std::uint64_t announced : {std::uint64_t{4096}, std::uint64_t{1} << 40}) {
    EXPECT_EQ(as_mallory([&] {
                std::vector<std::byte> content(8192, std::byte{3});
                const int fd = make_memfd(content, kImm);
                return expect_reply(path(), sum_request(1, 0, announced, testsvc::BufKind::IMMUTABLE), {fd}, 2, "buffer");
              }),
              0)
        << announced;
  }
}

// F6: every fd type that is not a sealed memfd.
TEST_F(MemfdHostile, WrongFdTypesAreRefusedWithoutBlocking) {
  enum Kind { regular, pipe_w, sock, opath, devzero, secretmem };
  for (int k : {regular, pipe_w, sock, opath, devzero, secretmem}) {
    const int rc = as_mallory([&] {
      auto msg = echo_message(100'000);
      int fd = -1, keep = -1;
      switch (k) {
        case regular: {
          char name[] = "/tmp/sealrpc-hostile-XXXXXX";
          fd = ::mkstemp(name);
          ::unlink(name);
          if (::write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return 70;
          break;
        }
        case pipe_w: {
          int p[2];
          if (::pipe(p) != 0) return 71;
          fd = p[0];
          keep = p[1];  // writer held open: a blocking read would hang
          break;
        }
        case sock: {
          int sv[2];
          if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 72;
          fd = sv[0];
          keep = sv[1];
          break;
        }
        case opath: fd = ::open("/", O_PATH); break;
        case devzero: fd = ::open("/dev/zero", O_RDONLY); break;
        case secretmem: {
          fd = static_cast<int>(::syscall(447, 0));
          if (fd < 0) return 0;  // not available: nothing to test
          if (::ftruncate(fd, static_cast<off_t>(msg.size())) != 0) return 73;
          break;
        }
      }
      if (fd < 0) return 74;
      const int rc = expect_reply(path(), ool_request(testsvc::kTestInterface, 0, msg.size()), {fd}, 2, "buffer");
      if (keep >= 0) ::close(keep);
      return rc;
    });
    EXPECT_EQ(rc, 0) << "fd kind " << k;
  }
}

// M4-M6: after receiving a server-owned buffer the peer cannot change it by any door.
TEST_F(MemfdHostile, PeerCannotModifyAServerBufferByAnyMeans) {
  const std::size_t n = 1 << 20;
  const int rc = as_mallory([&] {
    if (::prctl(PR_SET_DUMPABLE, 1) != 0) return 60;  // so /proc/self/fd is ours to open
    SyncClient c(path());
    if (c.connect_error()) return 61;
    Request<testsvc::BlobParams> req;
    req.params().setSize(n);
    req.params().setSeed(4);
    req.params().setKind(testsvc::BufKind::OWNER_REVOCABLE);
    auto [ec, resp] = c.call<testsvc::BlobResults>(kBufferInterface, 1, std::move(req));
    if (ec) return 62;
    ReceivedBuffer b = resp.buffer(resp.get().getBlob());
    if (!matches(b.data(), 4)) return 63;
    const int fd = b.fd();
    int bad = 0;
    if (::ftruncate(fd, 0) == 0) bad |= 1;
    if (::pwrite(fd, "x", 1, 0) == 1) bad |= 2;
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0) bad |= 4;
    if (void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); p != MAP_FAILED) bad |= 8;
    char proc[64];
    std::snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (int rw = ::open(proc, O_RDWR); rw >= 0) {
      if (::pwrite(rw, "x", 1, 0) == 1) bad |= 16;
      ::close(rw);
    }
    if (::fcntl(fd, F_ADD_SEALS, kWrite) == 0) bad |= 32;
    if (::mprotect(const_cast<std::byte*>(b.data().data()), n, PROT_READ | PROT_WRITE) == 0) bad |= 64;
    if (!matches(b.data(), 4)) bad |= 128;  // the shared pages are exactly what the server wrote
    return bad;
  });
  EXPECT_EQ(rc, 0) << "bitmask of attacks that succeeded";
  std::lock_guard lock(svc_->mu);
  ASSERT_TRUE(svc_->last_fd.valid());
  std::vector<std::byte> now(n);
  ASSERT_EQ(::pread(svc_->last_fd.get(), now.data(), n, 0), static_cast<ssize_t>(n));
  // The client left: the server wiped the buffer (connection drop); either way, never
  // anything but the pattern or zeros.
  EXPECT_TRUE(matches(now, 4) || all_zero(now));
  svc_->last_fd.reset();  // the test's own dup, not a server fd
}

// F2 and buffer indices: fds that disagree with what the frame or message announces.
TEST_F(MemfdHostile, MoreOrFewerFdsThanAnnounced) {
  // Header says 2, one arrives: a framing error, the connection closes.
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000);
              return expect_goodbye(path(), ool_request(testsvc::kTestInterface, 0, msg.size(), 2), {make_memfd(msg, kImm)},
                                    "fd count");
            }),
            0);
  // Header says 1, two arrive.
  EXPECT_EQ(as_mallory([&] {
              auto msg = echo_message(100'000);
              return expect_goodbye(path(), ool_request(testsvc::kTestInterface, 0, msg.size(), 1),
                                    {make_memfd(msg, kImm), make_memfd(msg, kImm)}, "fd count");
            }),
            0);
  // Out-of-line flag without any fd.
  EXPECT_EQ(as_mallory([&] {
              return expect_goodbye(path(), ool_request(testsvc::kTestInterface, 0, 4096, 0), {}, "flags");
            }),
            0);
  // The message names buffer #3; only one came.
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(4096, std::byte{1});
              return expect_reply(path(), sum_request(1, 3, 4096, testsvc::BufKind::IMMUTABLE), {make_memfd(content, kImm)}, 2,
                                  "index out of range");
            }),
            0);
  // Extra sealed buffers nobody asks for: the call works, they are closed at call end.
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(4096, std::byte{1});
              std::vector<int> fds;
              for (int i = 0; i < 4; ++i) fds.push_back(make_memfd(content, kImm));
              return expect_reply(path(), sum_request(4, 0, 4096, testsvc::BufKind::IMMUTABLE), fds, 0, "");
            }),
            0);
  // A buffer that is not a memfd next to a valid message: refused before the handler.
  EXPECT_EQ(as_mallory([&] {
              std::vector<std::byte> content(4096, std::byte{1});
              const int p = ::open("/dev/zero", O_RDONLY);
              return expect_reply(path(), sum_request(2, 0, 4096, testsvc::BufKind::IMMUTABLE), {make_memfd(content, kImm), p}, 2,
                                  "not a memfd");
            }),
            0);
}
