// Per-layer costs of one SealRPC call, in-process, no sockets unless named
// (BM_Layer/<layer>/<arg>). Each replays what the runtime does on the call path, with
// the runtime's own functions where they are reachable (frame codec and FrameReader
// from lib/transport, the capnp segment-table codec, authorize(), AuditLog, the
// generated method table and invoker, validate_params):
//
//   frame_header/32            encode_header + decode_header of one 32-byte header
//   frame_reader/<bytes>       FrameReader: prepare, copy one request frame in, commit, next
//   capnp_encode/<bytes>       client request: Request<EchoParams> (MallocMessageBuilder),
//                              setData, encoded_size, header + append_message into a vector
//   capnp_decode/<bytes>       server: decode_message (segment table, copy into words) +
//                              root + targetSize (bounded traversal) + validate_params
//   lookup_authorize/<methods> unordered_map<MethodId> lookup over a table of <methods>
//                              methods, each with its own sameUser rule, + authorize()
//   authorize_rule/<entries>   authorize() against a rule with <entries> uids and gids,
//                              caller matching by its last supplementary group (worst case)
//   audit/<mode>               AuditLog::record of an allowed call: limited (default rate
//                              limiter, steady state = folded), all (every record formatted
//                              as JSON and written to /dev/null), format_json alone
//   dispatch/<bytes>           lookup + authorize + audit (limited) + decode + validate +
//                              CallContext + co_spawn(generated invoker) on an io_context
//                              + MallocMessageBuilder results + reply encode
//   co_spawn/0                 co_spawn of an empty awaitable + io_context::run (the
//                              per-call coroutine start-up the server pays)
//   steady_timer/0             one steady_timer armed + cancelled + its handler run: the
//                              per-call deadline timer each side creates (timerfd_settime)
//   recvmsg_eagain/0           a recvmsg on an empty non-blocking socket (EAGAIN): what
//                              FrameChannel::read_frame does before every wait
//   peer_credentials/0         read_peer_credentials on a socketpair (connect-time cost)
#include "contenders.hpp"

#include "bench_echo.capnp.sealrpc.h"
#include "transport/capnp_codec.hpp"
#include "transport/frame.hpp"

#include <sealrpc/audit.hpp>
#include <sealrpc/call_context.hpp>
#include <sealrpc/peer.hpp>
#include <sealrpc/policy.hpp>
#include <sealrpc/service.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <capnp/message.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

namespace sb = sealrpc::bench;
namespace asio = boost::asio;
namespace wire = sealrpc::wire;

// Same hash as lib/rpc/server.cpp's index.
struct MethodIdHash {
  std::size_t operator()(const sealrpc::MethodId& m) const noexcept {
    return std::hash<std::uint64_t>{}(m.interface_id ^ (std::uint64_t{m.ordinal} * 0x9E3779B97F4A7C15ull));
  }
};

sealrpc::PeerCredentials self_peer() {
  sealrpc::PeerCredentials p;
  p.uid = ::geteuid();
  p.gid = ::getegid();
  p.groups = {p.gid};
  p.pid = ::getpid();
  return p;
}

// A request frame (header + capnp EchoParams with `size` data bytes), as the client sends it.
std::vector<std::byte> request_frame(std::size_t size) {
  sealrpc::Request<sealbench::Echo::EchoParams> req;
  std::vector<kj::byte> data(size, 0x61);
  req.params().setData(kj::arrayPtr(data.data(), data.size()));
  const std::size_t n = wire::encoded_size(req.message());
  std::vector<std::byte> out(sealrpc::limits::kHeaderBytes);
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.request_id = 7;
  h.interface_id = capnp::typeId<sealbench::Echo>();
  h.ordinal = 0;
  h.payload_len = static_cast<std::uint32_t>(n);
  h.timeout_ms = 30'000;
  wire::encode_header(h, out.data());
  wire::append_message(out, req.message());
  return out;
}

std::span<const std::byte> payload_of(const std::vector<std::byte>& frame) {
  return std::span<const std::byte>(frame).subspan(sealrpc::limits::kHeaderBytes);
}

