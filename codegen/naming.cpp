#include "naming.hpp"

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace sealrpc::codegen {
namespace {

bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower_or_digit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// C++20 keywords and alternative tokens, plus lowercase names that libc or POSIX
// headers may define as macros.
constexpr std::string_view kReserved[] = {
    "alignas",   "alignof",   "and",          "and_eq",      "asm",          "assert",
    "auto",      "bitand",    "bitor",        "bool",        "break",        "case",
    "catch",     "char",      "char16_t",     "char32_t",    "char8_t",      "class",
    "co_await",  "co_return", "co_yield",     "compl",       "concept",      "const",
    "const_cast", "consteval", "constexpr",   "constinit",   "continue",     "decltype",
    "default",   "delete",    "do",           "double",      "dynamic_cast", "else",
    "enum",      "errno",     "explicit",     "export",      "extern",       "false",
    "final",     "float",     "for",          "friend",      "goto",         "if",
    "import",    "inline",    "int",          "linux",       "long",         "major",
    "makedev",   "minor",     "module",       "mutable",     "namespace",    "new",
    "noexcept",  "not",       "not_eq",       "nullptr",     "offsetof",     "operator",
    "or",        "or_eq",     "override",     "private",     "protected",    "public",
    "register",  "reinterpret_cast", "requires", "return",   "setjmp",       "short",
    "signed",    "sizeof",    "static",       "static_assert", "static_cast", "stderr",
    "stdin",     "stdout",    "struct",       "switch",      "template",     "this",
    "thread_local", "throw",  "true",         "try",         "typedef",      "typeid",
    "typename",  "union",     "unix",         "unsigned",    "using",        "va_arg",
    "virtual",   "void",      "volatile",     "wchar_t",     "while",        "xor",
    "xor_eq",
};

}  // namespace

std::string snake_case(std::string_view camel) {
  std::string out;
  out.reserve(camel.size() + 4);
  for (std::size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    if (is_upper(c)) {
      const bool after_lower = i > 0 && is_lower_or_digit(camel[i - 1]);
      const bool ends_acronym = i > 0 && is_upper(camel[i - 1]) && i + 1 < camel.size() &&
                                camel[i + 1] >= 'a' && camel[i + 1] <= 'z';
      if (after_lower || ends_acronym) out += '_';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

std::string title_case(std::string_view name) {
  std::string out(name);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

bool is_reserved_word(std::string_view name) {
  return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

std::string safe_identifier(std::string name, std::initializer_list<std::string_view> also_reserved) {
  if (is_reserved_word(name) || std::find(also_reserved.begin(), also_reserved.end(), name) != also_reserved.end()) {
    name += '_';
  }
  return name;
}

std::string string_literal(std::string_view bytes) {
  std::string out = "\"";
  for (const char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\%03o", u);  // fixed width: never merges with the next char
      out += buf;
    }
  }
  out += '"';
  return out;
}

std::string comment_block(std::string_view text, std::string_view indent) {
  std::string out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    // A trailing backslash would splice the next generated line into the comment.
    while (!line.empty() && (line.back() == '\\' || line.back() == ' ' || line.back() == '\r' ||
                             line.back() == '\t')) {
      line.remove_suffix(1);
    }
    out += indent;
    out += "//";
    if (!line.empty()) {
      out += ' ';
      out += line;
    }
    out += '\n';
  }
  // Drop trailing empty comment lines.
  const std::string empty_line = std::string(indent) + "//\n";
  while (out.size() >= empty_line.size() && out.compare(out.size() - empty_line.size(), empty_line.size(), empty_line) == 0) {
    out.resize(out.size() - empty_line.size());
  }
  return out;
}

}  // namespace sealrpc::codegen
