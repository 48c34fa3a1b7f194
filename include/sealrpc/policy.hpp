// Access rules and the one function that enforces them. Default deny: a rule allows
// only what it names. Root is allowed only when the rule says so (SECURITY.md A13).
#pragma once

#include "sealrpc/peer.hpp"

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace sealrpc {

// A rule as written (schema annotation or policy file), names not yet resolved.
struct AccessRuleSpec {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  std::vector<std::string> users;   // resolved to uids at load time
  std::vector<std::string> groups;  // resolved to gids at load time
  bool same_user = false;           // the server's own effective uid
  bool root = false;                // uid 0
  bool open = false;                // any connected peer; must be said explicitly
  std::string label;                // exact SO_PEERSEC label, if non-empty
};

// A resolved rule: numeric ids only, sorted, ready for the hot path.
struct AccessRule {
  std::vector<uid_t> uids;  // sorted, unique; includes 0 if root, server uid if same_user
  std::vector<gid_t> gids;  // sorted, unique
  bool open = false;
  std::string label;

  // Resolves names with getpwnam_r/getgrnam_r. Throws std::invalid_argument naming
  // the unknown user or group.
  static AccessRule resolve(const AccessRuleSpec& spec, uid_t server_uid);
};

enum class Verdict : unsigned char { deny, allow };

struct Decision {
  Verdict verdict = Verdict::deny;
  // Static string: what matched or why nothing did. Safe to log and audit.
  const char* reason = "no rule allows";
};

// Name lookups used at load time (getpwnam_r/getgrnam_r). Throw std::invalid_argument.
uid_t resolve_user(const std::string& name);
gid_t resolve_group(const std::string& name);

// The enforcer. Pure, no allocation, no I/O.
Decision authorize(const AccessRule& rule, const PeerCredentials& peer) noexcept;

}  // namespace sealrpc
