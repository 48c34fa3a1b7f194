// Per-uid quotas on client memfds (SECURITY.md M9): one hostile uid spreading calls over
// several connections cannot make the server hold more client buffer bytes or memfds
// at once than ServerOptions::max_buffer_bytes_per_uid / max_buffers_per_uid. Calls
// over the quota get RESOURCE_EXHAUSTED (audited), the connections and the server go on
// serving, another uid's canary keeps getting correct results, and when the held calls
// end the quota is free again (no accounting leak). The attacker is a non-root uid (K1)
// in a forked child; the server runs in this process, so its fds are /proc/self/fd.
#include "sealrpc/buffer.hpp"
#include "sealrpc/endpoint.hpp"

#include "buffers/buffer_service.hpp"
#include "rpc/buffer_glue.hpp"
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "transport/capnp_codec.hpp"
#include "transport/limits.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/serialize.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <future>

using namespace sealrpc;
using namespace testutil;
using namespace buftest;

namespace {

constexpr std::uint64_t kQuotaInterface = 0xd00dfeedcafe0003ull;
constexpr gid_t kReaders = 4242;  // lets mallory call Test.echo as well
const Identity kMal{kMallory, kMallory, {kReaders}};
constexpr unsigned kImm = 0x2 | 0x4 | 0x8 | 0x1;    // SHRINK|GROW|WRITE|SEAL
constexpr unsigned kRev = 0x2 | 0x4 | 0x10 | 0x1;   // SHRINK|GROW|FUTURE_WRITE|SEAL
constexpr std::uint64_t kMiB = 1 << 20;
constexpr const char* kHostileName = "quota-hostile";  // names of the attacker's memfds

// Quota.hold: takes params.blob (mapped or copied), checks it holds pattern(seed), then,
// with readTwiceMs != 0, keeps it until the test opens the gate. Counts calls holding.
class QuotaService final : public Service {
 public:
  QuotaService() {
    MethodInfo m;
    m.id = {kQuotaInterface, 0};
    m.interface_name = "Quota";
    m.method_name = "hold";
    m.schema_file = "tests/integration/memfd_quota_test.cpp";
    m.rule = AccessRuleSpec{.uids = {kMallory}, .same_user = true};
    m.invoke = &hold;
    m.params_schema = capnp::Schema::from<testsvc::BlobParams>();
    methods_.push_back(std::move(m));
  }
  std::span<const MethodInfo> sealrpc_methods() const override { return methods_; }

  std::atomic<int> held{0};
  std::atomic<bool> open{true};

  // Waits (bounded) until `n` calls hold their buffer.
  bool wait_held(int n) {
    for (int i = 0; i < 2000 && held.load() != n; ++i) ::usleep(5'000);
    return held.load() == n;
  }

 private:
  static boost::asio::awaitable<Status> hold(Service& svc, CallContext& ctx, capnp::AnyPointer::Reader p,
                                             capnp::AnyPointer::Builder r) {
    auto& self = static_cast<QuotaService&>(svc);
    auto params = p.getAs<testsvc::BlobParams>();
    ReceivedBuffer b;
    try {
      b = ctx.buffer(params.getBlob());
    } catch (const std::invalid_argument& e) {
      co_return Status{StatusCode::invalid_argument, e.what()};
    }
    if (!matches(b.data(), params.getSeed())) co_return Status{StatusCode::invalid_argument, "wrong bytes"};
    if (params.getReadTwiceMs() != 0) {
      ++self.held;
      boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
      while (!self.open.load() && !ctx.is_cancelled()) {
        t.expires_after(std::chrono::milliseconds(2));
        co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      }
      --self.held;
    }
    auto res = r.initAs<testsvc::BlobResults>();
    res.setDigest(digest(b.data()));
    res.setSize(b.size());
    res.setCopied(b.copied());
    co_return Status::ok();
  }
  std::vector<MethodInfo> methods_;
};

// A memfd named kHostileName of `size` bytes. `filled`: pattern(seed) written with pwrite
// (every page present); otherwise sparse (ftruncate only: costs the attacker nothing).
int hostile_memfd(std::uint64_t size, unsigned seals, bool filled, std::uint8_t seed = 0) {
  const int fd = ::memfd_create(kHostileName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) return -1;
  if (filled) {
    std::vector<std::byte> chunk(kMiB);
    for (std::uint64_t off = 0; off < size; off += chunk.size()) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), size - off));
      for (std::size_t i = 0; i < n; ++i) chunk[i] = pattern(off + i, seed);
      if (::pwrite(fd, chunk.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) return -1;
    }
  }
  if (::fcntl(fd, F_ADD_SEALS, seals) != 0) return -1;
  return fd;
}

