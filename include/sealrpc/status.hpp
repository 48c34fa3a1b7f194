// Status codes that cross the wire. A closed set (see docs/PROTOCOL.md); the numeric
// values are part of framing v1 and never change. Errors travel as a code plus a short
// safe message: never payload bytes, keys, paths of other clients or exception text.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace sealrpc {

enum class StatusCode : std::uint16_t {
  ok = 0,
  cancelled = 1,
  invalid_argument = 2,
  deadline_exceeded = 3,
  not_found = 4,
  permission_denied = 5,
  resource_exhausted = 6,
  unimplemented = 7,
  internal = 8,
  unavailable = 9,
};
inline constexpr std::uint16_t kMaxStatusCode = 9;

std::string_view to_string(StatusCode code) noexcept;

// The error category for StatusCode, so RPC outcomes compose with Asio completion
// tokens as ordinary boost::system::error_code values.
const boost::system::error_category& status_category() noexcept;
inline boost::system::error_code make_error_code(StatusCode c) noexcept {
  return {static_cast<int>(c), status_category()};
}

// A handler's outcome: a code and a message meant for the caller. The message is sent
// as is, so handlers must not put secrets in it.
struct Status {
  StatusCode code = StatusCode::ok;
  std::string message;

  static Status ok() { return {}; }
  bool is_ok() const noexcept { return code == StatusCode::ok; }
};

}  // namespace sealrpc

template <>
struct boost::system::is_error_code_enum<sealrpc::StatusCode> : std::true_type {};
