// Secure listening endpoints: private temp dirs and checked fixed paths.
// See include/sealrpc/endpoint.hpp for the guarantees; the kernel facts are in
// SECURITY.md K36-K47. Every filesystem step goes through a directory fd opened with
// O_NOFOLLOW so no symlink is ever followed or removed, and bind() goes through
// /proc/self/fd/<dirfd>/<name> (K42) so the directory cannot be swapped underneath.
#include "sealrpc/endpoint.hpp"

#include "os/syscall.hpp"

#include <fcntl.h>
#include <sys/acl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sealrpc {
namespace {

constexpr std::size_t kSunPathMax = sizeof(sockaddr_un{}.sun_path);

[[noreturn]] void fail(int err, const std::string& what) { throw EndpointError(err, what); }

bool is_safe_name(std::string_view n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string_view::npos && n.size() < 256;
}

// A directory is acceptable to hold (or lead to) our socket when root or we own it and
// nobody else can rename entries in it: not group/other-writable, unless sticky.
void check_dir(const struct stat& st, const std::string& where) {
  const uid_t me = ::geteuid();
  if (!S_ISDIR(st.st_mode)) fail(ENOTDIR, where + ": not a directory");
  if (st.st_uid != 0 && st.st_uid != me) fail(EPERM, where + ": directory owned by another user (uid " + std::to_string(st.st_uid) + ")");
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
    fail(EPERM, where + ": directory is writable by others and not sticky");
}

// Opens an absolute directory path component by component with O_NOFOLLOW, checking
// every directory on the way. Returns an O_PATH fd of the final directory.
UniqueFd open_dir_nofollow(const std::string& dir) {
  if (dir.empty() || dir[0] != '/') fail(EINVAL, "'" + dir + "': socket directory must be an absolute path");
  UniqueFd cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) fail(errno, "open('/')");
  std::string walked;
  std::size_t pos = 1;
  while (pos <= dir.size()) {
    std::size_t next = dir.find('/', pos);
    if (next == std::string::npos) next = dir.size();
    std::string comp = dir.substr(pos, next - pos);
    pos = next + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") fail(EINVAL, "'" + dir + "': '..' is not allowed in a socket path");
    walked += "/" + comp;
    int fd = ::openat(cur.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      const int e = errno;
      struct stat lst {};
      if ((e == ENOTDIR || e == ELOOP) && ::fstatat(cur.get(), comp.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
        fail(ELOOP, "'" + walked + "' is a symlink; refusing to follow it");
      fail(e, "cannot open directory '" + walked + "'");
    }
    cur = UniqueFd(fd);
    // Every directory on the way must be owned by root or us and not writable by
    // others without the sticky bit (P4): else someone could rename our entries.
    struct stat st {};
    if (::fstat(cur.get(), &st) != 0) fail(errno, "fstat('" + walked + "')");
    check_dir(st, "'" + walked + "'");
  }
  return cur;
}

std::string proc_path(int dirfd, const std::string& name) {
  return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

sockaddr_un make_addr(const std::string& p, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (p.size() >= kSunPathMax) fail(ENAMETOOLONG, "socket path too long (" + std::to_string(p.size()) + " bytes, at most " + std::to_string(kSunPathMax - 1) + ")");
  std::memcpy(a.sun_path, p.data(), p.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + p.size() + 1);
  return a;
}

UniqueFd new_socket() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) fail(errno, "socket(AF_UNIX)");
  return UniqueFd(fd);
}

void apply_acl(int dirfd, const std::string& name, const EndpointOptions& o) {
  if (o.acl_users.empty() && o.acl_groups.empty()) return;
  // Full ACL text, mask included, so the named entries are effective (K4: never chmod
  // after setting an ACL, it would mask them off).
  std::string text = "u::rw-,g::---,o::---,m::rw-";
  for (uid_t u : o.acl_users) text += ",u:" + std::to_string(u) + ":rw-";
  for (gid_t g : o.acl_groups) text += ",g:" + std::to_string(g) + ":rw-";
  acl_t acl = ::acl_from_text(text.c_str());
  if (!acl) fail(errno, "acl_from_text");
  const int r = ::acl_set_file(proc_path(dirfd, name).c_str(), ACL_TYPE_ACCESS, acl);
  const int e = errno;
  ::acl_free(acl);
  if (r != 0) fail(e, "setting ACL on the socket");
}

// socket -> fchmod -> bind -> (chown/ACL) -> verify -> listen. See file comment.
void bind_in_dir(Listener& l, UniqueFd& sock, int dirfd, const std::string& name, const EndpointOptions& o,
                 ino_t& ino, dev_t& dev) {
  const mode_t mode = o.socket_mode & 0777;
  if (mode & 0007) fail(EINVAL, "socket mode must not grant access to others");
  if ((mode & 0070) && !o.group) fail(EINVAL, "a group-accessible socket mode needs EndpointOptions::group");
  sock = new_socket();
  if (::fchmod(sock.get(), mode) != 0) fail(errno, "fchmod(socket)");  // K37: before bind
  socklen_t len = 0;
  sockaddr_un a = make_addr(proc_path(dirfd, name), len);
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
    const int e = errno;
    fail(e, e == EADDRINUSE ? "'" + l.path() + "' already exists" : "bind('" + l.path() + "')");
  }
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) fail(errno, "fstatat(socket)");
  ino = st.st_ino;
  dev = st.st_dev;
  if (o.group && ::fchownat(dirfd, name.c_str(), static_cast<uid_t>(-1), *o.group, AT_SYMLINK_NOFOLLOW) != 0)
    fail(errno, "chown of the socket to its group");
  apply_acl(dirfd, name, o);
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) fail(errno, "fstatat(socket)");
  // With ACL entries the group bits show the ACL mask (rw-), not the group class.
  const bool has_acl = !o.acl_users.empty() || !o.acl_groups.empty();
  const mode_t expect = has_acl ? ((mode & 0707) | 0060) : mode;
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 0777) != expect || st.st_ino != ino)
    fail(EPERM, "socket file did not end up with the requested owner and mode");
  if (::listen(sock.get(), o.backlog) != 0) fail(errno, "listen");
}

