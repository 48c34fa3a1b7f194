// Session layer, white box (docs/protocol-crypto.md; SECURITY.md C1-C5): the handshake
// agrees on keys only when everything it binds agrees, every frame is authenticated
// with its header, and key files are refused unless safe.
#include "sealrpc/keys.hpp"
#include "security/crypto.hpp"
#include "transport/frame.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

using namespace sealrpc;
using namespace sealrpc::security;

namespace {

HandshakeBinding binding(uid_t server = 1000, uid_t client = 1001) {
  return {server, client, encode_hello_offer({EncryptionMode::required, true})};
}

struct Pair {
  std::unique_ptr<SecureChannel> client, server;
};

// Runs both halves of a handshake in memory.
Pair handshake(const StaticKeyPair* server_key, std::optional<PublicKey> pin, HandshakeBinding cb = binding(),
               HandshakeBinding sb = binding()) {
  ClientKeyExchange kx(std::move(cb), pin);
  auto accepted = accept_key_exchange(sb, server_key, kx.first_message());
  Pair p;
  p.server = std::move(accepted.channel);
  p.client = kx.finish(accepted.reply);
  return p;
}

std::vector<std::byte> frame(std::string_view payload, std::uint32_t rid = 7) {
  std::vector<std::byte> out;
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.request_id = rid;
  h.interface_id = 0x1234;
  wire::append_frame(out, h, std::as_bytes(std::span(payload.data(), payload.size())));
  return out;
}

// Parses one sealed frame and opens it with `ch`; returns the plaintext.
std::string open_frame(SecureChannel& ch, const std::vector<std::byte>& sealed) {
  const auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(sealed.data(), limits::kHeaderBytes));
  std::vector<std::byte> pt;
  ch.open(h, std::span(sealed).subspan(limits::kHeaderBytes), pt);
  return {reinterpret_cast<const char*>(pt.data()), pt.size()};
}

std::string tmpdir() {
  char t[] = "/tmp/sealrpc-crypto-XXXXXX";
  EXPECT_NE(::mkdtemp(t), nullptr);
  return t;
}

}  // namespace

TEST(Crypto, NNAndNKHandshakesAgreeOnPerDirectionKeys) {
  const StaticKeyPair server_key = StaticKeyPair::generate();
  for (const bool pinned : {false, true}) {
    auto p = handshake(&server_key, pinned ? std::optional(server_key.public_key) : std::nullopt);
    auto f = frame("hello server");
    p.client->seal(f, 0);
    EXPECT_EQ(open_frame(*p.server, f), "hello server");
    auto g = frame("hello client");
    p.server->seal(g, 0);
    EXPECT_EQ(open_frame(*p.client, g), "hello client");
    // Directions use different keys: a frame cannot be reflected back to its sender.
    auto r = frame("reflect");
    p.client->seal(r, 0);
    EXPECT_THROW(open_frame(*p.client, r), transport::IntegrityError);
  }
}

TEST(Crypto, SealedFrameHeaderIsFlaggedAndCountsTheTag) {
  const StaticKeyPair key = StaticKeyPair::generate();
  auto p = handshake(&key, key.public_key);
  auto f = frame("abc");
  p.client->seal(f, 0);
  const auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(f.data(), limits::kHeaderBytes));
  EXPECT_TRUE(h.flags & wire::kFlagEncrypted);
  EXPECT_EQ(h.payload_len, 3u + kTagBytes);
  EXPECT_EQ(f.size(), limits::kHeaderBytes + 3 + kTagBytes);
  EXPECT_EQ(std::memcmp(f.data() + limits::kHeaderBytes, "abc", 3) == 0, false) << "payload left in plaintext";
}

TEST(Crypto, WrongPinnedKeyFailsTheHandshakeOnTheServer) {
  const StaticKeyPair real = StaticKeyPair::generate();
  const StaticKeyPair other = StaticKeyPair::generate();
  ClientKeyExchange kx(binding(), other.public_key);
  EXPECT_THROW((void)accept_key_exchange(binding(), &real, kx.first_message()), HandshakeError);
  // A server without a static key cannot answer NK.
  ClientKeyExchange kx2(binding(), real.public_key);
  EXPECT_THROW((void)accept_key_exchange(binding(), nullptr, kx2.first_message()), HandshakeError);
}

TEST(Crypto, KernelIdentityAndHelloAreBoundIntoTheHandshake) {
  const StaticKeyPair key = StaticKeyPair::generate();
  // The two sides see different uids (a relay in between): the handshake fails.
  EXPECT_THROW(handshake(&key, std::nullopt, binding(1000, 1001), binding(1000, 1002)), HandshakeError);
  EXPECT_THROW(handshake(&key, key.public_key, binding(1000, 1001), binding(1003, 1001)), HandshakeError);
  // A rewritten HELLO offer (downgrade attempt by a proxy) fails too.
  HandshakeBinding rewritten = binding();
  rewritten.hello = encode_hello_offer({EncryptionMode::optional, true});
  EXPECT_THROW(handshake(&key, key.public_key, rewritten, binding()), HandshakeError);
}

