// Noise NN / NK over X25519, ChaCha20-Poly1305 (IETF) and BLAKE2b, then per-frame AEAD.
// Step names follow docs/protocol-crypto.md and the Noise spec (rev. 34) §5.
#include "security/crypto.hpp"

#include "sealrpc/keys.hpp"

#include <sodium.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace sealrpc::security {
namespace {

constexpr std::size_t kHashBytes = 64;    // BLAKE2b-512: HASHLEN
constexpr std::size_t kBlockBytes = 128;  // BLAKE2b block: BLOCKLEN for HMAC
constexpr std::size_t kNonceBytes = crypto_aead_chacha20poly1305_IETF_NPUBBYTES;
constexpr char kPrologueLabel[] = "SealRPC/1";
constexpr char kNameNN[] = "Noise_NN_25519_ChaChaPoly_BLAKE2b";
constexpr char kNameNK[] = "Noise_NK_25519_ChaChaPoly_BLAKE2b";
constexpr std::uint64_t kMaxNonce = std::numeric_limits<std::uint64_t>::max() - 1;  // 2^64-1 is reserved
constexpr std::uint8_t kHelloVersion = 1;

static_assert(kKeyBytes == crypto_scalarmult_BYTES && kKeyBytes == crypto_scalarmult_SCALARBYTES);
static_assert(kKeyBytes == crypto_aead_chacha20poly1305_IETF_KEYBYTES);
static_assert(kTagBytes == crypto_aead_chacha20poly1305_IETF_ABYTES);
static_assert(kTagBytes == limits::kSealOverheadBytes);
static_assert(kHashBytes == crypto_generichash_BYTES_MAX);

const unsigned char* u8(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }
unsigned char* u8(std::byte* p) { return reinterpret_cast<unsigned char*>(p); }

[[noreturn]] void fail(const char* what) { throw HandshakeError(std::string("handshake failed: ") + what); }

// Noise nonce: 32 zero bits, then the 64-bit counter little-endian.
void make_nonce(std::uint64_t n, unsigned char out[kNonceBytes]) {
  std::memset(out, 0, kNonceBytes);
  for (int i = 0; i < 8; ++i) out[4 + i] = static_cast<unsigned char>(n >> (8 * i));
}

void hash_init(crypto_generichash_state& st) {
  if (crypto_generichash_init(&st, nullptr, 0, kHashBytes) != 0) throw std::runtime_error("crypto_generichash_init failed");
}
void hash_update(crypto_generichash_state& st, const unsigned char* p, std::size_t n) {
  if (crypto_generichash_update(&st, p, n) != 0) throw std::runtime_error("crypto_generichash_update failed");
}
void hash_final(crypto_generichash_state& st, unsigned char* out) {
  if (crypto_generichash_final(&st, out, kHashBytes) != 0) throw std::runtime_error("crypto_generichash_final failed");
}

// HMAC (RFC 2104) over BLAKE2b-512 as Noise defines it; key is HASHLEN bytes.
void hmac(const unsigned char* key, std::span<const unsigned char> a, std::span<const unsigned char> b, unsigned char* out) {
  SecretBytes scratch(kBlockBytes + kHashBytes + sizeof(crypto_generichash_state));
  unsigned char* pad = scratch.u8();
  unsigned char* inner = pad + kBlockBytes;
  auto* st = reinterpret_cast<crypto_generichash_state*>(inner + kHashBytes);
  std::memset(pad, 0, kBlockBytes);
  std::memcpy(pad, key, kHashBytes);
  for (std::size_t i = 0; i < kBlockBytes; ++i) pad[i] ^= 0x36;
  hash_init(*st);
  hash_update(*st, pad, kBlockBytes);
  hash_update(*st, a.data(), a.size());
  hash_update(*st, b.data(), b.size());
  hash_final(*st, inner);
  for (std::size_t i = 0; i < kBlockBytes; ++i) pad[i] ^= 0x36 ^ 0x5c;
  hash_init(*st);
  hash_update(*st, pad, kBlockBytes);
  hash_update(*st, inner, kHashBytes);
  hash_final(*st, out);
}  // scratch (pad, inner hash, state) is wiped here

// Noise HKDF with two outputs.
void hkdf2(const unsigned char* ck, std::span<const unsigned char> ikm, unsigned char* out1, unsigned char* out2) {
  SecretBytes temp(kHashBytes);
  hmac(ck, ikm, {}, temp.u8());
  const unsigned char one = 1, two = 2;
  hmac(temp.u8(), {&one, 1}, {}, out1);
  hmac(temp.u8(), {out1, kHashBytes}, {&two, 1}, out2);
}

void aead_encrypt(const unsigned char* key, std::uint64_t n, std::span<const unsigned char> ad, unsigned char* data,
                  std::size_t len, unsigned char* tag) {
  unsigned char nonce[kNonceBytes];
  make_nonce(n, nonce);
  unsigned long long taglen = 0;
  unsigned char empty = 0;  // an empty payload may come as a null pointer (nonnull args)
  if (len == 0) data = &empty;
  if (crypto_aead_chacha20poly1305_ietf_encrypt_detached(data, tag, &taglen, data, len, ad.data(), ad.size(), nullptr,
                                                         nonce, key) != 0 ||
      taglen != kTagBytes)
    throw std::runtime_error("aead encrypt failed");
}

// Decrypts `len` bytes of `in` into `out` (may be the same); false when the tag is wrong.
[[nodiscard]] bool aead_decrypt(const unsigned char* key, std::uint64_t n, std::span<const unsigned char> ad,
                                const unsigned char* in, std::size_t len, const unsigned char* tag, unsigned char* out) {
  unsigned char nonce[kNonceBytes];
  make_nonce(n, nonce);
  // An empty payload may come with null pointers; libsodium's prototypes say nonnull.
  unsigned char empty = 0;
  if (len == 0) in = out = &empty;
  return crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, nullptr, in, len, tag, ad.data(), ad.size(), nonce, key) == 0;
}

}  // namespace

