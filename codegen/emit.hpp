// Prints a FileModel as C++: <file>.capnp.sealrpc.h and <file>.capnp.sealrpc.c++.
#pragma once

#include "model.hpp"

#include <string>

namespace sealrpc::codegen {

std::string emit_header(const FileModel& file);
std::string emit_source(const FileModel& file);

}  // namespace sealrpc::codegen