TEST(Crypto, HandshakeMessagesOfTheWrongSizeOrPatternAreRefused) {
  const StaticKeyPair key = StaticKeyPair::generate();
  ClientKeyExchange kx(binding(), key.public_key);
  auto m = kx.first_message();
  ASSERT_EQ(m.size(), kClientMessageBytesNK);
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, kClientMessageBytesNN, m.size() - 1, m.size() + 1}) {
    std::vector<std::byte> cut(n, std::byte{0});
    if (n > 0) cut[0] = std::byte{2};
    try {
      (void)accept_key_exchange(binding(), &key, cut);
      ADD_FAILURE() << "accepted " << n << " bytes";
    } catch (const HandshakeError& e) {
      EXPECT_NE(std::string(e.what()).find("wrong size"), std::string::npos) << e.what();
    }
  }
  m[0] = std::byte{9};
  EXPECT_THROW((void)accept_key_exchange(binding(), &key, m), HandshakeError);
  // A server reply of the wrong size.
  ClientKeyExchange kx2(binding(), std::nullopt);
  auto accepted = accept_key_exchange(binding(), &key, kx2.first_message());
  accepted.reply.pop_back();
  EXPECT_THROW((void)kx2.finish(accepted.reply), HandshakeError);
}

TEST(Crypto, LowOrderEphemeralKeyIsRefused) {
  const StaticKeyPair key = StaticKeyPair::generate();
  std::vector<std::byte> m(kClientMessageBytesNN, std::byte{0});
  m[0] = std::byte{1};  // NN with e = 0 (a small-order point): DH output would be all zeros
  try {
    (void)accept_key_exchange(binding(), &key, m);
    ADD_FAILURE();
  } catch (const HandshakeError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid public key"), std::string::npos);
  }
}

TEST(Crypto, TamperedReplayedReorderedOrTruncatedFramesFailAuthentication) {
  const StaticKeyPair key = StaticKeyPair::generate();
  const auto fresh = [&] { return handshake(&key, key.public_key); };
  const auto sealed = [](SecureChannel& ch, std::string_view s) {
    auto f = frame(s);
    ch.seal(f, 0);
    return f;
  };
  {  // a flipped bit anywhere: header (AD), ciphertext, tag
    auto base = fresh();
    auto f = sealed(*base.client, "payload bytes");
    for (std::size_t at : {std::size_t{16}, limits::kHeaderBytes + 2, f.size() - 1}) {
      auto p = fresh();
      auto g = sealed(*p.client, "payload bytes");
      g[at] ^= std::byte{0x01};
      EXPECT_THROW(open_frame(*p.server, g), transport::IntegrityError) << "bit at " << at;
    }
  }
  {  // replay
    auto p = fresh();
    auto f = sealed(*p.client, "once");
    EXPECT_EQ(open_frame(*p.server, f), "once");
    EXPECT_THROW(open_frame(*p.server, f), transport::IntegrityError);
  }
  {  // reorder and drop
    auto p = fresh();
    auto a = sealed(*p.client, "a");
    auto b = sealed(*p.client, "b");
    EXPECT_THROW(open_frame(*p.server, b), transport::IntegrityError);
  }
  {  // truncated: payload shorter than the tag, or cut with a matching header
    auto p = fresh();
    auto f = sealed(*p.client, "truncate me");
    auto h = wire::decode_header(std::span<const std::byte, limits::kHeaderBytes>(f.data(), limits::kHeaderBytes));
    std::vector<std::byte> pt{std::byte{1}};
    h.payload_len = 4;
    EXPECT_THROW(p.server->open(h, std::span(f).subspan(limits::kHeaderBytes, 4), pt), transport::IntegrityError);
    EXPECT_TRUE(pt.empty());
    h.payload_len = static_cast<std::uint32_t>(f.size() - limits::kHeaderBytes - 1);
    EXPECT_THROW(p.server->open(h, std::span(f).subspan(limits::kHeaderBytes, h.payload_len), pt), transport::IntegrityError);
    EXPECT_TRUE(pt.empty()) << "plaintext delivered from a failed frame";
  }
}

TEST(Crypto, SameKeysSamePlaintextDifferentConnectionsGiveDifferentCiphertexts) {
  // C1: static keys are the same on every connection; ephemeral keys make sessions differ.
  const StaticKeyPair key = StaticKeyPair::generate();
  auto p1 = handshake(&key, key.public_key);
  auto p2 = handshake(&key, key.public_key);
  auto a = frame("same plaintext, same nonce 0");
  auto b = frame("same plaintext, same nonce 0");
  p1.client->seal(a, 0);
  p2.client->seal(b, 0);
  EXPECT_NE(a, b);
  EXPECT_THROW(open_frame(*p2.server, a), transport::IntegrityError);  // keys differ too
}

