// SECURITY.md D2 (connection churn): the per-uid connection rate limit
// (ServerOptions::connection_rate_per_uid, checked in Server::Impl::on_accept right after
// SO_PEERCRED). Real processes with real uids (the server checks the kernel's uid, so the
// churning peer and the canary must be different uids); no timing thresholds: the only
// clock-derived number is the upper bound on tokens refilled while the loop ran.
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "rpc/connection_rate.hpp"
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "transport/frame.hpp"
#include "transport/limits.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <optional>

using namespace sealrpc;
using namespace testutil;

namespace {

constexpr uid_t kCanary = 4243;   // may call Test.echo by uid
constexpr uid_t kChurner = 4244;  // may call Test.echo through gid 4242
constexpr gid_t kReaders = 4242;
const Identity kChurnerId{kChurner, kReaders, {}};
const Identity kCanaryId{kCanary, kCanary, {}};
constexpr std::string_view kRateReason = "per-uid connection rate limit reached";

void require_root() {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create real other-uid processes";
}

bool at_eof(int fd) {
  char c;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 5000) == 1 && ::read(fd, &c, 1) == 0;
}

// What a churn loop saw, reported by the child through a pipe.
struct ChurnCounts {
  int hello = 0, refused = 0, other = 0;
  int hello_before_first_refusal = 0;
  int bad_refusals = 0;  // wrong reason, or no EOF after the REFUSED frame
  double seconds = 0;    // how long the loop ran (bounds the tokens refilled meanwhile)
};

// Connect/close as fast as possible until `stop_fd` is readable and at least `min_refused`
// refusals were seen (or a 60 s guard). Runs in the child, as the churning uid.
ChurnCounts churn(const std::string& path, int stop_fd, int min_refused) {
  ChurnCounts c;
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    pollfd p{stop_fd, POLLIN, 0};
    if (c.refused >= min_refused && ::poll(&p, 1, 0) == 1) break;
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(60)) break;
    const int fd = raw_connect(path);
    if (fd < 0) {
      ++c.other;
      continue;
    }
    auto [type, reason] = read_frame(fd);
    if (type == static_cast<int>(wire::FrameType::hello)) {
      ++c.hello;
      if (c.refused == 0) ++c.hello_before_first_refusal;
    } else if (type == static_cast<int>(wire::FrameType::refused)) {
      ++c.refused;
      if (reason != "connection refused: too many connection attempts" || !at_eof(fd)) ++c.bad_refusals;
    } else {
      ++c.other;
    }
    ::close(fd);
  }
  c.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return c;
}

ServerOptions churn_options(ConnectionRate rate, const std::shared_ptr<AuditLog>& audit) {
  ServerOptions o;
  o.allow = AccessRuleSpec{.uids = {kCanary, kChurner}};
  o.connection_rate_per_uid = rate;
  o.audit = audit;
  return o;
}

EndpointOptions open_to_both() {
  EndpointOptions e;
  e.acl_users = {kCanary, kChurner};
  return e;
}

int deny_records(const AuditCapture& a, uid_t uid) {
  int n = 0;
  for (const auto& r : a.records()) n += r.event == "connect" && !r.allowed && r.uid == uid && r.reason == kRateReason;
  return n;
}

}  // namespace

// (1) + (2): a uid in a connect/close loop gets its burst, then REFUSED frames (with the
// fixed reason, then EOF); its refusals are audited but folded by the audit rate limiter
// (5 written, the rest counted in one "suppressed" record); meanwhile another uid
// connects and completes calls normally. Without the check in on_accept the loop is
// never refused and this fails.
TEST(Churn, ConnectCloseLoopIsRefusedAfterItsBurstWhileACanaryIsServed) {
  require_root();
  constexpr ConnectionRate kRate{.burst = 20, .per_second = 1};
  constexpr std::uint32_t kAuditBurst = 5;
  AuditCapture audit;  // outlives the server: stop() flushes the "suppressed" summaries
  std::optional<TestServer> s;
  s.emplace(listen_private("sealrpc", open_to_both()),
            churn_options(kRate, audit.log({.interval = std::chrono::hours(1), .burst = kAuditBurst})));
  const std::string path = s->path();

  int stop[2], result[2];
  ASSERT_EQ(::pipe(stop), 0);
  ASSERT_EQ(::pipe(result), 0);
  auto churner = std::async(std::launch::async, [&] {
    return run_as(kChurnerId, [&] {
      ::close(stop[1]);
      ::close(result[0]);
      const ChurnCounts c = churn(path, stop[0], 200);
      return ::write(result[1], &c, sizeof c) == static_cast<ssize_t>(sizeof c) ? static_cast<int>(kOk) : static_cast<int>(kOther);
    });
  });
  // The churner's bucket is empty once its first refusal is audited; it keeps looping
  // (and being refused) until told to stop, so the canary runs in the middle of it.
  const bool refused_seen = wait_until([&] { return deny_records(audit, kChurner) > 0; });
  EXPECT_TRUE(refused_seen) << "the connect/close loop was never refused";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(run_as(kCanaryId, [&] {
                auto r = call_once(path, 0, "canary");
                return r.ec ? outcome(r.ec) : (r.data == "canary" ? static_cast<int>(kOk) : static_cast<int>(kOther));
              }),
              kOk)
        << "canary call " << i;
  }
  ASSERT_EQ(::write(stop[1], "x", 1), 1);
  ::close(stop[1]);
  ::close(stop[0]);
  ::close(result[1]);
  EXPECT_EQ(churner.get(), kOk);
  ChurnCounts c;
  const bool got = ::read(result[0], &c, sizeof c) == static_cast<ssize_t>(sizeof c);
  ::close(result[0]);
  ASSERT_TRUE(got) << "no counts from the churning child";

  // The whole burst was served, then refusals; at most the refilled tokens more.
  EXPECT_GE(c.hello_before_first_refusal, static_cast<int>(kRate.burst));
  EXPECT_GE(c.refused, 200);
  EXPECT_LE(c.hello, static_cast<int>(kRate.burst + std::ceil(c.seconds * kRate.per_second)) + 1)
      << "ran " << c.seconds << " s";
  EXPECT_EQ(c.bad_refusals, 0) << "a refusal without the fixed reason or without EOF";
  EXPECT_EQ(c.other, 0);
  // The canary's connections and calls were audited as allowed; none of its connects
  // was refused.
  EXPECT_TRUE(audit.has("connect", true, kCanary));
  EXPECT_TRUE(audit.has("call", true, kCanary, "Test.echo"));
  EXPECT_FALSE(audit.has("connect", false, kCanary));

  // Audited, but rate-limited: kAuditBurst records, the rest folded into "suppressed".
  s.reset();  // stop() flushes the summaries
  EXPECT_EQ(deny_records(audit, kChurner), static_cast<int>(kAuditBurst));
  std::uint64_t suppressed = 0;
  for (const auto& r : audit.records())
    if (r.event == "suppressed" && !r.allowed && r.uid == kChurner) suppressed += r.suppressed;
  EXPECT_EQ(suppressed, static_cast<std::uint64_t>(c.refused) - kAuditBurst);
}

