// Generated code for all_types.capnp / imported.capnp: method tables (ids, names, rules,
// inherited methods), dispatch through the invokers, and the client API's shape for
// every completion token kind. No socket: the round trip lives in roundtrip tests.
#include "all_types.capnp.sealrpc.h"
#include "imported.capnp.sealrpc.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <exception>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace {

namespace all = sealrpc_test::all;
namespace imp = sealrpc_test::imported;
using sealrpc::MethodInfo;

const MethodInfo& row(const sealrpc::Service& svc, std::string_view interface_name, std::string_view method) {
  for (const auto& m : svc.sealrpc_methods()) {
    if (m.interface_name == interface_name && m.method_name == method) return m;
  }
  throw std::runtime_error("no row " + std::string(interface_name) + "." + std::string(method));
}

std::vector<std::string> names(const sealrpc::Service& svc) {
  std::vector<std::string> out;
  for (const auto& m : svc.sealrpc_methods()) out.push_back(m.qualified_name());
  return out;
}

// Runs one table row's invoker to completion on a fresh io_context.
sealrpc::Status invoke(sealrpc::Service& svc, const MethodInfo& info, capnp::MessageBuilder& params,
                       capnp::MessageBuilder& results) {
  sealrpc::PeerCredentials peer;
  sealrpc::CallContext ctx(peer, info, sealrpc::CallContext::clock::time_point::max(), 1, false);
  boost::asio::io_context io;
  std::optional<sealrpc::Status> status;
  boost::asio::co_spawn(io,
                        info.invoke(svc, ctx, params.getRoot<capnp::AnyPointer>().asReader(),
                                    results.getRoot<capnp::AnyPointer>()),
                        [&](std::exception_ptr e, sealrpc::Status s) {
                          if (e) std::rethrow_exception(e);
                          status = std::move(s);
                        });
  io.run();
  return status.value();
}

TEST(CodegenTable, IdsNamesAndInterfaceRule) {
  all::ScalarsService svc;
  const auto methods = svc.sealrpc_methods();
  ASSERT_EQ(methods.size(), 4u);
  const char* expected[] = {"primitives", "empty", "noResults", "noParams"};
  for (std::uint16_t i = 0; i < methods.size(); ++i) {
    const auto& m = methods[i];
    EXPECT_EQ(m.id, (sealrpc::MethodId{capnp::typeId<all::Scalars>(), i}));
    EXPECT_EQ(m.interface_name, "Scalars");
    EXPECT_EQ(m.method_name, expected[i]);
    EXPECT_EQ(m.schema_file, "all_types.capnp");
    EXPECT_STREQ(m.rule_scope, "interface");
    EXPECT_TRUE(m.rule.same_user);
    EXPECT_TRUE(m.rule.root);
    EXPECT_FALSE(m.rule.open);
    EXPECT_TRUE(m.rule.uids.empty());
    EXPECT_NE(m.invoke, nullptr);
  }
}

TEST(CodegenTable, FileRuleAndMethodOverride) {
  all::CompositeService svc;
  const auto& file_rule = row(svc, "Composite", "explicit");
  EXPECT_STREQ(file_rule.rule_scope, "file");
  EXPECT_EQ(file_rule.rule.uids, (std::vector<uid_t>{1000, 1001}));
  EXPECT_EQ(file_rule.rule.groups, (std::vector<std::string>{"adm"}));
  EXPECT_FALSE(file_rule.rule.same_user);

  const auto& method_rule = row(svc, "Composite", "withUnion");
  EXPECT_STREQ(method_rule.rule_scope, "method");
  EXPECT_EQ(method_rule.rule.gids, (std::vector<gid_t>{10, 20}));
  EXPECT_TRUE(method_rule.rule.uids.empty());  // the nearest rule replaces, never merges
  EXPECT_EQ(method_rule.id, (sealrpc::MethodId{capnp::typeId<all::Composite>(), 2}));
}

TEST(CodegenTable, NestedInterfaceWithLabel) {
  all::OuterInnerService svc;
  ASSERT_EQ(svc.sealrpc_methods().size(), 1u);
  const auto& m = svc.sealrpc_methods()[0];
  EXPECT_EQ(m.qualified_name(), "Outer.Inner.get");
  EXPECT_EQ(m.id.interface_id, capnp::typeId<all::Outer::Inner>());
  EXPECT_EQ(m.rule.users, (std::vector<std::string>{"daemon"}));
  EXPECT_EQ(m.rule.label, "system_u:system_r:sealrpc_t:s0");
}

