// Session layer: the optional libsodium handshake and per-frame AEAD
// (docs/protocol-crypto.md is the spec; names below follow its steps).
//
// This file and crypto.cpp are the only code that touches libsodium (besides buffers'
// sodium_memzero). Only a finished handshake produces a SecureChannel (STYLE 4):
// ClientKeyExchange::finish on the client, accept_key_exchange on the server.
// Long-lived secrets live in SecretBytes (sodium_malloc: guard pages, mlock, wiped on
// destruction); intermediate values are wiped as soon as they are used (STYLE 9).
// Error texts are fixed strings: they never contain key or payload bytes.
#pragma once

#include "sealrpc/encryption.hpp"
#include "transport/channel.hpp"

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sealrpc::security {

inline constexpr std::size_t kKeyBytes = 32;  // X25519 keys and ChaCha20-Poly1305 keys
inline constexpr std::size_t kTagBytes = 16;  // Poly1305 tag
using PublicKey = std::array<std::byte, kKeyBytes>;

// Starts libsodium once per process (thread-safe, idempotent). Throws std::runtime_error.
void crypto_init();

// Secret bytes in sodium_malloc'ed memory: guard pages, mlock'ed, wiped by sodium_free.
// For long-lived keys only: each allocation costs three or four pages.
class SecretBytes {
 public:
  explicit SecretBytes(std::size_t n);
  ~SecretBytes();
  SecretBytes(SecretBytes&& o) noexcept;
  SecretBytes& operator=(SecretBytes&& o) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  std::byte* data() noexcept { return p_; }
  const std::byte* data() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }
  unsigned char* u8() noexcept { return reinterpret_cast<unsigned char*>(p_); }
  const unsigned char* u8() const noexcept { return reinterpret_cast<const unsigned char*>(p_); }

 private:
  std::byte* p_ = nullptr;
  std::size_t n_ = 0;
};

// Overwrites `bytes` with zeros in a way the compiler cannot elide (sodium_memzero).
void wipe(std::span<std::byte> bytes) noexcept;

// A server's long-term X25519 key pair.
struct StaticKeyPair {
  SecretBytes secret{kKeyBytes};
  PublicKey public_key{};
  static StaticKeyPair generate();
  // Derives public_key from secret (crypto_scalarmult_base).
  void derive_public();
};

// Hex text of a key (for key files and display), and back; from_hex throws KeyError.
std::string to_hex(std::span<const std::byte> bytes);
void from_hex(std::string_view hex, std::span<std::byte> out);

// Key files (format and checks in include/sealrpc/keys.hpp). Throw sealrpc::KeyError.
StaticKeyPair load_secret_key_file(const std::string& path);
PublicKey load_public_key_file(const std::string& path);

// What the server's HELLO offers (payload of the HELLO frame; docs/protocol-crypto.md §2).
struct HelloOffer {
  EncryptionMode mode = EncryptionMode::off;
  bool has_static_key = false;
};
inline constexpr std::size_t kHelloOfferBytes = 4;
std::vector<std::byte> encode_hello_offer(const HelloOffer& offer);
// An empty payload (a server without encryption support) reads as mode off.
// Throws wire::ProtocolError on any other malformed payload.
HelloOffer decode_hello_offer(std::span<const std::byte> payload);

// The handshake failed: wrong size, bad key, failed authentication or a binding
// mismatch. The message is a fixed text, safe to log and to send to the peer.
class HandshakeError : public wire::ProtocolError {
 public:
  using wire::ProtocolError::ProtocolError;
};

// What both ends must agree on, mixed into the Noise prologue: the kernel identities
// each side sees (SO_PEERCRED) and the exact HELLO payload (so a rewritten offer fails).
struct HandshakeBinding {
  uid_t server_uid = static_cast<uid_t>(-1);
  uid_t client_uid = static_cast<uid_t>(-1);
  std::vector<std::byte> hello;
};

enum class HandshakePattern : std::uint8_t { nn = 1, nk = 2 };
inline constexpr std::size_t kClientMessageBytesNN = 1 + kKeyBytes;
inline constexpr std::size_t kClientMessageBytesNK = 1 + kKeyBytes + kTagBytes;
inline constexpr std::size_t kServerMessageBytes = kKeyBytes + kTagBytes;

// Per-direction AEAD with counter nonces over frames (Noise CipherState, with the
// frame header as additional data). Implements FrameChannel's cipher hook.
class SecureChannel final : public transport::FrameCipher {
 public:
  ~SecureChannel() override;
  void seal(std::vector<std::byte>& bytes, std::size_t at) override;
  void open(const wire::FrameHeader& sealed, std::span<const std::byte> ciphertext,
            std::vector<std::byte>& plaintext) override;

 private:
  friend struct SecureChannelFactory;
  explicit SecureChannel(SecretBytes keys);  // [send key | receive key]
  SecretBytes keys_;
  std::uint64_t send_nonce_ = 0;
  std::uint64_t recv_nonce_ = 0;
};

struct HandshakeState;

// Initiator (client). One object per connection attempt.
class ClientKeyExchange {
 public:
  // pinned: the server's static public key (pattern NK), or nullopt (NN: encrypted but
  // not cryptographically authenticated; identity is then SO_PEERCRED's alone).
  ClientKeyExchange(HandshakeBinding binding, std::optional<PublicKey> pinned);
  ~ClientKeyExchange();
  ClientKeyExchange(const ClientKeyExchange&) = delete;
  ClientKeyExchange& operator=(const ClientKeyExchange&) = delete;

  // Payload of the handshake_client frame. Call once.
  std::vector<std::byte> first_message();
  // Consumes the handshake_server payload. Throws HandshakeError.
  [[nodiscard]] std::unique_ptr<SecureChannel> finish(std::span<const std::byte> reply);

 private:
  std::unique_ptr<HandshakeState> st_;
};

// Responder (server): consumes a handshake_client payload and returns the
// handshake_server payload and the channel. server_key may be null (then an NK
// request fails). Throws HandshakeError.
struct AcceptedKeyExchange {
  std::vector<std::byte> reply;
  std::unique_ptr<SecureChannel> channel;
};
[[nodiscard]] AcceptedKeyExchange accept_key_exchange(const HandshakeBinding& binding, const StaticKeyPair* server_key,
                                                      std::span<const std::byte> message);

}  // namespace sealrpc::security
