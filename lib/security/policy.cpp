// Access-rule resolution and the enforcer. authorize() is the only function that
// decides whether a peer may do something; it is pure and default-deny.
#include "sealrpc/policy.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

namespace sealrpc {
namespace {

template <typename T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

}  // namespace

uid_t resolve_user(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{}, *res = nullptr;
  const int r = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res);
  if (r != 0 || !res) throw std::invalid_argument("unknown user '" + name + "'");
  return res->pw_uid;
}

gid_t resolve_group(const std::string& name) {
  std::vector<char> buf(65536);
  group gr{}, *res = nullptr;
  const int r = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res);
  if (r != 0 || !res) throw std::invalid_argument("unknown group '" + name + "'");
  return res->gr_gid;
}

AccessRule AccessRule::resolve(const AccessRuleSpec& spec, uid_t server_uid) {
  AccessRule r;
  r.open = spec.open;
  r.label = spec.label;
  r.uids = spec.uids;
  r.gids = spec.gids;
  for (const auto& u : spec.users) r.uids.push_back(resolve_user(u));
  for (const auto& g : spec.groups) r.gids.push_back(resolve_group(g));
  if (spec.root) r.uids.push_back(0);
  if (spec.same_user) r.uids.push_back(server_uid);
  sort_unique(r.uids);
  sort_unique(r.gids);
  return r;
}

Decision authorize(const AccessRule& rule, const PeerCredentials& peer) noexcept {
  // A label requirement is an additional condition, never a grant on its own.
  if (!rule.label.empty() && peer.security_label != rule.label) return {Verdict::deny, "security label mismatch"};
  if (rule.open) return {Verdict::allow, "method is open"};
  if (std::binary_search(rule.uids.begin(), rule.uids.end(), peer.uid)) return {Verdict::allow, "uid allowed"};
  // peer.groups is sorted and holds the primary gid too. Search the rule's sorted gids
  // for each of the caller's (few) groups: cost independent of the rule's size.
  for (gid_t g : peer.groups)
    if (std::binary_search(rule.gids.begin(), rule.gids.end(), g)) return {Verdict::allow, "group allowed"};
  return {Verdict::deny, "no rule allows"};
}

}  // namespace sealrpc
