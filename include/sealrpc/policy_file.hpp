// Policy file: operator overrides of the schema's access rules, loaded at start and on
// reload (parsed once, swapped atomically, never parsed per call). Grammar, one rule
// per line ('#' starts a comment):
//
//   method    <Interface>.<method>  <term> [<term> ...]
//   interface <Interface>           <term> [<term> ...]
//
//   term := uids=<n>[,<n>...] | gids=<n>[,...] | users=<name>[,...] | groups=<name>[,...]
//         | root | same-user | open | nobody | label=<lsm-label>
//
// A method line replaces that method's rule. An interface line replaces the rule of
// every method of that interface that has no method line. `nobody` is an explicit
// deny-all. Names are resolved when the file is loaded. Any error (syntax, unknown
// method, interface, user or group) rejects the whole file and names the line.
// Full reference: docs/policy.md.
#pragma once

#include "sealrpc/policy.hpp"

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>

namespace sealrpc {

class PolicyError : public std::runtime_error {
 public:
  PolicyError(std::string source, int line, const std::string& what)
      : std::runtime_error(source + ":" + std::to_string(line) + ": " + what), line_(line) {}
  int line() const noexcept { return line_; }

 private:
  int line_;
};

struct PolicyEntry {
  AccessRuleSpec rule;
  int line = 0;
};

struct PolicyOverrides {
  std::map<std::string, PolicyEntry, std::less<>> methods;     // "Interface.method"
  std::map<std::string, PolicyEntry, std::less<>> interfaces;  // "Interface"
};

// Parses the text; `source` names it in errors. Throws PolicyError.
PolicyOverrides parse_policy(std::string_view text, const std::string& source = "policy");
// Reads and parses a file (refusing one writable by others). Throws PolicyError.
PolicyOverrides load_policy_file(const std::string& path);

}  // namespace sealrpc