std::string random_suffix() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char raw[12];
  if (::getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) fail(errno, "getrandom");
  std::string s;
  for (unsigned char c : raw) s += kAlphabet[c % 36];
  return s;
}

// Is a socket at dirfd/name answered by a live server? ECONNREFUSED means stale (K42b).
bool socket_is_live(int dirfd, const std::string& name) {
  UniqueFd probe = new_socket();
  socklen_t len = 0;
  sockaddr_un a = make_addr(proc_path(dirfd, name), len);
  int r = ::connect(probe.get(), reinterpret_cast<sockaddr*>(&a), len);
  if (r == 0 || errno == EINPROGRESS || errno == EAGAIN) return true;
  if (errno == ECONNREFUSED) return false;
  fail(errno, "probing the existing socket");
}

}  // namespace

Listener& Listener::operator=(Listener&& o) noexcept {
  if (this != &o) {
    remove();
    sock_ = std::move(o.sock_);
    path_ = std::move(o.path_);
    dir_ = std::move(o.dir_);
    name_ = std::move(o.name_);
    ino_ = o.ino_;
    dev_ = o.dev_;
    lock_ = std::move(o.lock_);
    lock_name_ = std::move(o.lock_name_);
    parent_ = std::move(o.parent_);
    private_dir_name_ = std::move(o.private_dir_name_);
  }
  return *this;
}

Listener::~Listener() { remove(); }

