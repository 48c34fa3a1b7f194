// Server: accept loop, per-connection runners (read loop + inline calls), and call dispatch.
//
// Where the security properties are enforced (see docs/ARCHITECTURE.md):
//  * peer identity: on_accept() reads SO_PEERCRED/GROUPS/PIDFD before any byte;
//  * connection rate per uid (churn, D2): on_accept(), on SO_PEERCRED alone, first;
//  * connection allow-list and limits: on_accept();
//  * calls in progress per connection and per uid (D5): Connection::on_request();
//  * per-method authorization and audit: Connection::on_request(), before params are
//    decoded; unknown methods answered like denials;
//  * per-uid quota on client memfds (M9): Connection::on_request() charges the uid's
//    BufferQuota (via take_request) before reading or mapping; the Call gives it back;
//  * hostile payloads: wire::decode_message + a full bounded traversal (targetSize)
//    before the handler runs, so malformed input is INVALID_ARGUMENT, never INTERNAL;
//  * handler exceptions: Connection::run() maps them to INTERNAL without their text.
#include "sealrpc/server.hpp"

#include "security/crypto.hpp"
#include "transport/capnp_codec.hpp"
#include "transport/channel.hpp"
#include "rpc/buffer_glue.hpp"
#include "rpc/connection_rate.hpp"
#include "rpc/deadline_queue.hpp"
#include "rpc/park.hpp"
#include "rpc/serial_executor.hpp"
#include "rpc/validate_plan.hpp"
#include "buffers/memfd.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <kj/exception.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <unordered_map>

namespace sealrpc {
namespace asio = boost::asio;
using transport::FrameChannel;

namespace {

struct MethodIdHash {
  std::size_t operator()(const MethodId& m) const noexcept {
    return std::hash<std::uint64_t>{}(m.interface_id ^ (std::uint64_t{m.ordinal} * 0x9E3779B97F4A7C15ull));
  }
};

struct PolicySnapshot {
  std::vector<AccessRule> rules;  // indexed like Impl::methods
};

struct MethodEntry {
  const MethodInfo* info;
  Service* service;
  std::string qualified;  // "Interface.method", for audit records
  // Compiled from info->params_schema; null: validate_params() (dynamic walk) instead.
  std::shared_ptr<const detail::ValidationPlan> plan;
};

std::vector<std::byte> encode_status_response(std::uint32_t rid, StatusCode code, std::string_view msg) {
  std::vector<std::byte> bytes;
  wire::FrameHeader h;
  h.type = wire::FrameType::response;
  h.request_id = rid;
  h.status = static_cast<std::uint16_t>(code);
  msg = msg.substr(0, limits::kMaxStatusMessageBytes);
  wire::append_frame(bytes, h, std::as_bytes(std::span(msg.data(), msg.size())));
  return bytes;
}

}  // namespace

class Connection;

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  asio::any_io_executor ex;
  asio::any_io_executor accept_strand;
  Listener listener;
  ServerOptions opts;
  uid_t self_uid = ::geteuid();
  AccessRule conn_rule;
  std::shared_ptr<AuditLog> audit;
  std::shared_ptr<const security::StaticKeyPair> static_key;  // set by start() from opts.static_key_file
  std::vector<std::byte> hello_offer;                         // HELLO payload: our encryption offer

  std::vector<std::shared_ptr<Service>> services;
  std::vector<MethodEntry> methods;
  std::unordered_map<MethodId, std::size_t, MethodIdHash> index;

  mutable std::mutex policy_mu;
  std::shared_ptr<const PolicySnapshot> policy;  // guarded by policy_mu
  std::atomic<std::uint64_t> policy_version{0};

  std::optional<asio::local::stream_protocol::acceptor> acceptor;
  asio::steady_timer backoff;

  mutable std::mutex conn_mu;
  std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> conns;
  // Per uid with a connection: its connection count, and its count of calls in progress
  // over all of them (D5), which each of its Connections also holds.
  struct UidState {
    std::size_t connections = 0;
    std::shared_ptr<std::atomic<std::size_t>> calls = std::make_shared<std::atomic<std::size_t>>(0);
  };
  std::unordered_map<uid_t, UidState> per_uid;
  // Client memfd bytes/buffers held for each uid's calls in progress (M9).
  std::shared_ptr<detail::BufferQuota> buffer_quota;
  std::atomic<std::uint64_t> next_conn_id{1};
  std::atomic<bool> started{false}, stopped{false};

  // Connection churn (D2): touched by on_accept only, i.e. on accept_strand.
  detail::ConnectionRateLimiter conn_rate;
  std::vector<std::byte> rate_refusal;  // the REFUSED frame, built once

