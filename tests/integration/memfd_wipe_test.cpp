// Owner-revocable buffers are wiped (SECURITY.md §4.2, M10): after the client's release,
// after the connection drops, after the lease expires and after revoke(), the owner's
// memfd reads back all zeros through a dup'ed fd held by the test and through a mapping
// the receiver still holds.
#include "sealrpc/buffer.hpp"
#include "sealrpc/endpoint.hpp"

#include "buffers/buffer_service.hpp"
#include "support/test_util.hpp"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <functional>

using namespace sealrpc;
using namespace testutil;
using namespace buftest;
namespace asio = boost::asio;

namespace {

constexpr std::size_t kSize = 1 << 20;

class MemfdWipe : public ::testing::Test {
 protected:
  void SetUp() override {
    svc_ = std::make_shared<BufferService>();
    server_ = std::make_unique<TestServer>(listen_private(), ServerOptions{}, std::vector<std::shared_ptr<Service>>{svc_});
    client_ = std::make_unique<SyncClient>(server_->path());
    ASSERT_FALSE(client_->connect_error());
  }
  // Asks the server for a revocable buffer; returns the receiver's view.
  ReceivedBuffer make(std::uint32_t lease_ms = 0) {
    Request<testsvc::BlobParams> req;
    req.params().setSize(kSize);
    req.params().setSeed(11);
    req.params().setKind(testsvc::BufKind::OWNER_REVOCABLE);
    req.params().setLeaseMs(lease_ms);
    auto [ec, resp] = client_->call<testsvc::BlobResults>(kBufferInterface, 1, std::move(req));
    EXPECT_FALSE(ec) << ec.message();
    ReceivedBuffer b = resp.buffer(resp.get().getBlob());
    EXPECT_TRUE(matches(b.data(), 11));
    EXPECT_EQ(b.kind(), BufferKind::owner_revocable);
    return b;
  }
  UniqueFd owner_fd() {
    std::lock_guard lock(svc_->mu);
    return std::move(svc_->last_fd);
  }
  // Waits until the owner's memfd reads zeros.
  static bool wiped(int fd, int timeout_ms = 3000) {
    for (int i = 0; i < timeout_ms / 10; ++i) {
      if (fd_reads_zero(fd, kSize)) return true;
      ::usleep(10'000);
    }
    return false;
  }

  std::shared_ptr<BufferService> svc_;
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<SyncClient> client_;
};

// A mapping the receiver keeps beside its ReceivedBuffer (a holder that ignores release).
struct ExtraMapping {
  explicit ExtraMapping(int fd) : fd_(::fcntl(fd, F_DUPFD_CLOEXEC, 0)) {
    p_ = ::mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd_.get(), 0);
  }
  ~ExtraMapping() {
    if (p_ != MAP_FAILED) ::munmap(p_, kSize);
  }
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(p_), kSize}; }
  UniqueFd fd_;
  void* p_;
};

}  // namespace

TEST_F(MemfdWipe, AfterRelease) {
  ReceivedBuffer b = make();
  UniqueFd owner = owner_fd();
  ExtraMapping keep(b.fd());
  ASSERT_NE(keep.p_, MAP_FAILED);
  EXPECT_FALSE(all_zero(keep.bytes()));
  b.release();  // BUFFER_RELEASE to the server, which wipes
  EXPECT_TRUE(wiped(owner.get()));
  EXPECT_TRUE(all_zero(keep.bytes()));
  EXPECT_TRUE(fd_reads_zero(keep.fd_.get(), kSize));
}

TEST_F(MemfdWipe, AfterConnectionDrop) {
  ReceivedBuffer b = make();
  UniqueFd owner = owner_fd();
  client_->client().close();
  EXPECT_TRUE(wiped(owner.get()));
  EXPECT_TRUE(all_zero(b.data()));  // the receiver's own mapping, still open
}

TEST_F(MemfdWipe, AfterLeaseExpiry) {
  ReceivedBuffer b = make(200);
  UniqueFd owner = owner_fd();
  EXPECT_TRUE(matches(b.data(), 11));
  EXPECT_TRUE(wiped(owner.get()));
  EXPECT_TRUE(all_zero(b.data()));
}