// ---- process-wide setup, secret memory -------------------------------------------------------

void crypto_init() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = sodium_init() >= 0; });  // 1 = already initialised: fine
  if (!ok) throw std::runtime_error("libsodium failed to initialise");
}

SecretBytes::SecretBytes(std::size_t n) : n_(n) {
  crypto_init();
  p_ = static_cast<std::byte*>(sodium_malloc(n == 0 ? 1 : n));
  if (!p_) throw std::bad_alloc();
  sodium_memzero(p_, n);
}
SecretBytes::~SecretBytes() {
  if (p_) sodium_free(p_);  // wipes, then unmaps with its guard pages
}
SecretBytes::SecretBytes(SecretBytes&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
SecretBytes& SecretBytes::operator=(SecretBytes&& o) noexcept {
  if (this != &o) {
    if (p_) sodium_free(p_);
    p_ = std::exchange(o.p_, nullptr);
    n_ = std::exchange(o.n_, 0);
  }
  return *this;
}

void wipe(std::span<std::byte> bytes) noexcept { sodium_memzero(bytes.data(), bytes.size()); }

StaticKeyPair StaticKeyPair::generate() {
  StaticKeyPair kp;
  randombytes_buf(kp.secret.data(), kKeyBytes);
  kp.derive_public();
  return kp;
}

void StaticKeyPair::derive_public() {
  if (crypto_scalarmult_base(u8(public_key.data()), secret.u8()) != 0) throw KeyError("invalid secret key");
}

std::string to_hex(std::span<const std::byte> bytes) {
  std::string s(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), u8(bytes.data()), bytes.size());
  s.pop_back();
  return s;
}

void from_hex(std::string_view hex, std::span<std::byte> out) {
  std::size_t n = 0;
  const char* end = nullptr;
  if (hex.size() != out.size() * 2 ||
      sodium_hex2bin(u8(out.data()), out.size(), hex.data(), hex.size(), nullptr, &n, &end) != 0 || n != out.size() ||
      end != hex.data() + hex.size()) {
    wipe(out);
    throw KeyError("malformed key");
  }
}

// ---- key files --------------------------------------------------------------------------------

