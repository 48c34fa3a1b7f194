// Generated services and clients over a real socket (sealrpc::Server + sealrpc::Client):
// every client overload kind, each completion token kind, inherited methods under the
// parent's id, the UNIMPLEMENTED default and an annotated rule being enforced.
#include "all_types.capnp.sealrpc.h"
#include "imported.capnp.sealrpc.h"

#include <sealrpc/endpoint.hpp>
#include <sealrpc/server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

namespace {

namespace all = sealrpc_test::all;
namespace imp = sealrpc_test::imported;
namespace asio = boost::asio;
using asio::use_awaitable;
using asio::use_future;
using sealrpc::Status;

class ScalarsImpl final : public all::ScalarsService {
 public:
  asio::awaitable<Status> primitives(sealrpc::CallContext&, all::Scalars::PrimitivesParams::Reader p,
                                     all::Scalars::PrimitivesResults::Builder r) override {
    r.setB(!p.getB());
    r.setI8(static_cast<std::int8_t>(p.getI8() + 1));
    r.setI16(static_cast<std::int16_t>(p.getI16() + 1));
    r.setI32(p.getI32() + 1);
    r.setI64(p.getI64() + 1);
    r.setU8(static_cast<std::uint8_t>(p.getU8() + 1));
    r.setU16(static_cast<std::uint16_t>(p.getU16() + 1));
    r.setU32(p.getU32() + 1);
    r.setU64(p.getU64() + 1);
    r.setF32(p.getF32() * 2);
    r.setF64(p.getF64() * 2);
    r.setText(p.getText());
    r.setData(p.getData());
    r.setColor(p.getColor());
    co_return Status::ok();
  }
  asio::awaitable<Status> no_params(sealrpc::CallContext&, all::Scalars::NoParamsParams::Reader,
                                    all::Scalars::NoParamsResults::Builder r) override {
    r.setX(7);
    co_return Status::ok();
  }
};

class CompositeImpl final : public all::CompositeService {
 public:
  asio::awaitable<Status> lists(sealrpc::CallContext&, all::Composite::ListsParams::Reader p,
                                all::Composite::ListsResults::Builder r) override {
    r.setInts(p.getInts());
    r.setTexts(p.getTexts());
    r.setPoints(p.getPoints());
    r.setMatrix(p.getMatrix());
    co_return Status::ok();
  }
};

class MultiImpl final : public all::MultiService {
 public:
  asio::awaitable<Status> own(sealrpc::CallContext&, all::Multi::OwnParams::Reader,
                              all::Multi::OwnResults::Builder) override {
    co_return Status::ok();
  }
  asio::awaitable<Status> base_get(sealrpc::CallContext& ctx, imp::Base::GetParams::Reader p,
                                   imp::Base::GetResults::Builder r) override {
    EXPECT_EQ(ctx.method().id.interface_id, capnp::typeId<imp::Base>());
    r.setValue(p.getKey().asBytes());
    co_return Status::ok();
  }
};

class Roundtrip : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<sealrpc::Server>(server_io_.get_executor(), sealrpc::listen_private("codegen-test"));
    server_->add_service(std::make_shared<ScalarsImpl>());
    server_->add_service(std::make_shared<CompositeImpl>());
    server_->add_service(std::make_shared<MultiImpl>());
    server_->add_service(std::make_shared<all::OuterInnerService>());
    server_->start();
    server_thread_ = std::thread([this] { server_io_.run(); });
    client_thread_ = std::thread([this] { client_io_.run(); });
    client_ = sealrpc::Client::async_connect(client_io_.get_executor(), server_->path(), {}, use_future).get();
  }
  void TearDown() override {
    client_.close();
    server_->stop();
    server_work_.reset();
    client_work_.reset();
    server_io_.stop();
    client_io_.stop();
    server_thread_.join();
    client_thread_.join();
  }

  // The error code a callback-token call completes with.
  template <typename Call>
  boost::system::error_code error_of(Call&& call) {
    std::promise<boost::system::error_code> done;
    call([&](boost::system::error_code ec, auto) { done.set_value(ec); });
    return done.get_future().get();
  }

  asio::io_context server_io_;
  asio::io_context client_io_;
  asio::executor_work_guard<asio::io_context::executor_type> server_work_{server_io_.get_executor()};
  asio::executor_work_guard<asio::io_context::executor_type> client_work_{client_io_.get_executor()};
  std::unique_ptr<sealrpc::Server> server_;
  std::thread server_thread_;
  std::thread client_thread_;
  sealrpc::Client client_;
};

