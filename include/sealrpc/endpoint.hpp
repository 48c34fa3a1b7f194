// Listening endpoints. Both ways of getting an address are race-free:
//
//  * listen_private(): ssh-agent style. A fresh directory with a random name, mode 0700,
//    under $XDG_RUNTIME_DIR (when it is ours and private) or /tmp, holding the socket
//    (mode 0600). Hand path() to clients (env var or file).
//  * listen_at(path): a fixed path such as /run/<service>/api.sock. Every directory on
//    the path is opened with O_NOFOLLOW (no symlinks anywhere) and must be owned by root
//    or us and not writable by group/others unless sticky. A stale socket of ours is
//    replaced; a live server on the path, a symlink, or anything that is not a socket
//    is refused, never followed or unlinked. A lock file "<name>.lock" held with flock
//    serialises concurrent starts.
//
// The socket's mode is set with fchmod *before* bind (K37), group ownership and ACL
// entries between bind and listen (K38): there is no moment where it is connectable
// with looser permissions than asked, and the process umask is never touched.
// On destruction the Listener removes exactly what it created (checked by inode).
#pragma once

#include "sealrpc/unique_fd.hpp"

#include <sys/types.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace sealrpc {

class EndpointError : public std::system_error {
 public:
  EndpointError(int err, const std::string& what) : std::system_error(err, std::generic_category(), what) {}
};

struct EndpointOptions {
  // Socket file mode: 0600 (owner only) or 0660 together with `group`.
  mode_t socket_mode = 0600;
  // Group owner for the socket file (requires socket_mode 0660). The server's
  // connection allow-list still decides; this is defence in depth.
  std::optional<gid_t> group;
  // Extra POSIX ACL entries granting rw to named uids/gids (mirrors the allow-list).
  std::vector<uid_t> acl_users;
  std::vector<gid_t> acl_groups;
  // Abstract-namespace sockets have no permissions at all (K43): refused unless true.
  bool allow_abstract = false;
  int backlog = 1024;
};

class Listener {
 public:
  Listener() = default;
  Listener(Listener&&) noexcept = default;
  Listener& operator=(Listener&&) noexcept;
  ~Listener();

  int fd() const noexcept { return sock_.get(); }
  // Filesystem path clients connect to ("@name" for an abstract socket).
  const std::string& path() const noexcept { return path_; }
  // Moves the listening socket out; cleanup of the filesystem entries stays here.
  UniqueFd take_socket() noexcept { return std::move(sock_); }
  // Removes the socket file (and private dir / lock file) now. Idempotent.
  void remove() noexcept;

 private:
  friend Listener listen_private(std::string_view, const EndpointOptions&);
  friend Listener listen_at(const std::string&, const EndpointOptions&);
  friend Listener listen_abstract(std::string_view, const EndpointOptions&);

  UniqueFd sock_;
  std::string path_;
  UniqueFd dir_;           // directory holding the socket (O_PATH)
  std::string name_;       // socket entry name in dir_
  ino_t ino_ = 0;          // inode we bound, checked before unlinking
  dev_t dev_ = 0;
  UniqueFd lock_;          // flock'ed lock file (fixed paths)
  std::string lock_name_;
  UniqueFd parent_;        // parent of a private dir we created (for rmdir)
  std::string private_dir_name_;
};

// Creates a private temporary endpoint (see above). `prefix` names the directory
// ("<prefix>-<random>"); it must not contain secrets (visible in /proc/net/unix, K45).
Listener listen_private(std::string_view prefix = "sealrpc", const EndpointOptions& opts = {});
Listener listen_at(const std::string& path, const EndpointOptions& opts = {});
// Only with opts.allow_abstract. EADDRINUSE (a squatter, K43) is a hard error.
Listener listen_abstract(std::string_view name, const EndpointOptions& opts = {});

// Client side: connects a non-blocking, close-on-exec stream socket to `path` (a
// filesystem path or "@abstract"). Paths that do not fit sun_path are an error, never
// truncated (K42). Throws EndpointError.
UniqueFd connect_unix(const std::string& path);

}  // namespace sealrpc
