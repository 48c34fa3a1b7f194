// Payload encryption end to end (docs/protocol-crypto.md; SECURITY.md C1-C5, R10).
// Hostile peers are raw sockets and a frame-aware man-in-the-middle proxy written here.
// After each abuse (T3): a clear error, the connection closed, nothing reached a
// handler, a canary is served, and the server holds no more fds than before (T1).
#include "sealrpc/endpoint.hpp"
#include "sealrpc/keys.hpp"
#include "sealrpc/server.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"
#include "transport/frame.hpp"

#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <thread>

using namespace sealrpc;
using namespace testutil;
using testsvc::EchoParams;
using testsvc::EchoResults;

namespace {

constexpr std::size_t kNoOutOfLine = std::numeric_limits<std::size_t>::max();  // keep every payload inline

struct Outcome {
  std::vector<boost::system::error_code> ecs;  // one per call, or the connect error
  std::vector<std::string> data;
  bool client_encrypted = false;
  bool server_encrypted = false;  // as the handler's CallContext saw it
  boost::system::error_code connect_ec;
};

// Connects, sends `calls` requests pipelined (before any reply), waits for all.
Outcome run_calls(const std::string& path, ClientOptions opts, std::vector<std::string> payloads,
                  std::uint16_t ordinal = 0) {
  boost::asio::io_context io;
  Outcome out;
  Client client;
  std::size_t left = payloads.size();
  out.ecs.resize(payloads.size());
  out.data.resize(payloads.size());
  Client::async_connect(io.get_executor(), path, std::move(opts), [&](boost::system::error_code ec, Client c) {
    out.connect_ec = ec;
    if (ec) return;
    client = c;
    out.client_encrypted = c.is_encrypted();
    for (std::size_t i = 0; i < payloads.size(); ++i) {
      Request<EchoParams> req;
      req.params().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(payloads[i].data()), payloads[i].size()));
      client.async_call<EchoResults>({testsvc::kTestInterface, ordinal}, std::move(req),
                                     [&, i](boost::system::error_code ec, Response<EchoResults> r) {
                                       out.ecs[i] = ec;
                                       if (!ec) {
                                         auto v = r.get();
                                         out.data[i].assign(reinterpret_cast<const char*>(v.getData().begin()), v.getData().size());
                                         out.server_encrypted = v.getEncrypted();
                                       }
                                       if (--left == 0) client.close();
                                     });
    }
  });
  io.run();
  return out;
}

// A man in the middle that understands framing and can misbehave on one frame.
class Proxy {
 public:
  enum class Mode { pass, flip_payload, flip_header, flip_tag, replay, swap, drop, truncate };

  Proxy(std::string upstream, bool client_to_server, int index, Mode mode)
      : upstream_(std::move(upstream)), c2s_(client_to_server), index_(index), mode_(mode) {
    char t[] = "/tmp/sealrpc-mitm-XXXXXX";
    dir_ = ::mkdtemp(t);
    path_ = dir_ + "/s";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 16) != 0)
      throw std::runtime_error("proxy listen");
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~Proxy() {
    stop_ = true;
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (auto& c : conns_) {
        ::shutdown(c->client, SHUT_RDWR);
        ::shutdown(c->server, SHUT_RDWR);
      }
    }
    for (auto& c : conns_) {
      c->a.join();
      c->b.join();
      ::close(c->client);
      ::close(c->server);
    }
    ::close(listen_fd_);
    std::filesystem::remove_all(dir_);
  }
  const std::string& path() const { return path_; }
  // Client-to-server frames seen so far, as they arrived.
  std::vector<std::vector<char>> client_frames() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  struct Conn {
    int client, server;
    std::thread a, b;
  };
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      const int s = raw_connect(upstream_);
      auto conn = std::make_unique<Conn>();
      conn->client = c;
      conn->server = s;
      conn->a = std::thread([this, c, s] { pump(c, s, true); });
      conn->b = std::thread([this, c, s] { pump(s, c, false); });
      std::lock_guard lock(mu_);
      conns_.push_back(std::move(conn));
    }
  }
  static bool read_full(int fd, char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t r = ::read(fd, p, n);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }
  static void write_full(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
      if (r <= 0) return;
      p += r;
      n -= static_cast<std::size_t>(r);
    }
  }
  void pump(int from, int to, bool c2s) {
    std::vector<char> held;
    for (int i = 0;; ++i) {
      std::vector<char> f(32);
      if (!read_full(from, f.data(), 32)) break;
      std::uint32_t len;
      std::memcpy(&len, f.data() + 8, 4);
      f.resize(32 + len);
      if (len && !read_full(from, f.data() + 32, len)) break;
      if (c2s) {
        std::lock_guard lock(mu_);
        seen_.push_back(f);
      }
      const bool target = c2s == c2s_ && i == index_;
      if (target) {
        switch (mode_) {
          case Mode::pass: break;
          case Mode::flip_payload: f[32 + 1] ^= 0x01; break;
          case Mode::flip_header: f[20] ^= 0x01; break;  // timeout_ms: authenticated, not framing
          case Mode::flip_tag: f.back() ^= 0x01; break;
          case Mode::replay: write_full(to, f.data(), f.size()); break;
          case Mode::swap: held = f; continue;
          case Mode::drop: continue;
          case Mode::truncate:
            write_full(to, f.data(), f.size() / 2);
            ::shutdown(to, SHUT_RDWR);
            ::shutdown(from, SHUT_RDWR);
            return;
        }
      }
      write_full(to, f.data(), f.size());
      if (!held.empty()) {
        write_full(to, held.data(), held.size());
        held.clear();
      }
    }
    ::shutdown(to, SHUT_RDWR);
    ::shutdown(from, SHUT_RDWR);
  }

  std::string upstream_, dir_, path_;
  bool c2s_;
  int index_;
  Mode mode_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<std::vector<char>> seen_;
};

