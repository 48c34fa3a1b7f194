// Policy file reload: decisions change without dropping connections; a malformed file
// is refused with its line and the old policy stays.
#include "sealrpc/client.hpp"
#include "sealrpc/endpoint.hpp"

#include "support/test_service.hpp"
#include "support/test_util.hpp"
#include "support/testsvc.capnp.h"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <fstream>

using namespace sealrpc;
using testsvc::EchoParams;
using testsvc::EchoResults;
using testsvc::Nested;
using namespace testutil;
namespace asio = boost::asio;

TEST(PolicyReload, ChangesDecisionsWithoutDroppingConnectionsAndKeepsOldPolicyOnError) {
  char dir[] = "/tmp/sealrpc-policy-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  const std::string file = std::string(dir) + "/test.policy";
  std::ofstream(file) << "method Test.nobody same-user\n";
  ServerOptions o;
  o.policy_file = file;
  TestServer s(listen_private(), o);

  asio::io_context io;
  Client client;
  Client::async_connect(io.get_executor(), s.path(), {}, [&](boost::system::error_code ec, Client c) {
    ASSERT_FALSE(ec);
    client = c;
  });
  for (int i = 0; i < 500 && !client.is_open(); ++i) io.run_one_for(std::chrono::milliseconds(10));
  io.restart();
  auto call = [&](std::uint16_t ord) {
    boost::system::error_code out;
    bool done = false;
    Request<EchoParams> req;
    client.async_call<EchoResults>({testsvc::kTestInterface, ord}, std::move(req),
                                   [&](boost::system::error_code ec, Response<EchoResults>) { out = ec; done = true; });
    for (int i = 0; i < 500 && !done; ++i) io.run_one_for(std::chrono::milliseconds(10));
    io.restart();
    return out;
  };
  EXPECT_FALSE(call(5)) << "the file granted Test.nobody to the same user";

  std::ofstream(file, std::ios::trunc) << "interface Test nobody\n";
  EXPECT_EQ(s.server().reload_policy(), std::nullopt);
  EXPECT_EQ(call(5), make_error_code(StatusCode::permission_denied));
  EXPECT_EQ(call(0), make_error_code(StatusCode::permission_denied)) << "interface line applies to every method";

  std::ofstream(file, std::ios::trunc) << "method Test.echo same-user\n\nmethod Test.echo uids=abc\n";
  auto err = s.server().reload_policy();
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->find("test.policy:3"), std::string::npos) << *err;
  EXPECT_EQ(call(0), make_error_code(StatusCode::permission_denied)) << "old policy must stay";

  std::ofstream(file, std::ios::trunc) << "method Test.nosuchmethod root\n";
  err = s.server().reload_policy();
  ASSERT_TRUE(err.has_value());
  EXPECT_NE(err->find("unknown method"), std::string::npos) << *err;

  EXPECT_TRUE(client.is_open()) << "reload must not drop connections";
  client.close();
  io.run_for(std::chrono::milliseconds(100));
  ::unlink(file.c_str());
  ::rmdir(dir);
}
