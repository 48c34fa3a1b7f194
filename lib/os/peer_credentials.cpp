// Peer credentials from the kernel, read once per connection (K5-K13).
//  * SO_PEERCRED: uid/gid are the peer's *effective* ids at connect() time (K6, K8).
//  * SO_PEERGROUPS: supplementary groups; merged with the primary gid, sorted, unique.
//  * SO_PEERPIDFD (77, not in bookworm headers): pins the process; fails on older
//    kernels (ENOPROTOOPT) and for some exited peers (pre-6.18): both mean "no pidfd".
//  * SO_PEERSEC: LSM label; ENOPROTOOPT means no LSM, so no label.
#include "sealrpc/peer.hpp"

#include "os/syscall.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

namespace sealrpc {

bool PeerCredentials::in_group(gid_t g) const noexcept { return std::binary_search(groups.begin(), groups.end(), g); }

std::optional<bool> PeerCredentials::has_exited() const {
  if (!pidfd || !pidfd->valid()) return std::nullopt;
  pollfd p{pidfd->get(), POLLIN, 0};
  int r;
  do r = ::poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return std::nullopt;
  return r > 0;  // a pidfd polls readable once the process has exited
}

PeerCredentials read_peer_credentials(int fd) {
  PeerCredentials pc = read_peer_ucred(fd);
  read_peer_details(fd, pc);
  return pc;
}

PeerCredentials read_peer_ucred(int fd) {
  PeerCredentials pc;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) os::throw_errno("getsockopt(SO_PEERCRED)");
  if (len != sizeof cred) throw std::system_error(EPROTO, std::generic_category(), "SO_PEERCRED: short answer");
  pc.uid = cred.uid;
  pc.gid = cred.gid;
  pc.pid = cred.pid;
  return pc;
}

void read_peer_details(int fd, PeerCredentials& pc) {
  // SO_PEERGROUPS: ERANGE tells us the size needed; the list is bounded by NGROUPS_MAX.
  std::vector<gid_t> groups(32);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      break;
    }
    if (errno != ERANGE || glen > 65536 * sizeof(gid_t)) {
      if (errno == ENOPROTOOPT) { groups.clear(); break; }
      os::throw_errno("getsockopt(SO_PEERGROUPS)");
    }
    groups.resize(glen / sizeof(gid_t) + 1);
  }
  groups.push_back(pc.gid);
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  pc.groups = std::move(groups);

  int pidfd = -1;
  socklen_t plen = sizeof pidfd;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &plen) == 0 && pidfd >= 0) {
    pc.pidfd = std::make_shared<const UniqueFd>(pidfd);  // kernel sets O_CLOEXEC on it
  }

  char label[256];
  socklen_t llen = sizeof label;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERSEC, label, &llen) == 0 && llen > 0 && llen <= sizeof label) {
    // The label may or may not be NUL-terminated; use the returned length only.
    std::string_view v(label, llen);
    if (!v.empty() && v.back() == '\0') v.remove_suffix(1);
    pc.security_label.assign(v);
  }
}

}  // namespace sealrpc