TEST(Crypto, LargestInlinePayloadSealsAndPassesTheFrameReader) {
  const StaticKeyPair key = StaticKeyPair::generate();
  auto p = handshake(&key, key.public_key);
  std::vector<std::byte> f;
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  std::vector<std::byte> payload(limits::kMaxPayloadBytes);
  for (std::size_t i = 0; i < payload.size(); i += 4093) payload[i] = static_cast<std::byte>(i * 31);
  wire::append_frame(f, h, payload);
  p.client->seal(f, 0);
  wire::FrameReader reader;
  auto space = reader.prepare(f.size());
  std::memcpy(space.data(), f.data(), f.size());
  reader.commit(f.size(), {});
  auto got = reader.next();
  ASSERT_TRUE(got);
  std::vector<std::byte> pt;
  p.server->open(got->header, got->payload, pt);
  EXPECT_EQ(pt, payload);
  // One byte more plaintext cannot be sealed, and a plaintext frame gets no tag allowance.
  auto too_big = f;
  too_big.resize(limits::kHeaderBytes + limits::kMaxPayloadBytes + 1);
  wire::encode_header(h, too_big.data());
  EXPECT_THROW(p.client->seal(too_big, 0), std::length_error);
}

TEST(Crypto, HelloOfferRoundTripsAndRejectsGarbage) {
  for (auto m : {EncryptionMode::off, EncryptionMode::optional, EncryptionMode::required}) {
    auto o = decode_hello_offer(encode_hello_offer({m, true}));
    EXPECT_EQ(o.mode, m);
    EXPECT_TRUE(o.has_static_key);
  }
  EXPECT_EQ(decode_hello_offer({}).mode, EncryptionMode::off);
  std::vector<std::byte> bad{std::byte{1}, std::byte{3}, std::byte{0}, std::byte{0}};
  EXPECT_THROW(decode_hello_offer(bad), wire::ProtocolError);
  bad.resize(3);
  EXPECT_THROW(decode_hello_offer(bad), wire::ProtocolError);
}

TEST(KeyFiles, KeygenWritesSafeFilesAndLoadRefusesUnsafeOnes) {
  const std::string dir = tmpdir();
  const std::string sk = dir + "/server.key", pk = dir + "/server.pub";
  const std::string hex = keygen(sk, pk);
  ASSERT_EQ(hex.size(), 64u);
  struct stat st{};
  ASSERT_EQ(::stat(sk.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(pk.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_THROW(keygen(sk, dir + "/other.pub"), KeyError) << "O_EXCL: never overwrite a key";

  StaticKeyPair loaded = load_secret_key_file(sk);
  EXPECT_EQ(to_hex(loaded.public_key), hex);
  EXPECT_EQ(to_hex(load_public_key_file(pk)), hex);

  std::string secret_hex;
  {
    std::ifstream in(sk);
    std::string label;
    in >> label >> secret_hex;
  }
  const auto expect_refused = [&](const std::string& path, bool secret, const std::string& why) {
    try {
      if (secret) (void)load_secret_key_file(path);
      else (void)load_public_key_file(path);
      ADD_FAILURE() << "accepted " << path << " (" << why << ")";
    } catch (const KeyError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(why), std::string::npos) << msg;
      EXPECT_EQ(msg.find(secret_hex), std::string::npos) << "key bytes in an error message";
    }
  };
  ASSERT_EQ(::symlink(sk.c_str(), (dir + "/link.key").c_str()), 0);
  expect_refused(dir + "/link.key", true, "symbolic link");
  ASSERT_EQ(::chmod(sk.c_str(), 0640), 0);
  expect_refused(sk, true, "group or others");
  ASSERT_EQ(::chmod(sk.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(pk.c_str(), 0664), 0);
  expect_refused(pk, false, "writable by group or others");
  ASSERT_EQ(::chmod(pk.c_str(), 0644), 0);
  expect_refused(pk, false, "readable by others");
  ASSERT_EQ(::chmod(pk.c_str(), 0640), 0);
  ASSERT_EQ(::chown(sk.c_str(), 12345, 12345), 0);  // we run as root in CI; owner is neither us nor root
  expect_refused(sk, true, "not owned by us or root");
  ASSERT_EQ(::chown(sk.c_str(), ::geteuid(), ::getegid()), 0);
  {
    std::ofstream out(dir + "/bad.pub");
    out << "sealrpc-x25519-public-v1 " << std::string(64, 'z') << "\n";
  }
  ::chmod((dir + "/bad.pub").c_str(), 0640);
  expect_refused(dir + "/bad.pub", false, "malformed key");
  ASSERT_EQ(::link(pk.c_str(), (dir + "/pub-as-secret").c_str()), 0);
  ASSERT_EQ(::chmod(pk.c_str(), 0600), 0);
  expect_refused(dir + "/pub-as-secret", true, "not a SealRPC key of this kind");  // a public key is no secret key
  expect_refused(dir, true, "not a regular file");
  std::filesystem::remove_all(dir);
}