// For sub-microsecond layers the clock reads would dominate: no latency recorder, the
// time per iteration is the number (the report shows it as time/iter).
template <typename F>
void run_plain(benchmark::State& state, F&& f) {
  sb::AllocProbe allocs;
  for (auto _ : state) f();
  allocs.report(state);
  state.counters["calls_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

template <typename F>
void run_recorded(benchmark::State& state, F&& f) {
  static sb::LatencyRecorder rec;
  auto& samples = rec.begin(state);
  sb::AllocProbe allocs;
  for (auto _ : state) {
    const auto t0 = sb::Clock::now();
    f();
    samples.record_since(t0);
  }
  allocs.report(state);
  rec.report(state);
}

void BM_frame_header(benchmark::State& state) {
  wire::FrameHeader h;
  h.type = wire::FrameType::request;
  h.request_id = 1;
  h.interface_id = 0x1234567890abcdefull;
  h.payload_len = 40;
  h.timeout_ms = 30'000;
  std::array<std::byte, sealrpc::limits::kHeaderBytes> buf{};
  run_plain(state, [&] {
    ++h.request_id;
    wire::encode_header(h, buf.data());
    benchmark::DoNotOptimize(buf);
    auto d = wire::decode_header(std::span<const std::byte, sealrpc::limits::kHeaderBytes>(buf));
    benchmark::DoNotOptimize(d);
  });
}

void BM_frame_reader(benchmark::State& state) {
  const auto frame = request_frame(static_cast<std::size_t>(state.range(0)));
  wire::FrameReader reader;
  run_plain(state, [&] {
    auto space = reader.prepare(16 * 1024);
    std::size_t off = 0;
    while (off < frame.size()) {  // as recv_some() does: at most the prepared space per read
      const std::size_t n = std::min(space.size(), frame.size() - off);
      std::memcpy(space.data(), frame.data() + off, n);
      reader.commit(n, {});
      off += n;
      if (off < frame.size()) {
        if (reader.next()) throw std::logic_error("frame early");
        space = reader.prepare(16 * 1024);
      }
    }
    auto f = reader.next();
    if (!f) throw std::logic_error("no frame");
    benchmark::DoNotOptimize(f->payload.data());
  });
}

void BM_capnp_encode(benchmark::State& state) {
  std::vector<kj::byte> data(static_cast<std::size_t>(state.range(0)), 0x61);
  run_recorded(state, [&] {
    sealrpc::Request<sealbench::Echo::EchoParams> req;
    req.params().setData(kj::arrayPtr(data.data(), data.size()));
    const std::size_t n = wire::encoded_size(req.message());
    std::vector<std::byte> bytes;
    bytes.reserve(sealrpc::limits::kHeaderBytes + n);
    bytes.resize(sealrpc::limits::kHeaderBytes);
    wire::FrameHeader h;
    h.payload_len = static_cast<std::uint32_t>(n);
    wire::encode_header(h, bytes.data());
    wire::append_message(bytes, req.message());
    benchmark::DoNotOptimize(bytes.data());
  });
}

void BM_capnp_decode(benchmark::State& state) {
  const auto frame = request_frame(static_cast<std::size_t>(state.range(0)));
  const auto schema = capnp::Schema::from<sealbench::Echo::EchoParams>();
  run_recorded(state, [&] {
    auto msg = wire::decode_message(payload_of(frame), sealrpc::ReaderLimits{});
    auto root = msg.root();
    benchmark::DoNotOptimize(root.targetSize());
    sealrpc::validate_params(root, schema);
  });
}

void BM_lookup_authorize(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::unordered_map<sealrpc::MethodId, std::size_t, MethodIdHash> index;
  std::vector<sealrpc::AccessRule> rules;
  sealrpc::AccessRuleSpec spec;
  spec.same_user = true;
  for (std::size_t i = 0; i < n; ++i) {
    index.emplace(sealrpc::MethodId{0xabc0000000000000ull + i / 16, static_cast<std::uint16_t>(i % 16)}, i);
    rules.push_back(sealrpc::AccessRule::resolve(spec, ::geteuid()));
  }
  const auto peer = self_peer();
  std::size_t i = 0;
  run_plain(state, [&] {
    i = (i * 7 + 3) % n;  // spread over the table
    const auto it = index.find(sealrpc::MethodId{0xabc0000000000000ull + i / 16, static_cast<std::uint16_t>(i % 16)});
    const auto d = sealrpc::authorize(rules[it->second], peer);
    benchmark::DoNotOptimize(d);
  });
}

void BM_authorize_rule(benchmark::State& state) {
  const auto n = static_cast<std::uint32_t>(state.range(0));
  sealrpc::AccessRuleSpec spec;
  for (std::uint32_t k = 0; k < n; ++k) {
    spec.uids.push_back(100000 + 2 * k);
    spec.gids.push_back(200000 + 2 * k);
  }
  const auto rule = sealrpc::AccessRule::resolve(spec, 0);
  sealrpc::PeerCredentials peer;
  peer.uid = 99;  // not in the uid list
  peer.gid = 50;
  peer.groups = {50, 51, 200000 + 2 * (n - 1)};  // matches the rule's last gid
  run_plain(state, [&] {
    const auto d = sealrpc::authorize(rule, peer);
    if (d.verdict != sealrpc::Verdict::allow) throw std::logic_error("expected allow");
    benchmark::DoNotOptimize(d);
  });
}

std::shared_ptr<sealrpc::AuditLog> make_audit(bool unlimited, int fd) {
  sealrpc::AuditRateLimit limit;
  if (unlimited) limit.burst = std::numeric_limits<std::uint32_t>::max();
  auto sink = std::make_shared<sealrpc::CallbackSink>([fd](const sealrpc::AuditRecord& r) {
    std::string line = sealrpc::format_json(r);
    line += '\n';
    (void)!::write(fd, line.data(), line.size());
  });
  return std::make_shared<sealrpc::AuditLog>(std::vector<std::shared_ptr<sealrpc::AuditSink>>{sink}, limit);
}

sealrpc::AuditRecord call_record(const sealrpc::PeerCredentials& p) {
  sealrpc::AuditRecord r;  // what Server::Impl::audit_record builds for an allowed call
  r.event = "call";
  r.allowed = true;
  r.uid = p.uid;
  r.gid = p.gid;
  r.pid = p.pid;
  r.connection_id = 1;
  r.method = "Echo.echo";
  r.reason = "uid allowed";
  return r;
}

void BM_audit(benchmark::State& state, int mode) {
  // mode 0 limited, 1 all, 2 format_json only
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto log = make_audit(mode == 1, fd);
  const auto peer = self_peer();
  run_plain(state, [&] {
    auto r = call_record(peer);
    if (mode == 2) {
      r.time = std::chrono::system_clock::now();
      auto s = sealrpc::format_json(r);
      benchmark::DoNotOptimize(s.data());
    } else {
      log->record(r);
    }
  });
  log.reset();
  ::close(fd);
}

class EchoImpl final : public sealbench::EchoService {
 public:
  asio::awaitable<sealrpc::Status> echo(sealrpc::CallContext&, sealbench::Echo::EchoParams::Reader params,
                                        sealbench::Echo::EchoResults::Builder results) override {
    results.setData(params.getData());
    co_return sealrpc::Status::ok();
  }
};

void BM_dispatch(benchmark::State& state) {
  const auto frame = request_frame(static_cast<std::size_t>(state.range(0)));
  const auto header = wire::decode_header(std::span<const std::byte, sealrpc::limits::kHeaderBytes>(frame.data(), 32));
  auto service = std::make_shared<EchoImpl>();
  const auto table = service->sealrpc_methods();
  std::unordered_map<sealrpc::MethodId, std::size_t, MethodIdHash> index;
  std::vector<sealrpc::AccessRule> rules;
  std::vector<std::string> qualified;
  for (std::size_t i = 0; i < table.size(); ++i) {
    index.emplace(table[i].id, i);
    rules.push_back(sealrpc::AccessRule::resolve(table[i].rule, ::geteuid()));
    qualified.push_back(table[i].qualified_name());
  }
  const int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto audit = make_audit(false, fd);
  const auto peer = self_peer();
  asio::io_context io(1);
  std::vector<std::byte> reply;
  bool ok = true;
  run_recorded(state, [&] {
    const auto it = index.find(sealrpc::MethodId{header.interface_id, header.ordinal});
    const auto& m = table[it->second];
    const auto d = sealrpc::authorize(rules[it->second], peer);
    auto rec = call_record(peer);
    rec.method = qualified[it->second];
    rec.reason = d.reason;
    audit->record(rec);
    auto params = wire::decode_message(payload_of(frame), sealrpc::ReaderLimits{});
    auto root = params.root();
    (void)root.targetSize();
    sealrpc::validate_params(root, *m.params_schema);
    sealrpc::CallContext ctx(peer, m, sealrpc::CallContext::clock::now() + std::chrono::seconds(30), 1, false);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          capnp::MallocMessageBuilder results;
          const auto st = co_await m.invoke(*service, ctx, params.root(), results.getRoot<capnp::AnyPointer>());
          ok = ok && st.is_ok();
          const std::size_t size = wire::encoded_size(results);
          reply.clear();
          std::vector<std::byte> bytes;  // the server builds a fresh vector per reply
          bytes.reserve(sealrpc::limits::kHeaderBytes + size);
          bytes.resize(sealrpc::limits::kHeaderBytes);
          wire::FrameHeader h;
          h.type = wire::FrameType::response;
          h.payload_len = static_cast<std::uint32_t>(size);
          wire::encode_header(h, bytes.data());
          wire::append_message(bytes, results);
          reply = std::move(bytes);
        },
        asio::detached);
    io.restart();
    io.run();
  });
  if (!ok) sb::fail(state, "dispatch: handler failed");
  audit.reset();
  ::close(fd);
}

