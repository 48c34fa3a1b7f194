// Audit records, sinks and the rate limiter. See include/sealrpc/audit.hpp.
#include "sealrpc/audit.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <system_error>

namespace sealrpc {
namespace {

std::string iso_time(std::chrono::system_clock::time_point t) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[48];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(us % 1'000'000));
  return buf;
}

void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
    else if (c < 0x20 || c >= 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else out += static_cast<char>(c);
  }
  out += '"';
}

const char* liveness(const std::optional<bool>& exited) {
  return !exited ? "unknown" : (*exited ? "exited" : "alive");
}

}  // namespace

std::string format_text(const AuditRecord& r) {
  std::string s = "event=";
  s += r.event;
  s += r.allowed ? " decision=allow" : " decision=deny";
  s += " uid=" + std::to_string(r.uid) + " gid=" + std::to_string(r.gid) + " pid=" + std::to_string(r.pid);
  s += " peer=";
  s += liveness(r.peer_exited);
  s += " conn=" + std::to_string(r.connection_id);
  if (!r.method.empty()) { s += " method="; s += r.method; }
  s += " reason=\"";
  s += r.reason;
  s += '"';
  if (r.event == "suppressed") s += " count=" + std::to_string(r.suppressed);
  return s;
}

std::string format_json(const AuditRecord& r) {
  std::string s = "{\"time\":";
  json_string(s, iso_time(r.time));
  s += ",\"event\":";
  json_string(s, r.event);
  s += ",\"decision\":";
  s += r.allowed ? "\"allow\"" : "\"deny\"";
  s += ",\"uid\":" + std::to_string(r.uid) + ",\"gid\":" + std::to_string(r.gid) + ",\"pid\":" + std::to_string(r.pid);
  s += ",\"peer\":\"";
  s += liveness(r.peer_exited);
  s += "\",\"conn\":" + std::to_string(r.connection_id) + ",\"method\":";
  json_string(s, r.method);
  s += ",\"reason\":";
  json_string(s, r.reason);
  if (r.event == "suppressed") s += ",\"count\":" + std::to_string(r.suppressed);
  s += "}";
  return s;
}

SyslogSink::SyslogSink(std::string ident) : ident_(std::move(ident)) {
  ::openlog(ident_.c_str(), LOG_PID | LOG_NDELAY, LOG_AUTHPRIV);
}
SyslogSink::~SyslogSink() { ::closelog(); }
void SyslogSink::write(const AuditRecord& r) {
  const std::string line = format_text(r);
  ::syslog(LOG_AUTHPRIV | (r.allowed ? LOG_INFO : LOG_NOTICE), "%s", line.c_str());
}

JsonLinesSink::JsonLinesSink(const std::string& path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "open audit log '" + path + "'");
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw std::system_error(EPERM, std::generic_category(), "audit log '" + path + "' must be our own regular file, mode 0600");
  }
}
JsonLinesSink::~JsonLinesSink() {
  if (fd_ >= 0) ::close(fd_);
}
void JsonLinesSink::write(const AuditRecord& r) {
  std::string line = format_json(r);
  line += '\n';
  // One write per line with O_APPEND: lines from several processes never interleave.
  std::size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the audit trail must not take the server down; syslog sink is the backup
    }
    off += static_cast<std::size_t>(n);
  }
}

AuditLog::AuditLog(std::vector<std::shared_ptr<AuditSink>> sinks, AuditRateLimit limit)
    : sinks_(std::move(sinks)), limit_(limit) {}

AuditLog::~AuditLog() { flush(); }

std::shared_ptr<AuditLog> AuditLog::syslog_default() {
  return std::make_shared<AuditLog>(std::vector<std::shared_ptr<AuditSink>>{std::make_shared<SyslogSink>()});
}

void AuditLog::emit(const AuditRecord& r) {
  for (auto& s : sinks_) s->write(r);
}

void AuditLog::emit_summary(Window& w) {
  if (w.suppressed == 0) return;
  AuditRecord s = w.last;
  s.time = std::chrono::system_clock::now();
  s.event = "suppressed";
  s.reason = "similar records suppressed";
  s.suppressed = w.suppressed;
  emit(s);
  w.suppressed = 0;
}

void AuditLog::record(AuditRecord r) {
  // The key is built in a reused per-thread buffer: no allocation per record once warm.
  thread_local std::string key;
  // Binary (uid bytes, verdict, event, NUL, method): at least 5 bytes, so the empty
  // string is free for the overflow window.
  key.assign(reinterpret_cast<const char*>(&r.uid), sizeof r.uid);
  key += r.allowed ? 'a' : 'd';
  key += r.event;
  key += '\0';
  key += r.method;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= limit_.max_keys) {
      // Bounded memory: drop expired windows (after summarising them).
      for (auto i = windows_.begin(); i != windows_.end();) {
        if (now - i->second.start >= limit_.interval) { emit_summary(i->second); i = windows_.erase(i); }
        else ++i;
      }
      if (windows_.size() >= limit_.max_keys) key.clear();  // one shared overflow window
    }
    it = windows_.try_emplace(key, Window{now, 0, 0, {}, {}}).first;
  }
  Window& w = it->second;
  if (now - w.start >= limit_.interval) {
    emit_summary(w);
    w.start = now;
    w.written = 0;
  }
  if (w.written < limit_.burst) {
    ++w.written;
    if (r.time == std::chrono::system_clock::time_point{}) r.time = std::chrono::system_clock::now();
    emit(r);
  } else {  // the summary takes its own time stamp
    ++w.suppressed;
    if (w.method != r.method) w.method.assign(r.method);  // differs only in the overflow window
    w.last = r;
    w.last.method = w.method;
  }
}

void AuditLog::flush() {
  std::lock_guard lock(mu_);
  for (auto& [k, w] : windows_) emit_summary(w);
}

}  // namespace sealrpc