namespace {

constexpr char kSecretPrefix[] = "sealrpc-x25519-secret-v1 ";
constexpr char kPublicPrefix[] = "sealrpc-x25519-public-v1 ";
constexpr std::size_t kKeyLineBytes = sizeof kSecretPrefix - 1 + 2 * kKeyBytes + 1;
static_assert(sizeof kSecretPrefix == sizeof kPublicPrefix);

// Reads one key line into secret memory after checking the file (keys.hpp lists the rules).
SecretBytes read_key_line(const std::string& path, bool secret, const char* prefix) {
  const auto err = [&](const char* why) { return KeyError("key file " + path + ": " + why); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) throw err(errno == ELOOP ? "is a symbolic link" : "cannot be opened");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw err("cannot be inspected");
  if (!S_ISREG(st.st_mode)) throw err("is not a regular file");
  if (st.st_uid != ::geteuid() && st.st_uid != 0) throw err("is not owned by us or root");
  if (secret && (st.st_mode & 077) != 0) throw err("is accessible by group or others (want 0600)");
  // Issue #5: a pinned key file readable by others is refused too (its integrity and
  // who may learn which key a client pins are both the client's business): 0600 or 0640.
  if (!secret && (st.st_mode & 022) != 0) throw err("is writable by group or others");
  if (!secret && (st.st_mode & 004) != 0) throw err("is readable by others (want 0600 or 0640)");
  if (st.st_size != static_cast<off_t>(kKeyLineBytes)) throw err("has the wrong size");
  SecretBytes line(kKeyLineBytes);
  std::size_t got = 0;
  while (got < kKeyLineBytes) {
    const ssize_t n = ::read(fd, line.data() + got, kKeyLineBytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw err("cannot be read");
    got += static_cast<std::size_t>(n);
  }
  const auto* text = reinterpret_cast<const char*>(line.data());
  const std::size_t plen = std::strlen(prefix);
  if (std::memcmp(text, prefix, plen) != 0 || text[kKeyLineBytes - 1] != '\n') throw err("is not a SealRPC key of this kind");
  return line;
}

}  // namespace

StaticKeyPair load_secret_key_file(const std::string& path) {
  SecretBytes line = read_key_line(path, true, kSecretPrefix);
  StaticKeyPair kp;
  const std::size_t plen = sizeof kSecretPrefix - 1;
  try {
    from_hex({reinterpret_cast<const char*>(line.data()) + plen, 2 * kKeyBytes}, {kp.secret.data(), kKeyBytes});
  } catch (const KeyError&) {
    throw KeyError("key file " + path + ": malformed key");
  }
  kp.derive_public();
  return kp;
}

PublicKey load_public_key_file(const std::string& path) {
  SecretBytes line = read_key_line(path, false, kPublicPrefix);
  PublicKey pk{};
  const std::size_t plen = sizeof kPublicPrefix - 1;
  try {
    from_hex({reinterpret_cast<const char*>(line.data()) + plen, 2 * kKeyBytes}, pk);
  } catch (const KeyError&) {
    throw KeyError("key file " + path + ": malformed key");
  }
  return pk;
}

}  // namespace sealrpc::security

namespace sealrpc {

namespace {
// Writes `text` to a new file (O_EXCL|O_NOFOLLOW, exact mode); removes it on failure.
void write_new_file(const std::string& path, std::span<const char> text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) throw KeyError("key file " + path + ": cannot be created (" + std::strerror(errno) + ")");
  bool ok = ::fchmod(fd, mode) == 0;  // the umask may have narrowed it; never widens beyond `mode`
  std::size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    ::unlink(path.c_str());
    throw KeyError("key file " + path + ": cannot be written");
  }
}
}  // namespace

std::string keygen(const std::string& secret_path, const std::string& public_path) {
  using namespace security;
  StaticKeyPair kp = StaticKeyPair::generate();
  const std::string pub_hex = to_hex(kp.public_key);
  {
    // The secret line is built in secret memory and wiped with it.
    const std::size_t plen = sizeof kSecretPrefix - 1;
    SecretBytes line(kKeyLineBytes + 1);  // + NUL written by sodium_bin2hex
    auto* text = reinterpret_cast<char*>(line.data());
    std::memcpy(text, kSecretPrefix, plen);
    sodium_bin2hex(text + plen, 2 * kKeyBytes + 1, kp.secret.u8(), kKeyBytes);
    text[kKeyLineBytes - 1] = '\n';
    write_new_file(secret_path, {text, kKeyLineBytes}, 0600);
  }
  const std::string pub_line = std::string(kPublicPrefix) + pub_hex + "\n";
  try {
    write_new_file(public_path, pub_line, 0640);
  } catch (...) {
    ::unlink(secret_path.c_str());
    throw;
  }
  return pub_hex;
}

}  // namespace sealrpc

