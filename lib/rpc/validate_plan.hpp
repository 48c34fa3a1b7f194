// A validation plan compiled once per method from its params schema: the same checks as
// validate_params() (every present pointer read with its declared type through the
// bounded reader), without the dynamic API's per-call schema lookups. Structs with
// unions or groups, lists of lists and interfaces are left to validate_params().
#pragma once

#include <capnp/any.h>
#include <capnp/schema.h>

#include <memory>
#include <vector>

namespace sealrpc::detail {

class ValidationPlan {
 public:
  // nullptr when some reachable type needs the dynamic walk (see above).
  static std::unique_ptr<const ValidationPlan> compile(capnp::StructSchema schema);
  // Throws kj::Exception on a pointer that does not match its declared type or breaks
  // the reader's limits, like validate_params().
  void check(capnp::AnyPointer::Reader params) const;

  enum class Kind : std::uint8_t { text, data, any, structure, prim_list, text_list, data_list, struct_list };
  struct Check {
    std::uint16_t pointer;  // index in the pointer section
    Kind kind;
    capnp::schema::Type::Which element;  // prim_list: element type
    std::size_t sub;                     // structure / struct_list: index of its plan
  };
  struct Struct {
    std::vector<Check> checks;
  };

 private:
  void check_struct(capnp::AnyStruct::Reader s, std::size_t plan) const;
  std::vector<Struct> structs_;  // [0] is the params struct
};

}  // namespace sealrpc::detail