class Encryption : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/sealrpc-keys-XXXXXX";
    keydir_ = ::mkdtemp(t);
    secret_ = keydir_ + "/server.key";
    pub_ = keydir_ + "/server.pub";
    (void)keygen(secret_, pub_);
    {
      std::ifstream in(secret_);
      std::string label;
      in >> label >> secret_hex_;
    }
    start_server(EncryptionMode::required, true);
  }
  void start_server(EncryptionMode mode, bool with_key) {
    server_.reset();
    ServerOptions o;
    o.encryption = mode;
    if (with_key) o.static_key_file = secret_;
    o.frame_timeout = std::chrono::milliseconds(300);
    o.out_of_line_threshold = kNoOutOfLine;
    server_ = std::make_unique<TestServer>(listen_private(), o);
    auto r = run_calls(server_->path(), client_opts(EncryptionMode::optional, with_key && mode != EncryptionMode::off), {"warm up"});
    ASSERT_FALSE(r.connect_ec) << r.connect_ec.message();
    wait_idle();
    baseline_ = count_fds();
  }
  void TearDown() override {
    auto r = run_calls(server_->path(), client_opts(), {"canary"});
    EXPECT_FALSE(r.connect_ec) << r.connect_ec.message();
    ASSERT_EQ(r.ecs.size(), 1u);
    EXPECT_FALSE(r.ecs[0]) << r.ecs[0].message();
    EXPECT_EQ(r.data[0], "canary");
    wait_idle();
    EXPECT_EQ(count_fds(), baseline_) << "fd leak";
    server_.reset();
    std::filesystem::remove_all(keydir_);
  }
  ClientOptions client_opts(EncryptionMode mode = EncryptionMode::required, bool pin = true) const {
    ClientOptions o;
    o.encryption = mode;
    if (pin) o.pinned_server_key_file = pub_;
    o.out_of_line_threshold = kNoOutOfLine;
    o.connect_timeout = std::chrono::milliseconds(2000);
    o.default_timeout = std::chrono::milliseconds(5000);
    return o;
  }
  void wait_idle() {
    for (int i = 0; i < 300 && server_->server().connection_count() != 0; ++i) ::usleep(10'000);
    ASSERT_EQ(server_->server().connection_count(), 0u);
  }
  testsvc::TestService& service() { return static_cast<testsvc::TestService&>(*server_->service); }
  bool audited(const std::string& event, bool allowed, const std::string& reason) {
    for (int i = 0; i < 100; ++i) {
      for (const auto& r : server_->audit().records())
        if (r.event == event && r.allowed == allowed && r.reason.find(reason) != std::string::npos) return true;
      ::usleep(10'000);
    }
    return false;
  }
  // Sends raw bytes after HELLO and expects a GOODBYE whose reason contains `expect`, then EOF.
  std::string expect_goodbye(const std::vector<std::byte>& bytes, const std::string& expect) {
    const int fd = raw_connect(server_->path());
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    auto [type, reason] = read_reply(fd);
    EXPECT_EQ(type, static_cast<int>(wire::FrameType::goodbye));
    EXPECT_NE(reason.find(expect), std::string::npos) << "reason: " << reason;
    char c;
    EXPECT_EQ(::read(fd, &c, 1), 0) << "connection not closed";
    ::close(fd);
    return reason;
  }
  static std::vector<std::byte> frame(wire::FrameType type, std::size_t payload_bytes, std::uint8_t flags = 0) {
    std::vector<std::byte> out;
    wire::FrameHeader h;
    h.type = type;
    std::vector<std::byte> payload(payload_bytes, std::byte{0x41});
    wire::append_frame(out, h, payload);
    out[7] = std::byte{flags};
    return out;
  }

  std::unique_ptr<TestServer> server_;
  std::string keydir_, secret_, pub_, secret_hex_;
  int baseline_ = 0;
};

}  // namespace

