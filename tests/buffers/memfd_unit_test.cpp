// White-box tests of lib/buffers/memfd (SECURITY.md K24-K35, M4-M8, F6).
#include "buffers/memfd.hpp"
#include "sealrpc/buffer.hpp"

#include "buffers/buffer_service.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace sealrpc;
using namespace sealrpc::buffers;

namespace {

UniqueFd memfd_with(std::size_t size, unsigned seals) {
  UniqueFd fd(::memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  if (seals) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0);
  }
  return fd;
}

std::string verify_error(int fd, std::optional<std::uint64_t> announced = std::nullopt, std::uint64_t max = 1 << 20) {
  try {
    (void)verify(fd, announced, max);
    return "";
  } catch (const BufferError& e) {
    return e.what();
  }
}

}  // namespace

TEST(Memfd, CreatedWithNoexecSealAndCloexec) {
  UniqueFd fd = create_memfd(4096);
  EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  ASSERT_GE(seals, 0);
  EXPECT_TRUE(seals & kSealExec) << "MFD_NOEXEC_SEAL (6.3+) expected on this kernel";
  EXPECT_NE(::fchmod(fd.get(), 0755), 0);  // M8
}

TEST(Memfd, VerifyAcceptsBothKindsAndRejectsEverythingElse) {
  EXPECT_EQ(verify(memfd_with(100, kSealsImmutable).get(), 100, 1000).kind, Kind::immutable);
  EXPECT_EQ(verify(memfd_with(100, kSealsRevocable).get(), 100, 1000).kind, Kind::revocable);
  EXPECT_NE(verify_error(memfd_with(100, 0).get()).find("required seal"), std::string::npos);
  EXPECT_NE(verify_error(memfd_with(100, kSealShrink | kSealGrow | kSealWrite).get()).find("required seal"), std::string::npos);
  EXPECT_NE(verify_error(memfd_with(100, kSealsBase).get()).find("write seal"), std::string::npos);
  EXPECT_NE(verify_error(memfd_with(100, kSealsImmutable).get(), 101).find("announced"), std::string::npos);
  EXPECT_NE(verify_error(memfd_with(100, kSealsImmutable).get(), std::nullopt, 99).find("maximum"), std::string::npos);
  UniqueFd dz(::open("/dev/zero", O_RDONLY | O_CLOEXEC));
  EXPECT_NE(verify_error(dz.get()).find("not a memfd"), std::string::npos);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd pr(p[0]), pw(p[1]);
  EXPECT_NE(verify_error(pr.get()).find("not a memfd"), std::string::npos);
  UniqueFd path(::open("/tmp", O_PATH | O_CLOEXEC));
  EXPECT_NE(verify_error(path.get()), "");
}

TEST(Memfd, RevocableOwnerKeepsExactlyOneMappingNotInheritedAndWipes) {
  const int before = buftest::count_memfd_maps();
  auto b = OwnedBuffer::create(8192);
  EXPECT_EQ(buftest::count_memfd_maps(), before + 1);  // M7: one pre-seal mapping
  buftest::fill(b.writable(), 1);
  b.seal_revocable();
  UniqueFd dup = b.dup_fd();
  // M7: a forked child does not inherit the owner's mapping (MADV_DONTFORK).
  const int rc = testutil::run_child([&] { return buftest::count_memfd_maps() == before ? 0 : 1; });
  EXPECT_EQ(rc, 0);
  auto r = SealedRegion::open(b.dup_fd(), 8192, 1 << 20);
  EXPECT_TRUE(buftest::matches(r.bytes(), 1));
  b.wipe();
  EXPECT_TRUE(buftest::all_zero(r.bytes()));
  EXPECT_TRUE(buftest::fd_reads_zero(dup.get(), 8192));
}

TEST(Memfd, ImmutableSealUnmapsFirstAndNobodyCanWrite) {
  auto b = OwnedBuffer::create(4096);
  buftest::fill(b.writable(), 2);
  const int before = buftest::count_memfd_maps();
  b.seal_immutable();
  EXPECT_EQ(buftest::count_memfd_maps(), before - 1);
  UniqueFd fd = b.dup_fd();
  EXPECT_EQ(::pwrite(fd.get(), "x", 1, 0), -1);
  EXPECT_EQ(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0), MAP_FAILED);
  EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, kSealExec), -1);  // M4: F_SEAL_SEAL present
}

TEST(Memfd, ReceiverMappingIsReadOnlyAndCannotBeMadeWritable) {
  auto b = OwnedBuffer::create(4096);
  b.seal_revocable();
  auto r = SealedRegion::open(b.dup_fd(), 4096, 1 << 20);
  void* p = const_cast<std::byte*>(r.bytes().data());
  EXPECT_NE(::mprotect(p, 4096, PROT_READ | PROT_WRITE), 0);
}

TEST(Memfd, SecretMemIsNotAMemfd) {
  const long fd = ::syscall(447, 0);  // memfd_secret
  if (fd < 0) GTEST_SKIP() << "memfd_secret unavailable";
  UniqueFd s(static_cast<int>(fd));
  ASSERT_EQ(::ftruncate(s.get(), 4096), 0);
  EXPECT_NE(verify_error(s.get()), "");
}

TEST(SharedBuffer, RevokerWipesFromAnyThreadAndIsIdempotent) {
  auto w = WritableBuffer::create(4096);
  buftest::fill(w.data(), 5);
  auto s = std::move(w).seal();
  UniqueFd dup = s.dup_fd();
  auto rev = s.revoker();
  EXPECT_FALSE(rev.revoked());
  std::thread([&] { rev.revoke(); }).join();
  EXPECT_TRUE(rev.revoked());
  EXPECT_TRUE(buftest::fd_reads_zero(dup.get(), 4096));
  rev.revoke();
}
