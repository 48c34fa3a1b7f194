// Owner-revocable buffers are wiped (SECURITY.md §4.2, M10): after the client's release,
// after the connection drops, after the lease expires and after revoke(), the owner's
// memfd reads back all zeros through a dup'ed fd held by the test and through a mapping
// the receiver still holds.
#include "sealrpc/buffer.hpp"
#include "sealrpc/endpoint.hpp"

#include "buffers/buffer_service.hpp"
#include "support/test_util.hpp"

#include <gtest/gtest.h>

#include <sys/mman.h>

using namespace sealrpc;
using namespace testutil;
using namespace buftest;

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