  Impl(asio::any_io_executor e, Listener l, ServerOptions o)
      : ex(e), accept_strand(detail::make_serial_executor(e)), listener(std::move(l)), opts(std::move(o)), backoff(accept_strand),
        conn_rate(opts.connection_rate_per_uid, limits::kMaxRateLimitedUids) {
    conn_rule = AccessRule::resolve(opts.allow, self_uid);
    buffer_quota = std::make_shared<detail::BufferQuota>(opts.max_buffer_bytes_per_uid, opts.max_buffers_per_uid);
    audit = opts.audit ? opts.audit : AuditLog::syslog_default();
    wire::FrameHeader h;
    h.type = wire::FrameType::refused;
    const std::string_view reason = "connection refused: too many connection attempts";
    wire::append_frame(rate_refusal, h, std::as_bytes(std::span(reason.data(), reason.size())));
  }

  std::shared_ptr<const PolicySnapshot> current_policy() const {
    std::lock_guard lock(policy_mu);
    return policy;
  }

  std::shared_ptr<const PolicySnapshot> build_policy(const PolicyOverrides* ov) const;
  void install(std::shared_ptr<const PolicySnapshot> p) {
    {
      std::lock_guard lock(policy_mu);
      policy = std::move(p);
    }
    policy_version.fetch_add(1, std::memory_order_release);
  }

  asio::awaitable<void> accept_loop();
  void on_accept(UniqueFd fd);
  void unregister(std::uint64_t id, uid_t uid) {
    std::lock_guard lock(conn_mu);
    conns.erase(id);
    if (auto it = per_uid.find(uid); it != per_uid.end() && --it->second.connections == 0) per_uid.erase(it);
  }
  void audit_record(std::string_view event, bool allowed, const PeerCredentials& p, std::uint64_t conn,
                    std::string_view method, std::string_view reason, bool check_liveness) {
    AuditRecord r;
    r.event = event;
    r.allowed = allowed;
    r.uid = p.uid;
    r.gid = p.gid;
    r.pid = p.pid;
    if (check_liveness) r.peer_exited = p.has_exited();
    r.connection_id = conn;
    r.method = method;
    r.reason = reason;
    audit->record(r);
  }
};

std::shared_ptr<const PolicySnapshot> Server::Impl::build_policy(const PolicyOverrides* ov) const {
  auto snap = std::make_shared<PolicySnapshot>();
  snap->rules.reserve(methods.size());
  if (ov) {  // every override must name something that exists: typos are errors
    for (const auto& [name, e] : ov->methods) {
      bool found = false;
      for (const auto& m : methods) found = found || m.qualified == name;
      if (!found) throw PolicyError(opts.policy_file.empty() ? "policy" : opts.policy_file, e.line, "unknown method '" + name + "'");
    }
    for (const auto& [name, e] : ov->interfaces) {
      bool found = false;
      for (const auto& m : methods) found = found || m.info->interface_name == name;
      if (!found) throw PolicyError(opts.policy_file.empty() ? "policy" : opts.policy_file, e.line, "unknown interface '" + name + "'");
    }
  }
  for (const auto& m : methods) {
    const AccessRuleSpec* spec = &m.info->rule;
    if (ov) {
      if (auto it = ov->methods.find(m.qualified); it != ov->methods.end()) spec = &it->second.rule;
      else if (auto jt = ov->interfaces.find(m.info->interface_name); jt != ov->interfaces.end()) spec = &jt->second.rule;
    }
    snap->rules.push_back(AccessRule::resolve(*spec, self_uid));
  }
  return snap;
}

