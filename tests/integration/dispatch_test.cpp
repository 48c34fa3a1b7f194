// Dispatch: concurrency, out-of-order completion, deadlines, cancellation, exceptions,
// and the completion tokens users will pick (callbacks, use_future, use_awaitable).
#include "sealrpc/client.hpp"
#include "sealrpc/endpoint.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gtest/gtest.h>

#include <functional>
#include <future>

using namespace sealrpc;
using testsvc::EchoParams;
using testsvc::EchoResults;
using testsvc::data_of;
using testsvc::make_req;
using testsvc::Nested;
using namespace testutil;
namespace asio = boost::asio;

namespace {

class Dispatch : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TestServer>(listen_private(), server_options());
    Client::async_connect(io_.get_executor(), server_->path(), client_options(), [&](boost::system::error_code ec, Client c) {
      ASSERT_FALSE(ec) << ec.message();
      client_ = c;
    });
    run_until([&] { return client_.is_open(); });
    ASSERT_TRUE(client_.is_open());
  }
  // Runs the client's io_context until `done` or the time limit; the connection's
  // reader keeps the context busy, so plain run() would never return.
  void run_until(const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(5)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) {
      io_.run_one_for(std::chrono::milliseconds(10));
    }
    io_.restart();
  }
  void TearDown() override {
    client_.close();
    run_until([] { return false; }, std::chrono::seconds(0));
    io_.run_for(std::chrono::milliseconds(100));
  }
  testsvc::TestService& svc() { return static_cast<testsvc::TestService&>(*server_->service); }
  virtual ServerOptions server_options() { return {}; }
  virtual ClientOptions client_options() { return {}; }

  std::unique_ptr<TestServer> server_;
  asio::io_context io_;
  Client client_;
};

// TestServer runs its io_context on one thread: connections may skip their strands.
// The test thread is the only one running io_: the client may skip its strand too
// (ClientOptions::single_threaded: calls start inside async_call, replies complete
// inline from the read loop).
class DispatchSingleThreaded : public Dispatch {
 protected:
  ServerOptions server_options() override {
    ServerOptions o;
    o.single_threaded = true;
    return o;
  }
  ClientOptions client_options() override {
    ClientOptions o;
    o.single_threaded = true;
    return o;
  }
};

}  // namespace

TEST_F(DispatchSingleThreaded, ConcurrentCallsDeadlinesAndCancellationWork) {
  int fast = 0;
  bool slow_done = false;
  boost::system::error_code slow, timed_out;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, make_req("slow", 300),
                                  [&](boost::system::error_code ec, Response<EchoResults>) { slow = ec; slow_done = true; });
  auto req = make_req("x", 5000);
  req.timeout = std::chrono::milliseconds(100);
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, std::move(req),
                                  [&](boost::system::error_code ec, Response<EchoResults>) { timed_out = ec; });
  for (int i = 0; i < 50; ++i)
    client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("fast"),
                                    [&](boost::system::error_code ec, Response<EchoResults> r) {
                                      ASSERT_FALSE(ec) << ec.message();
                                      EXPECT_EQ(data_of(r), "fast");
                                      ++fast;
                                    });
  run_until([&] { return fast == 50 && bool(timed_out) && slow_done; });
  EXPECT_EQ(fast, 50);
  EXPECT_EQ(timed_out, make_error_code(StatusCode::deadline_exceeded));
  EXPECT_TRUE(slow_done);
  EXPECT_FALSE(slow) << slow.message();
  for (int i = 0; i < 200 && svc().cancellations_seen == 0; ++i) ::usleep(10'000);
  EXPECT_EQ(svc().cancellations_seen.load(), 1) << "the server did not cancel the handler at the deadline";
}

TEST_F(Dispatch, ManyConcurrentCallsOnOneConnectionCompleteOutOfOrder) {
  std::vector<std::string> order;
  // A slow call first, then fast ones: the fast ones must not wait for it.
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, make_req("slow", 300),
                                  [&](boost::system::error_code ec, Response<EchoResults> r) {
                                    ASSERT_FALSE(ec) << ec.message();
                                    order.push_back(data_of(r));
                                  });
  for (int i = 0; i < 200; ++i)
    client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("fast" + std::to_string(i)),
                                    [&, i](boost::system::error_code ec, Response<EchoResults> r) {
                                      ASSERT_FALSE(ec) << ec.message();
                                      EXPECT_EQ(data_of(r), "fast" + std::to_string(i));
                                      order.push_back("fast");
                                    });
  run_until([&] { return order.size() == 201; });
  ASSERT_EQ(order.size(), 201u);
  EXPECT_EQ(order.back(), "slow");
  EXPECT_EQ(order.front(), "fast");
}