TEST(CodegenTable, KeywordNamesAndOpenRule) {
  all::KeywordsService svc;
  const auto& del = row(svc, "Keywords", "delete");
  EXPECT_TRUE(del.rule.open);
  EXPECT_STREQ(del.rule_scope, "method");
  EXPECT_STREQ(row(svc, "Keywords", "ctx").rule_scope, "file");
  // Handler names: keywords and generator names get a trailing '_', camelCase becomes
  // snake_case, $Cxx.name renames.
  using K = all::KeywordsService;
  static_assert(std::is_member_function_pointer_v<decltype(&K::delete_)> &&
                std::is_member_function_pointer_v<decltype(&K::ctx)> &&
                std::is_member_function_pointer_v<decltype(&K::token)> &&
                std::is_member_function_pointer_v<decltype(&K::sealrpc_methods_)> &&
                std::is_member_function_pointer_v<decltype(&K::params)> &&
                std::is_member_function_pointer_v<decltype(&K::errno_)> &&
                std::is_member_function_pointer_v<decltype(&K::get_http_url)> &&
                std::is_member_function_pointer_v<decltype(&K::other_name)> &&
                std::is_member_function_pointer_v<decltype(&K::acronym_clash)> &&
                std::is_member_function_pointer_v<decltype(&K::client)>);
  EXPECT_EQ(row(svc, "Keywords", "renamed").method_name, "renamed");  // the wire name is the schema's
}

TEST(CodegenTable, MultipleInheritanceUsesParentIds) {
  all::MultiService svc;
  EXPECT_EQ(names(svc), (std::vector<std::string>{"Multi.own", "Base.ping", "Base.get", "Audited.get",
                                                  "Audited.history"}));
  const auto& own = row(svc, "Multi", "own");
  EXPECT_EQ(own.id, (sealrpc::MethodId{capnp::typeId<all::Multi>(), 0}));
  EXPECT_EQ(own.rule.uids, (std::vector<uid_t>{0}));
  EXPECT_STREQ(own.rule_scope, "interface");

  // Inherited methods keep their declaring interface's id, file and rule chain.
  const auto& base_get = row(svc, "Base", "get");
  EXPECT_EQ(base_get.id, (sealrpc::MethodId{capnp::typeId<imp::Base>(), 1}));
  EXPECT_EQ(base_get.schema_file, "imported.capnp");
  EXPECT_TRUE(base_get.rule.same_user);
  EXPECT_STREQ(base_get.rule_scope, "interface");

  const auto& audited_get = row(svc, "Audited", "get");
  EXPECT_EQ(audited_get.id, (sealrpc::MethodId{capnp::typeId<imp::Audited>(), 0}));
  EXPECT_TRUE(audited_get.rule.root);
  EXPECT_STREQ(audited_get.rule_scope, "method");

  const auto& history = row(svc, "Audited", "history");
  EXPECT_EQ(history.rule.gids, (std::vector<gid_t>{4}));
  EXPECT_EQ(history.rule.groups, (std::vector<std::string>{"adm"}));
}

TEST(CodegenTable, TransitiveAndDiamondInheritance) {
  all::GrandchildService grandchild;
  EXPECT_EQ(names(grandchild), (std::vector<std::string>{"Grandchild.extra", "Multi.own", "Base.ping", "Base.get",
                                                         "Audited.get", "Audited.history"}));
  EXPECT_STREQ(row(grandchild, "Grandchild", "extra").rule_scope, "file");
  EXPECT_EQ(row(grandchild, "Multi", "own").rule.uids, (std::vector<uid_t>{0}));

  all::DiamondService diamond;  // Base reached through Multi and directly: served once
  const auto rows = diamond.sealrpc_methods();
  EXPECT_EQ(rows.size(), 5u);
  std::set<sealrpc::MethodId> ids;
  for (const auto& m : rows) ids.insert(m.id);
  EXPECT_EQ(ids.size(), rows.size());
}

TEST(CodegenTable, EmptyInterface) {
  all::NothingService svc;
  EXPECT_TRUE(svc.sealrpc_methods().empty());
}

TEST(CodegenTable, TableIsStable) {
  all::ScalarsService a;
  all::ScalarsService b;
  EXPECT_EQ(a.sealrpc_methods().data(), b.sealrpc_methods().data());
}

