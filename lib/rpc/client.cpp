// Client connection: verifies the server's identity, then multiplexes calls.
#include "sealrpc/client.hpp"

#include "sealrpc/endpoint.hpp"
#include "sealrpc/keys.hpp"
#include "security/crypto.hpp"
#include "transport/capnp_codec.hpp"
#include "transport/channel.hpp"
#include "buffers/memfd.hpp"
#include "rpc/buffer_glue.hpp"
#include "rpc/deadline_queue.hpp"
#include "rpc/park.hpp"
#include "rpc/serial_executor.hpp"
#include "sealrpc/detail/recycle.hpp"

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <kj/exception.h>

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <unordered_map>

namespace sealrpc::detail {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using transport::FrameChannel;

class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(asio::any_io_executor strand, std::shared_ptr<FrameChannel> chan, PeerCredentials server, ClientOptions opts)
      : strand_(std::move(strand)), chan_(std::move(chan)), server_(std::move(server)), opts_(std::move(opts)) {}

  asio::any_io_executor executor() const { return strand_; }
  const PeerCredentials& server() const { return server_; }
  bool is_open() const { return open_.load(std::memory_order_relaxed); }
  FrameChannel& channel() { return *chan_; }

  std::uint32_t allocate_id() {
    std::uint32_t id;
    do id = next_id_.fetch_add(1, std::memory_order_relaxed);
    while (id == 0);
    return id;
  }

  bool single_threaded() const noexcept { return opts_.single_threaded; }

  std::chrono::milliseconds timeout_of(const RequestMessage& req) const {
    return req.timeout.count() > 0 ? req.timeout : opts_.default_timeout;
  }

  // On the strand; with ClientOptions::single_threaded possibly straight from
  // async_call, so an early failure completes later, never inside the initiating call
  // (unless `fail_inline`: the synchronous call, which waits for it right here).
  void start(std::uint32_t rid, MethodId id, RequestMessage&& req, std::unique_ptr<CallCompletion> c, bool fail_inline = false) {
    const auto fail = [this, fail_inline](std::unique_ptr<CallCompletion> c, boost::system::error_code ec, ResponseMessage m) {
      if (fail_inline)
        c->complete(ec, std::move(m));
      else
        asio::post(strand_, [c = std::move(c), ec, m = std::move(m)]() mutable { c->complete(ec, std::move(m)); });
    };
    if (!chan_->is_open()) {
      fail(std::move(c), make_error_code(ClientError::connection_closed), {});
      return;
    }
    auto& msg = req.message();
    const auto timeout = timeout_of(req);
    wire::FrameHeader h;
    h.type = wire::FrameType::request;
    h.request_id = rid;
    h.interface_id = id.interface_id;
    h.ordinal = id.ordinal;
    h.timeout_ms = static_cast<std::uint32_t>(std::min<std::int64_t>(timeout.count(), std::numeric_limits<std::uint32_t>::max()));
    wire::EncodedFrame frame;
    try {  // inline, or out of line in a sealed memfd (docs/buffers.md), plus attached buffers
      frame = detail::encode_request(h, msg, opts_, req.buffers(), chan_->take_spare());
    } catch (const std::exception&) {
      fail(std::move(c), make_error_code(StatusCode::resource_exhausted),
                 ResponseMessage(Status{StatusCode::resource_exhausted, "request too large"}, {}));
      return;
    }

    if (!pending_releases_.empty()) {
      // Buffer releases ride in the same sendmsg, before the request (so the server
      // reads the request last and runs it with nothing buffered behind it). Not when
      // the request carries fds: those go on the frame's first byte, so the releases
      // go first, on their own.
      if (frame.fds.empty()) {
        frame.bytes.insert(frame.bytes.begin(), pending_releases_.begin(), pending_releases_.end());
        pending_releases_.clear();
      } else {
        flush_releases();
      }
    }
    Pending& p = add_pending(rid);
    p.completion = std::move(c);
    p.buffers = std::move(req.buffers());  // revocable ones are wiped when the call ends
    // The client enforces the deadline too: it does not wait on a server that ignores it.
    if (timeout.count() > 0) p.deadline = deadlines_.add(DeadlineQueue::clock::now() + timeout, rid, shared_from_this());
    if (chan_->send(std::move(frame.bytes), std::move(frame.fds))) return;
    if (fail_inline)  // completes this call too
      fail_all(make_error_code(ClientError::connection_closed));
    else
      asio::post(strand_, [self = shared_from_this()] { self->fail_all(make_error_code(ClientError::connection_closed)); });
  }

