// Server: accepts connections on a Listener, verifies each peer with the kernel,
// applies the connection allow-list, then dispatches calls to Services.
//
// Per call (lib/rpc/server.cpp, Connection::on_request):
//   lookup method -> authorize(rule, peer) -> audit -> validate params (bounded
//   ReaderOptions) -> run the handler coroutine with deadline and cancellation.
// The check runs before the params are parsed; an unknown method is answered exactly
// like a denied one unless the caller may call some method of that interface.
//
// Runs on the user's io_context (one thread or a pool): each connection is served on
// its own strand. start()/stop()/reload_policy() may be called from any thread.
#pragma once

#include "sealrpc/audit.hpp"
#include "sealrpc/encryption.hpp"
#include "sealrpc/endpoint.hpp"
#include "sealrpc/message.hpp"
#include "sealrpc/policy.hpp"
#include "sealrpc/policy_file.hpp"
#include "sealrpc/service.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace sealrpc {

// Per-uid connection *rate* limit (SECURITY.md D2, churn): a token bucket per uid. Each
// accepted connection takes a token; a uid with none left is refused right after
// SO_PEERCRED (one send of REFUSED, then close: no HELLO, no per-connection state), and
// the refusal is audited through the AuditLog's rate limiter. Tokens come back at
// `per_second`, up to `burst`. Either field 0 disables the limit.
// Defaults: a client connects once and keeps the connection, so a normal service never
// comes near 256 back-to-back connects or 128/s sustained from one uid (systemd's default
// trigger limit for Accept=yes sockets is 200 per 2 s, all uids together); a 10^4/s
// connect/close loop gets at most 128/s through and every other attempt is refused cheaply.
struct ConnectionRate {
  std::uint32_t burst = 256;
  std::uint32_t per_second = 128;
};

inline AccessRuleSpec same_user_only() {
  AccessRuleSpec r;
  r.same_user = true;
  return r;
}

struct ServerOptions {
  // Connection-level allow-list, checked at accept before reading a byte.
  // Default: only processes running as the server's own uid.
  AccessRuleSpec allow = same_user_only();
  // Audit sink front; default: syslog (LOG_AUTHPRIV).
  std::shared_ptr<AuditLog> audit;
  // Optional policy file overriding the schema's per-method rules.
  std::string policy_file;
  std::size_t max_connections = 16384;
  std::size_t max_connections_per_uid = 4096;
  ConnectionRate connection_rate_per_uid;  // {0, 0}: no rate limit (see ConnectionRate)
  std::size_t max_inflight_per_connection = 256;
  // Calls in progress per uid over all its connections (SECURITY.md D5: many concurrent
  // long calls). A call counts from admission until its handler returns (a cancelled
  // call too, until its handler has noticed); over the limit: RESOURCE_EXHAUSTED
  // "too many calls in flight for this uid", audited, the connection goes on. Default:
  // 16 connections' worth of max_inflight_per_connection.
  std::size_t max_inflight_per_uid = 4096;
  std::chrono::milliseconds frame_timeout{10'000};
  // Set when exactly one thread runs the server's executor (an io_context(1) run by one
  // thread): connections then use that executor directly instead of a strand each,
  // which saves the strand's locking and queueing on every completion. Wrong (data
  // races) if several threads run it.
  bool single_threaded = false;
  ReaderLimits request_limits;
  // Raise RLIMIT_NOFILE's soft limit to the hard limit at start (D1).
  bool raise_fd_limit = true;
  // Payload encryption (docs/protocol-crypto.md): offered in HELLO; `required` refuses
  // plaintext clients. static_key_file: the server's secret key (sealrpc-keygen),
  // loaded at start(); lets clients that pin its public key authenticate it (NK).
  EncryptionMode encryption = EncryptionMode::off;
  std::string static_key_file;
  // Large buffers (docs/buffers.md). Replies whose encoded size exceeds the threshold go
  // out of line in a sealed memfd; requests and buffers up to max_out_of_line_bytes are
  // accepted that way (capped at 1 GiB). request_limits must also cover that size.
  std::size_t out_of_line_threshold = 64 * 1024;
  std::uint64_t max_out_of_line_bytes = std::uint64_t{1} << 30;
  // Which client buffer kinds ctx.buffer() accepts: immutable ones are mapped in place,
  // owner-revocable ones are copied into server memory (wiped on release).
  bool accept_immutable_buffers = true;
  bool accept_revocable_buffers = true;
  // Owner-revocable buffers the server hands out: default lease, and how many one
  // connection may hold before replies carrying more get RESOURCE_EXHAUSTED.
  std::chrono::milliseconds buffer_lease{30'000};
  std::size_t max_leased_buffers = 1024;
  // Per-uid quotas over ALL of a uid's connections (SECURITY.md M9): what that uid's
  // calls in progress may make the server hold at once from client memfds. Bytes: the
  // sizes of out-of-line request messages (read into server memory) plus request
  // buffers (mapped, or copied, when the handler takes them), whole sizes even when
  // sparse; buffers: the memfds of those calls (each out-of-line message and each buffer
  // fd). Charged before the server reads or maps anything, released when the call ends;
  // a call over either limit is answered RESOURCE_EXHAUSTED (and audited) without
  // running, and the connection goes on. The value is the limit: 0 refuses every call
  // that carries a memfd; std::numeric_limits<...>::max() is unlimited. Keep the bytes
  // quota >= max_out_of_line_bytes, or a single maximal message never fits.
  // Defaults: two maximal (1 GiB) messages per uid at once; 1024 memfds.
  std::uint64_t max_buffer_bytes_per_uid = std::uint64_t{2} << 30;
  std::size_t max_buffers_per_uid = 1024;
};

class Server {
 public:
  Server(boost::asio::any_io_executor ex, Listener listener, ServerOptions opts = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Registers a service; before start(). Throws std::invalid_argument on a duplicate
  // method id or a rule naming an unknown user/group.
  void add_service(std::shared_ptr<Service> service);
  // Loads the policy file (if any) and starts accepting. Throws PolicyError.
  void start();
  // Stops accepting, closes every connection (in-flight handlers are cancelled) and
  // removes the socket and its private directory. Idempotent.
  void stop();

  // Re-reads the policy file. On error the old policy stays and the error (with its
  // line) is returned; on success returns nullopt. Connections are not dropped.
  std::optional<std::string> reload_policy();
  // Installs overrides directly (tests, embedders with their own config format).
  void set_policy(const PolicyOverrides& overrides);

  const std::string& path() const noexcept;
  std::size_t connection_count() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sealrpc