class Scalars final : public all::ScalarsService {
 public:
  boost::asio::awaitable<sealrpc::Status> primitives(sealrpc::CallContext& ctx,
                                                     all::Scalars::PrimitivesParams::Reader params,
                                                     all::Scalars::PrimitivesResults::Builder results) override {
    EXPECT_EQ(ctx.method().method_name, "primitives");
    results.setI32(params.getI32() * 2);
    results.setText(params.getText());
    results.setColor(params.getColor());
    co_return sealrpc::Status::ok();
  }
};

TEST(CodegenDispatch, InvokerCallsOverride) {
  Scalars svc;
  capnp::MallocMessageBuilder params;
  capnp::MallocMessageBuilder results;
  auto p = params.initRoot<all::Scalars::PrimitivesParams>();
  p.setI32(21);
  p.setText("hello");
  p.setColor(all::Color::BLUE);
  const auto status = invoke(svc, row(svc, "Scalars", "primitives"), params, results);
  ASSERT_TRUE(status.is_ok());
  auto r = results.getRoot<all::Scalars::PrimitivesResults>();
  EXPECT_EQ(r.getI32(), 42);
  EXPECT_EQ(std::string(r.getText().cStr()), "hello");
  EXPECT_EQ(r.getColor(), all::Color::BLUE);
}

TEST(CodegenDispatch, DefaultAnswersUnimplemented) {
  Scalars svc;
  capnp::MallocMessageBuilder params;
  capnp::MallocMessageBuilder results;
  params.initRoot<all::Scalars::EmptyParams>();
  const auto status = invoke(svc, row(svc, "Scalars", "empty"), params, results);
  EXPECT_EQ(status.code, sealrpc::StatusCode::unimplemented);
  EXPECT_EQ(status.message, "Scalars.empty is not implemented");
}

class Multi final : public all::MultiService {
 public:
  boost::asio::awaitable<sealrpc::Status> base_get(sealrpc::CallContext&, imp::Base::GetParams::Reader params,
                                                   imp::Base::GetResults::Builder results) override {
    results.setValue(params.getKey().asBytes());
    co_return sealrpc::Status::ok();
  }
  boost::asio::awaitable<sealrpc::Status> audited_get(sealrpc::CallContext&, imp::Audited::GetParams::Reader params,
                                                      imp::Audited::GetResults::Builder results) override {
    results.initPoint().setX(static_cast<std::int32_t>(params.getId()));
    co_return sealrpc::Status{sealrpc::StatusCode::not_found, "audited"};
  }
};

TEST(CodegenDispatch, InheritedMethodsWithSameNameReachTheirOwnHandler) {
  Multi svc;
  {
    capnp::MallocMessageBuilder params;
    capnp::MallocMessageBuilder results;
    params.initRoot<imp::Base::GetParams>().setKey("k");
    ASSERT_TRUE(invoke(svc, row(svc, "Base", "get"), params, results).is_ok());
    EXPECT_EQ(results.getRoot<imp::Base::GetResults>().getValue().size(), 1u);
  }
  {
    capnp::MallocMessageBuilder params;
    capnp::MallocMessageBuilder results;
    params.initRoot<imp::Audited::GetParams>().setId(7);
    const auto status = invoke(svc, row(svc, "Audited", "get"), params, results);
    EXPECT_EQ(status.code, sealrpc::StatusCode::not_found);
    EXPECT_EQ(results.getRoot<imp::Audited::GetResults>().getPoint().getX(), 7);
  }
}

TEST(CodegenClient, RequestBuilders) {
  auto req = all::ScalarsClient::primitives_request();
  req.params().setI32(5);
  req.params().setText("x");
  EXPECT_EQ(req.message().getRoot<all::Scalars::PrimitivesParams>().getI32(), 5);
  auto del = all::KeywordsClient::delete_request();
  del.params().setClass(3);
  EXPECT_EQ(del.params().getClass(), 3);
}

// The client API's shape. decltype only: nothing is sent (no server here), but every
// overload is instantiated against the real sealrpc::Client::async_call.
template <typename Results>
using Future = std::future<sealrpc::Response<Results>>;
template <typename Results>
using Awaitable = boost::asio::awaitable<sealrpc::Response<Results>>;
using boost::asio::use_awaitable;
using boost::asio::use_future;
template <typename Results>
struct Callback {
  void operator()(boost::system::error_code, sealrpc::Response<Results>) const {}
};

