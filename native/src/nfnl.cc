// See nfnl.h. Plain sockets (the encoding is done in TypeScript); libmnl only for its
// message walking helpers.
#include "nfnl.h"

#include "kept.h"
#include "nfnl_monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif

namespace ferry {
namespace {

std::string Errno(const char* what, int e) { return std::string(what) + ": " + strerror(e); }

// Set when this thread could not go back to the process's namespace after a setns: whatever it
// opened from then on would be in the other one. (A setns to a namespace file held open fails
// only without CAP_SYS_ADMIN or memory, and only calls with a netns, tests and the simulator,
// switch at all.) A libuv pool thread cannot be retired, so it refuses such work instead.
thread_local std::string strandedIn;

// Opens a NETLINK_NETFILTER socket in `netns` (switching only this thread, and back).
int OpenSocket(const std::string& netns, std::string* sysError) {
  if (!strandedIn.empty()) {
    *sysError = "setns: this thread could not return from " + strandedIn + " to the process's network namespace; it opens no more sockets";
    return -1;
  }
  int self = -1;
  if (!netns.empty()) {
    self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
      *sysError = Errno("open /proc/thread-self/ns/net", errno);
      return -1;
    }
    int target = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      *sysError = Errno(("open " + netns).c_str(), errno);
      close(self);
      return -1;
    }
    int r = setns(target, CLONE_NEWNET);
    int e = errno;
    close(target);
    if (r < 0) {
      *sysError = Errno(("setns " + netns).c_str(), e);
      close(self);
      return -1;
    }
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  int e = errno;
  if (self >= 0) {
    // The thread pool thread must go back, whatever happened.
    if (setns(self, CLONE_NEWNET) < 0) {
      int e = errno;
      strandedIn = netns;
      close(self);
      if (fd >= 0) close(fd);
      throw std::runtime_error(Errno(("setns from " + netns + " back to the process's namespace").c_str(), e));
    }
    close(self);
  }
  if (fd < 0) {
    *sysError = Errno("socket(NETLINK_NETFILTER)", e);
    return -1;
  }
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) {
    *sysError = Errno("bind(netlink)", errno);
    close(fd);
    return -1;
  }
  int one = 1;
  // Errors name the offending attribute (an element in a big message) and do not echo the
  // whole request back (element messages can be 64 KiB).
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  return fd;
}

// Sockets kept open in the process's own namespace, one for batches and one for dumps.
// Closing a NETLINK_NETFILTER socket makes nf_tables flush its pending transaction-destroy work
// (nft_rcv_nl_event on NETLINK_URELEASE), which waits out an RCU grace period (4–24 ms here)
// while holding the commit mutex: with a socket per batch, every batch that removed or replaced
// something paid that wait inside close(), and so did any batch sent meanwhile. A kept socket
// leaves the destroy work to the kernel's worker, as nf_tables intends. Other namespaces (tests)
// still get a socket per call, so no socket pins a namespace that is meant to go away.
using KeptSocket = Kept<int, -1>;
KeptSocket batchSocket(close);
KeptSocket dumpSocket(close);

// A dump's answers come within milliseconds; a request the kernel answers without an end (no
// DONE, no ACK) would otherwise hold a thread pool thread forever.
constexpr int kDumpTimeoutSec = 10;

int OpenDumpSocket(const std::string& netns, std::string* sysError) {
  int fd = OpenSocket(netns, sysError);
  if (fd < 0) return fd;
  struct timeval tv = {kDumpTimeoutSec, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
    *sysError = Errno("setsockopt(SO_RCVTIMEO)", errno);
    close(fd);
    return -1;
  }
  return fd;
}

// "getrule (0x0a07) seq 1": a request as an error message names it.
std::string DescribeRequest(const uint8_t* req, size_t len) {
  if (len < sizeof(struct nlmsghdr)) return "a request of " + std::to_string(len) + " bytes";
  const struct nlmsghdr* h = reinterpret_cast<const struct nlmsghdr*>(req);
  static const char* const kGet[] = {nullptr, "gettable", nullptr, nullptr, "getchain", nullptr, nullptr, "getrule", nullptr, nullptr,
                                     "getset", nullptr, nullptr, "getsetelem", nullptr, nullptr, "getgen", nullptr, nullptr, "getobj"};
  const char* name = (h->nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES && (h->nlmsg_type & 0xff) < sizeof(kGet) / sizeof(kGet[0]) ? kGet[h->nlmsg_type & 0xff] : nullptr;
  char type[8];
  snprintf(type, sizeof(type), "0x%04x", h->nlmsg_type);
  return std::string(name ? name : "message") + " (" + type + ") seq " + std::to_string(h->nlmsg_seq);
}

// A batch socket: the answers of a large batch may need more than the default receive buffer.
int OpenBatchSocket(const std::string& netns, std::string* sysError) {
  int fd = OpenSocket(netns, sysError);
  if (fd < 0) return fd;
  int rcv = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  return fd;
}

// An NLMSG_ERROR long enough to hold its struct nlmsgerr (a shorter one is not the kernel's).
bool IsWholeError(const struct nlmsghdr* nlh) {
  return nlh->nlmsg_type == NLMSG_ERROR && nlh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr));
}

