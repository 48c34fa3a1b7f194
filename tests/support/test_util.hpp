// Test helpers: real processes with real credentials, an in-process server, fd counts.
#pragma once

#include "sealrpc/audit.hpp"
#include "sealrpc/client.hpp"
#include "sealrpc/server.hpp"

#include <boost/asio/io_context.hpp>

#include <unistd.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace testutil {

// Polls `cond` every few ms; false if it did not hold within `limit` (generous: a
// deadlock guard, never a performance assertion).
template <typename F>
bool wait_until(F cond, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    ::usleep(5'000);
  }
  return true;
}

// Number of open fds of this process (/proc/self/fd), for leak checks (T1).
int count_fds();

struct Identity {
  uid_t uid;
  gid_t gid;
  std::vector<gid_t> groups;  // supplementary
};

// Forks; the child drops to `id` (setgroups, setresgid, setresuid; verified) and runs
// fn, whose return value becomes its exit code. Returns the exit code (or 128+signal).
int run_as(const Identity& id, const std::function<int()>& fn);
// Forks and runs fn without changing credentials.
int run_child(const std::function<int()>& fn);

// Outcome codes a child can return through its exit status.
enum Outcome : int {
  kOk = 0,
  kRpcBase = 10,     // + StatusCode
  kClientBase = 30,  // + ClientError
  kErrnoBase = 60,   // + errno of a failed connect (e.g. EACCES=13 -> 73)
  kOther = 120,
};
int outcome(const boost::system::error_code& ec);

struct CallResult {
  boost::system::error_code ec;
  std::string message;
  std::string data;
  uid_t uid = 0;
  std::vector<gid_t> groups;
};
// Connects, makes one call to the test service, closes. Runs its own io_context.
CallResult call_once(const std::string& path, std::uint16_t ordinal, const std::string& data = "ping",
                     sealrpc::ClientOptions opts = {}, std::uint32_t delay_ms = 0);

// Records every audit record (copies) for assertions.
class AuditCapture {
 public:
  std::shared_ptr<sealrpc::AuditLog> log(sealrpc::AuditRateLimit limit = {.burst = 1000000});
  struct Rec {
    std::string event, method, reason;
    bool allowed;
    uid_t uid;
    pid_t pid;
    std::optional<bool> exited;
    std::uint64_t suppressed;
  };
  std::vector<Rec> records() const;
  bool has(const std::string& event, bool allowed, uid_t uid, const std::string& method = "") const;

 private:
  mutable std::mutex mu_;
  std::vector<Rec> recs_;
};

// A TestService server on its own io_context thread.
class TestServer {
 public:
  explicit TestServer(sealrpc::Listener l, sealrpc::ServerOptions opts = {},
                      std::vector<std::shared_ptr<sealrpc::Service>> extra = {});
  ~TestServer();
  const std::string& path() const { return server_->path(); }
  sealrpc::Server& server() { return *server_; }
  AuditCapture& audit() { return audit_; }
  std::shared_ptr<sealrpc::Service> service;

 private:
  AuditCapture audit_;
  boost::asio::io_context io_;
  std::unique_ptr<sealrpc::Server> server_;
  std::thread thread_;
};

// Sends `b` in one sendmsg with `fds` attached (SCM_RIGHTS); true when all was sent.
bool send_with_fds(int sock, const std::vector<std::byte>& b, const std::vector<int>& fds = {});

// Raw client socket for hostile tests: connected, blocking; the HELLO is left unread
// (read_reply skips it, read_frame returns it).
int raw_connect(const std::string& path);
// Reads frames until EOF; returns the type and payload of the first non-HELLO frame
// (type 0 on EOF without one).
std::pair<int, std::string> read_reply(int fd, int timeout_ms = 5000);
// Reads exactly one frame (never past it): {type, payload}; {0, ""} on EOF, {-1,
// "timeout"} after timeout_ms of silence.
std::pair<int, std::string> read_frame(int fd, int timeout_ms = 5000);

}  // namespace testutil
