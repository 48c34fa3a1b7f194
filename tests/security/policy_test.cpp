// authorize(): default deny, exhaustive tables, and a naive reference on random input.
#include "sealrpc/policy.hpp"
#include "sealrpc/policy_file.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

using namespace sealrpc;

namespace {

PeerCredentials peer(uid_t uid, gid_t gid, std::vector<gid_t> sup = {}) {
  PeerCredentials p;
  p.uid = uid;
  p.gid = gid;
  sup.push_back(gid);
  std::sort(sup.begin(), sup.end());
  sup.erase(std::unique(sup.begin(), sup.end()), sup.end());
  p.groups = sup;
  return p;
}

bool allowed(const AccessRuleSpec& s, const PeerCredentials& p, uid_t server_uid = 1000) {
  return authorize(AccessRule::resolve(s, server_uid), p).verdict == Verdict::allow;
}

}  // namespace

TEST(Authorize, EmptyRuleDeniesEveryone) {
  EXPECT_FALSE(allowed({}, peer(0, 0)));
  EXPECT_FALSE(allowed({}, peer(1000, 1000)));
}

TEST(Authorize, RootIsNotImplicit) {
  EXPECT_FALSE(allowed({.uids = {1000}}, peer(0, 0)));
  EXPECT_TRUE(allowed({.root = true}, peer(0, 0)));
  EXPECT_FALSE(allowed({.root = true}, peer(1, 0)));  // gid 0 is not root
}

TEST(Authorize, SameUserMeansTheServersUid) {
  EXPECT_TRUE(allowed({.same_user = true}, peer(1000, 5), 1000));
  EXPECT_FALSE(allowed({.same_user = true}, peer(1001, 5), 1000));
}

TEST(Authorize, SupplementaryGroupsCount) {
  EXPECT_TRUE(allowed({.gids = {42}}, peer(7, 7, {42})));
  EXPECT_TRUE(allowed({.gids = {42}}, peer(7, 42)));
  EXPECT_FALSE(allowed({.gids = {42}}, peer(7, 7, {41, 43})));
}

TEST(Authorize, OpenMustBeExplicitAndLabelIsAnExtraCondition) {
  EXPECT_TRUE(allowed({.open = true}, peer(12345, 12345)));
  auto p = peer(0, 0);
  EXPECT_FALSE(allowed({.root = true, .label = "system_u:system_r:sshd_t"}, p));
  p.security_label = "system_u:system_r:sshd_t";
  EXPECT_TRUE(allowed({.root = true, .label = "system_u:system_r:sshd_t"}, p));
}

TEST(Authorize, UnknownUserNameIsALoadError) {
  EXPECT_THROW(AccessRule::resolve({.users = {"no-such-user-sealrpc"}}, 0), std::invalid_argument);
  EXPECT_EQ(AccessRule::resolve({.users = {"root"}}, 1000).uids, std::vector<uid_t>{0});
}

TEST(Authorize, MatchesANaiveReferenceOnRandomInput) {
  std::mt19937 rng(12345);
  auto pick = [&](int n) { return static_cast<unsigned>(rng() % static_cast<unsigned>(n)); };
  for (int iter = 0; iter < 20000; ++iter) {
    AccessRuleSpec s;
    for (unsigned i = pick(4); i > 0; --i) s.uids.push_back(pick(8));
    for (unsigned i = pick(4); i > 0; --i) s.gids.push_back(pick(8));
    s.root = pick(4) == 0;
    s.same_user = pick(4) == 0;
    s.open = pick(16) == 0;
    const uid_t server = pick(8);
    std::vector<gid_t> sup;
    for (unsigned i = pick(4); i > 0; --i) sup.push_back(pick(8));
    const auto p = peer(pick(8), pick(8), sup);
    bool ref = s.open || std::count(s.uids.begin(), s.uids.end(), p.uid) || (s.root && p.uid == 0) ||
               (s.same_user && p.uid == server);
    for (gid_t g : s.gids) ref = ref || g == p.gid || std::count(sup.begin(), sup.end(), g);
    ASSERT_EQ(allowed(s, p, server), ref) << "iteration " << iter;
  }
}

TEST(PolicyFile, ParsesMethodAndInterfaceRules) {
  auto ov = parse_policy(
      "# comment\n"
      "method Vault.get uids=1,2 gids=3 root\n"
      "\n"
      "interface Vault same-user users=root groups=root  # trailing comment\n"
      "method Vault.ping open\n"
      "method Vault.wipe nobody\n");
  ASSERT_EQ(ov.methods.size(), 3u);
  const auto& get = ov.methods.at("Vault.get");
  EXPECT_EQ(get.line, 2);
  EXPECT_EQ(get.rule.uids, (std::vector<uid_t>{1, 2}));
  EXPECT_TRUE(get.rule.root);
  EXPECT_TRUE(ov.interfaces.at("Vault").rule.same_user);
  EXPECT_EQ(ov.interfaces.at("Vault").rule.uids, std::vector<uid_t>{0});
  EXPECT_TRUE(ov.methods.at("Vault.ping").rule.open);
  EXPECT_FALSE(allowed(ov.methods.at("Vault.wipe").rule, peer(0, 0)));
}

TEST(PolicyFile, ErrorsNameTheLine) {
  const char* bad[] = {
      "method Vault.get uids=1\nmethod Vault.put uids=x\n",       // line 2: bad number
      "method Vault.get uids=1\n\nfrobnicate Vault.get root\n",   // line 3: bad scope
      "method Vault.get root\nmethod Vault.get root\n",           // line 2: duplicate
      "method Vault.get users=no-such-user-sealrpc\n",            // line 1: unknown user
      "method Vault.get nobody root\n",                           // line 1: contradiction
      "method Vault.get\n",                                       // line 1: no terms
  };
  const int lines[] = {2, 3, 2, 1, 1, 1};
  for (int i = 0; i < 6; ++i) {
    try {
      parse_policy(bad[i], "test.policy");
      ADD_FAILURE() << "accepted: " << bad[i];
    } catch (const PolicyError& e) {
      EXPECT_EQ(e.line(), lines[i]) << e.what();
      EXPECT_NE(std::string(e.what()).find("test.policy:" + std::to_string(lines[i])), std::string::npos) << e.what();
    }
  }
}
