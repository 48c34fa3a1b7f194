// Typed deep validation of incoming params (see service.hpp). Every field is read
// with its declared type through the bounded reader, so capnp's own checks (element
// size, pointer kind, bounds, traversal limit, nesting limit) fire here, before any
// handler code runs. Lists of primitives are bounds-checked when the list pointer is
// read and are not walked element by element.
#include "sealrpc/service.hpp"

#include <capnp/dynamic.h>

namespace sealrpc {
namespace {

void walk(const capnp::DynamicValue::Reader& v);

// Only fields that are present are walked: an absent struct pointer reads as the
// default value, and following defaults of a recursive type would never end.
void walk_field(const capnp::DynamicStruct::Reader& s, capnp::StructSchema::Field f) {
  if (f.getProto().isGroup() || s.has(f)) walk(s.get(f));
}

void walk_struct(const capnp::DynamicStruct::Reader& s) {
  for (auto f : s.getSchema().getNonUnionFields()) walk_field(s, f);
  KJ_IF_MAYBE(f, s.which()) { walk_field(s, *f); }
}

void walk(const capnp::DynamicValue::Reader& v) {
  switch (v.getType()) {
    case capnp::DynamicValue::STRUCT:
      walk_struct(v.as<capnp::DynamicStruct>());
      break;
    case capnp::DynamicValue::LIST: {
      auto list = v.as<capnp::DynamicList>();
      const auto et = list.getSchema().whichElementType();
      if (et == capnp::schema::Type::STRUCT || et == capnp::schema::Type::LIST || et == capnp::schema::Type::TEXT ||
          et == capnp::schema::Type::DATA || et == capnp::schema::Type::ANY_POINTER) {
        for (auto e : list) walk(e);
      }
      break;
    }
    case capnp::DynamicValue::TEXT: (void)v.as<capnp::Text>(); break;
    case capnp::DynamicValue::DATA: (void)v.as<capnp::Data>(); break;
    case capnp::DynamicValue::ANY_POINTER: (void)v.as<capnp::AnyPointer>().targetSize(); break;
    case capnp::DynamicValue::CAPABILITY: KJ_FAIL_REQUIRE("capabilities are not supported in SealRPC messages");
    default: break;  // primitives and enums: nothing to check beyond the struct bounds
  }
}

}  // namespace

void validate_params(capnp::AnyPointer::Reader params, capnp::StructSchema schema) {
  if (params.isNull()) return;
  walk_struct(params.getAs<capnp::DynamicStruct>(schema));
}

}  // namespace sealrpc