  // Client::call: one call made synchronously. The calling thread does the connection's
  // socket I/O itself (poll + recvmsg, no event loop) until the call completes: frames
  // for other calls that arrive meanwhile complete those calls as the read loop would.
  // Allowed only on a single-threaded connection and outside its event loop, so nothing
  // else reads the socket meanwhile (docs/user-guide.md, "Synchronous calls").
  boost::system::error_code call_blocking(MethodId id, RequestMessage&& req, ResponseMessage& out) {
    if (!opts_.single_threaded || running_in_this_thread(strand_)) return make_error_code(ClientError::blocking_call_not_allowed);
    struct Slot {
      bool done = false;
      boost::system::error_code ec;
      ResponseMessage& out;
    } slot{false, {}, out};
    struct Done final : CallCompletion {
      explicit Done(Slot& s) : slot(s) {}
      void complete(boost::system::error_code ec, ResponseMessage&& m) override {
        slot.ec = ec;
        slot.out = std::move(m);
        slot.done = true;
      }
      Slot& slot;
    };
    const auto timeout = timeout_of(req);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const std::uint32_t rid = allocate_id();
    start(rid, id, std::move(req), std::make_unique<Done>(slot), /*fail_inline=*/true);
    while (!slot.done) {
      try {
        if (auto f = chan_->poll_frame()) {
          if (!on_frame(*f)) fail_all(make_error_code(ClientError::connection_closed));
          continue;
        }
      } catch (...) {
        fail_all(make_error_code(read_error()));
        continue;
      }
      chan_->flush();  // a request larger than the socket buffer goes out in parts
      if (!chan_->is_open()) {
        fail_all(make_error_code(ClientError::connection_closed));
        continue;
      }
      int wait_ms = -1;
      if (timeout.count() > 0) {
        const auto left = deadline - std::chrono::steady_clock::now();
        if (left <= left.zero()) {
          abandon(rid, StatusCode::deadline_exceeded, "deadline exceeded");
          continue;
        }
        wait_ms = static_cast<int>(std::min<std::int64_t>(std::chrono::ceil<std::chrono::milliseconds>(left).count(),
                                                          std::numeric_limits<int>::max()));
      }
      pollfd p{chan_->native_handle(), static_cast<short>(POLLIN | (chan_->has_queued_output() ? POLLOUT : 0)), 0};
      if (::poll(&p, 1, wait_ms) < 0 && errno != EINTR) fail_all(make_error_code(ClientError::connection_closed));
    }
    return slot.ec;
  }

  // Tells the server it may wipe buffer #index of reply `rid` (from any thread). The
  // BUFFER_RELEASE goes with the next request if one starts before the strand's next
  // turn (a transfer loop: one sendmsg and one server wake-up less), else on its own.
  // Single-threaded: the releasing thread is the connection's only one, so the release
  // is queued at once, also outside the event loop (a synchronous caller's next call
  // then carries it).
  std::function<void(std::uint8_t)> release_hook(std::uint32_t rid) {
    return [w = weak_from_this(), rid](std::uint8_t index) {
      auto self = w.lock();
      if (!self) return;
      auto queue = [self, rid, index] {
        if (!self->chan_->is_open()) return;
        const auto frame = wire::encode_buffer_release(rid, index);
        self->pending_releases_.insert(self->pending_releases_.end(), frame.begin(), frame.end());
        if (std::exchange(self->release_flush_posted_, true)) return;
        asio::post(self->strand_, [self] {
          self->release_flush_posted_ = false;
          self->flush_releases();
        });
      };
      if (self->single_threaded())
        queue();
      else
        asio::dispatch(self->strand_, std::move(queue));
    };
  }
  void flush_releases() {
    if (pending_releases_.empty() || !chan_->is_open()) return;
    if (!chan_->send(std::exchange(pending_releases_, {}))) close();
  }
  // The server is done with buffer #index of our request `rid`: wipe it now.
  void on_buffer_release(const wire::Frame& f) {
    auto index = wire::decode_buffer_release(f.payload);
    if (!index) throw wire::ProtocolError("malformed buffer release");
    if (auto it = pending_.find(f.header.request_id); it != pending_.end() && *index < it->second.buffers.size())
      it->second.buffers[*index].revoke();
  }

