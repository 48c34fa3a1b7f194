// Policy file parser. See include/sealrpc/policy_file.hpp for the grammar.
#include "sealrpc/policy_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cctype>
#include <charconv>
#include <cstring>

namespace sealrpc {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const auto next = s.find(sep, pos);
    out.push_back(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) break;
    pos = next + 1;
  }
  return out;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
    std::size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\r') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool valid_ident(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

PolicyOverrides parse_policy(std::string_view text, const std::string& source) {
  PolicyOverrides out;
  int line_no = 0;
  for (std::string_view line : split(text, '\n')) {
    ++line_no;
    auto fail = [&](const std::string& what) -> PolicyError { return PolicyError(source, line_no, what); };
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    auto w = words(line);
    if (w.empty()) continue;
    if (w.size() < 3) throw fail("expected '<method|interface> <name> <term>...'");
    const bool is_method = w[0] == "method";
    if (!is_method && w[0] != "interface") throw fail("unknown scope '" + std::string(w[0]) + "' (expected method or interface)");
    if (!valid_ident(w[1])) throw fail("invalid name '" + std::string(w[1]) + "'");
    if (is_method && w[1].find('.') == std::string_view::npos) throw fail("method name must be <Interface>.<method>");
    PolicyEntry e;
    e.line = line_no;
    bool nobody = false;
    for (std::size_t i = 2; i < w.size(); ++i) {
      const std::string_view t = w[i];
      const auto eq = t.find('=');
      const std::string_view key = t.substr(0, eq);
      if (eq == std::string_view::npos) {
        if (key == "root") e.rule.root = true;
        else if (key == "same-user") e.rule.same_user = true;
        else if (key == "open") e.rule.open = true;
        else if (key == "nobody") nobody = true;
        else throw fail("unknown term '" + std::string(key) + "'");
        continue;
      }
      const std::string_view val = t.substr(eq + 1);
      if (val.empty()) throw fail("empty value for '" + std::string(key) + "'");
      if (key == "label") { e.rule.label = std::string(val); continue; }
      for (std::string_view item : split(val, ',')) {
        if (item.empty()) throw fail("empty list item in '" + std::string(key) + "'");
        if (key == "uids" || key == "gids") {
          std::uint32_t n = 0;
          auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), n);
          if (ec != std::errc() || p != item.data() + item.size() || n == static_cast<std::uint32_t>(-1))
            throw fail("invalid number '" + std::string(item) + "'");
          (key == "uids" ? e.rule.uids : e.rule.gids).push_back(n);
        } else if (key == "users" || key == "groups") {
          std::string name(item);
          try {  // resolve now so a typo is an error at load, with its line
            if (key == "users") e.rule.uids.push_back(resolve_user(name));
            else e.rule.gids.push_back(resolve_group(name));
          } catch (const std::invalid_argument& ex) {
            throw fail(ex.what());
          }
        } else {
          throw fail("unknown key '" + std::string(key) + "'");
        }
      }
    }
    const bool grants = e.rule.root || e.rule.same_user || e.rule.open || !e.rule.uids.empty() || !e.rule.gids.empty();
    if (nobody && grants) throw fail("'nobody' cannot be combined with grants");
    if (e.rule.open && (!e.rule.uids.empty() || !e.rule.gids.empty() || e.rule.root || e.rule.same_user))
      throw fail("'open' already allows everyone; remove the other grants");
    auto& map = is_method ? out.methods : out.interfaces;
    if (!map.emplace(std::string(w[1]), std::move(e)).second) throw fail("duplicate rule for '" + std::string(w[1]) + "'");
  }
  return out;
}

PolicyOverrides load_policy_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw PolicyError(path, 0, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  std::string text;
  const bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && !(st.st_mode & S_IWOTH) &&
                  (st.st_uid == 0 || st.st_uid == ::geteuid()) && st.st_size < (1 << 20);
  if (ok) {
    text.resize(static_cast<std::size_t>(st.st_size));
    std::size_t off = 0;
    while (off < text.size()) {
      const ssize_t n = ::read(fd, text.data() + off, text.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    text.resize(off);
  }
  ::close(fd);
  if (!ok) throw PolicyError(path, 0, "must be a regular file under 1 MiB, owned by root or us, not writable by others");
  return parse_policy(text, path);
}

}  // namespace sealrpc
