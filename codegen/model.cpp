#include "model.hpp"

#include "naming.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace sealrpc::codegen {
namespace {

namespace schema = capnp::schema;

// Annotation ids: $Cxx.namespace and $Cxx.name from /capnp/c++.capnp, $access from
// idl/sealrpc.capnp (declared there with this explicit id).
constexpr std::uint64_t kCxxNamespace = 0xb9c6f99ebf805f2cull;
constexpr std::uint64_t kCxxName = 0xf264a779fef191ceull;
constexpr std::uint64_t kAccess = 0x8bd6e8d373343e78ull;

std::optional<schema::Value::Reader> find_annotation(capnp::List<schema::Annotation>::Reader list,
                                                     std::uint64_t id) {
  for (auto a : list) {
    if (a.getId() == id) return a.getValue();
  }
  return std::nullopt;
}

std::optional<std::string> cxx_name(capnp::List<schema::Annotation>::Reader list) {
  auto v = find_annotation(list, kCxxName);
  if (!v || !v->isText()) return std::nullopt;
  return std::string(v->getText().cStr());
}

std::optional<idl::AccessRule::Reader> access_rule(capnp::List<schema::Annotation>::Reader list) {
  auto v = find_annotation(list, kAccess);
  if (!v || !v->isStruct()) return std::nullopt;
  return v->getStruct().getAs<idl::AccessRule>();
}

std::string str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// The name a node was declared under, from its parent's nestedNodes.
std::string declared_name(const capnp::SchemaLoader& loader, std::uint64_t id) {
  const auto parent = loader.get(id).getProto().getScopeId();
  if (parent != 0) {
    for (auto nested : loader.get(parent).getProto().getNestedNodes()) {
      if (nested.getId() == id) return str(nested.getName());
    }
  }
  throw std::runtime_error("node has no name in its scope: " + str(loader.get(id).getProto().getDisplayName()));
}

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

std::size_t skip_space(const std::string& text, std::size_t i) {
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  return i;
}

// Position of the next whole-word `name` at or after `pos` that is declared as
// `struct|interface name` (ordinal < 0) or as a member `name @ordinal`; npos if none.
std::size_t find_step(const std::string& text, std::size_t pos, const std::string& name, int ordinal) {
  for (auto at = text.find(name, pos); at != std::string::npos; at = text.find(name, at + 1)) {
    const std::size_t end = at + name.size();
    if ((at > 0 && is_word_char(text[at - 1])) || (end < text.size() && is_word_char(text[end]))) continue;
    if (ordinal < 0) {
      std::size_t k = at;
      while (k > 0 && std::isspace(static_cast<unsigned char>(text[k - 1]))) --k;
      for (std::string_view keyword : {"struct", "interface"}) {
        if (k >= keyword.size() && text.compare(k - keyword.size(), keyword.size(), keyword) == 0 &&
            (k == keyword.size() || !is_word_char(text[k - keyword.size() - 1]))) {
          return at;
        }
      }
    } else {
      std::size_t k = skip_space(text, end);
      if (k >= text.size() || text[k] != '@') continue;
      k = skip_space(text, k + 1);
      const std::string digits = std::to_string(ordinal);
      if (text.compare(k, digits.size(), digits) == 0 &&
          (k + digits.size() >= text.size() || !std::isdigit(static_cast<unsigned char>(text[k + digits.size()])))) {
        return at;
      }
    }
  }
  return std::string::npos;
}

}  // namespace

void Diagnostics::error(const std::string& file, int line, const std::string& message) {
  std::string where = file;
  if (line > 0) where += ":" + std::to_string(line);
  messages_.push_back(where + ": error: " + message);
}

SourceLines::SourceLines() {
  if (const char* path = std::getenv("SEALRPC_SCHEMA_PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      if (auto dir = rest.substr(0, colon); !dir.empty()) dirs_.emplace_back(dir);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
  }
}

int SourceLines::find(const std::string& file, const std::vector<Step>& path) {
  auto it = cache_.find(file);
  if (it == cache_.end()) {
    std::string text;
    std::vector<std::string> candidates;
    if (!file.empty() && file[0] == '/') candidates.push_back(file);
    for (const auto& dir : dirs_) candidates.push_back(dir + "/" + file);
    for (const auto& candidate : candidates) {
      if (std::ifstream in(candidate); in) {
        std::ostringstream ss;
        ss << in.rdbuf();
        text = ss.str();
        break;
      }
    }
    it = cache_.emplace(file, std::move(text)).first;
  }
  const std::string& text = it->second;
  if (text.empty() || path.empty()) return 0;
  std::size_t pos = 0;
  std::size_t found = 0;
  for (const auto& step : path) {
    found = find_step(text, pos, step.name, step.ordinal);
    if (found == std::string::npos) return 0;
    pos = found + step.name.size();
  }
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(found), '\n'));
}