// (3): refused attempts cost no token, and tokens come back: once the bucket refilled,
// the churning uid connects and calls again. Without the limit the first check (it was
// refused) fails.
TEST(Churn, RefusedUidConnectsAgainOnceItsBucketRefills) {
  require_root();
  constexpr ConnectionRate kRate{.burst = 5, .per_second = 2};
  AuditCapture audit;
  TestServer s(listen_private("sealrpc", open_to_both()), churn_options(kRate, audit.log()));
  const std::string path = s.path();
  EXPECT_EQ(run_as(kChurnerId, [&] {
              int hello = 0, refused = 0;
              for (int i = 0; i < 50 && refused == 0; ++i) {
                const int fd = raw_connect(path);
                if (fd < 0) return static_cast<int>(kOther);
                const int type = read_frame(fd).first;
                hello += type == static_cast<int>(wire::FrameType::hello);
                refused += type == static_cast<int>(wire::FrameType::refused);
                ::close(fd);
              }
              if (refused == 0) return 1;  // never refused: no rate limit
              // A Client sees the refusal as refused_by_server, until tokens come back;
              // these refused attempts take none.
              for (int i = 0; i < 3000; ++i) {  // ~30 s guard, not a timing assertion
                auto r = call_once(path, 0, "again");
                if (!r.ec) return r.data == "again" ? static_cast<int>(kOk) : static_cast<int>(kOther);
                if (r.ec != make_error_code(ClientError::refused_by_server)) return outcome(r.ec);
                ::usleep(10'000);
              }
              return 2;  // never served again
            }),
            kOk);
  EXPECT_GT(deny_records(audit, kChurner), 0);
  EXPECT_TRUE(audit.has("call", true, kChurner, "Test.echo"));
}

// The limiter itself, with a synthetic clock: burst, refill, and bounded memory (full
// buckets are evicted; beyond the cap uids share one bucket, tracked ones keep theirs).
TEST(Churn, RateLimiterRefillsAndKeepsItsMemoryBounded) {
  using clock = detail::ConnectionRateLimiter::clock;
  const clock::time_point t0 = clock::now();
  detail::ConnectionRateLimiter off({.burst = 0, .per_second = 0}, 4);
  EXPECT_FALSE(off.enabled());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(off.admit(1, t0));
  EXPECT_EQ(off.tracked_uids(), 0u);

  detail::ConnectionRateLimiter lim({.burst = 3, .per_second = 10}, 4);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(lim.admit(1, t0)) << i;
  EXPECT_FALSE(lim.admit(1, t0));
  EXPECT_FALSE(lim.admit(1, t0 + std::chrono::milliseconds(50)));  // half a token
  EXPECT_TRUE(lim.admit(1, t0 + std::chrono::milliseconds(100)));  // one token back
  EXPECT_FALSE(lim.admit(1, t0 + std::chrono::milliseconds(100)));

  // Uids 2..4 fill the table; uid 5..1000 share the overflow bucket (3 tokens).
  for (uid_t u = 2; u <= 4; ++u) EXPECT_TRUE(lim.admit(u, t0 + std::chrono::milliseconds(100)));
  EXPECT_EQ(lim.tracked_uids(), 4u);
  int overflow_admitted = 0;
  for (uid_t u = 5; u <= 1000; ++u) overflow_admitted += lim.admit(u, t0 + std::chrono::milliseconds(100));
  EXPECT_EQ(overflow_admitted, 3);
  EXPECT_EQ(lim.tracked_uids(), 4u);
  // A tracked uid is not slowed down by the overflow: uid 2 still has 2 tokens.
  EXPECT_TRUE(lim.admit(2, t0 + std::chrono::milliseconds(100)));
  // Later every bucket has refilled: a newcomer's sweep evicts the full ones and gets
  // a bucket of its own.
  const auto later = t0 + std::chrono::seconds(5);
  EXPECT_TRUE(lim.admit(2000, later));
  EXPECT_EQ(lim.tracked_uids(), 1u);
}