void BM_co_spawn(benchmark::State& state) {
  asio::io_context io(1);
  int n = 0;
  run_plain(state, [&] {
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { ++n; co_return; }, asio::detached);
    io.restart();
    io.run();
  });
  benchmark::DoNotOptimize(n);
}

void BM_steady_timer(benchmark::State& state) {
  asio::io_context io(1);
  run_plain(state, [&] {
    std::optional<asio::steady_timer> t;  // as Pending/Call hold it: optional, emplaced per call
    t.emplace(io);
    t->expires_after(std::chrono::seconds(30));
    t->async_wait([](boost::system::error_code) {});
    t->cancel();
    io.restart();
    io.poll();
  });
}

void BM_recvmsg_eagain(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
    sb::fail(state, "socketpair");
    return;
  }
  std::array<std::byte, 16 * 1024> buf{};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 32)];
  run_plain(state, [&] {
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sv[0], &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    benchmark::DoNotOptimize(n);
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

void BM_peer_credentials(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    sb::fail(state, "socketpair");
    return;
  }
  run_recorded(state, [&] {
    auto p = sealrpc::read_peer_credentials(sv[0]);
    benchmark::DoNotOptimize(p.uid);
  });
  ::close(sv[0]);
  ::close(sv[1]);
}

SEALRPC_BENCH_REGISTRAR([](const sb::SuiteConfig&) {
  if (std::getenv("SEALRPC_BENCH_FIXED_CALLS")) return;  // scripts/bench-callgrind
  auto reg = [](const std::string& name, auto fn) {
    return benchmark::RegisterBenchmark(("BM_Layer/" + name).c_str(), fn)->UseRealTime();
  };
  reg("frame_header", BM_frame_header)->Arg(32)->Unit(benchmark::kNanosecond);
  for (int s : {32, 1024, 65536}) reg("frame_reader", BM_frame_reader)->Arg(s)->Unit(benchmark::kNanosecond);
  for (int s : {32, 1024, 65536}) reg("capnp_encode", BM_capnp_encode)->Arg(s)->Unit(benchmark::kMicrosecond);
  for (int s : {32, 1024, 65536}) reg("capnp_decode", BM_capnp_decode)->Arg(s)->Unit(benchmark::kMicrosecond);
  for (int n : {10, 100, 1000}) reg("lookup_authorize", BM_lookup_authorize)->Arg(n)->Unit(benchmark::kNanosecond);
  for (int n : {10, 100, 1000}) reg("authorize_rule", BM_authorize_rule)->Arg(n)->Unit(benchmark::kNanosecond);
  const char* audit_names[] = {"limited", "all", "format_json"};
  for (int m = 0; m < 3; ++m)
    reg(std::string("audit/") + audit_names[m], [m](benchmark::State& st) { BM_audit(st, m); })
        ->Unit(benchmark::kNanosecond);
  for (int s : {32, 65536}) reg("dispatch", BM_dispatch)->Arg(s)->Unit(benchmark::kMicrosecond);
  reg("co_spawn", BM_co_spawn)->Arg(0)->Unit(benchmark::kNanosecond);
  reg("steady_timer", BM_steady_timer)->Arg(0)->Unit(benchmark::kNanosecond);
  reg("recvmsg_eagain", BM_recvmsg_eagain)->Arg(0)->Unit(benchmark::kNanosecond);
  reg("peer_credentials", BM_peer_credentials)->Arg(0)->Unit(benchmark::kMicrosecond);
});

}  // namespace
