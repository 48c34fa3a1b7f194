#include "test_util.hpp"

#include "test_service.hpp"
#include "testsvc.capnp.h"

#include <boost/asio/executor_work_guard.hpp>

#include <dirent.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace testutil {
using testsvc::EchoParams;
using testsvc::EchoResults;
using testsvc::Nested;
namespace asio = boost::asio;

int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

int run_child(const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int rc = kOther;
    try {
      rc = fn();
    } catch (...) {
    }
    ::_exit(rc);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int run_as(const Identity& id, const std::function<int()>& fn) {
  return run_child([&] {
    if (::setgroups(id.groups.size(), id.groups.data()) != 0) return kOther + 1;
    if (::setresgid(id.gid, id.gid, id.gid) != 0) return kOther + 2;
    if (::setresuid(id.uid, id.uid, id.uid) != 0) return kOther + 3;
    if (::geteuid() != id.uid || ::getuid() != id.uid) return kOther + 4;  // A10: never test as root
    return fn();
  });
}

int outcome(const boost::system::error_code& ec) {
  if (!ec) return kOk;
  if (ec.category() == sealrpc::status_category()) return kRpcBase + ec.value();
  if (ec.category() == sealrpc::client_category()) return kClientBase + ec.value();
  if (ec.category() == boost::system::generic_category() || ec.category() == boost::system::system_category())
    return ec.value() < 50 ? kErrnoBase + ec.value() : kOther;
  return kOther;
}

CallResult call_once(const std::string& path, std::uint16_t ordinal, const std::string& data, sealrpc::ClientOptions opts,
                     std::uint32_t delay_ms) {
  asio::io_context io;
  CallResult res;
  sealrpc::Client client;
  sealrpc::Client::async_connect(io.get_executor(), path, opts, [&](boost::system::error_code ec, sealrpc::Client c) {
    if (ec) {
      res.ec = ec;
      return;
    }
    client = c;
    sealrpc::Request<EchoParams> req;
    req.params().setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size()));
    req.params().setDelayMs(delay_ms);
    client.async_call<EchoResults>({testsvc::kTestInterface, ordinal}, std::move(req),
                                   [&](boost::system::error_code ec, sealrpc::Response<EchoResults> r) {
                                     res.ec = ec;
                                     res.message = r.status().message;
                                     if (!ec) {
                                       auto v = r.get();
                                       res.data.assign(reinterpret_cast<const char*>(v.getData().begin()), v.getData().size());
                                       res.uid = v.getUid();
                                       for (auto g : v.getGroups()) res.groups.push_back(g);
                                     }
                                     client.close();
                                   });
  });
  io.run();
  return res;
}

std::shared_ptr<sealrpc::AuditLog> AuditCapture::log(sealrpc::AuditRateLimit limit) {
  auto sink = std::make_shared<sealrpc::CallbackSink>([this](const sealrpc::AuditRecord& r) {
    std::lock_guard lock(mu_);
    recs_.push_back(Rec{std::string(r.event), std::string(r.method), std::string(r.reason), r.allowed, r.uid, r.pid,
                        r.peer_exited, r.suppressed});
  });
  return std::make_shared<sealrpc::AuditLog>(std::vector<std::shared_ptr<sealrpc::AuditSink>>{sink}, limit);
}

std::vector<AuditCapture::Rec> AuditCapture::records() const {
  std::lock_guard lock(mu_);
  return recs_;
}

bool AuditCapture::has(const std::string& event, bool allowed, uid_t uid, const std::string& method) const {
  std::lock_guard lock(mu_);
  for (const auto& r : recs_)
    if (r.event == event && r.allowed == allowed && r.uid == uid && (method.empty() || r.method == method)) return true;
  return false;
}

TestServer::TestServer(sealrpc::Listener l, sealrpc::ServerOptions opts, std::vector<std::shared_ptr<sealrpc::Service>> extra) {
  if (!opts.audit) opts.audit = audit_.log();
  server_ = std::make_unique<sealrpc::Server>(io_.get_executor(), std::move(l), std::move(opts));
  service = std::make_shared<testsvc::TestService>();
  server_->add_service(service);
  for (auto& s : extra) server_->add_service(std::move(s));
  server_->start();
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(io_);
    io_.run();
  });
}

TestServer::~TestServer() {
  server_->stop();
  io_.stop();
  thread_.join();
  server_.reset();
}

int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_with_fds(int sock, const std::vector<std::byte>& b, const std::vector<int>& fds) {
  iovec iov{const_cast<std::byte*>(b.data()), b.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<std::size_t>(fds.size(), 1)));
  if (!fds.empty()) {
    m.msg_control = control.data();
    m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(sock, &m, MSG_NOSIGNAL) == static_cast<ssize_t>(b.size());
}

namespace {
// Reads exactly n bytes: 1, 0 on EOF or error, -1 on timeout.
int read_exactly(int fd, char* out, std::size_t n, int timeout_ms) {
  while (n > 0) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return -1;
    const ssize_t r = ::read(fd, out, n);
    if (r <= 0) return 0;
    out += r;
    n -= static_cast<std::size_t>(r);
  }
  return 1;
}
}  // namespace

std::pair<int, std::string> read_frame(int fd, int timeout_ms) {
  char h[32];
  if (const int r = read_exactly(fd, h, sizeof h, timeout_ms); r != 1) return r < 0 ? std::pair{-1, std::string("timeout")} : std::pair{0, std::string()};
  std::uint32_t len;
  std::memcpy(&len, h + 8, 4);
  if (len > (16u << 20)) return {0, ""};  // not a frame any peer of ours may send
  std::string payload(len, '\0');
  if (const int r = read_exactly(fd, payload.data(), len, timeout_ms); r != 1) return r < 0 ? std::pair{-1, std::string("timeout")} : std::pair{0, std::string()};
  return {static_cast<unsigned char>(h[5]), std::move(payload)};
}

std::pair<int, std::string> read_reply(int fd, int timeout_ms) {
  for (;;) {
    auto f = read_frame(fd, timeout_ms);
    if (f.first != 1) return f;  // skips HELLO
  }
}

}  // namespace testutil