TEST_F(Dispatch, DeadlineExpiryIsDeadlineExceededAndTheHandlerIsCancelled) {
  boost::system::error_code got;
  auto req = make_req("x", 5000);
  req.timeout = std::chrono::milliseconds(100);
  const auto t0 = std::chrono::steady_clock::now();
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, std::move(req),
                                  [&](boost::system::error_code ec, Response<EchoResults>) { got = ec; });
  run_until([&] { return bool(got); });
  EXPECT_EQ(got, make_error_code(StatusCode::deadline_exceeded));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  for (int i = 0; i < 200 && svc().cancellations_seen == 0; ++i) ::usleep(10'000);
  EXPECT_EQ(svc().cancellations_seen.load(), 1) << "the server did not cancel the handler at the deadline";
}

TEST_F(Dispatch, ClientCancellationReachesTheHandler) {
  asio::cancellation_signal sig;
  boost::system::error_code got;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, make_req("x", 10'000),
                                  asio::bind_cancellation_slot(sig.slot(), [&](boost::system::error_code ec, Response<EchoResults>) {
                                    got = ec;
                                  }));
  // Cancel once the server has started the handler.
  asio::steady_timer t(io_);
  std::function<void()> poll = [&] {
    if (svc().calls_started > 0) { sig.emit(asio::cancellation_type::terminal); return; }
    t.expires_after(std::chrono::milliseconds(5));
    t.async_wait([&](auto) { poll(); });
  };
  poll();
  run_until([&] { return bool(got); });
  EXPECT_EQ(got, make_error_code(StatusCode::cancelled));
  for (int i = 0; i < 200 && svc().cancellations_seen == 0; ++i) ::usleep(10'000);
  EXPECT_EQ(svc().cancellations_seen.load(), 1);
}

TEST_F(Dispatch, HandlerExceptionBecomesInternalWithoutItsText) {
  boost::system::error_code got;
  std::string msg;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 2}, make_req("x"),
                                  [&](boost::system::error_code ec, Response<EchoResults> r) {
                                    got = ec;
                                    msg = r.status().message;
                                  });
  run_until([&] { return bool(got); });
  EXPECT_EQ(got, make_error_code(StatusCode::internal));
  EXPECT_EQ(msg.find("secret-detail"), std::string::npos) << msg;
  for (const auto& r : server_->audit().records()) EXPECT_EQ(r.reason.find("secret-detail"), std::string::npos);
}

TEST_F(Dispatch, DeniedMethodIsPermissionDeniedAndOtherMethodsKeepWorking) {
  boost::system::error_code denied, ok;
  int done = 0;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 5}, make_req("x"),
                                  [&](boost::system::error_code ec, Response<EchoResults>) { denied = ec; ++done; });
  client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("x"),
                                  [&](boost::system::error_code ec, Response<EchoResults>) { ok = ec; ++done; });
  run_until([&] { return done == 2; });
  EXPECT_EQ(denied, make_error_code(StatusCode::permission_denied));
  EXPECT_FALSE(ok);
  EXPECT_TRUE(server_->audit().has("call", false, ::geteuid(), "Test.nobody"));
}

TEST_F(Dispatch, UseFutureAndUseAwaitableWork) {
  std::thread runner([&] {
    auto guard = asio::make_work_guard(io_);
    io_.run_for(std::chrono::seconds(5));
  });
  auto fut = client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("future"), asio::use_future);
  auto r = fut.get();
  EXPECT_EQ(data_of(r), "future");
  std::promise<std::string> p;
  asio::co_spawn(io_, [&]() -> asio::awaitable<void> {
    auto res = co_await client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("awaitable"), asio::use_awaitable);
    p.set_value(data_of(res));
  }, asio::detached);
  EXPECT_EQ(p.get_future().get(), "awaitable");
  // use_awaitable turns an error status into an exception carrying the code.
  std::promise<boost::system::error_code> e;
  asio::co_spawn(io_, [&]() -> asio::awaitable<void> {
    try {
      co_await client_.async_call<EchoResults>({testsvc::kTestInterface, 5}, make_req("x"), asio::use_awaitable);
      e.set_value({});
    } catch (const boost::system::system_error& ex) {
      e.set_value(ex.code());
    }
  }, asio::detached);
  EXPECT_EQ(e.get_future().get(), make_error_code(StatusCode::permission_denied));
  io_.stop();
  runner.join();
  io_.restart();
}

