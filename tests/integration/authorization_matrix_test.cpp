// The authorization matrix with real uids and gids: every (caller, method) pair gets
// exactly the expected verdict, and every decision is in the audit log.
#include "sealrpc/endpoint.hpp"
#include "sealrpc/server.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

using namespace sealrpc;
using namespace testutil;

namespace {

struct Caller {
  const char* name;
  Identity id;
};

}  // namespace

TEST(AuthorizationMatrix, EveryCallerMethodPairGetsExactlyTheExpectedVerdict) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create real other-uid processes";
  // Test service rules (tests/support/test_service.hpp):
  //   echo      same-user | gid 4242 | uid 4243
  //   rootOnly  root
  //   groupOnly gid 4242
  //   nobody    (empty)
  const Caller callers[] = {
      {"root (server's own user)", {0, 0, {}}},
      {"alice uid 4243", {4243, 4243, {}}},
      {"bob uid 4244, supplementary 4242", {4244, 4244, {4242}}},
      {"carol uid 4245, primary gid 4242", {4245, 4242, {}}},
      {"dave uid 4246, no grants", {4246, 4246, {4000, 4001}}},
  };
  struct Method {
    std::uint16_t ordinal;
    const char* name;
  };
  const Method methods[] = {{0, "Test.echo"}, {3, "Test.rootOnly"}, {4, "Test.groupOnly"}, {5, "Test.nobody"}};
  const bool expected[5][4] = {
      // echo  rootOnly groupOnly nobody
      {true, true, false, false},    // root: same-user (server runs as root) + root
      {true, false, false, false},   // alice: by uid
      {true, false, true, false},    // bob: by supplementary group
      {true, false, true, false},    // carol: by primary group
      {false, false, false, false},  // dave: nothing
  };

  ServerOptions o;
  o.allow = AccessRuleSpec{.uids = {4243, 4244, 4245, 4246}, .same_user = true};
  EndpointOptions ep;
  ep.acl_users = {4243, 4244, 4245, 4246};
  TestServer s(listen_private("sealrpc-matrix", ep), o);

  for (int c = 0; c < 5; ++c) {
    for (int m = 0; m < 4; ++m) {
      const auto& caller = callers[c];
      auto body = [&] { return outcome(call_once(s.path(), methods[m].ordinal).ec); };
      const int rc = caller.id.uid == 0 ? run_child(body) : run_as(caller.id, body);
      const int want = expected[c][m] ? kOk : kRpcBase + static_cast<int>(StatusCode::permission_denied);
      EXPECT_EQ(rc, want) << caller.name << " calling " << methods[m].name;
      EXPECT_TRUE(s.audit().has("call", expected[c][m], caller.id.uid, methods[m].name))
          << "no audit record for " << caller.name << " calling " << methods[m].name;
      EXPECT_FALSE(s.audit().has("call", !expected[c][m], caller.id.uid, methods[m].name))
          << "contradicting audit record for " << caller.name << " calling " << methods[m].name;
    }
  }
}