// One accepted, authorized connection. Lives while any of its runners run; everything
// here runs on the connection's strand.
//
// Runners: a runner is a coroutine that reads frames and runs each call inline, so a
// call whose handler does not suspend costs no co_spawn, no coroutine of its own and no
// trip through the scheduler. Exactly one runner is the reader at a time (reading_).
// When the reader starts a call it gives the role up and leaves a standby: a readiness
// wait on the socket, or a posted check when bytes are already buffered (readiness
// does not fire for those). If the handler suspends and the standby fires first, the
// standby starts a new runner as the reader, so other calls, cancels and buffer
// releases are still read; if the handler finishes first, its runner takes the role
// back and the standby finds it taken. A runner that finishes its call while another
// reads ends. So a connection has one runner, plus one per handler suspended at once.
// A reader with nothing to read parks on the same socket standby (parked_), so one
// readiness wait per call serves both purposes.
// When the standby's own handler resumes the parked reader (the usual way a call comes
// in), the reader starts its calls without a standby, and the handler leaves one after
// the resume returns only if a call is still running (its handler suspended). A call
// that finishes inline then sends its reply before the readiness wait is armed (that
// epoll_ctl is off the round trip: the reader arms it when it parks again).
// One call's place in its uid's count of calls in progress (SECURITY.md D5), held from
// admission until the Call is reset or destroyed, i.e. until its handler has returned
// (a cancelled call keeps its place until then). The count outlives every Call: the
// Connection holds it, declared before anything that holds Calls.
class UidCallSlot {
 public:
  UidCallSlot() = default;
  UidCallSlot(UidCallSlot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  UidCallSlot& operator=(UidCallSlot&& o) noexcept {
    if (this != &o) {
      reset();
      count_ = std::exchange(o.count_, nullptr);
    }
    return *this;
  }
  ~UidCallSlot() { reset(); }
  // False (nothing taken) when the uid already has `max` calls in progress.
  bool acquire(std::atomic<std::size_t>& count, std::size_t max) noexcept {
    reset();
    if (count.fetch_add(1, std::memory_order_relaxed) >= max) {
      count.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    count_ = &count;
    return true;
  }
  void reset() noexcept {
    if (count_) std::exchange(count_, nullptr)->fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::size_t>* count_ = nullptr;
};

class Connection : public std::enable_shared_from_this<Connection> {
  // A connection counts (connection_count(), the per-uid and total caps) until its last
  // runner and pending wait are gone, and with them its socket and pidfd: the first
  // member, so it is destroyed after all the others.
  struct Registration {
    std::shared_ptr<Server::Impl> server;
    std::uint64_t id;
    uid_t uid;
    ~Registration() { server->unregister(id, uid); }
  } registration_;
  // This uid's count of calls in progress over all its connections (D5): before every
  // member that holds Calls, so it outlives them.
  std::shared_ptr<std::atomic<std::size_t>> uid_calls_ = std::make_shared<std::atomic<std::size_t>>(0);

 public:
  Connection(std::shared_ptr<Server::Impl> s, std::shared_ptr<FrameChannel> c, PeerCredentials p, std::uint64_t id)
      : registration_{s, id, p.uid}, server_(std::move(s)), chan_(std::move(c)), peer_(std::move(p)), id_(id) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts the first runner, the reader (callable from any thread).
  void start() { spawn_runner(); }
  // Before start(): the uid's shared count of calls in progress (Server::Impl::per_uid).
  void set_uid_calls(std::shared_ptr<std::atomic<std::size_t>> c) { uid_calls_ = std::move(c); }
  void close() {
    chan_->close();
    cancel_all();
    leases_.clear();  // connection drop: wipe every revocable buffer the client held
    call_pool_.clear();
  }
  FrameChannel& channel() { return *chan_; }
  const std::vector<std::byte>& hello_offer() const { return server_->hello_offer; }

 private:
  struct Call {
    std::uint32_t rid;
    std::size_t method;
    std::optional<CallContext> ctx;
    asio::cancellation_signal* signal = nullptr;  // of the runner running the call
    std::optional<detail::DeadlineQueue::Handle> deadline;  // entry in deadlines_
    // The uid's quota share for this call's memfds (M9). Declared before params and
    // buffers so a destroyed Call gives it back after their memory and fds are gone.
    detail::QuotaCharge quota;
    UidCallSlot uid_slot;  // its place among the uid's calls in progress (D5)
    IncomingMessage params;
    detail::CallBuffers buffers;  // request buffer fds in, attached reply buffers out
    bool done = false;
    // First segment of the results builder: small results need no 8 KiB calloc. Zeroed
    // once here; ~MallocMessageBuilder re-zeroes what it used (capnp's contract for a
    // caller-supplied first segment), so it is all zeros again for the next call.
    capnp::word scratch[128] = {};

    // Back to the state of a fresh Call (except scratch, see above): drops the params
    // and closes/wipes the call's buffers now, as destroying the Call would.
    void reset() {
      ctx.reset();
      signal = nullptr;
      deadline.reset();
      params.reset();
      buffers = detail::CallBuffers{};
      quota.reset();  // after what it paid for is gone
      uid_slot.reset();
      done = false;
    }
  };
  // Finished Calls kept for reuse (steady calls allocate no Call and no results
  // segment). Small: a connection keeps at most this many (~1.1 KiB each).
  static constexpr std::size_t kCallPool = 4;
  static constexpr unsigned kMaxFramesPerTurn = 32;
  std::vector<std::shared_ptr<Call>> call_pool_;
  std::shared_ptr<Call> new_call() {
    if (!call_pool_.empty()) {
      auto c = std::move(call_pool_.back());
      call_pool_.pop_back();
      return c;
    }
    return std::make_shared<Call>();
  }
  // From the call's runner, when nothing else refers to the Call any more.
  void recycle(const std::shared_ptr<Call>& call) {
    if (call.use_count() != 1 || call_pool_.size() >= kCallPool || !chan_->is_open()) return;
    call->reset();
    call_pool_.push_back(call);
  }

  struct Runner {
    asio::cancellation_signal signal;  // cancels the call the runner is running
  };
  void spawn_runner();
  static asio::awaitable<void> run(std::shared_ptr<Connection> self, std::shared_ptr<Runner> runner);
  void arm_standby();
  void post_standby();
  void leave_standby() {  // for a call about to run (see Connection)
    if (chan_->has_buffered_input()) post_standby();
    else arm_standby();
  }
  void on_standby() {
    if (detail::resume(parked_)) return;  // the reader waited for this
    if (reading_ || closed_) return;  // a runner reads (timed wait for a partial frame), or the connection is over
    reading_ = true;
    spawn_runner();
  }
  // The socket standby fired (lib/rpc/park.hpp).
  friend struct detail::ReadinessWait<Connection>;
  void on_readable() {
    standby_armed_ = false;
    resuming_ = true;
    on_standby();
    resuming_ = false;
    // The reader started a call without a standby and it has not finished: its handler
    // suspended. Leave the standby now.
    if (std::exchange(standby_deferred_, false) && !closed_ && chan_->is_open()) leave_standby();
  }
  // The reader with nothing to read, parked until the socket standby fires.
  std::optional<detail::ParkedCoroutine> parked_;
  void complete(Call& call, Status st, capnp::MessageBuilder& results);

  // Authorizes, validates and registers a request; null when already answered.
  std::shared_ptr<Call> on_request(wire::Frame& f);
  bool negotiate(const wire::Frame& f);
  void on_cancel(std::uint32_t rid);
  void on_buffer_release(const wire::Frame& f) {
    if (auto index = wire::decode_buffer_release(f.payload)) leases_.release(f.header.request_id, *index);
    else throw wire::ProtocolError("malformed buffer release");
  }
  void finish(Call& call) {
    call.done = true;
    if (call.deadline) deadlines_.erase(*std::exchange(call.deadline, std::nullopt));
    if (auto it = calls_.find(call.rid); it != calls_.end()) {
      auto node = calls_.extract(it);
      node.mapped().reset();
      if (free_nodes_.size() < kFreeNodes) free_nodes_.push_back(std::move(node));
    }
  }
  void abort(Call& call) {
    call.ctx->mark_cancelled();
    if (call.signal) call.signal->emit(asio::cancellation_type::terminal);
  }
  void cancel_all() {
    auto calls = std::move(calls_);
    calls_.clear();
    deadlines_.clear();
    for (auto& [rid, c] : calls) {
      c->done = true;
      c->deadline.reset();
      abort(*c);
    }
  }

 public:
  // From deadlines_: call `rid` ran out of time (its entry is already gone).
  void on_deadline(std::uint32_t rid) {
    const auto it = calls_.find(rid);
    if (it == calls_.end()) return;
    const auto call = it->second;  // keeps the Call alive past finish()
    call->deadline.reset();
    finish(*call);
    abort(*call);
    respond(encode_status_response(rid, StatusCode::deadline_exceeded, "deadline exceeded"));
  }

 private:
  void respond(std::vector<std::byte> bytes) {
    // A peer that lets replies pile up is dropped (R8/D3): errors stay per peer.
    if (!chan_->send(std::move(bytes))) chan_->close();
  }

  std::shared_ptr<Server::Impl> server_;
  std::shared_ptr<FrameChannel> chan_;
  PeerCredentials peer_;
  std::uint64_t id_;
  std::shared_ptr<const PolicySnapshot> policy_;
  std::uint64_t policy_version_ = ~0ull;
  bool negotiated_ = false;  // the first frame decided plaintext or encrypted
  bool reading_ = true;      // a runner is the reader (the first one is, from start())
  bool closed_ = false;      // a reader ended the connection; runners finishing calls end too
  bool standby_armed_ = false, standby_posted_ = false;
  bool resuming_ = false;          // on_readable is resuming the parked reader
  bool standby_deferred_ = false;  // a call started by that reader runs without a standby
  // The connection's strand as its own type (null: no strand, or not over an io_context).
  const std::optional<detail::IoStrand> strand_ = detail::io_strand_of(chan_->get_executor());
  std::unordered_map<std::uint32_t, std::shared_ptr<Call>> calls_;
  // Map nodes of finished calls, reused so a call costs no node allocation.
  static constexpr std::size_t kFreeNodes = 16;
  std::vector<decltype(calls_)::node_type> free_nodes_;
  detail::DeadlineQueue deadlines_{chan_->get_executor()};  // of the calls in calls_ that have one
  detail::LeaseTable leases_{chan_->get_executor()};  // revocable buffers the client holds
};

// The client's first frame decides the session (docs/protocol-crypto.md §3):
// handshake_client starts encryption; anything else means plaintext, which a server
// that requires encryption refuses (R10). Returns true when it consumed the frame.
bool Connection::negotiate(const wire::Frame& f) {
  negotiated_ = true;
  const EncryptionMode mode = server_->opts.encryption;
  const bool wants_encryption = f.header.type == wire::FrameType::handshake_client;
  if (!wants_encryption) {
    const bool downgrade = mode == EncryptionMode::required;
    if (downgrade) {
      server_->audit_record("handshake", false, peer_, id_, {}, "plaintext refused: encryption required", false);
      throw wire::ProtocolError("encryption required by server");
    }
    return false;
  }
  if (mode == EncryptionMode::off) throw wire::ProtocolError("encryption is not enabled on this server");
  const security::HandshakeBinding binding{server_->self_uid, peer_.uid, server_->hello_offer};
  security::AcceptedKeyExchange accepted;
  try {
    accepted = security::accept_key_exchange(binding, server_->static_key.get(), f.payload);
  } catch (const security::HandshakeError&) {
    server_->audit_record("handshake", false, peer_, id_, {}, "handshake failed", false);
    throw;
  }
  std::vector<std::byte> reply;
  wire::FrameHeader h;
  h.type = wire::FrameType::handshake_server;
  wire::append_frame(reply, h, accepted.reply);
  if (!chan_->send(std::move(reply))) throw transport::PeerClosed();
  chan_->set_cipher(std::move(accepted.channel));  // after the last plaintext frame we send
  server_->audit_record("handshake", true, peer_, id_, {}, "encrypted", false);
  return true;
}

void Connection::spawn_runner() {
  auto runner = std::make_shared<Runner>();
  // Both the coroutine and its completion handler hold the Runner: the coroutine's
  // cancellation slot lives in runner->signal and must outlive either.
  asio::co_spawn(chan_->get_executor(), run(shared_from_this(), runner),
                 asio::bind_cancellation_slot(runner->signal.slot(), [runner](std::exception_ptr) {}));
}

void Connection::arm_standby() {
  if (std::exchange(standby_armed_, true)) return;
  detail::wait_readable(*chan_, strand_, shared_from_this());
}

void Connection::post_standby() {
  if (std::exchange(standby_posted_, true)) return;
  asio::post(chan_->get_executor(), [self = shared_from_this()] {
    self->standby_posted_ = false;
    // A parked reader already read what was buffered and waits on the socket standby:
    // nothing for this check to do (resuming it would only cost a recvmsg).
    if (!self->parked_) self->on_standby();
  });
}

asio::awaitable<void> Connection::run(std::shared_ptr<Connection> self, std::shared_ptr<Runner> runner) {
  Connection& c = *self;
  try {
    // Frames handled since this connection last waited or yielded: a peer that keeps
    // its socket full must not keep the thread from other connections (fairness).
    unsigned burst = 0;
    for (;;) {  // this runner is the reader here
      std::optional<wire::Frame> next = c.chan_->poll_frame();
      if (!next) {
        burst = 0;
        if (c.chan_->has_buffered_input()) {  // half a frame in: a timed wait (slowloris, R2)
          co_await c.chan_->wait_frame(c.server_->opts.frame_timeout);
          continue;
        }
        // Park on the socket standby: one readiness wait serves both this wait and the
        // standby of the next call, instead of two waits fired by the same readiness.
        c.arm_standby();
        co_await detail::park(c.parked_);
        continue;
      }
      if (++burst == kMaxFramesPerTurn) {
        burst = 0;
        co_await asio::post(c.chan_->get_executor(), asio::use_awaitable);  // let others run
        if (!c.chan_->is_open()) break;
      }
      wire::Frame& f = *next;
      if (!c.negotiated_ && c.negotiate(f)) continue;
      std::shared_ptr<Call> call;
      switch (f.header.type) {
        case wire::FrameType::request: call = c.on_request(f); break;
        case wire::FrameType::cancel: c.on_cancel(f.header.request_id); break;
        case wire::FrameType::buffer_release: c.on_buffer_release(f); break;
        case wire::FrameType::goodbye: throw transport::PeerClosed();
        default: throw wire::ProtocolError("frame type not allowed from a client");
      }
      if (!c.chan_->is_open()) break;
      if (!call) continue;

      // Run the call here; leave a standby in case the handler suspends (see Connection).
      c.reading_ = false;
      if (c.resuming_) c.standby_deferred_ = true;  // left by on_readable if the handler suspends
      else c.leave_standby();
      {
        const MethodEntry& m = c.server_->methods[call->method];
        call->signal = &runner->signal;
        capnp::MallocMessageBuilder results(kj::arrayPtr(call->scratch, std::size(call->scratch)),
                                            capnp::AllocationStrategy::GROW_HEURISTICALLY);
        Status st;
        try {
          st = co_await m.info->invoke(*m.service, *call->ctx, call->params.root(), results.getRoot<capnp::AnyPointer>());
        } catch (...) {
          // Never send the exception's text: it may hold anything the handler touched.
          st = Status{StatusCode::internal, "internal error"};
        }
        // A cancelled call leaves the runner's cancellation state set: clear it, or the
        // runner's next wait would throw.
        if (call->ctx->is_cancelled()) co_await asio::this_coro::reset_cancellation_state();
        c.complete(*call, std::move(st), results);
      }
      c.standby_deferred_ = false;  // finished inline: no standby needed for it
      call->signal = nullptr;
      c.recycle(call);
      call.reset();
      if (c.reading_ || c.closed_) co_return;  // another runner reads now
      c.reading_ = true;
    }
  } catch (const transport::IntegrityError& e) {
    c.server_->audit_record("integrity", false, c.peer_, c.id_, {}, "frame failed authentication", false);
    c.chan_->close_with(wire::FrameType::goodbye, e.what());
  } catch (const wire::ProtocolError& e) {
    // Clear error to the peer, then close. The reason text is ours, never payload.
    c.chan_->close_with(wire::FrameType::goodbye, e.what());
  } catch (const transport::PeerClosed&) {
  } catch (const std::exception&) {
  }
  if (std::exchange(c.closed_, true)) co_return;  // once per connection
  c.close();
}

std::shared_ptr<Connection::Call> Connection::on_request(wire::Frame& f) {
  const auto& h = f.header;
  const std::uint32_t rid = h.request_id;
  if (calls_.contains(rid)) throw wire::ProtocolError("duplicate request id");
  if (const auto v = server_->policy_version.load(std::memory_order_acquire); v != policy_version_) {
    policy_ = server_->current_policy();
    policy_version_ = v;
  }
  const auto it = server_->index.find(MethodId{h.interface_id, h.ordinal});
  if (it == server_->index.end()) {
    // Unknown method: answered exactly like a denial, unless the caller may call some
    // method of that interface (then it may know the interface and learns UNIMPLEMENTED).
    bool may_see = false;
    for (std::size_t i = 0; i < server_->methods.size() && !may_see; ++i)
      may_see = server_->methods[i].info->id.interface_id == h.interface_id &&
                authorize(policy_->rules[i], peer_).verdict == Verdict::allow;
    char name[48];
    std::snprintf(name, sizeof name, "@%016llx.%u", static_cast<unsigned long long>(h.interface_id), unsigned{h.ordinal});
    server_->audit_record("call", false, peer_, id_, name, "unknown method", true);
    respond(may_see ? encode_status_response(rid, StatusCode::unimplemented, "unknown method")
                    : encode_status_response(rid, StatusCode::permission_denied, "permission denied"));
    return nullptr;
  }
  const std::size_t mi = it->second;
  const MethodEntry& m = server_->methods[mi];
  const Decision d = authorize(policy_->rules[mi], peer_);
  const bool allowed = d.verdict == Verdict::allow;
  if (allowed && calls_.size() >= server_->opts.max_inflight_per_connection) {
    // Refused before the handler runs, so audited as not allowed, with the reason (D5).
    server_->audit_record("call", false, peer_, id_, m.qualified, "too many calls in flight", false);
    respond(encode_status_response(rid, StatusCode::resource_exhausted, "too many calls in flight"));
    return nullptr;
  }
  UidCallSlot uid_slot;
  if (allowed && !uid_slot.acquire(*uid_calls_, server_->opts.max_inflight_per_uid)) {
    // The uid has max_inflight_per_uid calls running over all its connections (D5).
    server_->audit_record("call", false, peer_, id_, m.qualified, "too many calls in flight for this uid", false);
    respond(encode_status_response(rid, StatusCode::resource_exhausted, "too many calls in flight for this uid"));
    return nullptr;
  }
  server_->audit_record("call", allowed, peer_, id_, m.qualified, d.reason, !allowed);
  if (!allowed) {
    respond(encode_status_response(rid, StatusCode::permission_denied, "permission denied"));
    return nullptr;
  }
  auto call = new_call();
  call->uid_slot = std::move(uid_slot);
  call->rid = rid;
  call->method = mi;
  try {
    call->params = detail::take_request(f, server_->opts, call->buffers, server_->buffer_quota, peer_.uid, call->quota);
    auto root = call->params.root();
    if (!root.isNull() && root.getPointerType() != capnp::PointerType::STRUCT)
      throw std::invalid_argument("params are not a struct");
    (void)root.targetSize();  // full bounded traversal: bad pointers, depth, amplification
    if (m.plan) m.plan->check(root);
    else if (m.info->params_schema) validate_params(root, *m.info->params_schema);
  } catch (const detail::QuotaExceeded& e) {
    // The uid holds too much through its other calls (M9): refused before anything was
    // read or mapped. Its fds are closed and its partial charge given back before the
    // answer goes out.
    f.fds.clear();
    call.reset();
    server_->audit_record("call", false, peer_, id_, m.qualified, "per-uid buffer quota exceeded", false);
    respond(encode_status_response(rid, StatusCode::resource_exhausted, e.what()));
    return nullptr;
  } catch (const kj::Exception&) {
    respond(encode_status_response(rid, StatusCode::invalid_argument, "malformed request"));
    return nullptr;
  } catch (const buffers::BufferError& e) {  // its text is ours and safe (no payload bytes)
    respond(encode_status_response(rid, StatusCode::invalid_argument, e.what()));
    return nullptr;
  } catch (const std::invalid_argument&) {
    respond(encode_status_response(rid, StatusCode::invalid_argument, "malformed request"));
    return nullptr;
  }
  auto deadline = CallContext::clock::time_point::max();
  if (h.timeout_ms != 0) {
    const auto t = std::min(std::chrono::milliseconds(h.timeout_ms), limits::kMaxCallTimeout);
    deadline = CallContext::clock::now() + t;
  }
  call->ctx.emplace(peer_, *m.info, deadline, id_, chan_->is_encrypted());
  call->ctx->set_buffers(&call->buffers);
  if (free_nodes_.empty()) {
    calls_.emplace(rid, call);
  } else {
    auto node = std::move(free_nodes_.back());
    free_nodes_.pop_back();
    node.key() = rid;
    node.mapped() = call;
    calls_.insert(std::move(node));
  }
  if (h.timeout_ms != 0) call->deadline = deadlines_.add(deadline, rid, shared_from_this());
  return call;
}

// After the handler: the reply (unless a cancel, deadline or close already answered).
void Connection::complete(Call& call, Status st, capnp::MessageBuilder& results) {
  if (call.quota.buffers() != 0) {
    // The handler is done with the params and request buffers: close and free them and
    // give the uid's quota back before the reply goes out, so a client that sends its
    // next call as soon as it has the reply finds the quota free (M9).
    call.params.reset();
    call.buffers.in = detail::IncomingBuffers{};
    call.quota.reset();
  }
  if (call.done) return;
  finish(call);
  if (st.code > static_cast<StatusCode>(kMaxStatusCode)) st = Status{StatusCode::internal, "internal error"};
  if (!st.is_ok()) {
    respond(encode_status_response(call.rid, st.code, st.message));
    return;
  }
  wire::EncodedFrame reply;
  try {  // inline, or out of line in a sealed memfd, plus attached buffers
    reply = detail::encode_response(call.rid, results, server_->opts, call.buffers, leases_, chan_->take_spare());
  } catch (const std::exception&) {
    respond(encode_status_response(call.rid, StatusCode::resource_exhausted, "reply too large"));
    return;
  }
  if (!chan_->send(std::move(reply.bytes), std::move(reply.fds))) chan_->close();
}

void Connection::on_cancel(std::uint32_t rid) {
  auto it = calls_.find(rid);
  if (it == calls_.end()) return;  // already finished: cancel-after-complete is harmless (R7)
  auto call = it->second;
  finish(*call);
  abort(*call);  // the client completed the call locally; no reply is sent
}

asio::awaitable<void> Server::Impl::accept_loop() {
  auto self = shared_from_this();
  const int lfd = acceptor->native_handle();
  while (!stopped) {
    auto [ec] = co_await acceptor->async_wait(asio::socket_base::wait_read, asio::as_tuple(asio::use_awaitable));
    if (stopped || ec == asio::error::operation_aborted) co_return;
    for (;;) {
      const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        try {
          on_accept(UniqueFd(fd));
        } catch (const std::exception&) {
          // One peer's setup failing (e.g. out of memory or fds) must never end the
          // accept loop for everyone else; that peer's fd is closed by its owner.
        }
        continue;
      }
      const int e = errno;
      if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        // Out of fds: the listener stays readable, so retrying at once would spin (K47).
        // Back off; queued connections wait in the backlog until fds free up.
        backoff.expires_after(limits::kAcceptBackoff);
        co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      break;  // EAGAIN and anything else: wait for readiness again
    }
  }
}

void Server::Impl::on_accept(UniqueFd fd) {
  PeerCredentials peer;
  try {
    peer = read_peer_ucred(fd.get());
  } catch (const std::exception&) {
    return;  // nothing is known about this peer: drop it (fd closes here)
  }
  const std::uint64_t id = next_conn_id++;
  // Churn (D2): the rate limit is decided on SO_PEERCRED alone, before the pidfd, the
  // groups, the strand and the channel exist, so a connect/close loop costs us one
  // accept4, getsockopt, send and close per attempt. The refusal is one send of the
  // prebuilt frame: the fresh socket's buffer is empty, so it fits; on a failed or short
  // send the peer is gone or misbehaving and just misses the reason. The audit record goes
  // through the AuditLog's per-uid rate limiter, so the loop cannot flood the log either.
  if (!conn_rate.admit(peer.uid, std::chrono::steady_clock::now())) {
    ssize_t n;
    do n = ::send(fd.get(), rate_refusal.data(), rate_refusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    audit_record("connect", false, peer, id, {}, "per-uid connection rate limit reached", false);
    return;  // fd closes here: the peer reads the frame, then EOF
  }
  try {
    read_peer_details(fd.get(), peer);
  } catch (const std::exception&) {
    return;  // as above: a peer we cannot identify fully is dropped
  }
  // Everything of one connection runs serialized: on a strand, or directly on a
  // single-threaded executor (ServerOptions::single_threaded).
  const asio::any_io_executor strand = opts.single_threaded ? ex : detail::make_serial_executor(ex);
  auto chan = std::make_shared<FrameChannel>(strand, std::move(fd));
  Decision d = authorize(conn_rule, peer);
  if (d.verdict == Verdict::allow) {
    std::lock_guard lock(conn_mu);
    if (conns.size() >= opts.max_connections) d = {Verdict::deny, "server connection limit reached"};
    else if (const auto it = per_uid.find(peer.uid); (it == per_uid.end() ? 0 : it->second.connections) >= opts.max_connections_per_uid)
      d = {Verdict::deny, "per-uid connection limit reached"};
  }
  audit_record("connect", d.verdict == Verdict::allow, peer, id, {}, d.reason, true);
  if (d.verdict != Verdict::allow) {
    asio::dispatch(strand, [chan, limit = std::string_view(d.reason) != "no rule allows" &&
                                          std::string_view(d.reason) != "security label mismatch"] {
      chan->close_with(wire::FrameType::refused,
                       limit ? "connection refused: too many connections" : "connection refused by server policy");
    });
    return;
  }
  const uid_t uid = peer.uid;
  auto conn = std::make_shared<Connection>(shared_from_this(), chan, std::move(peer), id);
  {
    std::lock_guard lock(conn_mu);
    conns.emplace(id, conn);
    auto& st = per_uid[uid];
    ++st.connections;
    conn->set_uid_calls(st.calls);
  }
  asio::dispatch(strand, [conn] {
    std::vector<std::byte> hello;
    wire::FrameHeader h;
    h.type = wire::FrameType::hello;
    wire::append_frame(hello, h, conn->hello_offer());
    conn->channel().send(std::move(hello));
  });
  conn->start();
}

Server::Server(asio::any_io_executor ex, Listener listener, ServerOptions opts)
    : impl_(std::make_shared<Impl>(ex, std::move(listener), std::move(opts))) {}

Server::~Server() { stop(); }

void Server::add_service(std::shared_ptr<Service> service) {
  if (impl_->started) throw std::logic_error("add_service after start");
  for (const MethodInfo& mi : service->sealrpc_methods()) {
    if (!mi.invoke) throw std::invalid_argument("method " + mi.qualified_name() + " has no invoker");
    if (!impl_->index.emplace(mi.id, impl_->methods.size()).second)
      throw std::invalid_argument("duplicate method id for " + mi.qualified_name());
    std::shared_ptr<const detail::ValidationPlan> plan;
    if (mi.params_schema) plan = detail::ValidationPlan::compile(*mi.params_schema);
    impl_->methods.push_back(MethodEntry{&mi, service.get(), mi.qualified_name(), std::move(plan)});
  }
  impl_->services.push_back(std::move(service));
}

void Server::start() {
  if (impl_->started.exchange(true)) return;
  if (impl_->opts.raise_fd_limit) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &rl);  // best effort; failure leaves the old limit
    }
  }
  PolicyOverrides ov;
  const bool has_file = !impl_->opts.policy_file.empty();
  if (has_file) ov = load_policy_file(impl_->opts.policy_file);
  impl_->install(impl_->build_policy(has_file ? &ov : nullptr));
  if (!impl_->opts.static_key_file.empty())  // throws KeyError: a bad key file stops the start
    impl_->static_key = std::make_shared<const security::StaticKeyPair>(security::load_secret_key_file(impl_->opts.static_key_file));
  impl_->hello_offer = security::encode_hello_offer({impl_->opts.encryption, impl_->static_key != nullptr});
  impl_->acceptor.emplace(impl_->accept_strand);
  impl_->acceptor->assign(asio::local::stream_protocol(), impl_->listener.take_socket().release());
  asio::co_spawn(impl_->accept_strand, impl_->accept_loop(), asio::detached);
}

