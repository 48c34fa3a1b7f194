// sealrpc-keygen: creates a server's static X25519 key pair for pinned-key encryption
// (docs/protocol-crypto.md, pattern NK).
//
//   sealrpc-keygen <secret-key-file> <public-key-file>
//
// The secret file is created 0600 and the public file 0640, both with
// O_CREAT|O_EXCL|O_NOFOLLOW: an existing file or a symlink is never overwritten.
// Give the server ServerOptions::static_key_file = <secret-key-file>; give clients a
// copy of <public-key-file> as ClientOptions::pinned_server_key_file. The secret key is
// never printed; the public key is, so it can be compared out of band.
#include "sealrpc/keys.hpp"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <secret-key-file> <public-key-file>\n", argc > 0 ? argv[0] : "sealrpc-keygen");
    return 2;
  }
  try {
    const std::string public_hex = sealrpc::keygen(argv[1], argv[2]);
    std::printf("public key %s\n", public_hex.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sealrpc-keygen: %s\n", e.what());
    return 1;
  }
}