// A Quota.hold (or `iface`.0) request frame whose blob is fd #0 of `fd_count`.
std::vector<std::byte> hold_request(std::uint32_t rid, std::uint8_t fd_count, std::uint64_t size, testsvc::BufKind kind,
                                    std::uint8_t seed, bool hold, std::uint64_t iface = kQuotaInterface) {
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<testsvc::BlobParams>();
  auto b = p.initBlob();
  b.setSize(size);
  b.setFdIndex(0);
  b.setKind(kind);
  p.setSeed(seed);
  p.setReadTwiceMs(hold ? 1 : 0);
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  auto f = raw_header(iface, 0, 0, fd_count, static_cast<std::uint32_t>(payload.size()), rid);
  f.resize(f.size() + payload.size());
  std::copy_n(payload.data(), payload.size(), f.data() + limits::kHeaderBytes);
  return f;
}

std::vector<std::byte> echo_request(std::uint32_t rid, const std::string& data) {
  capnp::MallocMessageBuilder m;
  m.initRoot<testsvc::EchoParams>().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
  std::vector<std::byte> payload;
  wire::append_message(payload, m);
  auto f = raw_header(testsvc::kTestInterface, 0, 0, 0, static_cast<std::uint32_t>(payload.size()), rid);
  f.resize(f.size() + payload.size());
  std::copy_n(payload.data(), payload.size(), f.data() + limits::kHeaderBytes);
  return f;
}

