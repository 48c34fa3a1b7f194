#include "test_service.hpp"

#include "testsvc.capnp.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <stdexcept>

namespace testsvc {
namespace asio = boost::asio;
using sealrpc::CallContext;
using sealrpc::Status;

namespace {

void fill_identity(CallContext& ctx, EchoResults::Builder r) {
  r.setUid(ctx.uid());
  r.setGid(ctx.gid());
  auto g = r.initGroups(static_cast<unsigned>(ctx.groups().size()));
  for (unsigned i = 0; i < ctx.groups().size(); ++i) g.set(i, ctx.groups()[i]);
  r.setPid(ctx.pid());
  auto exited = ctx.peer().has_exited();
  r.setPeerExited(exited && *exited);
  r.setEncrypted(ctx.encrypted());
}

asio::awaitable<Status> echo(sealrpc::Service& svc, CallContext& ctx, capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
  ++static_cast<TestService&>(svc).echo_calls;
  auto params = p.getAs<EchoParams>();
  auto res = r.initAs<EchoResults>();
  res.setData(params.getData());
  fill_identity(ctx, res);
  co_return Status::ok();
}

asio::awaitable<Status> sleep(sealrpc::Service& svc, CallContext& ctx, capnp::AnyPointer::Reader p, capnp::AnyPointer::Builder r) {
  auto& self = static_cast<TestService&>(svc);
  ++self.calls_started;
  auto params = p.getAs<EchoParams>();
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(std::chrono::milliseconds(params.getDelayMs()));
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  auto res = r.initAs<EchoResults>();
  if (ec || ctx.is_cancelled()) {
    ++self.cancellations_seen;
    res.setCancelled(true);
    co_return Status{sealrpc::StatusCode::cancelled, "cancelled"};
  }
  res.setData(params.getData());
  fill_identity(ctx, res);
  co_return Status::ok();
}

asio::awaitable<Status> fail(sealrpc::Service&, CallContext&, capnp::AnyPointer::Reader, capnp::AnyPointer::Builder) {
  throw std::runtime_error("secret-detail: the handler's internals");
  co_return Status::ok();
}

sealrpc::MethodInfo row(std::uint16_t ord, const char* name, sealrpc::AccessRuleSpec rule, sealrpc::Invoker inv) {
  sealrpc::MethodInfo m;
  m.id = {kTestInterface, ord};
  m.interface_name = "Test";
  m.method_name = name;
  m.schema_file = "tests/support/test_service.cpp";
  m.rule = std::move(rule);
  m.invoke = inv;
  m.params_schema = capnp::Schema::from<EchoParams>();
  return m;
}

}  // namespace

TestService::TestService() {
  sealrpc::AccessRuleSpec common{.uids = {4243}, .gids = {4242}, .same_user = true};
  methods_.push_back(row(0, "echo", common, echo));
  methods_.push_back(row(1, "sleep", common, sleep));
  methods_.push_back(row(2, "fail", common, fail));
  methods_.push_back(row(3, "rootOnly", {.root = true}, echo));
  methods_.push_back(row(4, "groupOnly", {.gids = {4242}}, echo));
  methods_.push_back(row(5, "nobody", {}, echo));
}

}  // namespace testsvc