// One datagram from the kernel (port id 0); anything another process sent to our port id is
// skipped. *truncated: the datagram was longer than `size` (its tail, and messages in it, lost).
ssize_t RecvKernel(int fd, uint8_t* buf, size_t size, int flags, bool* truncated) {
  for (;;) {
    struct sockaddr_nl from;
    memset(&from, 0, sizeof(from));
    struct iovec iov = {buf, size};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_name = &from;
    mh.msg_namelen = sizeof(from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &mh, flags);
    if (n < 0) return n;
    if (from.nl_pid != 0) continue;
    *truncated = (mh.msg_flags & MSG_TRUNC) != 0;
    return n;
  }
}

void ParseExtack(const struct nlmsghdr* nlh, NfnlError* out) {
  if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return;
  const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  size_t off = sizeof(*e);
  if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) {
    if (e->msg.nlmsg_len < sizeof(struct nlmsghdr)) return;
    off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(nlh) + MNL_NLMSG_HDRLEN + MNL_ALIGN(off);
  const uint8_t* end = reinterpret_cast<const uint8_t*>(nlh) + nlh->nlmsg_len;
  while (p + sizeof(struct nlattr) <= end) {
    const struct nlattr* attr = reinterpret_cast<const struct nlattr*>(p);
    if (attr->nla_len < sizeof(struct nlattr) || p + attr->nla_len > end) break;
    p += MNL_ALIGN(attr->nla_len);
    switch (mnl_attr_get_type(attr)) {
      case NLMSGERR_ATTR_MSG:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0) out->msg = mnl_attr_get_str(attr);
        break;
      case NLMSGERR_ATTR_OFFS:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) out->offset = static_cast<int32_t>(mnl_attr_get_u32(attr));
        break;
      default:
        break;
    }
  }
}

}  // namespace

const char* ThreadStranded() { return strandedIn.empty() ? nullptr : strandedIn.c_str(); }

NfnlBatchResult NfnlBatch(const uint8_t* data, size_t len, const std::string& netns) {
  NfnlBatchResult r;
  KeptSocket::Lease lease = batchSocket.Take(netns.empty(), [&] { return OpenBatchSocket(netns, &r.sysError); });
  KeptSocket::Holder hold(batchSocket, lease);
  int fd = lease.h;
  if (fd < 0) return r;
  // The whole batch must fit one sendmsg; the kernel refuses messages larger than the send
  // buffer, so grow it to the batch (root may exceed wmem_max with the FORCE variant).
  int snd = static_cast<int>(len < (1u << 30) ? len : (1u << 30));
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof(snd)) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));

  // The tamper watch (nfnl_monitor.cc) tells this process's transactions from others' by the
  // port id of the committing socket: noted before the kernel can announce the commit.
  struct sockaddr_nl self;
  socklen_t selfLen = sizeof(self);
  uint32_t portid = getsockname(fd, reinterpret_cast<struct sockaddr*>(&self), &selfLen) == 0 ? self.nl_pid : 0;
  uint64_t nsIno = NetnsInode(netns);
  if (portid != 0) NoteOwnBatchStart(nsIno, portid);
  // See kQuietBatchBytes: the kernel would build a notification per object for our own monitor.
  bool quiet = len >= kQuietBatchBytes && PauseMonitors(nsIno) > 0;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  struct iovec iov = {const_cast<uint8_t*>(data), len};
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_name = &sa;
  mh.msg_namelen = sizeof(sa);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  ssize_t sent;
  do sent = sendmsg(fd, &mh, 0);
  while (sent < 0 && errno == EINTR);
  if (quiet) ResumeMonitors(nsIno);
  if (portid != 0) NoteOwnBatchEnd(nsIno, portid);
  if (sent < 0) {
    r.sysError = Errno("sendmsg(nf_tables batch)", errno);
    hold.Return(false);
    return r;
  }
  // nfnetlink handles the batch inside sendmsg: every error it will report is queued by now.
  std::vector<uint8_t> buf(1 << 16);
  bool lost = false;
  for (;;) {
    bool truncated = false;
    ssize_t n = RecvKernel(fd, buf.data(), buf.size(), MSG_DONTWAIT, &truncated);
    if (truncated) lost = true;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == ENOBUFS) {
        lost = true;
        continue;
      }
      r.sysError = Errno("recv(nf_tables answers)", errno);
      hold.Return(false);
      return r;
    }
    const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(buf.data());
    int left = static_cast<int>(n);
    while (mnl_nlmsg_ok(nlh, left)) {
      if (IsWholeError(nlh)) {
        const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (e->error != 0) {
          NfnlError ne;
          ne.seq = nlh->nlmsg_seq;
          ne.err = -e->error;
          ParseExtack(nlh, &ne);
          r.errors.push_back(std::move(ne));
        }
      }
      nlh = mnl_nlmsg_next(nlh, &left);
    }
  }
  hold.Return(!lost);
  if (lost && r.errors.empty()) r.sysError = "answers lost (socket receive buffer overrun)";
  r.ok = r.errors.empty() && r.sysError.empty();
  return r;
}

