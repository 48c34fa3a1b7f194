// The contract between generated server skeletons and the runtime.
//
// A generated `FooService` derives from `Service` and returns a table of MethodInfo:
// one row per method it serves (its own and every inherited one), each with the
// declared access rule and an Invoker that casts back to the generated type and calls
// the user's coroutine. Dispatch and authorization are hand-written in lib/rpc and
// lib/security; generated code holds no logic of its own (STYLE practice 12).
#pragma once

#include "sealrpc/call_context.hpp"
#include "sealrpc/policy.hpp"
#include "sealrpc/status.hpp"

#include <boost/asio/awaitable.hpp>
#include <capnp/any.h>
#include <capnp/schema.h>

#include <compare>
#include <optional>
#include <cstdint>
#include <span>
#include <string>

namespace sealrpc {

class Service;

// Invokes one method: `params` is already bounded by ReaderOptions and authorized;
// `results` is the root of the reply message. Returns the call's status; on a non-OK
// status the results are discarded and only the status travels back.
using Invoker = boost::asio::awaitable<Status> (*)(Service& service, CallContext& ctx,
                                                   capnp::AnyPointer::Reader params,
                                                   capnp::AnyPointer::Builder results);

struct MethodInfo {
  MethodId id;
  std::string interface_name;  // e.g. "Vault" or "Outer.Inner" (capnp display name, no file)
  std::string method_name;     // e.g. "get"
  std::string schema_file;     // e.g. "examples/vault/vault.capnp" (diagnostics only)
  AccessRuleSpec rule;         // effective declared rule (method > interface > file)
  const char* rule_scope = "method";  // where the rule came from: method|interface|file
  Invoker invoke = nullptr;
  // Schema of the params struct. When set, the runtime walks every field with its
  // declared type before the handler runs, so type-confused pointers (a list where
  // Data is declared, amplified lists, ...) are INVALID_ARGUMENT, not a handler fault.
  std::optional<capnp::StructSchema> params_schema;

  std::string qualified_name() const { return interface_name + "." + method_name; }
};

// Typed deep validation used by dispatch (lib/rpc/validate.cpp). Throws kj::Exception
// on any malformed or over-limit content.
void validate_params(capnp::AnyPointer::Reader params, capnp::StructSchema schema);

class Service {
 public:
  virtual ~Service() = default;
  // Every method this service answers. The span stays valid for the service's life.
  virtual std::span<const MethodInfo> sealrpc_methods() const = 0;
};

}  // namespace sealrpc
