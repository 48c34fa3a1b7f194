// Audit trail: every authorization decision (connection accept/refuse, each call's
// allow/deny) becomes an AuditRecord. Records go through a rate limiter keyed by
// (uid, event, method, verdict): the first `burst` per interval are written, the rest
// are counted and reported as one "N similar records suppressed" record, so no caller
// can fill the disk or evict other lines (SECURITY.md L3). Records carry identity,
// method and reason only: never payload bytes, keys or file contents.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sealrpc {

struct AuditRecord {
  std::chrono::system_clock::time_point time;
  std::string_view event;  // "connect" | "call" | "policy" | "suppressed"
  bool allowed = false;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  pid_t pid = 0;
  std::optional<bool> peer_exited;  // from the pidfd; nullopt when unknown
  std::uint64_t connection_id = 0;
  std::string_view method;  // "Interface.method", empty for connection events
  std::string_view reason;  // static text, safe to log
  std::uint64_t suppressed = 0;  // for event "suppressed": how many were folded
};

// One line of text for a record (syslog form), and one JSON object (JSON-lines form).
std::string format_text(const AuditRecord& r);
std::string format_json(const AuditRecord& r);

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  // Called with the AuditLog's mutex held: must not call back into the AuditLog.
  virtual void write(const AuditRecord& r) = 0;
};

// syslog(3) with facility LOG_AUTHPRIV: LOG_NOTICE for denials, LOG_INFO otherwise.
class SyslogSink final : public AuditSink {
 public:
  explicit SyslogSink(std::string ident = "sealrpc");
  ~SyslogSink() override;
  void write(const AuditRecord& r) override;

 private:
  std::string ident_;  // openlog keeps the pointer
};

// Appends JSON lines to a file created 0600 with O_NOFOLLOW|O_APPEND|O_CLOEXEC.
class JsonLinesSink final : public AuditSink {
 public:
  explicit JsonLinesSink(const std::string& path);
  ~JsonLinesSink() override;
  void write(const AuditRecord& r) override;

 private:
  int fd_ = -1;
};

class CallbackSink final : public AuditSink {
 public:
  explicit CallbackSink(std::function<void(const AuditRecord&)> f) : f_(std::move(f)) {}
  void write(const AuditRecord& r) override { f_(r); }

 private:
  std::function<void(const AuditRecord&)> f_;
};

struct AuditRateLimit {
  std::chrono::milliseconds interval{1000};
  std::uint32_t burst = 10;      // records per key per interval before folding
  std::size_t max_keys = 4096;   // bound on the limiter's own memory
};

// Thread-safe front of the sinks.
class AuditLog {
 public:
  explicit AuditLog(std::vector<std::shared_ptr<AuditSink>> sinks, AuditRateLimit limit = {});
  ~AuditLog();
  void record(AuditRecord r);
  // Writes pending "suppressed" summaries now (called at shutdown).
  void flush();

  static std::shared_ptr<AuditLog> syslog_default();

 private:
  struct Window {
    std::chrono::steady_clock::time_point start;
    std::uint32_t written = 0;
    std::uint64_t suppressed = 0;
    AuditRecord last;     // for the summary; its method view points into `method`
    std::string method;   // owned copy (map nodes never move, so the view stays valid)
  };
  void emit(const AuditRecord& r);
  void emit_summary(Window& w);

  std::mutex mu_;
  std::vector<std::shared_ptr<AuditSink>> sinks_;
  AuditRateLimit limit_;
  std::unordered_map<std::string, Window> windows_;
};

}  // namespace sealrpc