  // On the strand: complete a call locally and tell the server to stop working on it.
  void abandon(std::uint32_t rid, StatusCode code, const char* why) {
    auto it = pending_.find(rid);
    if (it == pending_.end()) return;
    auto c = std::move(it->second.completion);
    if (it->second.deadline) deadlines_.erase(*it->second.deadline);
    erase_pending(it);
    std::vector<std::byte> bytes;
    wire::FrameHeader h;
    h.type = wire::FrameType::cancel;
    h.request_id = rid;
    wire::append_frame(bytes, h, {});
    (void)chan_->send(std::move(bytes));
    c->complete(make_error_code(code), ResponseMessage(Status{code, why}, {}));
  }

  void fail_all(boost::system::error_code ec) {
    open_ = false;
    chan_->close();
    pending_releases_.clear();  // the server wipes what we held when the connection drops
    if (buffer_cache_) buffer_cache_->clear();  // regions already handed out stay valid
    auto pending = std::move(pending_);
    pending_.clear();
    deadlines_.clear();
    for (auto& [rid, p] : pending) p.completion->complete(ec, {});
  }

  asio::awaitable<void> read_loop() {
    auto self = shared_from_this();
    boost::system::error_code end = make_error_code(ClientError::connection_closed);
    try {
      for (;;) {
        std::optional<wire::Frame> next = chan_->poll_frame();
        if (!next) {
          if (chan_->has_buffered_input()) {  // half a frame in: a timed wait
            co_await chan_->wait_frame(std::chrono::milliseconds(30'000));
            continue;
          }
          wait_readable(*chan_, strand_type_, shared_from_this());
          co_await park(parked_);
          continue;
        }
        if (!on_frame(*next)) break;
      }
    } catch (...) {
      end = make_error_code(read_error());
    }
    fail_all(end);
  }

  // One frame from the server (read loop or synchronous call). False at its GOODBYE.
  // Throws wire::ProtocolError for a frame the server had no right to send.
  bool on_frame(wire::Frame& f) {
    if (f.header.type == wire::FrameType::goodbye) return false;
    if (f.header.type == wire::FrameType::buffer_release) {
      on_buffer_release(f);
      return true;
    }
    if (f.header.type != wire::FrameType::response) throw wire::ProtocolError("unexpected frame type from server");
    if (f.header.status > kMaxStatusCode) throw wire::ProtocolError("unknown status code");
    auto it = pending_.find(f.header.request_id);
    if (it == pending_.end()) return true;  // a reply to a call we already abandoned
    auto c = std::move(it->second.completion);
    if (it->second.deadline) deadlines_.erase(*it->second.deadline);
    erase_pending(it);
    const auto code = static_cast<StatusCode>(f.header.status);
    if (code != StatusCode::ok) {
      std::string text(reinterpret_cast<const char*>(f.payload.data()),
                       std::min(f.payload.size(), limits::kMaxStatusMessageBytes));
      c->complete(make_error_code(code), ResponseMessage(Status{code, std::move(text)}, {}));
      return true;
    }
    std::optional<ResponseMessage> reply;
    try {  // inline or out of line (sealed memfd), plus buffers
      // A reply without fds has no buffers to release: no hook (it would allocate).
      auto [msg, bufs] = f.fds.empty() ? detail::take_response(f, opts_, nullptr)
                                       : detail::take_response(f, opts_, release_hook(f.header.request_id), buffer_cache());
      reply.emplace(Status{}, std::move(msg));
      reply->set_buffers(std::move(bufs));
    } catch (const std::exception&) {
      c->complete(make_error_code(ClientError::protocol_error), {});
      throw wire::ProtocolError("malformed reply");
    }
    c->complete({}, std::move(*reply));
    return true;
  }

  // In a catch block, for the exception that stopped reading: what the pending calls
  // fail with. A server that broke the protocol is told why before the socket closes.
  ClientError read_error() {
    try {
      throw;
    } catch (const transport::IntegrityError& e) {
      chan_->close_with(wire::FrameType::goodbye, e.what());
      return ClientError::integrity_error;
    } catch (const wire::ProtocolError& e) {
      chan_->close_with(wire::FrameType::goodbye, e.what());
      return ClientError::protocol_error;
    } catch (...) {
      return ClientError::connection_closed;
    }
  }

  void close() { fail_all(make_error_code(ClientError::connection_closed)); }

  // The read loop, with nothing to read, parks until the socket is readable or closed
  // (lib/rpc/park.hpp).
  friend struct ReadinessWait<ClientConnection>;
  void on_readable() { (void)resume(parked_); }

  // From deadlines_ (the entry is already gone).
  void on_deadline(std::uint32_t rid) {
    if (auto it = pending_.find(rid); it != pending_.end()) it->second.deadline.reset();
    abandon(rid, StatusCode::deadline_exceeded, "deadline exceeded");
  }

 private:
  struct Pending {
    std::unique_ptr<CallCompletion> completion;
    std::optional<DeadlineQueue::Handle> deadline;  // entry in deadlines_
    std::vector<SealedBuffer> buffers;  // attached to the request; dropped at call end
  };
  asio::any_io_executor strand_;
  std::shared_ptr<FrameChannel> chan_;
  PeerCredentials server_;
  ClientOptions opts_;
  std::atomic<std::uint32_t> next_id_{1};
  std::atomic<bool> open_{true};
  std::unordered_map<std::uint32_t, Pending> pending_;
  std::optional<ParkedCoroutine> parked_;  // the read loop, waiting for its readiness wait
  const std::optional<IoStrand> strand_type_ = io_strand_of(strand_);  // strand_ as its own type
  std::vector<std::byte> pending_releases_;  // encoded BUFFER_RELEASE frames not sent yet
  bool release_flush_posted_ = false;
  // Map nodes of finished calls, reused so a call costs no node allocation.
  static constexpr std::size_t kFreeNodes = 16;
  std::vector<decltype(pending_)::node_type> free_nodes_;
  Pending& add_pending(std::uint32_t rid) {
    if (free_nodes_.empty()) return pending_[rid];
    auto node = std::move(free_nodes_.back());
    free_nodes_.pop_back();
    node.key() = rid;
    return pending_.insert(std::move(node)).position->second;
  }
  void erase_pending(decltype(pending_)::iterator it) {
    auto node = pending_.extract(it);
    node.mapped() = Pending{};  // drops the completion and wipes/closes the buffers now
    if (free_nodes_.size() < kFreeNodes) free_nodes_.push_back(std::move(node));
  }
  DeadlineQueue deadlines_{strand_};  // of the pending calls that have one
  std::shared_ptr<buffers::MappingCache> buffer_cache_;  // made on the first reply with buffers
  const std::shared_ptr<buffers::MappingCache>& buffer_cache() {
    if (!buffer_cache_ && opts_.buffer_cache_entries > 0)
      buffer_cache_ = std::make_shared<buffers::MappingCache>(opts_.buffer_cache_entries, opts_.buffer_cache_bytes);
    return buffer_cache_;
  }
  const bool encrypted_ = chan_->is_encrypted();  // fixed at connect; readable from any thread

 public:
  bool is_encrypted() const noexcept { return encrypted_; }
};

// Decides plaintext or encrypted from the server's HELLO offer and our options, then
// runs the handshake (docs/protocol-crypto.md §3). On success with encryption, `chan`
// seals and opens every later frame. On error the caller closes `chan`.
asio::awaitable<boost::system::error_code> negotiate_encryption(FrameChannel& chan, asio::any_io_executor strand,
                                                                 std::vector<std::byte> hello, uid_t server_uid,
                                                                 const ClientOptions& opts) {
  const security::HelloOffer offer = security::decode_hello_offer(hello);  // throws ProtocolError
  const bool pinned = !opts.pinned_server_key_file.empty();
  const bool we_require = pinned || opts.encryption == EncryptionMode::required;
  const bool server_offers = offer.mode != EncryptionMode::off;
  if (!server_offers) co_return we_require ? make_error_code(ClientError::encryption_unavailable) : boost::system::error_code{};
  if (opts.encryption == EncryptionMode::off && !pinned)
    co_return offer.mode == EncryptionMode::required ? make_error_code(ClientError::encryption_required_by_server)
                                                     : boost::system::error_code{};
  std::optional<security::PublicKey> pin;
  if (pinned) {
    try {
      pin = security::load_public_key_file(opts.pinned_server_key_file);
    } catch (const KeyError&) {
      co_return make_error_code(ClientError::bad_key_file);
    }
    if (!offer.has_static_key) co_return make_error_code(ClientError::handshake_failed);  // nothing can prove the pin
  }
  security::ClientKeyExchange kx({server_uid, ::geteuid(), std::move(hello)}, pin);
  std::vector<std::byte> first;
  wire::FrameHeader h;
  h.type = wire::FrameType::handshake_client;
  wire::append_frame(first, h, kx.first_message());
  if (!chan.send(std::move(first))) co_return make_error_code(ClientError::connection_closed);
  asio::steady_timer timer(strand);
  timer.expires_after(opts.connect_timeout);
  auto r = co_await (chan.read_frame(opts.connect_timeout) || timer.async_wait(asio::use_awaitable));
  if (r.index() == 1) co_return make_error_code(ClientError::connect_timeout);
  const wire::Frame& reply = std::get<0>(r);
  if (reply.header.type == wire::FrameType::goodbye) co_return make_error_code(ClientError::handshake_failed);
  if (reply.header.type != wire::FrameType::handshake_server) co_return make_error_code(ClientError::protocol_error);
  try {
    chan.set_cipher(kx.finish(reply.payload));
  } catch (const security::HandshakeError& e) {
    chan.close_with(wire::FrameType::goodbye, e.what());
    co_return make_error_code(ClientError::handshake_failed);
  }
  co_return boost::system::error_code{};
}

std::uint64_t start_call(const std::shared_ptr<ClientConnection>& conn, MethodId id, RequestMessage&& req,
                         std::unique_ptr<CallCompletion> completion) {
  if (!conn) {
    completion->complete(make_error_code(ClientError::connection_closed), {});
    return 0;
  }
  const std::uint32_t rid = conn->allocate_id();
  if (conn->single_threaded()) {  // the caller is the connection's only thread: no hop
    conn->start(rid, id, std::move(req), std::move(completion));
    return rid;
  }
  auto start = [conn, rid, id, req = std::move(req), c = std::move(completion)]() mutable {
    conn->start(rid, id, std::move(req), std::move(c));
  };
  // On the strand as its own type with our recycling allocator: through any_io_executor
  // Asio would type-erase the function and allocate it (outside io_context::run() its
  // own recycling does not apply).
  const asio::any_io_executor ex = conn->executor();
  if (const auto* strand = ex.target<IoStrand>())
    asio::dispatch(*strand, asio::bind_allocator(RecyclingAllocator<void>{}, std::move(start)));
  else
    asio::dispatch(ex, std::move(start));
  return rid;
}

boost::system::error_code call_blocking(const std::shared_ptr<ClientConnection>& conn, MethodId id, RequestMessage&& req,
                                        ResponseMessage& out) {
  if (!conn) return make_error_code(ClientError::connection_closed);
  return conn->call_blocking(id, std::move(req), out);
}

void cancel_call(const std::shared_ptr<ClientConnection>& conn, std::uint64_t rid) {
  asio::dispatch(conn->executor(), [conn, rid] { conn->abandon(static_cast<std::uint32_t>(rid), StatusCode::cancelled, "cancelled"); });
}

void start_connect(asio::any_io_executor ex, std::string path, ClientOptions opts, std::unique_ptr<ConnectCompletion> completion) {
  const asio::any_io_executor strand = opts.single_threaded ? ex : make_serial_executor(ex);
  asio::co_spawn(
      strand,
      [strand, path = std::move(path), opts = std::move(opts), c = std::move(completion)]() mutable -> asio::awaitable<void> {
        boost::system::error_code ec;
        std::shared_ptr<ClientConnection> conn;
        try {
          UniqueFd fd = connect_unix(path);
          PeerCredentials server = read_peer_credentials(fd.get());
          // A11: check who is on the other end before sending a single byte.
          const uid_t me = ::geteuid();
          const bool ok = opts.expected_server_uid ? server.uid == *opts.expected_server_uid : (server.uid == me || server.uid == 0);
          if (!ok) {
            ec = make_error_code(ClientError::server_identity_mismatch);
          } else {
            auto chan = std::make_shared<FrameChannel>(strand, std::move(fd));
            asio::steady_timer timer(strand);
            timer.expires_after(opts.connect_timeout);
            auto r = co_await (chan->read_frame(opts.connect_timeout) || timer.async_wait(asio::use_awaitable));
            if (r.index() == 1) {
              ec = make_error_code(ClientError::connect_timeout);
              chan->close();
            } else {
              const auto type = std::get<0>(r).header.type;
              if (type == wire::FrameType::hello) {
                const auto& offer = std::get<0>(r).payload;
                ec = co_await negotiate_encryption(*chan, strand, {offer.begin(), offer.end()}, server.uid, opts);
                if (ec) {
                  chan->close();
                } else {
                  conn = std::make_shared<ClientConnection>(strand, chan, std::move(server), std::move(opts));
                  asio::co_spawn(strand, conn->read_loop(), asio::detached);
                }
              } else {
                ec = make_error_code(type == wire::FrameType::refused ? ClientError::refused_by_server : ClientError::protocol_error);
                chan->close();
              }
            }
          }
        } catch (const EndpointError& e) {
          ec = boost::system::error_code(e.code().value(), boost::system::generic_category());
        } catch (const transport::PeerClosed&) {
          ec = make_error_code(ClientError::connection_closed);
        } catch (const wire::ProtocolError&) {
          ec = make_error_code(ClientError::protocol_error);
        } catch (const boost::system::system_error& e) {
          ec = e.code();
        } catch (const std::system_error& e) {
          ec = boost::system::error_code(e.code().value(), boost::system::generic_category());
        }
        c->complete(ec, ec ? nullptr : conn);
      },
      asio::detached);
}

bool running_in_this_thread(const asio::any_io_executor& ex) noexcept {
  if (const auto* io = ex.target<asio::io_context::executor_type>()) return io->running_in_this_thread();
  if (const auto* s = ex.target<asio::strand<asio::io_context::executor_type>>()) return s->running_in_this_thread();
  return false;
}

asio::any_io_executor connection_executor(const std::shared_ptr<ClientConnection>& conn) { return conn->executor(); }
const PeerCredentials& connection_server(const std::shared_ptr<ClientConnection>& conn) { return conn->server(); }
void close_connection(const std::shared_ptr<ClientConnection>& conn) {
  asio::dispatch(conn->executor(), [conn] { conn->close(); });
}
bool connection_is_open(const std::shared_ptr<ClientConnection>& conn) { return conn->is_open(); }
bool connection_is_encrypted(const std::shared_ptr<ClientConnection>& conn) { return conn->is_encrypted(); }

}  // namespace sealrpc::detail
