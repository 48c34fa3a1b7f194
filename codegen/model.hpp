// What capnpc-sealrpc generates, computed from the CodeGeneratorRequest: for each
// interface of a requested file, the flattened list of methods it serves (own and
// inherited) with C++ names, types and effective access rules. All checks that refuse a
// schema (missing rule, generics, name collisions) happen here; emit.cpp only prints.
#pragma once

#include <sealrpc/sealrpc.capnp.h>

#include <capnp/schema-loader.h>
#include <capnp/schema.capnp.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sealrpc::codegen {

// Errors are collected so one run reports every problem, compiler style:
// "file.capnp:12: error: ...".
class Diagnostics {
 public:
  void error(const std::string& file, int line, const std::string& message);
  bool failed() const noexcept { return !messages_.empty(); }
  const std::vector<std::string>& messages() const noexcept { return messages_; }

 private:
  std::vector<std::string> messages_;
};

// One argument of the convenience overload: a param field set directly.
struct ParamArg {
  std::string name;    // C++ parameter name
  std::string type;    // C++ type, fully qualified
  std::string setter;  // "setFoo"
};

struct MethodModel {
  std::uint64_t interface_id = 0;  // the declaring interface (capnp semantics)
  std::uint16_t ordinal = 0;
  std::string interface_name;  // declaring interface, capnp display name without file
  std::string method_name;     // as in the schema
  std::string schema_file;     // declaring file
  std::string handler;         // C++ name of the service virtual, e.g. "delete_"
  std::string stem;            // client names: async_<stem>, <stem>_request
  std::string sync_name;       // the client's synchronous call: <stem>, made safe (delete_, client_)
  std::string params_type;     // fully qualified, e.g. "::ns::Vault::GetParams"
  std::string results_type;
  bool convenient = false;     // every param field is primitive, enum, Text or Data
  std::vector<ParamArg> args;  // when convenient
  idl::AccessRule::Reader rule;
  const char* rule_scope = "method";
  std::string doc;
};

struct InterfaceModel {
  std::uint64_t id = 0;
  std::string display_name;  // "Outer.Inner"
  std::string service_class;  // "OuterInnerService"
  std::string client_class;   // "OuterInnerClient"
  std::string doc;
  std::vector<MethodModel> methods;  // own methods first, then inherited ones
};

struct FileModel {
  std::string filename;       // as requested, minus --src-prefix
  std::string include_name;   // basename of capnp's header, e.g. "vault.capnp.h"
  std::string cpp_namespace;  // "a::b", empty for the global namespace
  std::vector<InterfaceModel> interfaces;
};

// Looks up declaration lines in schema sources (best effort: capnp 0.9 records no
// source positions). Searches the ':'-separated directories in $SEALRPC_SCHEMA_PATH.
class SourceLines {
 public:
  SourceLines();
  // One step of a declaration path: `struct|interface <name>` when ordinal < 0, else a
  // member `<name> @<ordinal>`.
  struct Step {
    std::string name;
    int ordinal = -1;
  };
  // Line of the declaration reached by following `path` (each step searched from the
  // previous match), or 0 when the file or a step is not found.
  int find(const std::string& file, const std::vector<Step>& path);

 private:
  std::vector<std::string> dirs_;
  std::map<std::string, std::string> cache_;
};

class ModelBuilder {
 public:
  ModelBuilder(const capnp::SchemaLoader& loader, capnp::schema::CodeGeneratorRequest::Reader request,
               Diagnostics& diag);

  FileModel build(capnp::schema::CodeGeneratorRequest::RequestedFile::Reader file);

 private:
  capnp::schema::Node::Reader node(std::uint64_t id) const;
  std::uint64_t file_of(std::uint64_t id) const;
  std::string display_name(std::uint64_t id) const;
  std::string cpp_name(std::uint64_t id) const;        // "::ns::Outer::Inner"
  std::string cpp_short_name(std::uint64_t id) const;  // "Inner"
  std::vector<std::uint64_t> scope_chain(std::uint64_t id) const;  // outermost first, no file
  std::string struct_type(std::uint64_t struct_id, std::uint64_t interface_id, const std::string& method) const;
  std::string doc(std::uint64_t id, int member = -1) const;
  int line_of(std::uint64_t id, const std::string& method = {}, int ordinal = -1);

  void collect(std::uint64_t interface_id, std::uint64_t served_id, std::vector<std::uint64_t>& seen,
               std::vector<MethodModel>& out);
  MethodModel method_model(std::uint64_t interface_id, std::uint64_t served_id, unsigned index);
  void convenience(MethodModel& m, std::uint64_t params_id) const;
  void assign_names(InterfaceModel& iface);

  const capnp::SchemaLoader& loader_;
  std::map<std::uint64_t, capnp::schema::Node::SourceInfo::Reader> source_info_;
  Diagnostics& diag_;
  SourceLines lines_;
};

}  // namespace sealrpc::codegen