// Sends `frame` with `fds` (closed here). Returns 0, or a code naming what failed.
int send_frame(int sock, const std::vector<std::byte>& frame, const std::vector<int>& fds) {
  for (int fd : fds)
    if (fd < 0) return 80;
  const bool sent = send_with_fds(sock, frame, fds);
  for (int fd : fds) ::close(fd);
  return sent ? 0 : 81;
}
// Reads the next reply and checks its status and (for errors) text.
int expect_status(int sock, int status, const std::string& expect = "") {
  auto r = read_raw(sock, 20'000);
  if (r.type != 4 || r.status != status || (status != 0 && r.payload.find(expect) == std::string::npos)) {
    std::fprintf(stderr, "  got type=%d status=%d payload='%s' (wanted status %d, '%s')\n", r.type, r.status,
                 r.status == 0 ? "<results>" : r.payload.c_str(), status, expect.c_str());
    return r.type != 4 ? 82 : (r.status != status ? 83 : 84);
  }
  return 0;
}
int call_expect(int sock, const std::vector<std::byte>& frame, const std::vector<int>& fds, int status,
                const std::string& expect = "") {
  if (int rc = send_frame(sock, frame, fds)) return rc;
  return expect_status(sock, status, expect);
}

// One-byte steps between the server process (this one) and the attacker child.
struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { (void)::pipe2(fd, O_CLOEXEC); }
  ~Pipe() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  void put(char c) const { (void)!::write(fd[1], &c, 1); }
  // The next byte, or 0 after 30 s / EOF.
  char get() const {
    pollfd p{fd[0], POLLIN, 0};
    char c = 0;
    if (::poll(&p, 1, 30'000) != 1 || ::read(fd[0], &c, 1) != 1) return 0;
    return c;
  }
};

// Client memfds the server process holds open now: how many and their total size.
std::pair<int, std::uint64_t> hostile_fds_held() {
  int n = 0;
  std::uint64_t bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (ec || target.find(kHostileName) == std::string::npos) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    ++n;
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  return {n, bytes};
}
// Mappings of the attacker's memfds in the server process.
int hostile_maps() {
  std::ifstream in("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(kHostileName) != std::string::npos;
  return n;
}

class MemfdQuota : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create non-root attackers";
  }
  void start(ServerOptions o) {
    o.allow = AccessRuleSpec{.uids = {kMallory}, .same_user = true};
    svc_ = std::make_shared<QuotaService>();
    EndpointOptions eo;
    eo.acl_users = {kMallory};
    server_ = std::make_unique<TestServer>(listen_private("sealrpc", eo), o,
                                           std::vector<std::shared_ptr<Service>>{svc_, std::make_shared<BufferService>()});
    ASSERT_FALSE(call_once(server_->path(), 0).ec);  // warm up
    settle();
    fds_ = count_fds();
    maps_ = count_memfd_maps();
  }
  void TearDown() override {
    if (!server_) return;
    svc_->open = true;
    settle();
    EXPECT_EQ(count_fds(), fds_) << "fd leak";
    EXPECT_EQ(count_memfd_maps(), maps_) << "mapping leak";
    EXPECT_EQ(hostile_fds_held().first, 0);
  }
  void settle() {
    for (int i = 0; i < 300 && (server_->server().connection_count() != 0 || count_fds() > fds_); ++i) ::usleep(10'000);
  }
  // Another uid (root, the server's own) makes a buffer call and an echo: both correct.
  void canary(std::uint8_t seed) {
    SyncClient c(server_->path());
    ASSERT_FALSE(c.connect_error());
    auto w = WritableBuffer::create(kMiB, BufferOptions{.kind = BufferKind::immutable});
    fill(w.data(), seed);
    const std::uint64_t expect = digest(w.data());
    auto sealed = std::move(w).seal();
    Request<testsvc::BlobParams> req;
    const auto idx = req.attach(std::move(sealed));
    req.buffers()[idx].describe(req.params().initBlob(), idx);
    req.params().setSeed(seed);
    auto [ec, resp] = c.call<testsvc::BlobResults>(kQuotaInterface, 0, std::move(req));
    ASSERT_FALSE(ec) << ec.message() << " " << resp.status().message;
    EXPECT_EQ(resp.get().getDigest(), expect);
    auto r = call_once(server_->path(), 0, "canary");
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.data, "canary");
  }

  std::shared_ptr<QuotaService> svc_;
  std::unique_ptr<TestServer> server_;
  int fds_ = 0, maps_ = 0;
};

}  // namespace