TEST_F(DispatchSingleThreaded, ClientCancellationAndOutOfOrderCompletionWork) {
  asio::cancellation_signal cancel;
  boost::system::error_code cancelled;
  std::vector<std::string> order;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, make_req("slow", 5000),
                                  asio::bind_cancellation_slot(cancel.slot(), [&](boost::system::error_code ec, Response<EchoResults>) {
                                    cancelled = ec;
                                  }));
  client_.async_call<EchoResults>({testsvc::kTestInterface, 1}, make_req("later", 200),
                                  [&](boost::system::error_code ec, Response<EchoResults> r) {
                                    ASSERT_FALSE(ec) << ec.message();
                                    order.push_back(data_of(r));
                                  });
  for (int i = 0; i < 20; ++i)
    client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("fast"),
                                    [&](boost::system::error_code ec, Response<EchoResults> r) {
                                      ASSERT_FALSE(ec) << ec.message();
                                      order.push_back(data_of(r));
                                    });
  run_until([&] { return order.size() == 20; });
  cancel.emit(asio::cancellation_type::terminal);
  run_until([&] { return bool(cancelled) && order.size() == 21; });
  EXPECT_EQ(cancelled, make_error_code(StatusCode::cancelled));
  ASSERT_EQ(order.size(), 21u);
  EXPECT_EQ(order.back(), "later");
  for (int i = 0; i < 200 && svc().cancellations_seen == 0; ++i) ::usleep(10'000);
  EXPECT_EQ(svc().cancellations_seen.load(), 1) << "the cancel did not reach the handler";
}

TEST_F(DispatchSingleThreaded, CallOnAClosedConnectionCompletesLaterNotInsideAsyncCall) {
  client_.close();
  run_until([&] { return !client_.is_open(); });
  bool inside = true, done = false;
  boost::system::error_code got;
  client_.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("x"),
                                  [&](boost::system::error_code ec, Response<EchoResults>) {
                                    EXPECT_FALSE(inside) << "handler ran inside the initiating call";
                                    got = ec;
                                    done = true;
                                  });
  inside = false;
  EXPECT_FALSE(done);
  run_until([&] { return done; });
  EXPECT_EQ(got, make_error_code(ClientError::connection_closed));
}

// The client's read loop parks on a readiness wait of its own, outside any Asio queue.
// When the client's io_context is destroyed with the connection still open, that wait
// is destroyed unrun and must take the parked loop with it: otherwise the loop's frames
// keep the connection (and its socket) alive forever. With and without a strand; every
// fd the clients had must be closed afterwards, and the server sees both go.
TEST(ClientShutdown, DestroyingTheIoContextFreesAParkedReadLoop) {
  TestServer s(listen_private());
  ASSERT_FALSE(call_once(s.path(), 0).ec);  // warm-up: lazily created fds exist now
  const auto idle = [&] {
    for (int i = 0; i < 300 && s.server().connection_count() != 0; ++i) ::usleep(10'000);
    return s.server().connection_count() == 0;
  };
  ASSERT_TRUE(idle());
  const int before = count_fds();
  for (const bool single_threaded : {true, false}) {
    asio::io_context io;
    ClientOptions o;
    o.single_threaded = single_threaded;
    Client c;
    bool replied = false;
    Client::async_connect(io.get_executor(), s.path(), o, [&](boost::system::error_code ec, Client cc) {
      ASSERT_FALSE(ec) << ec.message();
      c = cc;
      c.async_call<EchoResults>({testsvc::kTestInterface, 0}, make_req("x"),
                                [&](boost::system::error_code e, Response<EchoResults>) { replied = !e; });
    });
    for (int i = 0; i < 500 && !replied; ++i) io.run_one_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(replied);
    io.poll();  // the read loop is parked again
    c = Client{};
  }  // io_context destroyed with the connection open
  EXPECT_TRUE(idle()) << "the server still sees a client connection";
  EXPECT_EQ(count_fds(), before) << "a client connection outlived its io_context";
}
