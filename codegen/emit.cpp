#include "emit.hpp"

#include "naming.hpp"

#include <cstdio>
#include <string_view>
#include <tuple>
#include <type_traits>

namespace sealrpc::codegen {
namespace {

std::string hex(std::uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llxull", static_cast<unsigned long long>(id));
  return buf;
}

std::string method_id(const MethodModel& m) {
  return "::sealrpc::MethodId{" + hex(m.interface_id) + ", " + std::to_string(m.ordinal) + "}";
}

// File names go into `//` comments: no control characters (a newline would end the
// comment).
std::string plain(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

std::string qualified(const MethodModel& m) { return m.interface_name + "." + m.method_name; }

std::string inherited(const InterfaceModel& iface, const MethodModel& m) {
  return m.interface_id == iface.id ? std::string{} : ", inherited from " + plain(m.schema_file);
}

std::string handler_signature(const std::string& name, const MethodModel& m, bool named) {
  return "::boost::asio::awaitable<::sealrpc::Status> " + name + "(::sealrpc::CallContext&" +
         (named ? " ctx" : "") + ", " + m.params_type + "::Reader" + (named ? " params" : "") + ", " +
         m.results_type + "::Builder" + (named ? " results" : "") + ")";
}

template <typename List>
std::string list_init(List list) {
  std::string out = "{";
  bool first = true;
  for (auto v : list) {
    if (!first) out += ", ";
    first = false;
    if constexpr (std::is_same_v<decltype(v), capnp::Text::Reader>) {
      out += string_literal(std::string_view(v.cStr(), v.size()));
    } else {
      out += std::to_string(v) + "u";
    }
  }
  return out + "}";
}

std::string rule_init(idl::AccessRule::Reader r) {
  auto flag = [](bool b) { return b ? "true" : "false"; };
  return std::string("{.uids = ") + list_init(r.getUids()) + ", .gids = " + list_init(r.getGids()) +
         ", .users = " + list_init(r.getUsers()) + ", .groups = " + list_init(r.getGroups()) +
         ",\n                .same_user = " + flag(r.getSameUser()) + ", .root = " + flag(r.getRoot()) +
         ", .open = " + flag(r.getOpen()) + ", .label = " +
         string_literal(std::string_view(r.getLabel().cStr(), r.getLabel().size())) + "}";
}

void open_namespace(std::string& out, const FileModel& f) {
  if (!f.cpp_namespace.empty()) out += "namespace " + f.cpp_namespace + " {\n\n";
}

void close_namespace(std::string& out, const FileModel& f) {
  if (!f.cpp_namespace.empty()) out += "}  // namespace " + f.cpp_namespace + "\n";
}

void emit_service(std::string& out, const FileModel& f, const InterfaceModel& iface) {
  out += "// Server skeleton for " + iface.display_name + " (" + plain(f.filename) + ").\n";
  out += comment_block(iface.doc, "");
  out += "// Derive from it and override the methods you serve; a method left alone answers\n"
         "// UNIMPLEMENTED. Inherited methods are served too, under their own interface's id.\n";
  out += "class " + iface.service_class + " : public ::sealrpc::Service {\n public:\n";
  out += "  // One row per method with its declared access rule; valid for the program's life.\n";
  out += "  ::std::span<const ::sealrpc::MethodInfo> sealrpc_methods() const final;\n";
  for (const auto& m : iface.methods) {
    out += "\n  // " + qualified(m) + " @" + std::to_string(m.ordinal) + inherited(iface, m) + "; access rule from the " +
           m.rule_scope + ".\n";
    out += comment_block(m.doc, "  ");
    out += "  virtual " + handler_signature(m.handler, m, true) + ";\n";
  }
  out += "};\n\n";
}

void emit_client(std::string& out, const FileModel& f, const InterfaceModel& iface) {
  out += "// Typed client for " + iface.display_name + " (" + plain(f.filename) + ").\n";
  out += "// Every async_ call completes with void(boost::system::error_code, sealrpc::Response<Results>)\n"
         "// and takes any Asio completion token (use_awaitable, use_future, a callback...).\n"
         "// The call without the async_ prefix is the same call made synchronously (blocks; takes\n"
         "// an error_code&; needs a single_threaded connection: sealrpc::Client::call).\n";
  out += "class " + iface.client_class + " {\n public:\n";
  out += "  " + iface.client_class + "() = default;\n";
  out += "  explicit " + iface.client_class + "(::sealrpc::Client client) : sealrpc_client_(::std::move(client)) {}\n\n";
  out += "  ::sealrpc::Client& client() noexcept { return sealrpc_client_; }\n";
  out += "  const ::sealrpc::Client& client() const noexcept { return sealrpc_client_; }\n";
  for (const auto& m : iface.methods) {
    const std::string request = "::sealrpc::Request<" + m.params_type + ">";
    const std::string response = "::sealrpc::Response<" + m.results_type + ">";
    const std::string id = method_id(m);
    const std::string async_call = "sealrpc_client_.async_call<" + m.results_type + ">(" + id + ", ::std::move(req_), ::std::forward<Token>(token));\n  }\n";
    const std::string sync_call = "sealrpc_client_.call<" + m.results_type + ">(" + id + ", ::std::move(req_), ec);\n  }\n";
    out += "\n  // " + qualified(m) + " @" + std::to_string(m.ordinal) + inherited(iface, m) + "\n";
    out += comment_block(m.doc, "  ");
    out += "  static " + request + " " + m.stem + "_request() { return {}; }\n";
    // Each form twice: async_<stem>(..., Token&&) and the synchronous <stem>(..., ec).
    const std::string async_head = "  template <typename Token>\n  auto async_" + m.stem + "(";
    const std::string sync_head = "  " + response + " " + m.sync_name + "(";
    for (const auto& [head, tail, call] : {std::tuple{async_head, std::string("Token&& token) {\n"), async_call},
                                           std::tuple{sync_head, std::string("::boost::system::error_code& ec) {\n"), sync_call}}) {
      out += head + request + " req_, " + tail + "    return " + call;
      out += head;
      if (m.convenient) {
        for (const auto& a : m.args) out += a.type + " " + a.name + ", ";
        out += tail + "    auto req_ = this->" + m.stem + "_request();\n";
        if (!m.args.empty()) {
          out += "    auto params_ = req_.params();\n";
          for (const auto& a : m.args) out += "    params_." + a.setter + "(" + a.name + ");\n";
        }
      } else {
        out += m.params_type + "::Reader params, " + tail;
        out += "    ::sealrpc::RequestMessage req_;\n    req_.message().setRoot(params);\n";
      }
      out += "    return " + call;
    }
  }
  out += "\n private:\n  ::sealrpc::Client sealrpc_client_;  // not a schema name: those have no underscores\n};\n\n";
}

}  // namespace

std::string emit_header(const FileModel& f) {
  std::string out = "// Generated by capnpc-sealrpc from " + plain(f.filename) + ". DO NOT EDIT.\n";
  out += "// Server skeletons and typed clients for its interfaces; see docs/codegen.md.\n";
  out += "#pragma once\n\n#include \"" + f.include_name + "\"\n\n";
  out += "#include <sealrpc/call_context.hpp>\n#include <sealrpc/client.hpp>\n#include <sealrpc/message.hpp>\n"
         "#include <sealrpc/service.hpp>\n#include <sealrpc/status.hpp>\n\n";
  out += "#include <boost/asio/awaitable.hpp>\n#include <capnp/message.h>\n#include <kj/common.h>\n"
         "#include <kj/string.h>\n\n#include <cstdint>\n#include <span>\n#include <utility>\n\n";
  open_namespace(out, f);
  for (const auto& iface : f.interfaces) {
    emit_service(out, f, iface);
    emit_client(out, f, iface);
  }
  close_namespace(out, f);
  return out;
}

std::string emit_source(const FileModel& f) {
  const std::string base = f.include_name.substr(0, f.include_name.size() - 2);  // "x.capnp"
  std::string out = "// Generated by capnpc-sealrpc from " + plain(f.filename) + ". DO NOT EDIT.\n";
  out += "#include \"" + base + ".sealrpc.h\"\n\n";
  open_namespace(out, f);
  if (!f.interfaces.empty()) {
    out += "namespace {\n\n";
    for (const auto& iface : f.interfaces) {
      for (const auto& m : iface.methods) {
        out += "::boost::asio::awaitable<::sealrpc::Status> invoke_" + iface.service_class + "_" + m.stem +
               "(\n    ::sealrpc::Service& service, ::sealrpc::CallContext& ctx, ::capnp::AnyPointer::Reader params,\n"
               "    ::capnp::AnyPointer::Builder results) {\n";
        // Not a coroutine: returns the handler's own awaitable (one frame less per call;
        // the readers/builders are copied into the handler's frame).
        out += "  return static_cast<" + iface.service_class + "&>(service)." + m.handler +
               "(\n      ctx, params.getAs<" + m.params_type + ">(), results.initAs<" + m.results_type + ">());\n}\n\n";
      }
    }
    out += "}  // namespace\n\n";
  }
  for (const auto& iface : f.interfaces) {
    out += "::std::span<const ::sealrpc::MethodInfo> " + iface.service_class + "::sealrpc_methods() const {\n";
    if (iface.methods.empty()) {
      out += "  return {};\n}\n\n";
    } else {
      out += "  static const ::sealrpc::MethodInfo methods[] = {\n";
      for (const auto& m : iface.methods) {
        out += "      {.id = {" + hex(m.interface_id) + ", " + std::to_string(m.ordinal) + "},\n";
        out += "       .interface_name = " + string_literal(m.interface_name) + ",\n";
        out += "       .method_name = " + string_literal(m.method_name) + ",\n";
        out += "       .schema_file = " + string_literal(m.schema_file) + ",\n";
        out += "       .rule = " + rule_init(m.rule) + ",\n";
        out += "       .rule_scope = \"" + std::string(m.rule_scope) + "\",\n";
        out += "       .invoke = &invoke_" + iface.service_class + "_" + m.stem + ",\n";
        out += "       .params_schema = ::capnp::Schema::from<" + m.params_type + ">()},\n";
      }
      out += "  };\n  return methods;\n}\n\n";
    }
    for (const auto& m : iface.methods) {
      out += handler_signature(iface.service_class + "::" + m.handler, m, false) + " {\n";
      out += "  co_return ::sealrpc::Status{::sealrpc::StatusCode::unimplemented, " +
             string_literal(qualified(m) + " is not implemented") + "};\n}\n\n";
    }
  }
  close_namespace(out, f);
  return out;
}

}  // namespace sealrpc::codegen