void Server::stop() {
  if (!impl_ || impl_->stopped.exchange(true)) return;
  impl_->listener.remove();
  impl_->audit->flush();
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard lock(impl_->conn_mu);
    for (auto& [id, w] : impl_->conns)
      if (auto c = w.lock()) conns.push_back(std::move(c));
  }
  for (auto& c : conns) asio::dispatch(c->channel().get_executor(), [c] { c->close(); });
  asio::dispatch(impl_->accept_strand, [impl = impl_] {
    boost::system::error_code ec;
    if (impl->acceptor) impl->acceptor->close(ec);
    impl->backoff.cancel();
  });
}

std::optional<std::string> Server::reload_policy() {
  try {
    PolicyOverrides ov;
    const bool has_file = !impl_->opts.policy_file.empty();
    if (has_file) ov = load_policy_file(impl_->opts.policy_file);
    auto snap = impl_->build_policy(has_file ? &ov : nullptr);
    impl_->install(std::move(snap));
    impl_->audit_record("policy", true, PeerCredentials{.uid = impl_->self_uid, .gid = ::getegid(), .pid = ::getpid()}, 0, {},
                        "policy reloaded", false);
    return std::nullopt;
  } catch (const std::exception& e) {
    impl_->audit_record("policy", false, PeerCredentials{.uid = impl_->self_uid, .gid = ::getegid(), .pid = ::getpid()}, 0, {},
                        "policy reload failed; old policy kept", false);
    return std::string(e.what());
  }
}

void Server::set_policy(const PolicyOverrides& overrides) { impl_->install(impl_->build_policy(&overrides)); }

const std::string& Server::path() const noexcept { return impl_->listener.path(); }

std::size_t Server::connection_count() const noexcept {
  std::lock_guard lock(impl_->conn_mu);
  return impl_->conns.size();
}

}  // namespace sealrpc
