// Dump-then-delete: the kernel filters the dump by family; the tuple match is done here, so the
// same code works on every kernel, and one dump serves every filter of a sync. Matches are cloned
// during the dump and deleted afterwards on the same handle (a handle cannot issue a query from
// inside its own dump callback).
#include "conntrack.h"

#include "kept.h"
#include "nfnl.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace ferry {
namespace {

// The filters of one family, by (protocol, original destination port): every filter ferry makes
// names the port, so an entry meets a handful of candidates however many filters a sync brings
// (a node's table holds up to hundreds of thousands of flows; a first sync, thousands of filters).
struct FilterIndex {
  std::unordered_map<uint32_t, std::vector<const CtFilter*>> byPort;
  std::vector<const CtFilter*> anyPort;

  void Add(const CtFilter* f) {
    if (f->origDstPort < 0) anyPort.push_back(f);
    else byPort[Key(f->protocol, static_cast<uint16_t>(f->origDstPort))].push_back(f);
  }
  static uint32_t Key(uint8_t protocol, uint16_t port) { return (uint32_t{protocol} << 16) | port; }
};

struct DumpState {
  uint8_t family;
  const FilterIndex* index;
  bool collectClones;
  std::vector<struct nf_conntrack*> clones;
  std::vector<CtEntry> entries;
  bool outOfMemory = false;  // an entry could not be kept: the dump stopped (ENOMEM)
};

bool AddrEquals(const struct nf_conntrack* ct, uint8_t family, enum nf_conntrack_attr v4,
                enum nf_conntrack_attr v6, const CtAddr& want) {
  if (!want.set) return true;
  if (family == AF_INET) {
    if (!nfct_attr_is_set(ct, v4)) return false;
    uint32_t got = nfct_get_attr_u32(ct, v4);
    return std::memcmp(&got, want.bytes, 4) == 0;
  }
  if (!nfct_attr_is_set(ct, v6)) return false;
  const void* got = nfct_get_attr(ct, v6);
  return got != nullptr && std::memcmp(got, want.bytes, 16) == 0;
}

bool PortEquals(const struct nf_conntrack* ct, enum nf_conntrack_attr attr, int want) {
  if (want < 0) return true;
  if (!nfct_attr_is_set(ct, attr)) return false;
  return ntohs(nfct_get_attr_u16(ct, attr)) == want;
}

bool Matches(const struct nf_conntrack* ct, const CtFilter& f) {
  if (nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO) != f.family) return false;
  if (nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO) != f.protocol) return false;
  return AddrEquals(ct, f.family, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST, f.origDst) &&
         PortEquals(ct, ATTR_ORIG_PORT_DST, f.origDstPort) &&
         AddrEquals(ct, f.family, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC, f.replySrc) &&
         PortEquals(ct, ATTR_REPL_PORT_SRC, f.replySrcPort);
}

std::string AddrString(const struct nf_conntrack* ct, uint8_t family, enum nf_conntrack_attr v4,
                       enum nf_conntrack_attr v6) {
  char buf[INET6_ADDRSTRLEN] = {0};
  const void* raw = nfct_get_attr(ct, family == AF_INET ? v4 : v6);
  if (raw == nullptr || inet_ntop(family, raw, buf, sizeof buf) == nullptr) return "";
  return buf;
}

uint16_t Port(const struct nf_conntrack* ct, enum nf_conntrack_attr attr) {
  return nfct_attr_is_set(ct, attr) ? ntohs(nfct_get_attr_u16(ct, attr)) : 0;
}

bool MatchesAny(const struct nf_conntrack* ct, const FilterIndex& index) {
  for (const CtFilter* f : index.anyPort) {
    if (Matches(ct, *f)) return true;
  }
  if (index.byPort.empty() || !nfct_attr_is_set(ct, ATTR_ORIG_PORT_DST)) return false;
  uint16_t port = ntohs(nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST));
  auto it = index.byPort.find(FilterIndex::Key(nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO), port));
  if (it == index.byPort.end()) return false;
  for (const CtFilter* f : it->second) {
    if (Matches(ct, *f)) return true;
  }
  return false;
}

int KeepEntry(struct nf_conntrack* ct, DumpState* st) {
  if (!MatchesAny(ct, *st->index)) return NFCT_CB_CONTINUE;
  if (st->collectClones) {
    struct nf_conntrack* c = nfct_clone(ct);
    if (c != nullptr) st->clones.push_back(c);
    return NFCT_CB_CONTINUE;
  }
  CtEntry e;
  e.family = st->family;
  e.protocol = nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO);
  e.origSrc = AddrString(ct, e.family, ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV6_SRC);
  e.origDst = AddrString(ct, e.family, ATTR_ORIG_IPV4_DST, ATTR_ORIG_IPV6_DST);
  e.replySrc = AddrString(ct, e.family, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV6_SRC);
  e.replyDst = AddrString(ct, e.family, ATTR_REPL_IPV4_DST, ATTR_REPL_IPV6_DST);
  e.origSrcPort = Port(ct, ATTR_ORIG_PORT_SRC);
  e.origDstPort = Port(ct, ATTR_ORIG_PORT_DST);
  e.replySrcPort = Port(ct, ATTR_REPL_PORT_SRC);
  e.replyDstPort = Port(ct, ATTR_REPL_PORT_DST);
  st->entries.push_back(std::move(e));
  return NFCT_CB_CONTINUE;
}

