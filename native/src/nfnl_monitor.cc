// See nfnl_monitor.h. What the kernel sends (net/netfilter/nf_tables_api.c, 6.x):
// nf_tables_commit() queues one notification per committed object (table, chain, rule, set,
// element, ...), each with nlmsg_pid = the committing socket's port id, flushes them
// (nft_commit_notify) and then sends NFT_MSG_NEWGEN (nf_tables_gen_notify): nlmsg_pid = that
// port id again, NFTA_GEN_ID, NFTA_GEN_PROC_PID = task_pid_nr(current) — the id of the THREAD
// that called sendmsg, as seen from the init pid namespace — and NFTA_GEN_PROC_NAME. Commits are
// serialized by the per-netns commit mutex, so everything between two NEWGENs is one transaction.
//
// ferry's batches are sent from libuv pool threads (so PROC_PID is never process.pid) and ferry
// may run in a pid namespace of its own (a container: PROC_PID is then not even a number it
// knows), so a generation is attributed by port id: nfnl.cc notes the port id of every batch
// socket before it sends.
#include "nfnl_monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace ferry {
namespace {

std::string Errno(const std::string& what, int e) { return what + ": " + strerror(e); }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- own batches ----------------------------------------------------------------------------

struct OwnBatch {
  uint64_t ino = 0;
  uint32_t portid = 0;
  int64_t start = 0;
  int64_t end = 0;  // 0 while in flight
};

// A NEWGEN reaches the monitor milliseconds after its sendmsg; entries older than this are not
// trusted, so a port id reused later by another program's socket is not taken for ferry's.
constexpr int64_t kOwnTrustMs = 30000;
constexpr int64_t kOwnRecentMs = 2000;
constexpr size_t kOwnRing = 256;

std::mutex ownMu;
OwnBatch ownRing[kOwnRing];
size_t ownNext = 0;

bool IsOwn(uint64_t ino, uint32_t portid) {
  std::lock_guard<std::mutex> l(ownMu);
  int64_t now = NowMs();
  for (const OwnBatch& b : ownRing) {
    if (b.start != 0 && b.ino == ino && b.portid == portid && now - b.start < kOwnTrustMs) return true;
  }
  return false;
}

bool OwnRecent(uint64_t ino) {
  std::lock_guard<std::mutex> l(ownMu);
  int64_t now = NowMs();
  for (const OwnBatch& b : ownRing) {
    if (b.start == 0 || b.ino != ino) continue;
    if (b.end == 0 ? now - b.start < 10 * kOwnTrustMs : now - b.end < kOwnRecentMs) return true;
  }
  return false;
}

// ---- live monitors (for PauseMonitors / ResumeMonitors) -------------------------------------

std::mutex liveMu;
std::vector<NfnlMonitor*> live;

// ---- parsing --------------------------------------------------------------------------------

struct Attrs {
  const char* table = nullptr;
  const char* name = nullptr;
  uint32_t genId = 0;
  uint32_t pid = 0;
  const char* procName = nullptr;
};

// The attribute holding the object's own name (or, for rules and elements, its container's).
int NameAttr(int type) {
  switch (type) {
    case NFT_MSG_NEWCHAIN:
    case NFT_MSG_DELCHAIN:
      return NFTA_CHAIN_NAME;  // 3
    case NFT_MSG_NEWRULE:
    case NFT_MSG_DELRULE:
      return NFTA_RULE_CHAIN;  // 2
    case NFT_MSG_NEWSET:
    case NFT_MSG_DELSET:
      return NFTA_SET_NAME;  // 2
    case NFT_MSG_NEWSETELEM:
    case NFT_MSG_DELSETELEM:
      return NFTA_SET_ELEM_LIST_SET;  // 2
    case NFT_MSG_NEWOBJ:
    case NFT_MSG_DELOBJ:
      return NFTA_OBJ_NAME;  // 2
    case NFT_MSG_NEWFLOWTABLE:
    case NFT_MSG_DELFLOWTABLE:
      return NFTA_FLOWTABLE_NAME;  // 2
    case NFT_MSG_NEWTABLE:
    case NFT_MSG_DELTABLE:
      return NFTA_TABLE_NAME;  // 1
    default:
      return -1;
  }
}

const char* Str(const struct nlattr* a) {
  // Names are NUL-terminated strings; anything else is ignored rather than read past.
  uint16_t len = mnl_attr_get_payload_len(a);
  const char* s = static_cast<const char*>(mnl_attr_get_payload(a));
  return len > 0 && s[len - 1] == '\0' ? s : nullptr;
}

void ParseAttrs(const struct nlmsghdr* nlh, int type, Attrs* out) {
  int nameAttr = NameAttr(type);
  // mnl_attr_for_each, spelled out: the macro does not compile as C++ (void* assignment).
  for (const struct nlattr* a = static_cast<const struct nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(struct nfgenmsg)));
       mnl_attr_ok(a, static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh)) - reinterpret_cast<const char*>(a));
       a = mnl_attr_next(a)) {
    int t = mnl_attr_get_type(a);
    if (type == NFT_MSG_NEWGEN) {
      if (t == NFTA_GEN_ID && mnl_attr_get_payload_len(a) == 4) out->genId = ntohl(mnl_attr_get_u32(a));
      else if (t == NFTA_GEN_PROC_PID && mnl_attr_get_payload_len(a) == 4) out->pid = ntohl(mnl_attr_get_u32(a));
      else if (t == NFTA_GEN_PROC_NAME) out->procName = Str(a);
      continue;
    }
    // Every object's table attribute is number 1: NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
    // NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE.
    if (t == 1) out->table = Str(a);
    if (t == nameAttr) out->name = Str(a);
  }
}

