// capnpc-sealrpc: Cap'n Proto compiler plugin generating SealRPC server skeletons and
// typed clients. `capnp compile -o<path>/capnpc-sealrpc:<outdir> foo.capnp` writes
// foo.capnp.sealrpc.h and foo.capnp.sealrpc.c++ next to capnp's foo.capnp.h (capnp runs
// plugins inside <outdir>). Refuses, naming the method and file, any method without an
// access rule and any generic interface; then nothing is written and the exit status is 1.
// See docs/codegen.md.

#include "emit.hpp"
#include "model.hpp"

#include <capnp/schema-loader.h>
#include <capnp/schema.capnp.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

void write_file(const std::filesystem::path& path, const std::string& content) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

int run() {
  // The input comes from the capnp compiler itself (trusted): allow any request size.
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 1ull << 32;
  options.nestingLimit = 512;
  capnp::StreamFdMessageReader message(STDIN_FILENO, options);
  auto request = message.getRoot<capnp::schema::CodeGeneratorRequest>();

  capnp::SchemaLoader loader;
  for (auto node : request.getNodes()) loader.load(node);

  sealrpc::codegen::Diagnostics diag;
  sealrpc::codegen::ModelBuilder builder(loader, request, diag);
  std::vector<sealrpc::codegen::FileModel> files;
  for (auto file : request.getRequestedFiles()) files.push_back(builder.build(file));
  if (diag.failed()) {
    for (const auto& m : diag.messages()) std::cerr << m << '\n';
    return 1;
  }

  for (const auto& f : files) {
    // Same placement as capnp's C++ plugin: the requested name, relative to <outdir>.
    std::string name = f.filename;
    while (!name.empty() && name.front() == '/') name.erase(0, 1);
    write_file(name + ".sealrpc.h", sealrpc::codegen::emit_header(f));
    write_file(name + ".sealrpc.c++", sealrpc::codegen::emit_source(f));
  }
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const kj::Exception& e) {
    std::cerr << "capnpc-sealrpc: " << e.getDescription().cStr() << '\n';
  } catch (const std::exception& e) {
    std::cerr << "capnpc-sealrpc: " << e.what() << '\n';
  }
  return 1;
}
