// Payload encryption policy (docs/protocol-crypto.md). Encryption on a Unix socket adds
// to the kernel's SO_PEERCRED identity, it never replaces it (SECURITY.md §0).
#pragma once

#include <cstdint>

namespace sealrpc {

enum class EncryptionMode : std::uint8_t {
  off = 0,       // never encrypt; a peer that requires it is refused
  optional = 1,  // encrypt when the peer offers it; otherwise plaintext
  required = 2,  // encrypt or refuse the connection (no downgrade, SECURITY.md R10)
};

}  // namespace sealrpc
