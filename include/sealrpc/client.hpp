// Client: one verified connection to a SealRPC server, many concurrent calls on it.
//
// async_connect checks the server before any request byte is sent: the socket's
// SO_PEERCRED uid must be the expected one (default: our own euid or root), else
// SERVER_IDENTITY_MISMATCH (SECURITY.md A11). Then it waits for the server's HELLO
// (or its REFUSED frame: the server's allow-list said no).
//
// Every operation takes an Asio completion token (use_awaitable, use_future, a
// callback, as_tuple(...)). Calls complete on the handler's associated executor.
// Per-operation cancellation (asio::cancellation_signal / bind_cancellation_slot)
// sends CANCEL to the server and completes the call with StatusCode::cancelled.
// Thread safety: a Client handle may be used from any thread; the connection
// serialises its work on its own strand.
#pragma once

#include "sealrpc/call_context.hpp"
#include "sealrpc/encryption.hpp"
#include "sealrpc/message.hpp"
#include "sealrpc/peer.hpp"
#include "sealrpc/status.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace sealrpc {

// Client-side errors that are not RPC statuses.
enum class ClientError {
  server_identity_mismatch = 1,  // the socket's owner is not who we expect
  refused_by_server,             // the server's connection allow-list refused us
  protocol_error,                // the server broke framing; connection closed
  connection_closed,             // the connection is gone; the call's fate is unknown
  connect_timeout,
  encryption_required_by_server,  // we do not encrypt; the server requires it
  encryption_unavailable,         // we require encryption (or pinned a key); the server does not offer it
  handshake_failed,               // key exchange failed: wrong pinned key, tampering, bad message
  integrity_error,                // a frame failed authentication; connection closed
  bad_key_file,                   // the pinned server key file was refused (see keys.hpp)
  blocking_call_not_allowed,      // Client::call needs single_threaded and must not run inside the event loop
};
const boost::system::error_category& client_category() noexcept;
inline boost::system::error_code make_error_code(ClientError e) noexcept {
  return {static_cast<int>(e), client_category()};
}