TEST_F(Encryption, RoundTripsEveryInlineSizeEncryptedOnBothSides) {
  // Up to the largest echo whose reply still fits one inline frame.
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{1024}, std::size_t{65536},
                        std::size_t{65537}, std::size_t{1} << 20, std::size_t{limits::kMaxPayloadBytes} - 4096}) {
    std::string data(n, '\0');
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 131) ^ (i >> 9));
    auto r = run_calls(server_->path(), client_opts(), {data});
    ASSERT_FALSE(r.connect_ec) << r.connect_ec.message();
    ASSERT_FALSE(r.ecs[0]) << n << ": " << r.ecs[0].message();
    EXPECT_TRUE(r.data[0] == data) << "size " << n;
    EXPECT_TRUE(r.client_encrypted);
    EXPECT_TRUE(r.server_encrypted) << "CallContext::encrypted() false on the server";
  }
}

TEST_F(Encryption, ModeMatrixNegotiatesOrRefusesClearly) {
  using M = EncryptionMode;
  const auto expect = [&](M server, M client, std::optional<ClientError> err, bool encrypted) {
    start_server(server, true);
    auto r = run_calls(server_->path(), client_opts(client, false), {"x"});
    if (err) {
      EXPECT_EQ(r.connect_ec, make_error_code(*err)) << int(server) << "/" << int(client) << ": " << r.connect_ec.message();
    } else {
      ASSERT_FALSE(r.connect_ec) << int(server) << "/" << int(client) << ": " << r.connect_ec.message();
      EXPECT_FALSE(r.ecs[0]);
      EXPECT_EQ(r.client_encrypted, encrypted);
      EXPECT_EQ(r.server_encrypted, encrypted);
    }
    wait_idle();
  };
  expect(M::off, M::off, {}, false);
  expect(M::off, M::optional, {}, false);
  expect(M::off, M::required, ClientError::encryption_unavailable, false);
  expect(M::optional, M::off, {}, false);
  expect(M::optional, M::optional, {}, true);
  expect(M::optional, M::required, {}, true);
  expect(M::required, M::off, ClientError::encryption_required_by_server, false);
  expect(M::required, M::optional, {}, true);
  expect(M::required, M::required, {}, true);
  // A pinned key implies "required": no silent plaintext fallback.
  start_server(M::off, true);
  auto r = run_calls(server_->path(), client_opts(M::optional, true), {"x"});
  EXPECT_EQ(r.connect_ec, make_error_code(ClientError::encryption_unavailable));
  start_server(M::required, true);
}

TEST_F(Encryption, DowngradeByAPlaintextClientIsRefused) {
  // R10: the server requires encryption; a raw client skips the handshake and sends a request.
  auto f = frame(wire::FrameType::request, 16);
  expect_goodbye(f, "encryption required by server");
  EXPECT_TRUE(audited("handshake", false, "encryption required"));
  EXPECT_EQ(service().calls_started.load(), 0);
}