namespace sealrpc::security {

// ---- HELLO offer ------------------------------------------------------------------------------

std::vector<std::byte> encode_hello_offer(const HelloOffer& offer) {
  return {std::byte{kHelloVersion}, static_cast<std::byte>(offer.mode), std::byte{offer.has_static_key ? std::uint8_t{1} : std::uint8_t{0}},
          std::byte{0}};
}

HelloOffer decode_hello_offer(std::span<const std::byte> p) {
  if (p.empty()) return {};
  if (p.size() != kHelloOfferBytes) throw wire::ProtocolError("malformed hello");
  const auto version = std::to_integer<std::uint8_t>(p[0]);
  const auto mode = std::to_integer<std::uint8_t>(p[1]);
  const auto flags = std::to_integer<std::uint8_t>(p[2]);
  if (version != kHelloVersion || mode > 2 || flags > 1 || p[3] != std::byte{0}) throw wire::ProtocolError("malformed hello");
  return {static_cast<EncryptionMode>(mode), flags == 1};
}

// ---- handshake: Noise SymmetricState + CipherState ----------------------------------------------

// Everything secret about one handshake, in one sodium_malloc'ed block wiped on every path.
struct HandshakeState {
  HandshakePattern pattern;
  HandshakeBinding binding;
  SecretBytes mem{2 * kHashBytes + 3 * kKeyBytes};
  unsigned char* ck() { return mem.u8(); }
  unsigned char* h() { return mem.u8() + kHashBytes; }
  unsigned char* k() { return mem.u8() + 2 * kHashBytes; }                  // CipherState key
  unsigned char* e_secret() { return mem.u8() + 2 * kHashBytes + kKeyBytes; }  // our ephemeral
  unsigned char* dh() { return mem.u8() + 2 * kHashBytes + 2 * kKeyBytes; }    // scratch
  bool has_key = false;
  std::uint64_t n = 0;
  PublicKey e_public{};
  std::optional<PublicKey> remote_static;  // NK: the server's static key (pre-message)

  HandshakeState(HandshakePattern p, HandshakeBinding b) : pattern(p), binding(std::move(b)) {
    // InitializeSymmetric(protocol_name): names are < HASHLEN, so h = name zero-padded.
    const char* name = pattern == HandshakePattern::nk ? kNameNK : kNameNN;
    std::memset(h(), 0, kHashBytes);
    std::memcpy(h(), name, std::strlen(name));
    std::memcpy(ck(), h(), kHashBytes);
  }

  void mix_hash(std::span<const unsigned char> data) {
    crypto_generichash_state st;
    hash_init(st);
    hash_update(st, h(), kHashBytes);
    hash_update(st, data.data(), data.size());
    hash_final(st, h());
  }
  void mix_hash(std::span<const std::byte> data) { mix_hash({u8(data.data()), data.size()}); }

  // MixKey(DH output in dh()); the DH scratch is wiped right after.
  void mix_key_dh() {
    SecretBytes out2(kHashBytes);
    hkdf2(ck(), {dh(), kKeyBytes}, ck(), out2.u8());
    std::memcpy(k(), out2.u8(), kKeyBytes);  // truncate to 32 bytes
    sodium_memzero(dh(), kKeyBytes);
    has_key = true;
    n = 0;
  }

  // DH(our secret, their public) into dh(); a low-order public key yields all zeros
  // and is refused (crypto_scalarmult returns -1).
  void dh_with(const unsigned char* secret, const PublicKey& pub) {
    if (crypto_scalarmult(dh(), secret, u8(pub.data())) != 0) fail("invalid public key");
  }

  void prologue() {
    // "SealRPC/1" || HELLO payload || server uid (u32 LE) || client uid (u32 LE)
    std::vector<unsigned char> p(kPrologueLabel, kPrologueLabel + sizeof kPrologueLabel - 1);
    for (auto b : binding.hello) p.push_back(std::to_integer<unsigned char>(b));
    for (uid_t u : {binding.server_uid, binding.client_uid})
      for (int i = 0; i < 4; ++i) p.push_back(static_cast<unsigned char>(static_cast<std::uint32_t>(u) >> (8 * i)));
    mix_hash(p);
    if (remote_static) mix_hash(*remote_static);  // NK pre-message: <- s
  }

