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
#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <sealrpc/policy_file.hpp>
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

// Copies every field of a struct, whatever its schema: groups and the active union
// member included. The echo handlers below use it, so what comes back is exactly what
// the runtime delivered to the handler.
void copy_struct(capnp::DynamicStruct::Reader src, capnp::DynamicStruct::Builder dst) {
  auto copy_field = [&](capnp::StructSchema::Field f) {
    if (f.getProto().isGroup()) {
      copy_struct(src.get(f).as<capnp::DynamicStruct>(), dst.get(f).as<capnp::DynamicStruct>());
    } else if (src.has(f, capnp::HasMode::NON_DEFAULT) || f.getType().isVoid()) {
      dst.set(f, src.get(f));
    }
  };
  for (auto f : src.getSchema().getNonUnionFields()) copy_field(f);
  KJ_IF_MAYBE(f, src.which()) { copy_field(*f); }
}

template <typename R, typename B>
void echo(R reader, B builder) {
  copy_struct(capnp::toDynamic(reader), capnp::toDynamic(builder));
}

class CompositeImpl final : public all::CompositeService {
 public:
  asio::awaitable<Status> explicit_(sealrpc::CallContext&, all::Everything::Reader p, all::Everything::Builder r) override {
    echo(p, r);
    co_return Status::ok();
  }
  asio::awaitable<Status> with_union(sealrpc::CallContext&, all::Choice::Reader p, all::Choice::Builder r) override {
    echo(p, r);
    co_return Status::ok();
  }
  asio::awaitable<Status> with_group(sealrpc::CallContext&, all::Composite::WithGroupParams::Reader p,
                                     all::Composite::WithGroupResults::Builder r) override {
    echo(p.getEverything(), r.initPair());
    co_return Status::ok();
  }
  asio::awaitable<Status> any_pointer(sealrpc::CallContext&, all::Composite::AnyPointerParams::Reader p,
                                      all::Composite::AnyPointerResults::Builder r) override {
    r.getValue().set(p.getValue());
    co_return Status::ok();
  }
  asio::awaitable<Status> deep(sealrpc::CallContext&, all::Outer::Deeper::Deepest::Reader p,
                               all::Outer::Deeper::Deepest::Builder r) override {
    r.setV(static_cast<std::int8_t>(-p.getV()));
    co_return Status::ok();
  }
  asio::awaitable<Status> imported(sealrpc::CallContext&, imp::Point::Reader p,
                                   all::Composite::ImportedResults::Builder r) override {
    r.setPoint(p);
    r.setLevel(imp::Level::HIGH);
    co_return Status::ok();
  }
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

// The synchronous forms (<method>(..., ec)) on a single-threaded connection whose
// io_context nobody runs during the calls.
TEST_F(Roundtrip, SynchronousFormsOfEachOverload) {
  sealrpc::PolicyOverrides ov;  // as in EveryTypeRoundTripsThroughTheSocket
  ov.interfaces["Composite"].rule.same_user = true;
  server_->set_policy(ov);
  asio::io_context io;
  sealrpc::ClientOptions o;
  o.single_threaded = true;
  auto connecting = sealrpc::Client::async_connect(io.get_executor(), server_->path(), o, use_future);
  while (connecting.wait_for(std::chrono::seconds(0)) != std::future_status::ready) io.run_one();
  all::ScalarsClient scalars(connecting.get());
  boost::system::error_code ec;
  const kj::byte bytes[] = {9, 8, 7};
  auto p = scalars.primitives(true, -8, -16, -32, -64, 8, 16, 32, 64, 1.5f, 2.5, std::string("text"), kj::arrayPtr(bytes, 3),
                              all::Color::GREEN, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(p.get().getI64(), -63);
  EXPECT_EQ(std::string(p.get().getText().cStr()), "text");

  all::CompositeClient composite(scalars.client());
  capnp::MallocMessageBuilder msg;
  auto lp = msg.initRoot<all::Composite::ListsParams>();
  lp.initInts(2).set(1, 10);
  auto l = composite.lists(lp.asReader(), ec);  // the Reader overload
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(l.get().getInts()[1], 10);
  auto dreq = composite.deep_request();
  dreq.params().setV(4);
  auto d = composite.deep(std::move(dreq), ec);  // the request form
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(d.get().getV(), -4);
  scalars.client().close();
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

namespace {

void fill_everything(all::Everything::Builder e) {
  e.setB(true);
  e.setI8(-8);
  e.setI16(-16);
  e.setI32(-32);
  e.setI64(-64);
  e.setU8(8);
  e.setU16(16);
  e.setU32(32);
  e.setU64(64);
  e.setF32(1.5f);
  e.setF64(-2.25);
  e.setText("every field");
  const kj::byte bytes[] = {0, 1, 2, 255};
  e.setData(kj::arrayPtr(bytes, 4));
  e.setColor(all::Color::BLUE);
  auto ints = e.initInts(3);
  for (unsigned i = 0; i < 3; ++i) ints.set(i, static_cast<std::int32_t>(i * 100) - 1);
  auto texts = e.initTexts(2);
  texts.set(0, "alpha");
  texts.set(1, "");
  auto pts = e.initPoints(2);
  pts[0].setX(1);
  pts[1].setY(-2);
  auto m = e.initMatrix(2);
  m.init(0, 1).set(0, 0.5);
  m.init(1, 2).set(1, 9.75);
  e.initNested().setDepth(1);
  e.getNested().initChild().setDepth(2);
  e.getAny().setAs<capnp::Text>("opaque");
  e.getChoice().setName("union member");
  e.getPair().setFirst(3);
  e.getPair().setSecond(4);
}

void expect_everything(all::Everything::Reader e) {
  EXPECT_TRUE(e.getB());
  EXPECT_EQ(e.getI8(), -8);
  EXPECT_EQ(e.getI16(), -16);
  EXPECT_EQ(e.getI32(), -32);
  EXPECT_EQ(e.getI64(), -64);
  EXPECT_EQ(e.getU8(), 8);
  EXPECT_EQ(e.getU16(), 16);
  EXPECT_EQ(e.getU32(), 32u);
  EXPECT_EQ(e.getU64(), 64u);
  EXPECT_EQ(e.getF32(), 1.5f);
  EXPECT_EQ(e.getF64(), -2.25);
  EXPECT_EQ(std::string(e.getText().cStr()), "every field");
  ASSERT_EQ(e.getData().size(), 4u);
  EXPECT_EQ(e.getData()[3], 255);
  EXPECT_EQ(e.getColor(), all::Color::BLUE);
  ASSERT_EQ(e.getInts().size(), 3u);
  EXPECT_EQ(e.getInts()[2], 199);
  ASSERT_EQ(e.getTexts().size(), 2u);
  EXPECT_EQ(std::string(e.getTexts()[0].cStr()), "alpha");
  ASSERT_EQ(e.getPoints().size(), 2u);
  EXPECT_EQ(e.getPoints()[0].getX(), 1);
  EXPECT_EQ(e.getPoints()[1].getY(), -2);
  ASSERT_EQ(e.getMatrix().size(), 2u);
  EXPECT_EQ(e.getMatrix()[1][1], 9.75);
  EXPECT_EQ(e.getNested().getChild().getDepth(), 2u);
  EXPECT_EQ(std::string(e.getAny().getAs<capnp::Text>().cStr()), "opaque");
  ASSERT_EQ(e.getChoice().which(), all::Everything::Choice::NAME);
  EXPECT_EQ(std::string(e.getChoice().getName().cStr()), "union member");
  EXPECT_EQ(e.getPair().getFirst(), 3);
  EXPECT_EQ(e.getPair().getSecond(), 4);
}

}  // namespace

// Every capnp type through a real socket: explicit struct params/results, unions,
// groups, nested and imported types, AnyPointer. The file's rule does not admit this
// test's user, so an operator policy (as from a policy file) opens the interface.
TEST_F(Roundtrip, EveryTypeRoundTripsThroughTheSocket) {
  sealrpc::PolicyOverrides ov;
  ov.interfaces["Composite"].rule.same_user = true;
  server_->set_policy(ov);
  all::CompositeClient c(client_);

  auto req = c.explicit_request();
  fill_everything(req.params());
  auto reply = c.async_explicit(std::move(req), use_future).get();
  expect_everything(reply.get());

  capnp::MallocMessageBuilder group_msg;
  auto gp = group_msg.initRoot<all::Composite::WithGroupParams>();
  fill_everything(gp.initEverything());
  auto gr = c.async_with_group(gp.asReader(), use_future).get();
  expect_everything(gr.get().getPair());

  auto ureq = c.with_union_request();
  ureq.params().setNumber(-12345);
  auto ur = c.async_with_union(std::move(ureq), use_future).get();
  ASSERT_EQ(ur.get().which(), all::Choice::NUMBER);
  EXPECT_EQ(ur.get().getNumber(), -12345);

  auto areq = c.any_pointer_request();
  auto pts = areq.params().getValue().initAs<capnp::List<imp::Point>>(2);
  pts[1].setX(77);
  auto ar = c.async_any_pointer(std::move(areq), use_future).get();
  EXPECT_EQ((ar.get().getValue().getAs<capnp::List<imp::Point>>()[1].getX()), 77);

  auto dreq = c.deep_request();
  dreq.params().setV(5);
  EXPECT_EQ(c.async_deep(std::move(dreq), use_future).get().get().getV(), -5);

  auto ireq = c.imported_request();
  ireq.params().setX(3);
  ireq.params().setY(4);
  auto ir = c.async_imported(std::move(ireq), use_future).get();
  EXPECT_EQ(ir.get().getPoint().getY(), 4);
  EXPECT_EQ(ir.get().getLevel(), imp::Level::HIGH);
}