NfnlDumpResult NfnlDump(const uint8_t* req, size_t len, const std::string& netns) {
  NfnlDumpResult r;
  KeptSocket::Lease lease = dumpSocket.Take(netns.empty(), [&] { return OpenDumpSocket(netns, &r.sysError); });
  KeptSocket::Holder hold(dumpSocket, lease);
  int fd = lease.h;
  if (fd < 0) return r;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  if (sendto(fd, req, len, 0, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) {
    r.sysError = Errno("sendto(nf_tables dump)", errno);
    hold.Return(false);
    return r;
  }
  const uint32_t seq = len >= sizeof(struct nlmsghdr) ? reinterpret_cast<const struct nlmsghdr*>(req)->nlmsg_seq : 0;
  // The kernel marks every message it wrote after a commit changed what it was dumping, the
  // closing DONE included: such an answer may mix two generations of the ruleset.
  bool interrupted = false;
  std::vector<uint8_t> buf(1 << 17);
  for (;;) {
    bool truncated = false;
    ssize_t n = RecvKernel(fd, buf.data(), buf.size(), 0, &truncated);
    if (n >= 0 && truncated) {
      r.sysError = "recv(nf_tables dump): an answer longer than " + std::to_string(buf.size()) + " bytes to " + DescribeRequest(req, len);
      hold.Return(false);
      r.data.clear();
      return r;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        r.sysError = "recv(nf_tables dump): no answer within " + std::to_string(kDumpTimeoutSec) + " s to " + DescribeRequest(req, len);
      } else {
        r.sysError = Errno("recv(nf_tables dump)", errno);
      }
      hold.Return(false);
      r.data.clear();
      return r;
    }
    const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(buf.data());
    int left = static_cast<int>(n);
    while (mnl_nlmsg_ok(nlh, left)) {
      if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      bool end = nlh->nlmsg_type == NLMSG_DONE;
      if (nlh->nlmsg_type == NLMSG_ERROR && !IsWholeError(nlh)) {
        r.sysError = "recv(nf_tables dump): a short error message in the answer to " + DescribeRequest(req, len);
        hold.Return(false);
        r.data.clear();
        return r;
      }
      if (nlh->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* e = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (e->error != 0) {
          // A dump that is interrupted by a concurrent change (EINTR) is retried by the caller.
          r.err = -e->error;
          hold.Return(false);
          r.data.clear();
          return r;
        }
        // An ACK of the request (asked for with NLM_F_ACK) ends it as DONE would: a request the
        // kernel does not answer as a dump gets no DONE.
        end = nlh->nlmsg_seq == seq;
      } else if (!end) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(nlh);
        r.data.insert(r.data.end(), p, p + nlh->nlmsg_len);
      }
      if (end) {
        // Kept only if the end was the last message read: nothing of this dump is left queued.
        hold.Return(n == static_cast<ssize_t>(reinterpret_cast<const uint8_t*>(nlh) - buf.data()) + static_cast<ssize_t>(nlh->nlmsg_len));
        if (interrupted) {
          r.err = EINTR;
          r.data.clear();
          return r;
        }
        r.ok = true;
        return r;
      }
      nlh = mnl_nlmsg_next(nlh, &left);
    }
  }
}

}  // namespace ferry
