// Synchronous calls (Client::call, the generated <method>(..., ec)): the calling thread
// does the connection's socket I/O itself, with no event loop running. Each test uses a
// real server on a real socket; the io_context is only run to connect (and, where a
// test says so, afterwards).
#include "sealrpc/client.hpp"
#include "sealrpc/endpoint.hpp"

#include "buffers/buffer_service.hpp"
#include "security/crypto.hpp"
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"
#include "transport/frame.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

using namespace sealrpc;
using testsvc::EchoParams;
using testsvc::EchoResults;
using testsvc::data_of;
using testsvc::make_req;
using namespace testutil;
namespace asio = boost::asio;

namespace {

constexpr MethodId kEcho{testsvc::kTestInterface, 0};
constexpr MethodId kSleep{testsvc::kTestInterface, 1};
constexpr MethodId kFail{testsvc::kTestInterface, 2};
constexpr MethodId kNobody{testsvc::kTestInterface, 5};

// Connects on `io`, running it only until the connection is made.
Client connect_to(asio::io_context& io, const std::string& path, ClientOptions o) {
  bool done = false;
  boost::system::error_code ec;
  Client client;
  Client::async_connect(io.get_executor(), path, o, [&](boost::system::error_code e, Client c) {
    ec = e;
    client = std::move(c);
    done = true;
  });
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done && std::chrono::steady_clock::now() < end) io.run_one_for(std::chrono::milliseconds(10));
  io.restart();
  EXPECT_TRUE(done);
  EXPECT_FALSE(ec) << ec.message();
  return client;
}

ClientOptions single_threaded() {
  ClientOptions o;
  o.single_threaded = true;
  return o;
}

class SyncCall : public ::testing::Test {
 protected:
  void SetUp() override {
    buffers_ = std::make_shared<buftest::BufferService>();
    server_ = std::make_unique<TestServer>(listen_private(), ServerOptions{}, std::vector<std::shared_ptr<Service>>{buffers_});
    client_ = connect_to(io_, server_->path(), client_options());
    ASSERT_TRUE(client_.is_open());
  }
  void TearDown() override {
    client_.close();
    io_.restart();
    io_.run_for(std::chrono::milliseconds(50));
  }
  virtual ClientOptions client_options() { return single_threaded(); }
  testsvc::TestService& svc() { return static_cast<testsvc::TestService&>(*server_->service); }

  std::shared_ptr<buftest::BufferService> buffers_;
  std::unique_ptr<TestServer> server_;
  asio::io_context io_;
  Client client_;
};

TEST_F(SyncCall, ReturnsTheResultsAndTheServerSawTheCaller) {
  for (int i = 0; i < 3; ++i) {
    boost::system::error_code ec;
    auto r = client_.call<EchoResults>(kEcho, make_req("ping " + std::to_string(i)), ec);
    ASSERT_FALSE(ec) << ec.message();
    EXPECT_EQ(data_of(r), "ping " + std::to_string(i));
    EXPECT_EQ(r.get().getUid(), ::geteuid());
    EXPECT_EQ(r.get().getPid(), ::getpid());
  }
  EXPECT_EQ(svc().echo_calls.load(), 3);
}

TEST_F(SyncCall, RpcErrorsComeBackAsStatusCodesWithoutTheHandlersText) {
  boost::system::error_code ec;
  auto denied = client_.call<EchoResults>(kNobody, make_req("x"), ec);
  EXPECT_EQ(ec, make_error_code(StatusCode::permission_denied));
  EXPECT_EQ(denied.status().code, StatusCode::permission_denied);
  auto failed = client_.call<EchoResults>(kFail, make_req("x"), ec);
  EXPECT_EQ(ec, make_error_code(StatusCode::internal));
  EXPECT_EQ(failed.status().message.find("secret"), std::string::npos);
  auto ok = client_.call<EchoResults>(kEcho, make_req("still fine"), ec);  // the connection stays usable
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(data_of(ok), "still fine");
}