// Distinct objects itemized per transaction; the rest are only counted.
constexpr size_t kMaxChanges = 32;

}  // namespace

void NoteOwnBatchStart(uint64_t nsIno, uint32_t portid) {
  std::lock_guard<std::mutex> l(ownMu);
  ownRing[ownNext] = OwnBatch{nsIno, portid, NowMs(), 0};
  ownNext = (ownNext + 1) % kOwnRing;
}

void NoteOwnBatchEnd(uint64_t nsIno, uint32_t portid) {
  std::lock_guard<std::mutex> l(ownMu);
  int64_t now = NowMs();
  for (OwnBatch& b : ownRing) {
    if (b.ino == nsIno && b.portid == portid && b.end == 0 && b.start != 0) b.end = now;
  }
}

int PauseMonitors(uint64_t nsIno) {
  std::lock_guard<std::mutex> l(liveMu);
  int n = 0;
  for (NfnlMonitor* m : live) {
    if (m->nsIno_ != nsIno || m->fd_ < 0) continue;
    if (m->paused_++ == 0) {
      int group = NFNLGRP_NFTABLES;
      setsockopt(m->fd_, SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, &group, sizeof(group));
    }
    n++;
  }
  return n;
}

void ResumeMonitors(uint64_t nsIno) {
  std::lock_guard<std::mutex> l(liveMu);
  for (NfnlMonitor* m : live) {
    if (m->nsIno_ != nsIno || m->fd_ < 0 || m->paused_ == 0) continue;
    if (--m->paused_ > 0) continue;
    int group = NFNLGRP_NFTABLES;
    if (setsockopt(m->fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
      // Cannot happen for a socket that was subscribed before; if it does, the overrun below
      // still runs the canary check, and the next pause/resume tries again.
      m->paused_ = 0;
    }
    m->gap_.store(true);
    uint64_t one = 1;
    ssize_t w = write(m->wakefd_, &one, sizeof(one));
    (void)w;
  }
}

uint64_t NetnsInode(const std::string& netns) {
  struct stat st;
  if (stat(netns.empty() ? "/proc/self/ns/net" : netns.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_ino);
}

NfnlMonitor::NfnlMonitor(const std::string& netns, std::vector<std::string> tables, int rcvbuf, std::function<void(MonitorEvent&&)> deliver)
    : tables_(std::move(tables)), deliver_(std::move(deliver)) {
  wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd_ < 0) throw std::runtime_error(Errno("eventfd", errno));
  // Shared: the thread may still be inside set_value() when this constructor returns.
  auto opened = std::make_shared<std::promise<std::string>>();
  std::future<std::string> result = opened->get_future();
  // The socket is opened on the monitor's own thread: setns() changes only the calling thread,
  // and this thread has nothing else to do, so it simply stays in the namespace it watches.
  thread_ = std::thread([this, netns, rcvbuf, opened]() {
    if (!netns.empty()) {
      int target = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (target < 0) {
        opened->set_value(Errno("open " + netns, errno));
        return;
      }
      int r = setns(target, CLONE_NEWNET);
      int e = errno;
      close(target);
      if (r < 0) {
        opened->set_value(Errno("setns " + netns, e));
        return;
      }
    }
    nsIno_ = NetnsInode(netns);
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
    if (fd < 0) {
      opened->set_value(Errno("socket(NETLINK_NETFILTER)", errno));
      return;
    }
    struct sockaddr_nl sa;
    memset(&sa, 0, sizeof(sa));
    sa.nl_family = AF_NETLINK;
    if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) {
      opened->set_value(Errno("bind(netlink)", errno));
      close(fd);
      return;
    }
    int group = NFNLGRP_NFTABLES;
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
      opened->set_value(Errno("subscribe to NFNLGRP_NFTABLES", errno));
      close(fd);
      return;
    }
    // A full sync of ferry's own floods the group (one notification per element); the bigger
    // the buffer, the rarer an overrun. Root may exceed rmem_max with the FORCE variant.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    fd_ = fd;
    opened->set_value("");
    Run();
  });
  std::string err = result.get();
  if (!err.empty()) {
    thread_.join();
    close(wakefd_);
    wakefd_ = -1;
    throw std::runtime_error(err);
  }
  std::lock_guard<std::mutex> l(liveMu);
  live.push_back(this);
}

