// The opt-in low-latency event loop (sealrpc::BusyPoller): real server and client over
// a real socket, each event loop run by a BusyPoller; and the spin budget's adaptation,
// driven by real timers (no timing thresholds: only which way the budget moves).
#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"

#include <sealrpc/busy_poll.hpp>
#include <sealrpc/client.hpp>
#include <sealrpc/endpoint.hpp>
#include <sealrpc/server.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <gtest/gtest.h>

#include <thread>

using namespace sealrpc;
using namespace std::chrono_literals;
namespace asio = boost::asio;

using testsvc::make_req;

TEST(BusyPoll, ServerAndClientInBusyPollersServeCallsAndStop) {
  asio::io_context server_io(1);
  ServerOptions so;
  so.single_threaded = true;
  auto server = std::make_unique<Server>(server_io.get_executor(), listen_private("sealrpc-busypoll"), so);
  server->add_service(std::make_shared<testsvc::TestService>());
  server->start();
  std::size_t server_handlers = 0;
  std::thread t([&] { server_handlers = BusyPoller(server_io, {200us}).run(); });

  asio::io_context io(1);
  BusyPoller poller(io, {200us});
  ClientOptions co;
  co.single_threaded = true;  // this thread is the only one running `io`
  Client client;
  bool connected = false;
  Client::async_connect(io.get_executor(), server->path(), co, [&](boost::system::error_code ec, Client c) {
    ASSERT_FALSE(ec) << ec.message();
    client = std::move(c);
    connected = true;
  });
  ASSERT_TRUE(poller.run_until([&] { return connected; }));
  for (int i = 0; i < 200; ++i) {
    bool done = false;
    std::string got;
    const std::string want = "call-" + std::to_string(i);
    client.async_call<testsvc::EchoResults>({testsvc::kTestInterface, 0}, make_req(want),
                                            [&](boost::system::error_code ec, Response<testsvc::EchoResults> r) {
                                              EXPECT_FALSE(ec) << ec.message();
                                              if (!ec) {
                                                auto d = r.get().getData();
                                                got.assign(reinterpret_cast<const char*>(d.begin()), d.size());
                                              }
                                              done = true;
                                            });
    ASSERT_TRUE(poller.run_until([&] { return done; }));
    ASSERT_EQ(got, want);
  }
  client.close();
  io.poll();
  // stop() closes the listener and every connection: the server's loop runs out of
  // work and BusyPoller::run() returns, like io_context::run() would.
  asio::post(server_io, [&] { server->stop(); });
  t.join();
  EXPECT_GT(server_handlers, 200u);
}

TEST(BusyPoll, SpinShrinksWhileIdleAndComesBackWithFastTraffic) {
  asio::io_context io(1);
  auto guard = asio::make_work_guard(io);
  constexpr auto kMax = 200us;
  BusyPoller poller(io, {kMax});
  EXPECT_EQ(poller.budget(), kMax);
  // Events 5 ms apart, far longer than the spin: every spin misses and halves the
  // budget, and the long sleep does not restore it.
  asio::steady_timer timer(io);
  auto previous = poller.budget();
  int rounds = 0;
  while (poller.budget() > 0ns && rounds < 20) {
    bool fired = false;
    timer.expires_after(5ms);
    timer.async_wait([&](boost::system::error_code) { fired = true; });
    ASSERT_TRUE(poller.run_until([&] { return fired; }));
    EXPECT_LT(poller.budget(), previous) << "round " << rounds;
    previous = poller.budget();
    ++rounds;
  }
  EXPECT_EQ(poller.budget(), 0ns) << "the spin did not die out while idle";
  EXPECT_LE(rounds, 9);  // 200 µs halved to below 1 µs
  // Work that is ready at once (a wake-up well within max_spin): full spin again.
  bool ran = false;
  asio::post(io, [&] { ran = true; });
  ASSERT_EQ(poller.run_one(), 1u);
  EXPECT_TRUE(ran);
  EXPECT_EQ(poller.budget(), kMax);
  // A handler found while spinning keeps it at the maximum.
  asio::post(io, [] {});
  ASSERT_EQ(poller.run_one(), 1u);
  EXPECT_EQ(poller.budget(), kMax);
  // Stopped: run_one returns 0 at once instead of spinning or blocking.
  io.stop();
  EXPECT_EQ(poller.run_one(), 0u);
}