// A connection's leases share one timer, armed for the earliest expiry only: after it
// fires it must re-arm for the next lease, and a lease released early must not leave
// the others unexpired.
TEST_F(MemfdWipe, EachOfSeveralLeasesExpiresOnTime) {
  ReceivedBuffer a = make(60'000);
  UniqueFd fa = owner_fd();
  ReceivedBuffer b = make(200);
  UniqueFd fb = owner_fd();
  ReceivedBuffer c = make(700);
  UniqueFd fc = owner_fd();
  a.release();
  EXPECT_TRUE(wiped(fa.get()));
  EXPECT_TRUE(wiped(fb.get()));
  EXPECT_TRUE(wiped(fc.get())) << "the later lease never expired";
  EXPECT_TRUE(all_zero(c.data()));
}

// The client sends a BUFFER_RELEASE with its next request when that starts in the same
// strand turn. A request that carries fds must not share its sendmsg with a release
// (appended after it, the fds would belong to the release frame: a protocol error): the
// release goes first, on its own. Released inside a completion handler, then a request
// with a buffer at once, on a single-threaded client (both inline): both must work.
TEST_F(MemfdWipe, ReleaseFollowedAtOnceByARequestWithABufferWorks) {
  asio::io_context io;
  ClientOptions co;
  co.single_threaded = true;
  Client client;
  Client::async_connect(io.get_executor(), server_->path(), co, [&](boost::system::error_code ec, Client c) {
    ASSERT_FALSE(ec) << ec.message();
    client = c;
  });
  const auto run_until = [&](const std::function<bool()>& done) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < end) io.run_one_for(std::chrono::milliseconds(10));
  };
  run_until([&] { return client.is_open(); });
  ASSERT_TRUE(client.is_open());

  auto w = WritableBuffer::create(kSize);
  fill(w.data(), 5);
  const std::uint64_t expect = digest(w.data());
  Request<testsvc::BlobParams> sum;
  const auto idx = sum.attach(std::move(w).seal());
  sum.buffers()[idx].describe(sum.params().initBlob(), idx);

  Request<testsvc::BlobParams> mk;
  mk.params().setSize(kSize);
  mk.params().setSeed(11);
  mk.params().setKind(testsvc::BufKind::OWNER_REVOCABLE);
  boost::system::error_code make_ec, sum_ec;
  std::uint64_t got = 0;
  bool done = false;
  client.async_call<testsvc::BlobResults>({kBufferInterface, 1}, std::move(mk), [&](boost::system::error_code ec, Response<testsvc::BlobResults> r) {
    make_ec = ec;
    if (ec) {
      done = true;
      return;
    }
    r.buffer(r.get().getBlob()).release();  // release queued, inline
    client.async_call<testsvc::BlobResults>({kBufferInterface, 0}, std::move(sum),
                                            [&](boost::system::error_code ec2, Response<testsvc::BlobResults> r2) {
                                              sum_ec = ec2;
                                              if (!ec2) got = r2.get().getDigest();
                                              done = true;
                                            });
  });
  run_until([&] { return done; });
  ASSERT_TRUE(done);
  ASSERT_FALSE(make_ec) << make_ec.message();
  EXPECT_FALSE(sum_ec) << sum_ec.message();
  EXPECT_EQ(got, expect);
  UniqueFd owner = owner_fd();
  EXPECT_TRUE(wiped(owner.get())) << "the release was lost";
  EXPECT_TRUE(client.is_open());
  client.close();
  io.poll();
}

TEST_F(MemfdWipe, AfterRevoke) {
  ReceivedBuffer b = make();
  UniqueFd owner = owner_fd();
  BufferRevoker r;
  {
    std::lock_guard lock(svc_->mu);
    r = svc_->last_revoker;
  }
  EXPECT_FALSE(r.revoked());
  r.revoke();
  EXPECT_TRUE(r.revoked());
  EXPECT_TRUE(fd_reads_zero(owner.get(), kSize));
  EXPECT_TRUE(all_zero(b.data()));
}

// The client owns what it attaches: a revocable request buffer is wiped when the call
// ends; the server worked on its own copy (and wiped that too).
TEST_F(MemfdWipe, ClientOwnedRevocableBufferIsWipedAtCallEnd) {
  auto w = WritableBuffer::create(kSize);
  fill(w.data(), 12);
  auto sealed = std::move(w).seal();
  UniqueFd dup = sealed.dup_fd();
  Request<testsvc::BlobParams> req;
  const auto i = req.attach(std::move(sealed));
  req.buffers()[i].describe(req.params().initBlob(), i);
  auto [ec, resp] = client_->call<testsvc::BlobResults>(kBufferInterface, 0, std::move(req));
  ASSERT_FALSE(ec) << resp.status().message;
  EXPECT_TRUE(resp.get().getCopied());
  EXPECT_TRUE(wiped(dup.get()));
}

// Unused buffers of a response are released at once when the response goes away.
TEST_F(MemfdWipe, UntakenBufferIsReleasedWithTheResponse) {
  UniqueFd owner;
  {
    Request<testsvc::BlobParams> req;
    req.params().setSize(kSize);
    req.params().setSeed(11);
    req.params().setKind(testsvc::BufKind::OWNER_REVOCABLE);
    auto [ec, resp] = client_->call<testsvc::BlobResults>(kBufferInterface, 1, std::move(req));
    ASSERT_FALSE(ec);
    owner = owner_fd();
    EXPECT_FALSE(fd_reads_zero(owner.get(), kSize));
  }
  EXPECT_TRUE(wiped(owner.get()));
}