TEST_F(Encryption, HandshakeMessageOfTheWrongSizeIsRefused) {
  for (std::size_t n : {std::size_t{0}, std::size_t{32}, std::size_t{40}, std::size_t{50}, std::size_t{4096}}) {
    auto f = frame(wire::FrameType::handshake_client, n);
    if (n > 0) f[32] = std::byte{2};
    expect_goodbye(f, "handshake failed");
  }
  EXPECT_TRUE(audited("handshake", false, "handshake failed"));
}

TEST_F(Encryption, EncryptedFlagOnAPlaintextConnectionIsRefused) {
  start_server(EncryptionMode::optional, true);
  expect_goodbye(frame(wire::FrameType::request, 32, wire::kFlagEncrypted), "encrypted frame on a plaintext connection");
}

TEST_F(Encryption, WrongPinnedKeyFailsOnBothEnds) {
  const std::string other_sk = keydir_ + "/other.key", other_pk = keydir_ + "/other.pub";
  (void)keygen(other_sk, other_pk);
  auto opts = client_opts();
  opts.pinned_server_key_file = other_pk;
  auto r = run_calls(server_->path(), opts, {"x"});
  EXPECT_EQ(r.connect_ec, make_error_code(ClientError::handshake_failed)) << r.connect_ec.message();
  EXPECT_TRUE(audited("handshake", false, "handshake failed"));
  // A server that has no static key cannot prove any pin.
  start_server(EncryptionMode::required, false);
  r = run_calls(server_->path(), client_opts(), {"x"});
  EXPECT_EQ(r.connect_ec, make_error_code(ClientError::handshake_failed));
  // An unsafe pin file is refused before any byte is sent.
  ASSERT_EQ(::chmod(pub_.c_str(), 0666), 0);
  r = run_calls(server_->path(), client_opts(), {"x"});
  EXPECT_EQ(r.connect_ec, make_error_code(ClientError::bad_key_file));
  ASSERT_EQ(::chmod(pub_.c_str(), 0640), 0);
  start_server(EncryptionMode::required, true);
}

