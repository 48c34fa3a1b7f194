// Compiled params validation (see validate_plan.hpp).
#include "rpc/validate_plan.hpp"

#include <capnp/list.h>
#include <kj/debug.h>

#include <map>
#include <optional>

namespace sealrpc::detail {
namespace {

using Which = capnp::schema::Type::Which;

bool is_primitive(Which w) {
  switch (w) {
    case Which::VOID: case Which::BOOL: case Which::INT8: case Which::INT16: case Which::INT32: case Which::INT64:
    case Which::UINT8: case Which::UINT16: case Which::UINT32: case Which::UINT64: case Which::FLOAT32:
    case Which::FLOAT64: case Which::ENUM:
      return true;
    default:
      return false;
  }
}

template <typename T>
void read_list(capnp::AnyPointer::Reader p) {
  (void)p.getAs<capnp::List<T>>();  // element size checked against the declared type
}

void read_prim_list(capnp::AnyPointer::Reader p, Which element) {
  switch (element) {
    case Which::VOID: read_list<capnp::Void>(p); break;
    case Which::BOOL: read_list<bool>(p); break;
    case Which::INT8: read_list<std::int8_t>(p); break;
    case Which::INT16: read_list<std::int16_t>(p); break;
    case Which::INT32: read_list<std::int32_t>(p); break;
    case Which::INT64: read_list<std::int64_t>(p); break;
    case Which::UINT8: read_list<std::uint8_t>(p); break;
    case Which::UINT16: case Which::ENUM: read_list<std::uint16_t>(p); break;
    case Which::UINT32: read_list<std::uint32_t>(p); break;
    case Which::UINT64: read_list<std::uint64_t>(p); break;
    case Which::FLOAT32: read_list<float>(p); break;
    case Which::FLOAT64: read_list<double>(p); break;
    default: KJ_FAIL_REQUIRE("not a primitive list");
  }
}

// Builds the plans of `s` and every struct type reachable from it into `out`; false if
// one needs the dynamic walk. `index` maps schema ids to plan indices (recursive types).
bool build(capnp::StructSchema s, std::vector<ValidationPlan::Struct>& out, std::map<std::uint64_t, std::size_t>& index) {
  index.emplace(s.getProto().getId(), out.size());
  const std::size_t self = out.size();
  out.emplace_back();
  if (s.getUnionFields().size() != 0) return false;
  std::vector<ValidationPlan::Check> checks;
  for (auto f : s.getNonUnionFields()) {
    const auto proto = f.getProto();
    if (!proto.isSlot()) return false;  // a group
    const auto type = f.getType();
    const Which w = type.which();
    if (is_primitive(w)) continue;  // in the data section: bounds were checked already
    ValidationPlan::Check c{static_cast<std::uint16_t>(proto.getSlot().getOffset()), ValidationPlan::Kind::any, Which::VOID, 0};
    auto sub = [&](capnp::StructSchema t) -> std::optional<std::size_t> {
      if (auto it = index.find(t.getProto().getId()); it != index.end()) return it->second;
      const std::size_t at = out.size();
      if (!build(t, out, index)) return std::nullopt;
      return at;
    };
    switch (w) {
      case Which::TEXT: c.kind = ValidationPlan::Kind::text; break;
      case Which::DATA: c.kind = ValidationPlan::Kind::data; break;
      case Which::ANY_POINTER: c.kind = ValidationPlan::Kind::any; break;
      case Which::STRUCT: {
        auto at = sub(type.asStruct());
        if (!at) return false;
        c.kind = ValidationPlan::Kind::structure;
        c.sub = *at;
        break;
      }
      case Which::LIST: {
        const auto et = type.asList().getElementType();
        const Which e = et.which();
        if (is_primitive(e)) {
          c.kind = ValidationPlan::Kind::prim_list;
          c.element = e;
        } else if (e == Which::TEXT) {
          c.kind = ValidationPlan::Kind::text_list;
        } else if (e == Which::DATA) {
          c.kind = ValidationPlan::Kind::data_list;
        } else if (e == Which::STRUCT) {
          auto at = sub(et.asStruct());
          if (!at) return false;
          c.kind = ValidationPlan::Kind::struct_list;
          c.sub = *at;
        } else {
          return false;  // lists of lists / of AnyPointer / of interfaces
        }
        break;
      }
      default:
        return false;  // interfaces (capabilities are refused by the dynamic walk)
    }
    checks.push_back(c);
  }
  out[self].checks = std::move(checks);
  return true;
}

}  // namespace

std::unique_ptr<const ValidationPlan> ValidationPlan::compile(capnp::StructSchema schema) {
  auto plan = std::make_unique<ValidationPlan>();
  std::map<std::uint64_t, std::size_t> index;
  if (!build(schema, plan->structs_, index)) return nullptr;
  return plan;
}

void ValidationPlan::check(capnp::AnyPointer::Reader params) const {
  if (params.isNull()) return;
  check_struct(params.getAs<capnp::AnyStruct>(), 0);
}

void ValidationPlan::check_struct(capnp::AnyStruct::Reader s, std::size_t plan) const {
  const auto pointers = s.getPointerSection();
  for (const Check& c : structs_[plan].checks) {
    if (c.pointer >= pointers.size()) continue;  // an older, shorter struct: absent
    const capnp::AnyPointer::Reader p = pointers[c.pointer];
    if (p.isNull()) continue;  // absent: reads as the default, which is not walked
    switch (c.kind) {
      case Kind::text: (void)p.getAs<capnp::Text>(); break;
      case Kind::data: (void)p.getAs<capnp::Data>(); break;
      case Kind::any: (void)p.targetSize(); break;
      case Kind::structure: check_struct(p.getAs<capnp::AnyStruct>(), c.sub); break;
      case Kind::prim_list: read_prim_list(p, c.element); break;
      case Kind::text_list:
        for (auto t : p.getAs<capnp::List<capnp::Text>>()) (void)t;
        break;
      case Kind::data_list:
        for (auto d : p.getAs<capnp::List<capnp::Data>>()) (void)d;
        break;
      case Kind::struct_list: {
        // As the typed reader does: any list but a bit list reads as a struct list
        // (older writers' primitive lists are upgraded), each element a struct.
        const auto list = p.getAs<capnp::AnyList>();
        KJ_REQUIRE(list.getElementSize() != capnp::ElementSize::BIT, "Found bit list where struct list was expected");
        for (auto e : list.as<capnp::List<capnp::AnyStruct>>()) check_struct(e, c.sub);
        break;
      }
    }
  }
}

}  // namespace sealrpc::detail