struct ClientOptions {
  // The uid the server must run as. Default: our own euid, or root.
  std::optional<uid_t> expected_server_uid;
  std::chrono::milliseconds default_timeout{30'000};
  std::chrono::milliseconds connect_timeout{5'000};
  ReaderLimits reply_limits;
  // Payload encryption (docs/protocol-crypto.md). With a pinned server public key file
  // (sealrpc-keygen) the handshake authenticates the server cryptographically (NK)
  // and encryption is required whatever `encryption` says.
  EncryptionMode encryption = EncryptionMode::optional;
  std::string pinned_server_key_file;
  // Requests whose encoded size exceeds the threshold go out of line in a sealed
  // immutable memfd; replies up to max_out_of_line_bytes are accepted (docs/buffers.md).
  std::size_t out_of_line_threshold = 64 * 1024;
  std::uint64_t max_out_of_line_bytes = std::uint64_t{1} << 30;
  // Mappings of buffers the server sent that are kept for when the same buffer comes
  // again (a reused buffer: no mmap and no page faults the next time; docs/buffers.md).
  // Bounded in count and bytes per connection, dropped with it; 0 entries: off.
  std::size_t buffer_cache_entries = 8;
  std::uint64_t buffer_cache_bytes = std::uint64_t{256} << 20;
  // Promise that only one thread ever runs the executor passed to async_connect and
  // calls this Client (a single-threaded io_context, the usual client): the connection
  // then runs on that executor directly instead of a strand of its own, which saves the
  // strand's locking and queueing on every send and completion (BM_SealRPC_Variant/
  // client_strand measures it). Wrong (data races) if several threads use it.
  bool single_threaded = false;
};

namespace detail {
class ClientConnection;

// Type-erased completion for one call; implemented below for each handler type.
class CallCompletion : public Recycled {
 public:
  virtual ~CallCompletion() = default;
  virtual void complete(boost::system::error_code ec, ResponseMessage&& msg) = 0;
};

class ConnectCompletion : public Recycled {
 public:
  virtual ~ConnectCompletion() = default;
  virtual void complete(boost::system::error_code ec, std::shared_ptr<ClientConnection> conn) = 0;
};

// True when the calling thread runs `ex` now (an io_context executor, or a strand of
// one, that is running in this thread): a handler for `ex` may then be invoked inline,
// as dispatch() would. False for other executor types.
bool running_in_this_thread(const boost::asio::any_io_executor& ex) noexcept;

template <typename Handler, typename Arg, typename Base>
class HandlerCompletion : public Base {
 public:
  HandlerCompletion(Handler h, boost::asio::any_io_executor io)
      : handler_(std::move(h)),
        work_(boost::asio::get_associated_executor(handler_, io)) {}

  template <typename T>
  void finish(boost::system::error_code ec, T&& value) {
    auto ex = work_.get_executor();
    work_.reset();
    if constexpr (std::is_same_v<decltype(ex), boost::asio::any_io_executor>) {
      // What dispatch() would do, minus the type-erased function object it allocates
      // when going through any_io_executor: we already run on the handler's executor.
      if (running_in_this_thread(ex)) {
        std::move(handler_)(ec, Arg(std::forward<T>(value)));
        return;
      }
    }
    boost::asio::dispatch(ex, [h = std::move(handler_), ec, v = Arg(std::forward<T>(value))]() mutable {
      std::move(h)(ec, std::move(v));
    });
  }

 protected:
  Handler handler_;
  boost::asio::executor_work_guard<boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>> work_;
};

std::uint64_t start_call(const std::shared_ptr<ClientConnection>& conn, MethodId id, RequestMessage&& req,
                         std::unique_ptr<CallCompletion> completion);
void cancel_call(const std::shared_ptr<ClientConnection>& conn, std::uint64_t request_id);
boost::system::error_code call_blocking(const std::shared_ptr<ClientConnection>& conn, MethodId id, RequestMessage&& req,
                                        ResponseMessage& out);
void start_connect(boost::asio::any_io_executor ex, std::string path, ClientOptions opts,
                   std::unique_ptr<ConnectCompletion> completion);
boost::asio::any_io_executor connection_executor(const std::shared_ptr<ClientConnection>& conn);
const PeerCredentials& connection_server(const std::shared_ptr<ClientConnection>& conn);
void close_connection(const std::shared_ptr<ClientConnection>& conn);
bool connection_is_open(const std::shared_ptr<ClientConnection>& conn);
bool connection_is_encrypted(const std::shared_ptr<ClientConnection>& conn);
}  // namespace detail

class Client {
 public:
  Client() = default;
  explicit Client(std::shared_ptr<detail::ClientConnection> conn) : conn_(std::move(conn)) {}

  // Completion signature: void(boost::system::error_code, Client).
  template <typename Token>
  static auto async_connect(boost::asio::any_io_executor ex, std::string path, ClientOptions opts, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, Client)>(
        [](auto handler, boost::asio::any_io_executor ex, std::string path, ClientOptions opts) {
          using H = std::decay_t<decltype(handler)>;
          struct C final : detail::HandlerCompletion<H, Client, detail::ConnectCompletion> {
            using detail::HandlerCompletion<H, Client, detail::ConnectCompletion>::HandlerCompletion;
            void complete(boost::system::error_code ec, std::shared_ptr<detail::ClientConnection> c) override {
              this->finish(ec, Client(std::move(c)));
            }
          };
          detail::start_connect(ex, std::move(path), std::move(opts), std::make_unique<C>(std::move(handler), ex));
        },
        token, std::move(ex), std::move(path), std::move(opts));
  }

  // Sends one call. Completion signature: void(boost::system::error_code, Response<Results>).
  // ec is a StatusCode (status_category) for RPC outcomes or a ClientError.
  template <typename Results, typename Token>
  auto async_call(MethodId id, RequestMessage req, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, Response<Results>)>(
        [](auto handler, std::shared_ptr<detail::ClientConnection> conn, MethodId id, RequestMessage req) {
          using H = std::decay_t<decltype(handler)>;
          struct C final : detail::HandlerCompletion<H, Response<Results>, detail::CallCompletion> {
            using detail::HandlerCompletion<H, Response<Results>, detail::CallCompletion>::HandlerCompletion;
            void complete(boost::system::error_code ec, ResponseMessage&& m) override {
              this->finish(ec, Response<Results>(std::move(m)));
            }
          };
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto ex = detail::connection_executor(conn);
          auto rid = detail::start_call(conn, id, std::move(req), std::make_unique<C>(std::move(handler), ex));
          if (slot.is_connected() && rid != 0) {
            slot.assign([weak = std::weak_ptr<detail::ClientConnection>(conn), rid](boost::asio::cancellation_type) {
              if (auto c = weak.lock()) detail::cancel_call(c, rid);
            });
          }
        },
        token, conn_, id, std::move(req));
  }

  // The same call, synchronously: blocks the calling thread until the reply, an error
  // or the deadline; ec as for async_call. The calling thread does the socket I/O itself
  // (poll and recvmsg, no event loop): the fastest way to make one call at a time, as a
  // gRPC's synchronous API or sd_bus_call would. Only on a connection made with
  // ClientOptions::single_threaded, from its one thread, and not from inside its
  // io_context (a handler): otherwise ec is ClientError::blocking_call_not_allowed.
  // Work of other async calls on the io_context waits until it runs again; replies to
  // them that arrive meanwhile are taken and their handlers queued on it.
  template <typename Results>
  Response<Results> call(MethodId id, RequestMessage req, boost::system::error_code& ec) {
    ResponseMessage m;
    ec = detail::call_blocking(conn_, id, std::move(req), m);
    return Response<Results>(std::move(m));
  }

  const PeerCredentials& server() const { return detail::connection_server(conn_); }
  bool is_open() const { return conn_ && detail::connection_is_open(conn_); }
  // True when the handshake finished and every frame is encrypted and authenticated.
  bool is_encrypted() const { return conn_ && detail::connection_is_encrypted(conn_); }
  // Closes the connection; pending calls complete with ClientError::connection_closed.
  void close() {
    if (conn_) detail::close_connection(conn_);
  }

 private:
  std::shared_ptr<detail::ClientConnection> conn_;
};

}  // namespace sealrpc

template <>
struct boost::system::is_error_code_enum<sealrpc::ClientError> : std::true_type {};