TEST_F(Roundtrip, FieldByFieldOverloadWithFuture) {
  all::ScalarsClient c(client_);
  const kj::byte bytes[] = {9, 8, 7};
  auto reply = c.async_primitives(true, -8, -16, -32, -64, 8, 16, 32, 64, 1.5f, 2.5, std::string("text"),
                                  kj::arrayPtr(bytes, 3), all::Color::GREEN, use_future)
                   .get();
  auto r = reply.get();
  EXPECT_FALSE(r.getB());
  EXPECT_EQ(r.getI8(), -7);
  EXPECT_EQ(r.getI16(), -15);
  EXPECT_EQ(r.getI32(), -31);
  EXPECT_EQ(r.getI64(), -63);
  EXPECT_EQ(r.getU8(), 9);
  EXPECT_EQ(r.getU16(), 17);
  EXPECT_EQ(r.getU32(), 33u);
  EXPECT_EQ(r.getU64(), 65u);
  EXPECT_EQ(r.getF32(), 3.0f);
  EXPECT_EQ(r.getF64(), 5.0);
  EXPECT_EQ(std::string(r.getText().cStr()), "text");
  ASSERT_EQ(r.getData().size(), 3u);
  EXPECT_EQ(r.getData()[2], 7);
  EXPECT_EQ(r.getColor(), all::Color::GREEN);
}

TEST_F(Roundtrip, RequestFormWithAwaitable) {
  all::ScalarsClient c(client_);
  auto x = asio::co_spawn(
               client_io_,
               [&]() -> asio::awaitable<std::int32_t> {
                 auto req = c.no_params_request();
                 req.timeout = std::chrono::seconds(5);
                 auto reply = co_await c.async_no_params(std::move(req), use_awaitable);
                 co_return reply.get().getX();
               },
               use_future)
               .get();
  EXPECT_EQ(x, 7);
}

TEST_F(Roundtrip, ReaderOverloadCopiesNonScalarParams) {
  all::CompositeClient c(client_);
  capnp::MallocMessageBuilder msg;
  auto p = msg.initRoot<all::Composite::ListsParams>();
  auto ints = p.initInts(3);
  for (unsigned i = 0; i < 3; ++i) ints.set(i, static_cast<std::int32_t>(i * 10));
  auto texts = p.initTexts(2);
  texts.set(0, "a");
  texts.set(1, "bc");
  p.initPoints(1)[0].setY(4);
  p.initMatrix(1).init(0, 2).set(1, 0.5);
  auto reply = c.async_lists(p.asReader(), use_future).get();
  auto r = reply.get();
  ASSERT_EQ(r.getInts().size(), 3u);
  EXPECT_EQ(r.getInts()[2], 20);
  EXPECT_EQ(std::string(r.getTexts()[1].cStr()), "bc");
  EXPECT_EQ(r.getPoints()[0].getY(), 4);
  EXPECT_EQ(r.getMatrix()[0][1], 0.5);
}

TEST_F(Roundtrip, DefaultHandlerAnswersUnimplementedToCallback) {
  all::ScalarsClient c(client_);
  const auto ec = error_of([&](auto handler) { c.async_empty(handler); });
  EXPECT_EQ(ec, sealrpc::StatusCode::unimplemented);
}

TEST_F(Roundtrip, InheritedMethodsUseTheParentInterfaceId) {
  all::MultiClient c(client_);
  auto reply = c.async_base_get(std::string("key"), use_future).get();
  auto value = reply.get().getValue();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(value.begin()), value.size()), "key");
  c.async_own(use_future).get();
  const auto ec = error_of([&](auto handler) { c.async_ping(handler); });
  EXPECT_EQ(ec, sealrpc::StatusCode::unimplemented);
}

TEST_F(Roundtrip, AnnotatedRuleIsEnforced) {
  if (::geteuid() == 1) GTEST_SKIP() << "running as daemon: Outer.Inner allows us";
  all::OuterInnerClient c(client_);  // users = ["daemon"] only
  const auto ec = error_of([&](auto handler) { c.async_get("key", handler); });
  EXPECT_EQ(ec, sealrpc::StatusCode::permission_denied);
}

}  // namespace