TEST(CodegenClient, CompletionTokens) {
  all::ScalarsClient c;
  const kj::byte bytes[] = {1, 2};
  using PR = all::Scalars::PrimitivesResults;
  static_assert(std::is_same_v<decltype(c.async_primitives(true, 1, 2, 3, 4, 5, 6, 7, 8, 1.5f, 2.5, "text",
                                                           kj::arrayPtr(bytes, 2), all::Color::RED, use_future)),
                               Future<PR>>);
  static_assert(std::is_same_v<decltype(c.async_primitives(c.primitives_request(), use_awaitable)), Awaitable<PR>>);
  static_assert(std::is_same_v<decltype(c.async_empty(Callback<all::Scalars::EmptyResults>{})), void>);
  static_assert(std::is_same_v<decltype(c.async_no_params(use_awaitable)), Awaitable<all::Scalars::NoParamsResults>>);
  static_assert(std::is_same_v<decltype(c.async_no_results(std::int32_t{1}, use_future)),
                               Future<all::Scalars::NoResultsResults>>);
  // std::string converts to kj::StringPtr for Text fields.
  all::OuterInnerClient inner;
  static_assert(std::is_same_v<decltype(inner.async_get(std::string("key"), use_future)),
                               Future<all::Outer::Inner::GetResults>>);

  // Non-scalar params: the Request form or a copied Reader.
  all::CompositeClient composite;
  capnp::MallocMessageBuilder msg;
  auto everything = msg.initRoot<all::Everything>().asReader();
  static_assert(std::is_same_v<decltype(composite.async_explicit(everything, use_future)), Future<all::Everything>>);
  static_assert(std::is_same_v<decltype(composite.async_lists(composite.lists_request(), use_awaitable)),
                               Awaitable<all::Composite::ListsResults>>);
  static_assert(std::is_same_v<decltype(composite.async_deep(std::int8_t{1}, use_future)),
                               Future<all::Outer::Deeper::Deepest>>);
  static_assert(std::is_same_v<decltype(composite.async_imported(1, 2, Callback<all::Composite::ImportedResults>{})),
                               void>);

  // Keyword-named params, inherited methods, disambiguated names.
  all::KeywordsClient kw;
  static_assert(std::is_same_v<decltype(kw.async_delete(1, "new", "token", 2, true, false, use_future)),
                               Future<all::Keywords::DeleteResults>>);
  static_assert(std::is_same_v<decltype(kw.async_errno(0, use_awaitable)), Awaitable<all::Keywords::ErrnoResults>>);
  static_assert(std::is_same_v<decltype(kw.async_other_name(0, use_future)), Future<all::Keywords::OtherNameResults>>);
  // getURL and getUrl both map to get_url: no field-by-field overload, a Reader instead.
  capnp::MallocMessageBuilder clash;
  auto clash_params = clash.initRoot<all::Keywords::AcronymClashParams>().asReader();
  static_assert(std::is_same_v<decltype(kw.async_acronym_clash(clash_params, use_future)),
                               Future<all::Keywords::AcronymClashResults>>);
  // The synchronous forms: the bare name, made safe like the handler's (delete_), and
  // client_ for a method called `client` (client() is the accessor).
  boost::system::error_code ec;
  static_assert(std::is_same_v<decltype(kw.delete_(1, "new", "token", 2, true, false, ec)),
                               sealrpc::Response<all::Keywords::DeleteResults>>);
  static_assert(std::is_same_v<decltype(kw.delete_(kw.delete_request(), ec)), sealrpc::Response<all::Keywords::DeleteResults>>);
  static_assert(std::is_same_v<decltype(kw.client_(ec)), sealrpc::Response<all::Keywords::ClientResults>>);
  static_assert(std::is_same_v<decltype(kw.acronym_clash(clash_params, ec)), sealrpc::Response<all::Keywords::AcronymClashResults>>);
  static_assert(std::is_same_v<decltype(kw.client()), sealrpc::Client&>);
  all::GrandchildClient gc;
  static_assert(std::is_same_v<decltype(gc.async_base_get("k", use_future)), Future<imp::Base::GetResults>>);
  static_assert(std::is_same_v<decltype(gc.async_audited_get(std::uint64_t{1}, use_future)),
                               Future<imp::Audited::GetResults>>);
  static_assert(std::is_same_v<decltype(gc.async_history(imp::Level::HIGH, use_awaitable)),
                               Awaitable<imp::Audited::HistoryResults>>);
  SUCCEED();
}

}  // namespace