// Called from libnetfilter_conntrack's C frames: no exception may pass through them.
int OnEntry(enum nf_conntrack_msg_type /*type*/, struct nf_conntrack* ct, void* data) {
  auto* st = static_cast<DumpState*>(data);
  try {
    return KeepEntry(ct, st);
  } catch (...) {
    st->outOfMemory = true;
    return NFCT_CB_STOP;
  }
}

// Dumps the table of st->family into st. Returns 0 or an errno.
int Dump(struct nfct_handle* h, DumpState* st, std::string* context) {
  struct nfct_filter_dump* fd = nfct_filter_dump_create();
  if (fd == nullptr) {
    *context = "nfct_filter_dump_create";
    return ENOMEM;
  }
  nfct_filter_dump_set_attr_u8(fd, NFCT_FILTER_DUMP_L3NUM, st->family);
  nfct_callback_register(h, NFCT_T_ALL, OnEntry, st);
  int rc = nfct_query(h, NFCT_Q_DUMP_FILTER, fd);
  int err = rc < 0 ? errno : 0;
  if (st->outOfMemory) err = ENOMEM;
  nfct_callback_unregister(h);
  nfct_filter_dump_destroy(fd);
  if (err != 0) *context = "conntrack dump";
  return err;
}

// One conntrack handle kept open between calls (kept.h). Its socket is a NETLINK_NETFILTER one:
// a conntrack cleanup right after a sync that removed endpoints would otherwise pay nf_tables' RCU
// grace period in close(), and so would a batch sent meanwhile.
Kept<struct nfct_handle*, nullptr> keptHandle(nfct_close);

struct nfct_handle* OpenHandle() {
  struct nfct_handle* h = nfct_open(CONNTRACK, 0);
  // libnfnetlink opens it without SOCK_CLOEXEC; a kept socket must not leak into children.
  if (h != nullptr) fcntl(nfct_fd(h), F_SETFD, FD_CLOEXEC);
  return h;
}

// One dump per family that the filters name, however many filters: kube-proxy's cleanup also
// reads the table once per sync. Matches are deleted after the dumps.
CtResult Run(const std::vector<CtFilter>& filters, bool del) {
  CtResult res;
  if (filters.empty()) return res;
  if (const char* ns = ThreadStranded()) {
    // Its new handle would act on another namespace's flows (see ThreadStranded).
    res.err = ENOTRECOVERABLE;
    res.errContext = std::string("conntrack on a thread stuck in ") + ns;
    return res;
  }
  auto lease = keptHandle.Take(true, OpenHandle);
  decltype(keptHandle)::Holder hold(keptHandle, lease);
  struct nfct_handle* h = lease.h;
  if (h == nullptr) {
    res.err = errno != 0 ? errno : EIO;
    res.errContext = "nfct_open";
    return res;
  }
  std::vector<struct nf_conntrack*> clones;
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    FilterIndex index;
    for (const CtFilter& f : filters) {
      if (f.family == family) index.Add(&f);
    }
    if (index.byPort.empty() && index.anyPort.empty()) continue;
    DumpState st{family, &index, del, {}, {}};
    res.err = Dump(h, &st, &res.errContext);
    clones.insert(clones.end(), st.clones.begin(), st.clones.end());
    for (CtEntry& e : st.entries) res.entries.push_back(std::move(e));
    // A failed dump may leave its answers queued on the socket, where the next query would read
    // them: nothing more is asked on it (it is closed, not kept).
    if (res.err != 0) break;
  }
  if (res.err == 0) {
    for (struct nf_conntrack* ct : clones) {
      if (nfct_query(h, NFCT_Q_DESTROY, ct) == 0) {
        res.deleted++;
      } else if (errno != ENOENT && res.err == 0) {
        // Keep going: one failure should not leave the other stale flows in place.
        res.err = errno;
        res.errContext = "conntrack delete";
      }
    }
  }
  for (struct nf_conntrack* ct : clones) nfct_destroy(ct);
  hold.Return(res.err == 0);
  return res;
}

}  // namespace

CtResult ConntrackList(const CtFilter& f) { return Run({f}, false); }
CtResult ConntrackDelete(const std::vector<CtFilter>& filters) { return Run(filters, true); }

}  // namespace ferry