void Listener::remove() noexcept {
  sock_.reset();
  if (dir_.valid() && !name_.empty()) {
    struct stat st {};
    // Unlink only the inode we bound: never something that replaced it.
    if (::fstatat(dir_.get(), name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_ino == ino_ && st.st_dev == dev_)
      ::unlinkat(dir_.get(), name_.c_str(), 0);
  }
  if (lock_.valid() && dir_.valid()) {
    ::unlinkat(dir_.get(), lock_name_.c_str(), 0);  // we still hold the flock here
    lock_.reset();
  }
  dir_.reset();
  if (parent_.valid() && !private_dir_name_.empty()) ::unlinkat(parent_.get(), private_dir_name_.c_str(), AT_REMOVEDIR);
  parent_.reset();
  name_.clear();
  private_dir_name_.clear();
}

Listener listen_private(std::string_view prefix, const EndpointOptions& opts) {
  if (!is_safe_name(prefix)) fail(EINVAL, "invalid private endpoint prefix");
  std::string base = "/tmp";
  if (const char* x = ::getenv("XDG_RUNTIME_DIR"); x && x[0] == '/') {
    struct stat st {};
    // Use it only when it really is our private runtime dir.
    if (::lstat(x, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() && (st.st_mode & 077) == 0) base = x;
  }
  Listener l;
  l.parent_ = open_dir_nofollow(base);
  for (int attempt = 0;; ++attempt) {
    std::string dname = std::string(prefix) + "-" + random_suffix();
    if (::mkdirat(l.parent_.get(), dname.c_str(), 0700) == 0) {
      l.private_dir_name_ = dname;
      break;
    }
    if (errno != EEXIST || attempt > 16) fail(errno, "mkdir in '" + base + "'");
  }
  const std::string dpath = base + "/" + l.private_dir_name_;
  // Pin the new directory and force its mode (umask may have narrowed it); verify.
  UniqueFd d(::openat(l.parent_.get(), l.private_dir_name_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!d.valid()) fail(errno, "open('" + dpath + "')");
  if (::fchmod(d.get(), 0700) != 0) fail(errno, "fchmod('" + dpath + "')");
  struct stat st {};
  if (::fstat(d.get(), &st) != 0) fail(errno, "fstat('" + dpath + "')");
  if (st.st_uid != ::geteuid() || (st.st_mode & 07777) != 0700) fail(EPERM, "'" + dpath + "' is not a private directory");
  if (!opts.acl_users.empty() || !opts.acl_groups.empty()) {
    // The socket's ACL is useless if the 0700 directory stops the same users (K2):
    // grant them search (--x) on the directory, nothing more.
    std::string text = "u::rwx,g::---,o::---,m::--x";
    for (uid_t u : opts.acl_users) text += ",u:" + std::to_string(u) + ":--x";
    for (gid_t g : opts.acl_groups) text += ",g:" + std::to_string(g) + ":--x";
    acl_t acl = ::acl_from_text(text.c_str());
    if (!acl) fail(errno, "acl_from_text");
    const int r = ::acl_set_fd(d.get(), acl);
    const int e = errno;
    ::acl_free(acl);
    if (r != 0) fail(e, "setting ACL on '" + dpath + "'");
  }
  l.dir_ = std::move(d);
  l.name_ = "api.sock";
  l.path_ = dpath + "/" + l.name_;
  socklen_t len = 0;
  (void)make_addr(l.path_, len);  // clients must be able to reach it by path
  bind_in_dir(l, l.sock_, l.dir_.get(), l.name_, opts, l.ino_, l.dev_);
  return l;
}

Listener listen_at(const std::string& path, const EndpointOptions& opts) {
  socklen_t len = 0;
  (void)make_addr(path, len);  // ENAMETOOLONG before touching anything
  const auto slash = path.rfind('/');
  if (path.empty() || path[0] != '/' || slash == std::string::npos) fail(EINVAL, "'" + path + "': socket path must be absolute");
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = path.substr(slash + 1);
  if (!is_safe_name(name)) fail(EINVAL, "'" + path + "': invalid socket file name");

  Listener l;
  l.path_ = path;
  l.dir_ = open_dir_nofollow(dir);

  // Single instance: flock a lock file next to the socket; re-check it is still the
  // linked file after locking (a previous owner may have unlinked it meanwhile).
  l.lock_name_ = name + ".lock";
  for (int attempt = 0;; ++attempt) {
    UniqueFd lk(::openat(l.dir_.get(), l.lock_name_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!lk.valid()) fail(errno, "cannot open lock file '" + dir + "/" + l.lock_name_ + "'");
    struct stat a {}, b {};
    if (::fstat(lk.get(), &a) != 0) fail(errno, "fstat(lock file)");
    if (!S_ISREG(a.st_mode) || a.st_uid != ::geteuid()) fail(EPERM, "'" + dir + "/" + l.lock_name_ + "' is not our lock file");
    if (::flock(lk.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) fail(EADDRINUSE, "'" + path + "': another server instance holds the lock");
      fail(errno, "flock(lock file)");
    }
    if (::fstatat(l.dir_.get(), l.lock_name_.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
      l.lock_ = std::move(lk);
      break;
    }
    if (attempt > 8) fail(EAGAIN, "lock file keeps changing");
  }

  struct stat st {};
  if (::fstatat(l.dir_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) fail(ELOOP, "'" + path + "' is a symlink; refusing to follow or remove it");
    if (!S_ISSOCK(st.st_mode)) fail(EEXIST, "'" + path + "' exists and is not a socket; refusing to remove it");
    if (st.st_uid != ::geteuid()) fail(EPERM, "'" + path + "' is a socket owned by another user; refusing to remove it");
    if (socket_is_live(l.dir_.get(), name)) fail(EADDRINUSE, "'" + path + "': a server is already listening there");
    // Stale socket of ours (ECONNREFUSED, K42b): replace it, by name inside the pinned
    // directory, only if it is still the very inode we examined.
    struct stat again {};
    if (::fstatat(l.dir_.get(), name.c_str(), &again, AT_SYMLINK_NOFOLLOW) != 0 || again.st_ino != st.st_ino)
      fail(EAGAIN, "'" + path + "' changed while starting");
    if (::unlinkat(l.dir_.get(), name.c_str(), 0) != 0) fail(errno, "removing stale socket '" + path + "'");
  } else if (errno != ENOENT) {
    fail(errno, "fstatat('" + path + "')");
  }
  l.name_ = name;
  bind_in_dir(l, l.sock_, l.dir_.get(), l.name_, opts, l.ino_, l.dev_);
  return l;
}

Listener listen_abstract(std::string_view name, const EndpointOptions& opts) {
  if (!opts.allow_abstract) fail(EPERM, "abstract socket addresses have no permissions; refused unless allow_abstract is set");
  if (name.empty() || name.size() + 1 >= kSunPathMax) fail(ENAMETOOLONG, "abstract socket name empty or too long");
  Listener l;
  l.path_.reserve(name.size() + 1);  // (not "@" + string: GCC 12 -O3 -Wrestrict false positive)
  l.path_.push_back('@');
  l.path_.append(name);
  l.sock_ = new_socket();
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(l.sock_.get(), reinterpret_cast<sockaddr*>(&a), len) != 0) {
    if (errno == EADDRINUSE) fail(EADDRINUSE, "abstract name '" + l.path_ + "' is already bound (squatted?)");
    fail(errno, "bind(abstract)");
  }
  if (::listen(l.sock_.get(), opts.backlog) != 0) fail(errno, "listen");
  return l;
}

UniqueFd connect_unix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  socklen_t len;
  if (!path.empty() && path[0] == '@') {
    if (path.size() >= kSunPathMax) fail(ENAMETOOLONG, "abstract socket name too long");
    std::memcpy(a.sun_path + 1, path.data() + 1, path.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    a = make_addr(path, len);
  }
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) fail(errno, "socket(AF_UNIX)");
  // Blocking connect: for AF_UNIX it never waits on the network, only on a full
  // backlog; then we switch to non-blocking for Asio.
  int r;
  do r = ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), len);
  while (r != 0 && errno == EINTR);
  if (r != 0) fail(errno, "connect('" + path + "')");
  int fl = ::fcntl(s.get(), F_GETFL);
  if (fl < 0 || ::fcntl(s.get(), F_SETFL, fl | O_NONBLOCK) != 0) fail(errno, "fcntl(O_NONBLOCK)");
  return s;
}

}  // namespace sealrpc
