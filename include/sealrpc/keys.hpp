// Static X25519 keys for authenticated encryption (docs/protocol-crypto.md, pattern NK).
//
// A server holds a secret key file; clients pin its public key file. Files are one
// line of text: "sealrpc-x25519-secret-v1 <64 hex>\n" / "sealrpc-x25519-public-v1 <64 hex>\n".
// Loading refuses symlinks (O_NOFOLLOW), non-regular files, files owned by anyone but
// us or root, secret files with any group/other permission and public files that
// group or others may write. Errors name the file and the reason, never key bytes.
#pragma once

#include <stdexcept>
#include <string>

namespace sealrpc {

class KeyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Creates a fresh key pair: the secret key at `secret_path` (0600) and the public key
// at `public_path` (0644), both with O_CREAT|O_EXCL|O_NOFOLLOW (never overwrites,
// never follows a link). Returns the public key in hex (for display). Throws KeyError;
// on failure no partial file is left behind.
std::string keygen(const std::string& secret_path, const std::string& public_path);

}  // namespace sealrpc