TEST_F(Encryption, ProxyTamperingWithARequestEndsTheConnectionBeforeAnyHandler) {
  using Mode = Proxy::Mode;
  struct Case {
    Mode mode;
    const char* name;
    bool integrity;  // the server reports an authentication failure (not a framing one)
  };
  for (const Case c : {Case{Mode::flip_payload, "flipped ciphertext bit", true}, Case{Mode::flip_header, "flipped header bit", true},
                       Case{Mode::flip_tag, "flipped tag bit", true}, Case{Mode::swap, "two frames swapped", true},
                       Case{Mode::drop, "frame dropped", true}, Case{Mode::truncate, "frame truncated", false}}) {
    SCOPED_TRACE(c.name);
    const int started = service().calls_started.load();
    const auto integrity_before = [&] {
      int n = 0;
      for (const auto& r : server_->audit().records()) n += r.event == "integrity";
      return n;
    }();
    {
      Proxy proxy(server_->path(), true, 1, c.mode);  // frame 0 is handshake_client, 1 the first request
      auto r = run_calls(proxy.path(), client_opts(), {"first", "second"}, 1);  // method 1 counts handler starts
      ASSERT_FALSE(r.connect_ec) << r.connect_ec.message();
      EXPECT_TRUE(r.ecs[0] && r.ecs[1]) << "a tampered call succeeded";
      wait_idle();
    }
    EXPECT_EQ(service().calls_started.load(), started) << "a handler ran on a tampered stream";
    if (c.integrity) {
      int n = integrity_before;
      for (int i = 0; i < 100 && n == integrity_before; ++i, ::usleep(10'000)) {
        n = 0;
        for (const auto& r : server_->audit().records()) n += r.event == "integrity";
      }
      EXPECT_EQ(n, integrity_before + 1) << "no integrity audit record";
    }
  }
}

TEST_F(Encryption, ReplayedRequestIsRejectedAfterTheOriginal) {
  const int started = service().calls_started.load();
  {
    Proxy proxy(server_->path(), true, 1, Proxy::Mode::replay);
    auto r = run_calls(proxy.path(), client_opts(), {"once"}, 1);
    ASSERT_FALSE(r.connect_ec);
    wait_idle();
  }
  EXPECT_LE(service().calls_started.load(), started + 1) << "the replayed copy reached a handler";
  EXPECT_TRUE(audited("integrity", false, "frame failed authentication"));
}

TEST_F(Encryption, TamperedReplyIsAnIntegrityErrorOnTheClient) {
  // Server-to-client frames: 0 HELLO, 1 handshake_server, 2 the first response.
  for (auto mode : {Proxy::Mode::flip_payload, Proxy::Mode::flip_header, Proxy::Mode::flip_tag}) {
    Proxy proxy(server_->path(), false, 2, mode);
    auto r = run_calls(proxy.path(), client_opts(), {"reply"});
    ASSERT_FALSE(r.connect_ec);
    EXPECT_EQ(r.ecs[0], make_error_code(ClientError::integrity_error)) << r.ecs[0].message();
    wait_idle();
  }
  {  // a tampered handshake reply fails the handshake
    Proxy proxy(server_->path(), false, 1, Proxy::Mode::flip_payload);
    auto r = run_calls(proxy.path(), client_opts(), {"reply"});
    EXPECT_EQ(r.connect_ec, make_error_code(ClientError::handshake_failed)) << r.connect_ec.message();
    wait_idle();
  }
}

TEST_F(Encryption, SamePlaintextOnTwoConnectionsGivesDifferentCiphertexts) {
  // C1, black box: static keys are the same on both connections; ciphertexts must differ.
  std::vector<std::vector<char>> requests;
  for (int i = 0; i < 2; ++i) {
    Proxy proxy(server_->path(), true, -1, Proxy::Mode::pass);
    auto r = run_calls(proxy.path(), client_opts(), {"identical plaintext"});
    ASSERT_FALSE(r.connect_ec);
    ASSERT_FALSE(r.ecs[0]);
    auto frames = proxy.client_frames();
    ASSERT_GE(frames.size(), 2u);
    requests.push_back(frames[1]);
    wait_idle();
  }
  ASSERT_EQ(requests[0].size(), requests[1].size());
  EXPECT_NE(requests[0], requests[1]);
  EXPECT_TRUE(static_cast<std::uint8_t>(requests[0][7]) & wire::kFlagEncrypted);
  const std::string needle = "identical plaintext";
  EXPECT_EQ(std::string(requests[0].begin(), requests[0].end()).find(needle), std::string::npos) << "plaintext on the wire";
}

TEST_F(Encryption, NoKeyBytesInAuditRecordsOrErrorMessages) {
  std::vector<std::string> texts;
  // Provoke every failure path that produces text: wrong pin, tampering, bad handshake, downgrade.
  const std::string other_sk = keydir_ + "/other.key", other_pk = keydir_ + "/other.pub";
  (void)keygen(other_sk, other_pk);
  auto opts = client_opts();
  opts.pinned_server_key_file = other_pk;
  auto r = run_calls(server_->path(), opts, {"x"});
  texts.push_back(r.connect_ec.message());
  {
    Proxy proxy(server_->path(), false, 2, Proxy::Mode::flip_payload);
    r = run_calls(proxy.path(), client_opts(), {"x"});
    texts.push_back(r.ecs[0].message());
    wait_idle();
  }
  texts.push_back(expect_goodbye(frame(wire::FrameType::handshake_client, 7), "handshake failed"));
  texts.push_back(expect_goodbye(frame(wire::FrameType::request, 8), "encryption required"));
  try {
    ::chmod(secret_.c_str(), 0644);
    ServerOptions o;
    o.static_key_file = secret_;
    TestServer bad(listen_private(), o);
    ADD_FAILURE() << "server started with a world-readable secret key";
  } catch (const KeyError& e) {
    texts.push_back(e.what());
  }
  ::chmod(secret_.c_str(), 0600);
  for (const auto& rec : server_->audit().records()) {
    texts.push_back(rec.event);
    texts.push_back(rec.method);
    texts.push_back(rec.reason);
  }
  std::string upper = secret_hex_;
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  std::string raw(32, '\0');
  for (int i = 0; i < 32; ++i) raw[i] = static_cast<char>(std::stoi(secret_hex_.substr(2 * i, 2), nullptr, 16));
  ASSERT_EQ(secret_hex_.size(), 64u);
  for (const auto& t : texts) {
    for (const std::string& needle : {secret_hex_, upper, secret_hex_.substr(0, 16), upper.substr(0, 16), raw, raw.substr(0, 8)})
      EXPECT_EQ(t.find(needle), std::string::npos) << "key bytes in: " << t;
  }
  EXPECT_GE(texts.size(), 8u);
}
