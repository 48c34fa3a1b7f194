// StatusCode and ClientError categories.
#include "sealrpc/client.hpp"
#include "sealrpc/status.hpp"

namespace sealrpc {

std::string_view to_string(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::ok: return "OK";
    case StatusCode::cancelled: return "CANCELLED";
    case StatusCode::invalid_argument: return "INVALID_ARGUMENT";
    case StatusCode::deadline_exceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::not_found: return "NOT_FOUND";
    case StatusCode::permission_denied: return "PERMISSION_DENIED";
    case StatusCode::resource_exhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::unimplemented: return "UNIMPLEMENTED";
    case StatusCode::internal: return "INTERNAL";
    case StatusCode::unavailable: return "UNAVAILABLE";
  }
  return "UNKNOWN";
}

namespace {

class StatusCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sealrpc.status"; }
  std::string message(int ev) const override {
    if (ev < 0 || ev > kMaxStatusCode) return "unknown status";
    return std::string(to_string(static_cast<StatusCode>(ev)));
  }
};

class ClientCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sealrpc.client"; }
  std::string message(int ev) const override {
    switch (static_cast<ClientError>(ev)) {
      case ClientError::server_identity_mismatch: return "SERVER_IDENTITY_MISMATCH: the socket's server runs as an unexpected uid";
      case ClientError::refused_by_server: return "connection refused by the server's allow-list";
      case ClientError::protocol_error: return "protocol error; connection closed";
      case ClientError::connection_closed: return "connection closed";
      case ClientError::connect_timeout: return "timed out waiting for the server's hello";
      case ClientError::encryption_required_by_server: return "the server requires encryption; this client has it off";
      case ClientError::encryption_unavailable: return "this client requires encryption; the server does not offer it";
      case ClientError::handshake_failed: return "encryption handshake failed (wrong pinned key, tampering or a bad message)";
      case ClientError::bad_key_file: return "the pinned server key file was refused (missing, malformed, or unsafe owner/mode)";
      case ClientError::blocking_call_not_allowed:
        return "a synchronous call needs a single_threaded connection and must not be made from inside its event loop";
      case ClientError::integrity_error: return "a frame failed authentication (tampered, replayed, reordered or dropped); connection closed";
    }
    return "unknown client error";
  }
};

}  // namespace

const boost::system::error_category& status_category() noexcept {
  static const StatusCategory c;
  return c;
}

const boost::system::error_category& client_category() noexcept {
  static const ClientCategory c;
  return c;
}

}  // namespace sealrpc