TEST_F(SyncCall, TheDeadlineEndsTheWaitCancelsTheCallAndTheConnectionStaysUsable) {
  auto req = make_req("slow", 10'000);
  req.timeout = std::chrono::milliseconds(150);
  const auto t0 = std::chrono::steady_clock::now();
  boost::system::error_code ec;
  (void)client_.call<EchoResults>(kSleep, std::move(req), ec);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(ec, make_error_code(StatusCode::deadline_exceeded));
  EXPECT_GE(waited, std::chrono::milliseconds(150));
  EXPECT_LT(waited, std::chrono::seconds(5));
  // The call ends on the server too (our CANCEL, or its own copy of the deadline).
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (svc().cancellations_seen.load() == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(svc().cancellations_seen.load(), 1);
  auto r = client_.call<EchoResults>(kEcho, make_req("after"), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(data_of(r), "after");
}

TEST_F(SyncCall, ARequestLargerThanTheSocketBufferGoesOutInParts) {
  // Inline (no memfd) and four times the default socket buffer: the first sendmsg takes
  // only part of it, and the rest must be sent by the waiting caller itself (nothing
  // runs the event loop's writer).
  ClientOptions o = single_threaded();
  o.out_of_line_threshold = 8u << 20;
  Client big = connect_to(io_, server_->path(), o);
  const std::string data(1u << 20, 'z');
  boost::system::error_code ec;
  auto req = make_req(data);
  req.timeout = std::chrono::seconds(5);  // without the caller's own sending: deadline_exceeded
  auto r = big.call<EchoResults>(kEcho, std::move(req), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(data_of(r), data);
  big.close();
}

TEST_F(SyncCall, RefusedOnAConnectionThatMayRunOnSeveralThreads) {
  ClientOptions o;  // single_threaded = false: the connection has its own strand
  Client shared = connect_to(io_, server_->path(), o);
  boost::system::error_code ec;
  (void)shared.call<EchoResults>(kEcho, make_req("x"), ec);
  EXPECT_EQ(ec, make_error_code(ClientError::blocking_call_not_allowed));
  EXPECT_EQ(svc().echo_calls.load(), 0);  // nothing was sent
  shared.close();
}

TEST_F(SyncCall, RefusedFromInsideTheEventLoop) {
  boost::system::error_code ec;
  bool ran = false;
  asio::post(io_, [&] {
    (void)client_.call<EchoResults>(kEcho, make_req("x"), ec);
    ran = true;
  });
  io_.run_one();
  io_.restart();
  ASSERT_TRUE(ran);
  EXPECT_EQ(ec, make_error_code(ClientError::blocking_call_not_allowed));
  EXPECT_EQ(svc().echo_calls.load(), 0);
}

TEST_F(SyncCall, AReplyToAnAsyncCallTakenMeanwhileCompletesItWhenTheLoopRuns) {
  bool async_done = false;
  std::string async_data;
  client_.async_call<EchoResults>(kEcho, make_req("async"), [&](boost::system::error_code e, Response<EchoResults> r) {
    ASSERT_FALSE(e) << e.message();
    async_data = data_of(r);
    async_done = true;
  });
  boost::system::error_code ec;
  auto r = client_.call<EchoResults>(kSleep, make_req("sync", 50), ec);  // the async reply arrives first
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(data_of(r), "sync");
  EXPECT_FALSE(async_done);  // its handler is queued on the io_context, not run inside call()
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!async_done && std::chrono::steady_clock::now() < end) io_.run_one_for(std::chrono::milliseconds(10));
  io_.restart();
  EXPECT_TRUE(async_done);
  EXPECT_EQ(async_data, "async");
}

TEST_F(SyncCall, TheServerGoingAwayFailsTheCallPromptly) {
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server_.reset();
  });
  boost::system::error_code ec;
  (void)client_.call<EchoResults>(kSleep, make_req("slow", 10'000), ec);
  stopper.join();
  EXPECT_EQ(ec, make_error_code(ClientError::connection_closed));
  EXPECT_FALSE(client_.is_open());
  (void)client_.call<EchoResults>(kEcho, make_req("x"), ec);
  EXPECT_EQ(ec, make_error_code(ClientError::connection_closed));
}

// A buffer from a reply is released when dropped; with no event loop running the
// BUFFER_RELEASE goes out with the next call, and the server wipes the buffer before it
// runs that call.
TEST_F(SyncCall, AReleasedBufferIsWipedByTheServerBeforeTheNextCall) {
  constexpr std::uint64_t kSize = 256 * 1024;
  Request<testsvc::BlobParams> make;
  make.params().setSize(kSize);
  make.params().setSeed(7);
  make.params().setKind(testsvc::BufKind::OWNER_REVOCABLE);
  boost::system::error_code ec;
  UniqueFd server_copy;
  {
    auto r = client_.call<testsvc::BlobResults>({buftest::kBufferInterface, 1}, std::move(make), ec);
    ASSERT_FALSE(ec) << ec.message();
    {
      std::lock_guard lock(buffers_->mu);
      server_copy = UniqueFd(::fcntl(buffers_->last_fd.get(), F_DUPFD_CLOEXEC, 0));
    }
    ASSERT_TRUE(server_copy.valid());
    ReceivedBuffer b = r.buffer(r.get().getBlob());
    EXPECT_TRUE(buftest::matches(b.data(), 7));
  }  // buffer and response dropped: released
  EXPECT_FALSE(buftest::fd_reads_zero(server_copy.get(), kSize));  // nothing sent yet: no loop runs
  auto next = client_.call<EchoResults>(kEcho, make_req("next"), ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(buftest::fd_reads_zero(server_copy.get(), kSize));
}

// A server that breaks the protocol in its reply: the call fails with protocol_error
// and the connection is closed.
TEST(SyncCallHostileServer, AMalformedReplyFailsTheCallAndClosesTheConnection) {
  Listener l = listen_private();
  std::thread fake([&] {
    // The listener is non-blocking: wait for the client's connect, or accept4 may come
    // first and fail with EAGAIN (then the client waits for a HELLO that never comes).
    pollfd p{l.fd(), POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return;
    UniqueFd s(::accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!s.valid()) return;
    std::vector<std::byte> out;
    wire::FrameHeader h;
    h.type = wire::FrameType::hello;
    wire::append_frame(out, h, security::encode_hello_offer({EncryptionMode::off, false}));
    (void)send_with_fds(s.get(), out);
    std::byte in[4096];
    if (::recv(s.get(), in, sizeof in, 0) <= 0) return;  // the request
    out.clear();
    wire::FrameHeader bad;
    bad.type = wire::FrameType::request;  // a server never sends requests
    bad.request_id = 1;
    wire::append_frame(out, bad, {});
    (void)send_with_fds(s.get(), out);
    while (::recv(s.get(), in, sizeof in, 0) > 0) {  // until the client hangs up
    }
  });
  asio::io_context io;
  Client c = connect_to(io, l.path(), single_threaded());
  boost::system::error_code ec;
  (void)c.call<EchoResults>(kEcho, make_req("x"), ec);
  EXPECT_EQ(ec, make_error_code(ClientError::protocol_error));
  EXPECT_FALSE(c.is_open());
  fake.join();
}

}  // namespace