// Bytes: 4 MiB per uid. Mallory holds four 1 MiB buffers through four connections; then
// a fifth buffer on a new connection, a tiny one on a connection already holding one, a
// large sparse buffer and a large sparse out-of-line message are all refused without
// the server mapping or reading them. Another uid is served meanwhile; mallory's
// connections still answer calls without memfds; after the held calls end, the same four
// can be held again at once (the charges came back exactly), and the fifth is still refused.
TEST_F(MemfdQuota, OneUidOverManyConnectionsIsHeldToItsByteQuota) {
  ServerOptions o;
  o.max_buffer_bytes_per_uid = 4 * kMiB;
  o.max_buffers_per_uid = 64;
  start(o);
  Pipe to_child, to_parent;
  svc_->open = false;
  auto child = std::async(std::launch::async, [&] {
    return run_as(kMal, [&]() -> int {
      int c[5];
      for (int& s : c)
        if ((s = raw_connect(server_->path())) < 0) return 60;
      const auto imm = testsvc::BufKind::IMMUTABLE;
      for (std::uint8_t i = 0; i < 4; ++i)  // four held calls, one per connection
        if (int rc = send_frame(c[i], hold_request(1, 1, kMiB, imm, i, true), {hostile_memfd(kMiB, kImm, true, i)}))
          return rc;
      to_parent.put('a');
      if (to_child.get() != 'b') return 61;  // the server holds all four
      const std::string over = "too many client buffer bytes held for this uid";
      if (int rc = call_expect(c[4], hold_request(1, 1, kMiB, imm, 4, true), {hostile_memfd(kMiB, kImm, true, 4)}, 6, over))
        return rc;
      if (int rc = call_expect(c[0], hold_request(2, 1, 4096, testsvc::BufKind::OWNER_REVOCABLE, 5, true),
                               {hostile_memfd(4096, kRev, true, 5)}, 6, over))
        return rc;
      // Sparse: 64 MiB that cost the attacker nothing; charged whole, refused unmapped.
      if (int rc = call_expect(c[4], hold_request(3, 1, 64 * kMiB, imm, 6, true), {hostile_memfd(64 * kMiB, kImm, false)}, 6, over))
        return rc;
      // A sparse out-of-line message: refused before the server reads (allocates) it.
      if (int rc = call_expect(c[4], ool_request(kQuotaInterface, 0, 64 * kMiB), {hostile_memfd(64 * kMiB, kImm, false)}, 6, over))
        return rc;
      // Calls without memfds still work, on a connection that holds a buffer too.
      if (int rc = call_expect(c[0], echo_request(9, "still here"), {}, 0)) return rc;
      if (int rc = call_expect(c[4], echo_request(9, "still here"), {}, 0)) return rc;
      to_parent.put('c');
      for (int i = 0; i < 4; ++i)  // the gate opens: the held calls end, with the right bytes
        if (int rc = expect_status(c[i], 0)) return 100 + rc;
      to_parent.put('e');
      if (to_child.get() != 'f') return 62;
      for (std::uint8_t i = 0; i < 4; ++i)  // the same four again, at once: nothing leaked
        if (int rc = send_frame(c[i], hold_request(10, 1, kMiB, imm, i, true), {hostile_memfd(kMiB, kImm, true, i)}))
          return rc;
      to_parent.put('g');
      if (to_child.get() != 'h') return 63;
      if (int rc = call_expect(c[4], hold_request(11, 1, kMiB, imm, 4, true), {hostile_memfd(kMiB, kImm, true, 4)}, 6, over))
        return 200 + rc;
      to_parent.put('i');
      for (int i = 0; i < 4; ++i)
        if (int rc = expect_status(c[i], 0)) return 150 + rc;
      for (int s : c) ::close(s);
      return 0;
    });
  });
  // On a failure: let the child run to its end (it reports what differed) and stop.
  auto fail = [&](const char* what) {
    svc_->open = true;
    for (char ch : {'b', 'f', 'h'}) to_child.put(ch);
    ADD_FAILURE() << what << "; child exit code " << child.get();
  };
  if (to_parent.get() != 'a') return fail("the child did not send its calls");
  if (!svc_->wait_held(4)) return fail("the four calls within the quota are not all held");
  EXPECT_EQ(hostile_fds_held(), std::make_pair(4, 4 * kMiB));
  canary(7);  // another uid: served, with its own buffer
  to_child.put('b');
  if (to_parent.get() != 'c') return fail("the calls over the quota were not refused as expected");
  // What the server holds for mallory stayed within the quota: the refused memfds were
  // closed at once and the sparse ones never mapped.
  EXPECT_EQ(hostile_fds_held(), std::make_pair(4, 4 * kMiB));
  EXPECT_EQ(hostile_maps(), 4);
  EXPECT_EQ(svc_->held.load(), 4);
  canary(8);
  svc_->open = true;
  EXPECT_EQ(to_parent.get(), 'e');
  EXPECT_TRUE(svc_->wait_held(0));
  svc_->open = false;
  to_child.put('f');
  EXPECT_EQ(to_parent.get(), 'g');
  EXPECT_TRUE(svc_->wait_held(4)) << "the quota was not given back: the same four calls are not all held again";
  to_child.put('h');
  EXPECT_EQ(to_parent.get(), 'i');
  svc_->open = true;
  EXPECT_EQ(child.get(), 0);
  // Each refusal is an audit record (denied, with the reason).
  int refused = 0;
  for (const auto& r : server_->audit().records())
    refused += r.event == "call" && !r.allowed && r.uid == kMallory && r.reason == "per-uid buffer quota exceeded";
  EXPECT_EQ(refused, 5);
}