NfnlMonitor::~NfnlMonitor() { Stop(); }

void NfnlMonitor::Stop() {
  {
    // Out of the registry first: PauseMonitors/ResumeMonitors never touch a closed socket.
    std::lock_guard<std::mutex> l(liveMu);
    for (size_t i = 0; i < live.size(); i++) {
      if (live[i] == this) {
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
  }
  stop_.store(true);
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t w = write(wakefd_, &one, sizeof(one));
    (void)w;
    thread_.join();
  }
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (wakefd_ >= 0) close(wakefd_);
  wakefd_ = -1;
}

void NfnlMonitor::Run() {
  // Big enough for the kernel's notification skbs (NLMSG_GOODSIZE, at most a page or two);
  // MSG_TRUNC is checked anyway.
  std::vector<uint8_t> buf(1 << 17);
  std::vector<MonitorChange> pending;
  uint32_t more = 0;
  auto watched = [this](const char* t) {
    for (const std::string& s : tables_)
      if (s == t) return true;
    return false;
  };
  for (;;) {
    struct pollfd pfd[2] = {{fd_, POLLIN, 0}, {wakefd_, POLLIN, 0}};
    int pr = poll(pfd, 2, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      MonitorEvent ev;
      ev.kind = MonitorEvent::kError;
      ev.error = Errno("poll(nf_tables monitor)", errno);
      deliver_(std::move(ev));
      return;
    }
    if (pfd[1].revents) {
      uint64_t v;
      ssize_t r = read(wakefd_, &v, sizeof(v));
      (void)r;
      if (stop_.load()) return;  // Stop()
    }
    if (gap_.exchange(false)) {
      // Out of the group during a large batch of ferry's own (PauseMonitors): whatever was
      // collected may miss its NEWGEN, and anything committed meanwhile was not seen. Taken
      // before the drain: what the drain reads was sent after the group was joined again and
      // comes with its own NEWGEN (taken after it, a foreign commit read in this drain lost its
      // changes to the clear and its NEWGEN found nothing to report).
      pending.clear();
      more = 0;
      MonitorEvent ev;
      ev.kind = MonitorEvent::kOverrun;
      ev.ownRecent = true;
      deliver_(std::move(ev));
    }
    for (;;) {
      // From the kernel only (port id 0): another process with CAP_NET_ADMIN could send to our
      // port id, and a forged NEWGEN or deletion must not pass for the kernel's notification.
      struct sockaddr_nl from;
      socklen_t fromLen = sizeof(from);
      memset(&from, 0, sizeof(from));
      ssize_t n = recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC, reinterpret_cast<struct sockaddr*>(&from), &fromLen);
      if (n >= 0 && from.nl_pid != 0) continue;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == ENOBUFS) {
          // Notifications were dropped: the transaction being collected is incomplete and a
          // NEWGEN may be gone. Say so, with what is known about who was committing.
          pending.clear();
          more = 0;
          MonitorEvent ev;
          ev.kind = MonitorEvent::kOverrun;
          ev.ownRecent = OwnRecent(nsIno_);
          deliver_(std::move(ev));
          continue;
        }
        MonitorEvent ev;
        ev.kind = MonitorEvent::kError;
        ev.error = Errno("recv(nf_tables monitor)", errno);
        deliver_(std::move(ev));
        return;
      }
      if (static_cast<size_t>(n) > buf.size()) {
        // Cannot happen with the kernel's notification sizes; treated as lost notifications.
        pending.clear();
        more = 0;
        MonitorEvent ev;
        ev.kind = MonitorEvent::kOverrun;
        ev.ownRecent = OwnRecent(nsIno_);
        deliver_(std::move(ev));
        continue;
      }
      const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(buf.data());
      int left = static_cast<int>(n);
      for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
        if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES) continue;
        if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) continue;
        int type = nlh->nlmsg_type & 0xff;
        const struct nfgenmsg* g = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        Attrs at;
        if (type == NFT_MSG_NEWGEN) {
          ParseAttrs(nlh, type, &at);
          if (!pending.empty() || more > 0) {
            MonitorEvent ev;
            ev.genId = at.genId;
            ev.procPid = at.pid;
            ev.procName = at.procName ? at.procName : "";
            ev.portid = nlh->nlmsg_pid;
            ev.own = IsOwn(nsIno_, nlh->nlmsg_pid);
            ev.changes = std::move(pending);
            ev.more = more;
            deliver_(std::move(ev));
          }
          pending.clear();
          more = 0;
          continue;
        }
        if (NameAttr(type) < 0) continue;  // traces and the like
        ParseAttrs(nlh, type, &at);
        if (at.table == nullptr || !watched(at.table)) continue;
        const char* name = at.name ? at.name : "";
        bool found = false;
        for (MonitorChange& c : pending) {
          if (c.msgType == type && c.family == g->nfgen_family && c.name == name && c.table == at.table) {
            c.count++;
            found = true;
            break;
          }
        }
        if (found) continue;
        // A table's own addition or deletion is always itemized: deleting a table notifies
        // every rule, chain and set first, and the log must still say "table deleted".
        if (pending.size() >= kMaxChanges && type != NFT_MSG_DELTABLE && type != NFT_MSG_NEWTABLE) {
          more++;
          continue;
        }
        MonitorChange c;
        c.msgType = static_cast<uint8_t>(type);
        c.family = g->nfgen_family;
        c.table = at.table;
        c.name = name;
        c.count = 1;
        pending.push_back(std::move(c));
      }
    }
  }
}

}  // namespace ferry