ModelBuilder::ModelBuilder(const capnp::SchemaLoader& loader, schema::CodeGeneratorRequest::Reader request,
                           Diagnostics& diag)
    : loader_(loader), diag_(diag) {
  for (auto info : request.getSourceInfo()) source_info_.emplace(info.getId(), info);
}

schema::Node::Reader ModelBuilder::node(std::uint64_t id) const { return loader_.get(id).getProto(); }

std::uint64_t ModelBuilder::file_of(std::uint64_t id) const {
  while (id != 0) {
    auto n = node(id);
    if (n.isFile()) return id;
    id = n.getScopeId();
  }
  return 0;
}

std::string ModelBuilder::display_name(std::uint64_t id) const {
  const std::string full = str(node(id).getDisplayName());
  const std::uint64_t file = file_of(id);
  if (file == 0 || file == id) return full;
  const std::string prefix = str(node(file).getDisplayName()) + ":";
  return full.compare(0, prefix.size(), prefix) == 0 ? full.substr(prefix.size()) : full;
}

std::vector<std::uint64_t> ModelBuilder::scope_chain(std::uint64_t id) const {
  std::vector<std::uint64_t> chain;
  while (id != 0 && !node(id).isFile()) {
    chain.push_back(id);
    id = node(id).getScopeId();
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

std::string ModelBuilder::cpp_short_name(std::uint64_t id) const {
  if (auto renamed = cxx_name(node(id).getAnnotations())) return *renamed;
  return declared_name(loader_, id);
}

std::string ModelBuilder::cpp_name(std::uint64_t id) const {
  std::string out;
  if (auto ns = find_annotation(node(file_of(id)).getAnnotations(), kCxxNamespace); ns && ns->isText()) {
    std::string_view text = ns->getText().cStr();
    if (text.starts_with("::")) text.remove_prefix(2);
    if (!text.empty()) out = "::" + std::string(text);
  }
  for (auto scope : scope_chain(id)) out += "::" + cpp_short_name(scope);
  return out;
}

std::string ModelBuilder::struct_type(std::uint64_t struct_id, std::uint64_t interface_id,
                                      const std::string& suffixed_method) const {
  // capnp gives an implicit parameter list a detached struct (scopeId 0) that its C++
  // plugin nests in the interface as <Method>Params / <Method>Results.
  if (node(struct_id).getScopeId() == 0) return cpp_name(interface_id) + "::" + suffixed_method;
  return cpp_name(struct_id);
}

std::string ModelBuilder::doc(std::uint64_t id, int member) const {
  auto it = source_info_.find(id);
  if (it == source_info_.end()) return {};
  if (member < 0) return str(it->second.getDocComment());
  auto members = it->second.getMembers();
  return static_cast<unsigned>(member) < members.size() ? str(members[member].getDocComment()) : std::string{};
}

int ModelBuilder::line_of(std::uint64_t id, const std::string& method, int ordinal) {
  std::vector<SourceLines::Step> path;
  for (auto scope : scope_chain(id)) path.push_back({declared_name(loader_, scope)});
  if (!method.empty()) path.push_back({method, ordinal});
  return lines_.find(str(node(file_of(id)).getDisplayName()), path);
}

FileModel ModelBuilder::build(schema::CodeGeneratorRequest::RequestedFile::Reader file) {
  FileModel fm;
  fm.filename = str(file.getFilename());
  fm.include_name = fm.filename.substr(fm.filename.find_last_of('/') + 1) + ".h";
  const std::string ns = cpp_name(file.getId());
  fm.cpp_namespace = ns.empty() ? ns : ns.substr(2);

  // Every interface declared in the file, nested ones included, in declaration order.
  std::vector<std::uint64_t> interfaces;
  auto walk = [&](auto& self, std::uint64_t id) -> void {
    if (node(id).isInterface()) interfaces.push_back(id);
    for (auto nested : node(id).getNestedNodes()) self(self, nested.getId());
  };
  walk(walk, file.getId());

  const std::string file_name = str(node(file.getId()).getDisplayName());
  std::set<std::string> taken;  // C++ names in the file's namespace
  for (auto nested : node(file.getId()).getNestedNodes()) taken.insert(cpp_short_name(nested.getId()));

  for (auto id : interfaces) {
    InterfaceModel im;
    im.id = id;
    im.display_name = display_name(id);
    if (node(id).getIsGeneric()) {
      diag_.error(file_name, line_of(id),
                  "interface " + im.display_name +
                      " is generic (it or an enclosing scope has type parameters); SealRPC does not support "
                      "generic interfaces");
      continue;
    }
    im.doc = doc(id);
    std::string base;
    for (auto scope : scope_chain(id)) base += cpp_short_name(scope);
    im.service_class = base + "Service";
    im.client_class = base + "Client";
    for (const auto* name : {&im.service_class, &im.client_class}) {
      if (!taken.insert(*name).second) {
        diag_.error(file_name, line_of(id),
                    "generated class " + *name + " for interface " + im.display_name +
                        " collides with another name in the same namespace; rename one of them");
      }
    }
    std::vector<std::uint64_t> seen;
    collect(id, id, seen, im.methods);
    assign_names(im);
    fm.interfaces.push_back(std::move(im));
  }
  return fm;
}

void ModelBuilder::collect(std::uint64_t interface_id, std::uint64_t served_id, std::vector<std::uint64_t>& seen,
                           std::vector<MethodModel>& out) {
  if (std::find(seen.begin(), seen.end(), interface_id) != seen.end()) return;  // diamond
  seen.push_back(interface_id);
  auto iface = node(interface_id).getInterface();
  for (unsigned i = 0; i < iface.getMethods().size(); ++i) {
    if (auto m = method_model(interface_id, served_id, i); !m.handler.empty()) out.push_back(std::move(m));
  }
  for (auto super : iface.getSuperclasses()) {
    if (node(super.getId()).getIsGeneric()) {
      diag_.error(str(node(file_of(served_id)).getDisplayName()), line_of(served_id),
                  "interface " + display_name(served_id) + " extends generic interface " + display_name(super.getId()) +
                      "; SealRPC does not support generic interfaces");
      continue;
    }
    collect(super.getId(), served_id, seen, out);
  }
}

MethodModel ModelBuilder::method_model(std::uint64_t interface_id, std::uint64_t served_id, unsigned index) {
  auto method = node(interface_id).getInterface().getMethods()[index];
  MethodModel m;
  m.interface_id = interface_id;
  m.ordinal = static_cast<std::uint16_t>(index);
  m.interface_name = display_name(interface_id);
  m.method_name = str(method.getName());
  m.schema_file = str(node(file_of(interface_id)).getDisplayName());
  m.doc = doc(interface_id, static_cast<int>(index));
  const std::string qualified = m.interface_name + "." + m.method_name;
  const int line = line_of(interface_id, m.method_name, index);

  bool ok = true;
  if (method.getImplicitParameters().size() != 0) {
    diag_.error(m.schema_file, line,
                "method " + qualified + " has type parameters; SealRPC does not support generic methods");
    ok = false;
  }
  for (auto type_id : {method.getParamStructType(), method.getResultStructType()}) {
    if (node(type_id).getScopeId() != 0 && node(type_id).getIsGeneric()) {
      diag_.error(m.schema_file, line,
                  "method " + qualified + " uses generic struct " + display_name(type_id) +
                      "; SealRPC does not support generic parameter or result types");
      ok = false;
    }
  }

  // The effective rule: the nearest declaration wins. A method inherited from an
  // interface that declares no rule at all takes the serving interface's (or file's).
  struct Source {
    capnp::List<schema::Annotation>::Reader annotations;
    const char* scope;
  };
  const Source sources[] = {
      {method.getAnnotations(), "method"},
      {node(interface_id).getAnnotations(), "interface"},
      {node(file_of(interface_id)).getAnnotations(), "file"},
      {node(served_id).getAnnotations(), "interface"},
      {node(file_of(served_id)).getAnnotations(), "file"},
  };
  const std::size_t searched = interface_id == served_id ? 3 : 5;
  bool found = false;
  for (std::size_t i = 0; i < searched && !found; ++i) {
    if (auto rule = access_rule(sources[i].annotations)) {
      m.rule = *rule;
      m.rule_scope = sources[i].scope;
      found = true;
    }
  }
  if (!found) {
    std::string msg = "method " + qualified + " has no access rule";
    if (interface_id != served_id) {
      msg += " (inherited by " + display_name(served_id) + " in " +
             str(node(file_of(served_id)).getDisplayName()) + ")";
    }
    msg += "; annotate the method, interface " + m.interface_name + " or its file";
    if (interface_id != served_id) msg += ", or interface " + display_name(served_id) + " or its file,";
    msg += " with $access(...) from \"/sealrpc/sealrpc.capnp\" (use (open = true) to allow any connected peer)";
    diag_.error(m.schema_file, line, msg);
    ok = false;
  }
  if (!ok) return m;  // handler stays empty: not emitted

  const std::string cpp_method = cxx_name(method.getAnnotations()).value_or(m.method_name);
  m.params_type = struct_type(method.getParamStructType(), interface_id, title_case(cpp_method) + "Params");
  m.results_type = struct_type(method.getResultStructType(), interface_id, title_case(cpp_method) + "Results");
  m.handler = snake_case(cpp_method);  // final names are assigned per interface
  convenience(m, method.getParamStructType());
  return m;
}

void ModelBuilder::convenience(MethodModel& m, std::uint64_t params_id) const {
  auto st = node(params_id).getStruct();
  if (st.getDiscriminantCount() != 0) return;
  std::vector<schema::Field::Reader> fields;
  for (auto field : st.getFields()) fields.push_back(field);
  std::sort(fields.begin(), fields.end(),
            [](auto a, auto b) { return a.getCodeOrder() < b.getCodeOrder(); });
  std::set<std::string> names;
  std::vector<ParamArg> args;
  for (auto field : fields) {
    if (!field.isSlot()) return;  // group
    auto type = field.getSlot().getType();
    std::string cpp;
    switch (type.which()) {
      case schema::Type::VOID: continue;
      case schema::Type::BOOL: cpp = "bool"; break;
      case schema::Type::INT8: cpp = "::std::int8_t"; break;
      case schema::Type::INT16: cpp = "::std::int16_t"; break;
      case schema::Type::INT32: cpp = "::std::int32_t"; break;
      case schema::Type::INT64: cpp = "::std::int64_t"; break;
      case schema::Type::UINT8: cpp = "::std::uint8_t"; break;
      case schema::Type::UINT16: cpp = "::std::uint16_t"; break;
      case schema::Type::UINT32: cpp = "::std::uint32_t"; break;
      case schema::Type::UINT64: cpp = "::std::uint64_t"; break;
      case schema::Type::FLOAT32: cpp = "float"; break;
      case schema::Type::FLOAT64: cpp = "double"; break;
      case schema::Type::TEXT: cpp = "::kj::StringPtr"; break;
      case schema::Type::DATA: cpp = "::kj::ArrayPtr<const ::kj::byte>"; break;
      case schema::Type::ENUM: {
        const auto enum_id = type.getEnum().getTypeId();
        if (node(enum_id).getIsGeneric()) return;
        cpp = cpp_name(enum_id);
        break;
      }
      default: return;  // lists, structs, interfaces, AnyPointer
    }
    const std::string cpp_field = cxx_name(field.getAnnotations()).value_or(str(field.getName()));
    ParamArg arg{safe_identifier(snake_case(cpp_field), {"token"}), cpp, "set" + title_case(cpp_field)};
    if (!names.insert(arg.name).second) return;
    args.push_back(std::move(arg));
  }
  m.convenient = true;
  m.args = std::move(args);
}

void ModelBuilder::assign_names(InterfaceModel& iface) {
  // Flattening can bring two methods with one name from different interfaces (two
  // parents both have `get`): each of those is prefixed with its interface, e.g.
  // base_get / audited_get.
  std::map<std::string, std::set<std::uint64_t>> declared_by;
  for (const auto& m : iface.methods) declared_by[m.handler].insert(m.interface_id);
  for (auto& m : iface.methods) {
    std::string stem = m.handler;
    if (declared_by[stem].size() > 1) {
      std::string prefix;
      for (auto scope : scope_chain(m.interface_id)) prefix += snake_case(cpp_short_name(scope)) + "_";
      stem = prefix + stem;
    }
    m.stem = stem;
    m.handler = safe_identifier(stem, {"sealrpc_methods"});
    m.sync_name = safe_identifier(stem, {"client"});
  }
  // Whatever still collides (getURL and getUrl in one interface, or a method whose
  // client name equals another's) must be renamed in the schema.
  std::map<std::string, const MethodModel*> service_names;
  std::map<std::string, const MethodModel*> client_names{{"client", nullptr}};
  auto claim = [&](std::map<std::string, const MethodModel*>& names, const std::string& name, const MethodModel& m) {
    auto [it, inserted] = names.emplace(name, &m);
    if (inserted) return true;
    const std::string other = it->second ? "method " + it->second->interface_name + "." + it->second->method_name
                                         : std::string("a generated member");
    diag_.error(m.schema_file, line_of(m.interface_id, m.method_name, m.ordinal),
                "in " + iface.display_name + ", method " + m.interface_name + "." + m.method_name + " and " + other +
                    " both map to the C++ name " + name + "; rename one (or set $Cxx.name on it)");
    return false;
  };
  for (const auto& m : iface.methods) {
    if (claim(service_names, m.handler, m)) {
      if (claim(client_names, "async_" + m.stem, m) && claim(client_names, m.stem + "_request", m))
        claim(client_names, m.sync_name, m);
    }
  }
}

}  // namespace sealrpc::codegen