// Memfds: 3 per uid. A frame with more memfds than that is refused outright; three held
// calls on two connections fill the quota, a fourth is refused whatever its size, and
// once they end three fit again.
TEST_F(MemfdQuota, OneUidIsHeldToItsMemfdCount) {
  ServerOptions o;
  o.max_buffers_per_uid = 3;
  start(o);
  Pipe to_child, to_parent;
  svc_->open = false;
  auto child = std::async(std::launch::async, [&] {
    return run_as(kMal, [&]() -> int {
      int c[3];
      for (int& s : c)
        if ((s = raw_connect(server_->path())) < 0) return 60;
      const auto imm = testsvc::BufKind::IMMUTABLE;
      const std::string over = "too many client buffers held for this uid";
      std::vector<int> four;
      for (int i = 0; i < 4; ++i) four.push_back(hostile_memfd(4096, kImm, true, 1));
      if (int rc = call_expect(c[0], hold_request(1, 4, 4096, imm, 1, false), four, 6, over)) return rc;
      for (std::uint8_t i = 0; i < 3; ++i)
        if (int rc = send_frame(c[i], hold_request(2, 1, 4096, imm, i, true), {hostile_memfd(4096, kImm, true, i)}))
          return rc;
      to_parent.put('a');
      if (to_child.get() != 'b') return 61;
      if (int rc = call_expect(c[0], hold_request(3, 1, 8, imm, 3, true), {hostile_memfd(8, kImm, true, 3)}, 6, over))
        return rc;
      to_parent.put('c');
      for (int s : c)
        if (int rc = expect_status(s, 0)) return 100 + rc;
      for (std::uint8_t i = 0; i < 3; ++i)
        if (int rc = call_expect(c[i], hold_request(20 + i, 1, 4096, imm, i, false), {hostile_memfd(4096, kImm, true, i)}, 0))
          return 150 + rc;
      for (int s : c) ::close(s);
      return 0;
    });
  });
  auto fail = [&](const char* what) {
    svc_->open = true;
    to_child.put('b');
    ADD_FAILURE() << what << "; child exit code " << child.get();
  };
  if (to_parent.get() != 'a') return fail("the child did not send its calls");
  if (!svc_->wait_held(3)) return fail("the three calls within the quota are not all held");
  EXPECT_EQ(hostile_fds_held().first, 3);
  canary(9);
  to_child.put('b');
  EXPECT_EQ(to_parent.get(), 'c');
  EXPECT_EQ(hostile_fds_held().first, 3);
  svc_->open = true;
  EXPECT_EQ(child.get(), 0);
  int refused = 0;
  for (const auto& r : server_->audit().records())
    refused += r.event == "call" && !r.allowed && r.uid == kMallory && r.reason == "per-uid buffer quota exceeded";
  EXPECT_EQ(refused, 2);
}

