// Identifier and literal helpers for capnpc-sealrpc. Pure string functions.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace sealrpc::codegen {

// camelCase -> snake_case: "getHTTPUrl" -> "get_http_url", "sha256Sum" -> "sha256_sum".
std::string snake_case(std::string_view camel);

// "foo" -> "Foo" (what capnp's C++ plugin does for "FooParams" and "setFoo").
std::string title_case(std::string_view name);

// True for C++ keywords, alternative tokens and lowercase libc macros (errno, assert...):
// names that cannot be used as an identifier in generated code as they are.
bool is_reserved_word(std::string_view name);

// Appends '_' when `name` is reserved or one of `also_reserved` (capnp's rule for
// keyword-named methods, e.g. delete -> delete_).
std::string safe_identifier(std::string name, std::initializer_list<std::string_view> also_reserved = {});

// A C++ string literal, quotes included, for arbitrary bytes.
std::string string_literal(std::string_view bytes);

// A doc comment as `//` lines, each prefixed with `indent`. Empty for empty text.
std::string comment_block(std::string_view text, std::string_view indent);

}  // namespace sealrpc::codegen
