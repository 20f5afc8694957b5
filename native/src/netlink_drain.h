// Draining a non-blocking netlink subscription whose messages only say "something changed"
// (route_watch.cc; kept apart so that another such watch need not copy it).
#pragma once

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

namespace ferry {

// Reads and discards whatever `fd` holds. Sets *got when anything arrived or was lost (ENOBUFS:
// the kernel dropped notifications, which counts as a change). Returns 0 once the socket is
// empty, else the errno that stopped the reading.
inline int DrainNotifications(int fd, bool* got) {
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      *got = true;
      continue;
    }
    if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    if (errno == EINTR) continue;
    if (errno == ENOBUFS) {
      *got = true;
      continue;
    }
    return errno;
  }
}

}  // namespace ferry