// The account itself: refusals add nothing, every charge comes back exactly once (also
// through moves), and a uid's entry goes when its usage is back to zero (bounded map).
TEST(BufferQuota, ChargesComeBackExactlyOnceAndIdleUidsLeaveNoEntry) {
  auto q = std::make_shared<detail::BufferQuota>(100, 3);
  {
    detail::QuotaCharge a(q, 1000);
    a.add(60, 2);
    EXPECT_THROW(a.add(41, 0), detail::QuotaExceeded);  // bytes
    EXPECT_THROW(a.add(0, 2), detail::QuotaExceeded);   // buffers
    EXPECT_EQ(q->usage(1000).bytes, 60u);
    EXPECT_EQ(q->usage(1000).buffers, 2u);
    detail::QuotaCharge b(q, 2000);  // another uid has its own quota
    b.add(100, 3);
    detail::QuotaCharge moved = std::move(a);
    moved.add(40, 1);  // exactly at the limit
    EXPECT_EQ(q->usage(1000).bytes, 100u);
    EXPECT_EQ(q->uids(), 2u);
    b.reset();
    b.reset();  // once only
    EXPECT_EQ(q->uids(), 1u);
    detail::QuotaCharge c;
    c = std::move(moved);
    EXPECT_EQ(q->usage(1000).buffers, 3u);
  }
  EXPECT_EQ(q->uids(), 0u);
  EXPECT_EQ(q->usage(1000).bytes, 0u);
  // 0 means none: a call carrying a memfd never fits.
  detail::QuotaCharge none(std::make_shared<detail::BufferQuota>(0, 0), 1);
  EXPECT_THROW(none.add(0, 1), detail::QuotaExceeded);
}

// "Server read faults on holes allocate shmem pages" (M9): a sparse client buffer is
// read with pread (holes read as zeros, nothing allocated), whether immutable or
// owner-revocable; the attacker's memfd has exactly the pages it had before the call,
// and the server's answer is computed from the right bytes. A fully written immutable
// buffer is still mapped in place (zero copy).
TEST_F(MemfdQuota, SparseClientBuffersAreReadWithoutAllocatingTheirHoles) {
  start(ServerOptions{});
  const std::uint64_t n = 8 * kMiB;
  std::vector<std::byte> expect(n, std::byte{0});
  for (std::uint64_t off : {std::uint64_t{0}, 4 * kMiB})
    for (std::uint64_t i = 0; i < 4096; ++i) expect[off + i] = pattern(i, 3);
  auto blocks = [](int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? st.st_blocks : -1;
  };
  struct Case {
    unsigned seals;
    testsvc::BufKind kind;
    bool sparse;
  };
  for (const Case& k : {Case{kImm, testsvc::BufKind::IMMUTABLE, true}, Case{kRev, testsvc::BufKind::OWNER_REVOCABLE, true},
                        Case{kImm, testsvc::BufKind::IMMUTABLE, false}}) {
    SCOPED_TRACE(k.sparse ? (k.seals == kImm ? "sparse immutable" : "sparse revocable") : "full immutable");
    const int fd = ::memfd_create(kHostileName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(n)), 0);
    if (k.sparse) {  // two pages of data, the rest holes
      for (std::uint64_t off : {std::uint64_t{0}, 4 * kMiB})
        ASSERT_EQ(::pwrite(fd, expect.data() + off, 4096, static_cast<off_t>(off)), 4096);
    } else {
      ASSERT_EQ(::pwrite(fd, expect.data(), n, 0), static_cast<ssize_t>(n));
    }
    ASSERT_EQ(::fcntl(fd, F_ADD_SEALS, k.seals), 0);
    const auto before = blocks(fd);
    const int s = raw_connect(server_->path());
    ASSERT_GE(s, 0);
    ASSERT_TRUE(send_with_fds(s, hold_request(1, 1, n, k.kind, 0, false, kBufferInterface), {fd}));
    auto r = read_raw(s, 20'000);
    ::close(s);
    ASSERT_EQ(r.type, 4);
    ASSERT_EQ(r.status, 0) << r.payload;
    std::vector<capnp::word> words(r.payload.size() / sizeof(capnp::word));
    std::memcpy(words.data(), r.payload.data(), words.size() * sizeof(capnp::word));
    capnp::FlatArrayMessageReader msg(kj::arrayPtr(words.data(), words.size()));
    auto res = msg.getRoot<testsvc::BlobResults>();
    EXPECT_EQ(res.getSize(), n);
    EXPECT_EQ(res.getDigest(), digest(expect));
    EXPECT_EQ(res.getCopied(), k.sparse || k.seals == kRev);
    EXPECT_EQ(blocks(fd), before) << "the server allocated pages in the client's memfd";
    ::close(fd);
  }
}
