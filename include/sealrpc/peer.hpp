// Kernel-verified identity of the process at the other end of a connection.
// Read once at accept/connect time from the socket (SO_PEERCRED, SO_PEERGROUPS,
// SO_PEERPIDFD, SO_PEERSEC), never from bytes the peer sends, and immutable after.
// Authorization is per connection as of connect() time (SECURITY.md K6/K7).
#pragma once

#include "sealrpc/unique_fd.hpp"

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sealrpc {

struct PeerCredentials {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  // Primary gid plus SO_PEERGROUPS, sorted and de-duplicated.
  std::vector<gid_t> groups;
  // For logging only: pids are recycled (K7, K10). Use pidfd for anything else.
  pid_t pid = 0;
  // SO_PEERPIDFD where the kernel has it; shared so CallContexts can borrow it.
  std::shared_ptr<const UniqueFd> pidfd;
  // SO_PEERSEC label; empty when no LSM is active (ENOPROTOOPT).
  std::string security_label;

  bool in_group(gid_t g) const noexcept;
  // True when the pidfd says the peer process has exited (Pid: -1 / poll readable).
  // Without a pidfd the answer is unknown and this returns std::nullopt.
  std::optional<bool> has_exited() const;
};

// Reads all of the above from a connected AF_UNIX socket. Throws std::system_error
// when SO_PEERCRED itself fails (then nothing about the peer is known: refuse it).
PeerCredentials read_peer_credentials(int socket_fd);
// The same in two steps: SO_PEERCRED alone (uid, gid, pid: one getsockopt, nothing
// allocated), for decisions that must be cheap (the server's connection rate limit,
// SECURITY.md D2); then the rest (groups, pidfd, label) into the same object.
PeerCredentials read_peer_ucred(int socket_fd);
void read_peer_details(int socket_fd, PeerCredentials& pc);

}  // namespace sealrpc