  void new_ephemeral() {
    randombytes_buf(e_secret(), kKeyBytes);
    if (crypto_scalarmult_base(u8(e_public.data()), e_secret()) != 0) throw std::runtime_error("ephemeral key generation failed");
  }

  // EncryptAndHash(empty payload): with a key, the output is the 16-byte tag.
  void encrypt_and_hash_empty(std::vector<std::byte>& out) {
    if (!has_key) return;  // NN message 1: plaintext empty payload, MixHash(empty)
    unsigned char tag[kTagBytes];
    aead_encrypt(k(), n++, {h(), kHashBytes}, nullptr, 0, tag);
    out.insert(out.end(), reinterpret_cast<std::byte*>(tag), reinterpret_cast<std::byte*>(tag) + kTagBytes);
    mix_hash({tag, kTagBytes});
  }
  void decrypt_and_hash_empty(std::span<const std::byte> tag) {
    if (!has_key) return;
    if (!aead_decrypt(k(), n++, {h(), kHashBytes}, nullptr, 0, u8(tag.data()), nullptr)) fail("authentication failed");
    mix_hash(tag);
  }

  // Split(): [initiator->responder key | responder->initiator key], ordered for `initiator`'s sending.
  std::unique_ptr<SecureChannel> split(bool initiator);
};

struct SecureChannelFactory {
  static std::unique_ptr<SecureChannel> make(SecretBytes keys) {
    return std::unique_ptr<SecureChannel>(new SecureChannel(std::move(keys)));
  }
};

std::unique_ptr<SecureChannel> HandshakeState::split(bool initiator) {
  SecretBytes t(2 * kHashBytes);
  hkdf2(ck(), {}, t.u8(), t.u8() + kHashBytes);
  SecretBytes keys(2 * kKeyBytes);  // [send | receive]
  std::memcpy(keys.u8(), t.u8() + (initiator ? 0 : kHashBytes), kKeyBytes);
  std::memcpy(keys.u8() + kKeyBytes, t.u8() + (initiator ? kHashBytes : 0), kKeyBytes);
  sodium_memzero(mem.data(), mem.size());  // the handshake is over: ck, h, k, e are dead
  return SecureChannelFactory::make(std::move(keys));
}

ClientKeyExchange::ClientKeyExchange(HandshakeBinding binding, std::optional<PublicKey> pinned)
    : st_(std::make_unique<HandshakeState>(pinned ? HandshakePattern::nk : HandshakePattern::nn, std::move(binding))) {
  st_->remote_static = pinned;
  st_->prologue();
}

ClientKeyExchange::~ClientKeyExchange() = default;

std::vector<std::byte> ClientKeyExchange::first_message() {
  HandshakeState& s = *st_;
  std::vector<std::byte> out{static_cast<std::byte>(s.pattern)};
  /* -> e */
  s.new_ephemeral();
  out.insert(out.end(), s.e_public.begin(), s.e_public.end());
  s.mix_hash(s.e_public);
  /* -> es (NK only) */
  if (s.pattern == HandshakePattern::nk) {
    s.dh_with(s.e_secret(), *s.remote_static);
    s.mix_key_dh();
  }
  /* payload (empty) */
  s.encrypt_and_hash_empty(out);
  return out;
}

std::unique_ptr<SecureChannel> ClientKeyExchange::finish(std::span<const std::byte> reply) {
  HandshakeState& s = *st_;
  const bool wrong_size = reply.size() != kServerMessageBytes;
  if (wrong_size) fail("server message has the wrong size");
  /* <- e */
  PublicKey re;
  std::memcpy(re.data(), reply.data(), kKeyBytes);
  s.mix_hash(re);
  /* <- ee */
  s.dh_with(s.e_secret(), re);
  s.mix_key_dh();
  /* payload (empty): the tag proves the server derived the same keys (and, for NK, holds s) */
  s.decrypt_and_hash_empty(reply.subspan(kKeyBytes, kTagBytes));
  return s.split(true);
}

AcceptedKeyExchange accept_key_exchange(const HandshakeBinding& binding, const StaticKeyPair* server_key,
                                        std::span<const std::byte> msg) {
  if (msg.empty()) fail("client message has the wrong size");
  const auto pattern_byte = std::to_integer<std::uint8_t>(msg[0]);
  const bool known_pattern = pattern_byte == static_cast<std::uint8_t>(HandshakePattern::nn) ||
                             pattern_byte == static_cast<std::uint8_t>(HandshakePattern::nk);
  if (!known_pattern) fail("unknown handshake pattern");
  const auto pattern = static_cast<HandshakePattern>(pattern_byte);
  const bool wrong_size = msg.size() != (pattern == HandshakePattern::nk ? kClientMessageBytesNK : kClientMessageBytesNN);
  if (wrong_size) fail("client message has the wrong size");
  const bool no_static_key = pattern == HandshakePattern::nk && server_key == nullptr;
  if (no_static_key) fail("server has no static key");

  HandshakeState s(pattern, binding);
  if (pattern == HandshakePattern::nk) s.remote_static = server_key->public_key;  // our own s, the pre-message
  s.prologue();
  /* -> e */
  PublicKey re;
  std::memcpy(re.data(), msg.data() + 1, kKeyBytes);
  s.mix_hash(re);
  /* -> es (NK only): DH(s, re) */
  if (pattern == HandshakePattern::nk) {
    s.dh_with(server_key->secret.u8(), re);
    s.mix_key_dh();
  }
  /* payload (empty) */
  s.decrypt_and_hash_empty(msg.subspan(1 + kKeyBytes));
  /* <- e */
  AcceptedKeyExchange result;
  s.new_ephemeral();
  result.reply.assign(s.e_public.begin(), s.e_public.end());
  s.mix_hash(s.e_public);
  /* <- ee */
  s.dh_with(s.e_secret(), re);
  s.mix_key_dh();
  /* payload (empty) */
  s.encrypt_and_hash_empty(result.reply);
  result.channel = s.split(false);
  return result;
}

// ---- transport ----------------------------------------------------------------------------------

SecureChannel::SecureChannel(SecretBytes keys) : keys_(std::move(keys)) {}
SecureChannel::~SecureChannel() = default;  // keys_ wiped by sodium_free

void SecureChannel::seal(std::vector<std::byte>& bytes, std::size_t at) {
  if (bytes.size() < at + limits::kHeaderBytes) throw std::logic_error("seal: no frame header");
  const std::size_t len = bytes.size() - at - limits::kHeaderBytes;
  if (len > limits::kMaxPayloadBytes) throw std::length_error("seal: payload over the frame limit");
  if (send_nonce_ > kMaxNonce) throw std::runtime_error("seal: nonce space exhausted");
  auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(bytes.data() + at, limits::kHeaderBytes));
  h.flags |= wire::kFlagEncrypted;
  h.payload_len = static_cast<std::uint32_t>(len + kTagBytes);
  bytes.resize(bytes.size() + kTagBytes);
  std::byte* header = bytes.data() + at;
  wire::encode_header(h, header);  // the final header is the additional data
  unsigned char* payload = u8(header + limits::kHeaderBytes);
  aead_encrypt(keys_.u8(), send_nonce_++, {u8(header), limits::kHeaderBytes}, payload, len, payload + len);
}

void SecureChannel::open(const wire::FrameHeader& sealed, std::span<const std::byte> ct, std::vector<std::byte>& pt) {
  pt.clear();  // on every failure path the caller holds nothing of this frame
  if (ct.size() < kTagBytes || ct.size() != sealed.payload_len || recv_nonce_ > kMaxNonce) throw transport::IntegrityError();
  std::byte header[limits::kHeaderBytes];
  wire::encode_header(sealed, header);  // decode/encode is exact for a valid header
  const std::size_t len = ct.size() - kTagBytes;
  if (pt.capacity() > (1u << 20) && pt.capacity() / 4 > len) std::vector<std::byte>().swap(pt);  // drop a huge idle buffer
  pt.resize(len);
  const bool authentic = aead_decrypt(keys_.u8() + kKeyBytes, recv_nonce_, {u8(header), limits::kHeaderBytes},
                                      u8(ct.data()), len, u8(ct.data() + len), u8(pt.data()));
  if (!authentic) {
    pt.clear();  // libsodium already zeroed the output; deliver nothing
    throw transport::IntegrityError();
  }
  ++recv_nonce_;
}

}  // namespace sealrpc::security
