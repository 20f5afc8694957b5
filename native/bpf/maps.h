/*
 * ferry's socket-level load balancer: the maps ferry writes and the programs read.
 * The layouts here are mirrored byte for byte by src/backends/ebpf/layout.ts; change both.
 * Every address and port is in network byte order; an IPv4 address sits in addr[0], the rest 0.
 *
 * One writer (ferry) per map except the LRUs, which the programs own. ferry writes in a fixed
 * order (backends before the service entry that points at them; a service entry before the
 * backends it stops using are deleted), so a connect never sees a half-written service.
 */
#ifndef FERRY_MAPS_H
#define FERRY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FERRY_VERDICT_FORWARD 0
#define FERRY_VERDICT_REJECT 1
#define FERRY_VERDICT_DROP 2

/* A frontend: ClusterIP, externalIP, LB IP, or (addr all zero) a NodePort on any node address. */
struct svc_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family; /* 4 or 6 */
};

struct svc_val {
	__u32 set_id;           /* the endpoint set this frontend uses (backend map) */
	__u32 count;            /* slots 0..count-1 are filled when verdict is forward */
	__u32 affinity_timeout; /* seconds; 0 = no ClientIP affinity */
	__u8 verdict;
	__u8 flags; /* FERRY_SF_*: only the tc program reads them */
	__u8 pad[2];
};

/*
 * svc_val flags. A ClusterIP is also served by the tc program, for a connection socket LB did
 * not translate (a pod process outside ferry's cgroup, a packet routed to the node from
 * elsewhere), with the IR's clusterIPMasquerade: all, or unless the source is a local pod
 * (ferry_srcrange under FERRY_LOCAL_SET(family): the local-traffic CIDRs; a set id per family,
 * as an LPM key carries no family).
 */
#define FERRY_SF_CLUSTERIP 1
#define FERRY_SF_MASQ_ALL 2
#define FERRY_SF_MASQ_NONLOCAL 4
/* Not for socket LB: an LB IP with loadBalancerSourceRanges (a connect() has no source address
 * yet to check). Written only with externalTrafficPolicy Local, as the cluster-wide set the tc
 * program short-circuits a local pod to (FERRY_XF_LOCAL). */
#define FERRY_SF_NOSOCK 8
#define FERRY_LOCAL_SET(family) (0xffffff00u | (family))
/* The service CIDRs (ServiceCIDR objects) of a family, in ferry_srcrange under this set id. */
#define FERRY_SVCCIDR_SET(family) (0xfffffe00u | (family))

struct backend_key {
	__u32 set_id;
	__u32 slot;
};

struct backend_val {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/*
 * Is (addr, port) still in the set? Checked before an affinity or UDP flow entry is reused, and
 * by tc_lb.c for every datagram of a tracked UDP flow and every TCP SYN on a tracked tuple (not
 * for the rest of a TCP connection, which keeps its endpoint). ferry writes it only for the sets
 * that are checked: tc's, and a ClusterIP's with affinity or UDP (src/backends/ebpf/compiler.ts).
 */
struct member_key {
	__u32 set_id;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* A local node address: NodePorts are accepted here (wildcard service entries). */
struct nodeaddr_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* ClientIP affinity: one client is one network namespace (a pod, or the node). */
struct affinity_key {
	__u64 netns;
	__u32 set_id;
	__u32 pad;
};

struct affinity_val {
	struct backend_val backend;
	__u64 last_ns;
};

/* Reverse translation for getpeername/recvmsg, per socket: (cookie, backend) → frontend. */
struct rev_key {
	__u64 cookie;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

struct rev_val {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 pad;
};

/* An unconnected UDP socket's flow to a frontend keeps its backend, as conntrack would. */
struct flow_key {
	__u64 cookie;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 proto;
};

#ifndef FERRY_MAPS_TYPES_ONLY
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct backend_key);
	__type(value, struct backend_val);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_backend SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct member_key);
	__type(value, __u32);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_member SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nodeaddr_key);
	__type(value, __u32);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_nodeaddr SEC(".maps");

/*
 * Every ClusterIP, whatever its ports (key: struct nodeaddr_key's layout). With the service
 * CIDRs (ferry_srcrange under FERRY_SVCCIDR_SET) it gives kube-proxy's nftables verdicts for what
 * no frontend matches: a ClusterIP on a port no Service serves is rejected, an unallocated
 * address in the service CIDRs dropped (service_ip_verdict below).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nodeaddr_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_svcip SEC(".maps");

/* Which set id belongs to which endpoint set ("<service port key>|<kind>"), so a restarted
 * ferry reuses the ids the pinned maps hold instead of rewriting every entry. */
#define FERRY_NAME_LEN 256
struct name_val {
	char name[FERRY_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct name_val);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_setname SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct affinity_key);
	__type(value, struct affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_affinity SEC(".maps");
#endif /* FERRY_MAPS_TYPES_ONLY */

/* Declared by sock_term.c too (which declares no other pinned map): one definition for both. */
#define FERRY_REV_MAP                                     \
	struct {                                          \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);      \
		__type(key, struct rev_key);              \
		__type(value, struct rev_val);            \
		__uint(max_entries, 65536);               \
		__uint(pinning, LIBBPF_PIN_BY_NAME);      \
	} ferry_rev SEC(".maps")

#ifndef FERRY_MAPS_TYPES_ONLY
FERRY_REV_MAP;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct backend_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_udpflow SEC(".maps");
#endif /* FERRY_MAPS_TYPES_ONLY */

/*
 * The tc data path (tc_lb.c): traffic that arrives from the network. It reads ferry_backend,
 * ferry_member and ferry_nodeaddr above and these. Written by ferry: ferry_xsvc, ferry_srcrange,
 * ferry_snat. Owned by the programs: ferry_ct, ferry_xaffinity. Owned by the addon (which
 * interfaces carry ferry's tc filter): ferry_tcif.
 */
#define FERRY_XF_MASQ 1     /* SNAT to the node address of the family (ferry_snat) */
#define FERRY_XF_SRCRANGE 2 /* the source must be in ferry_srcrange under this set id */
/* externalTrafficPolicy Local: a local pod (source in the local-traffic CIDRs) takes ferry_svc's
 * entry for the same frontend (the cluster-wide set), unmasqueraded — the IR's short-circuit. */
#define FERRY_XF_LOCAL 4

/* A frontend as packets from the network reach it: same key as ferry_svc, its own set and flags. */
struct xsvc_val {
	__u32 set_id;
	__u32 count;
	__u32 affinity_timeout;
	__u8 verdict;
	__u8 flags;
	__u8 pad[2];
};

/* loadBalancerSourceRanges: (set id, source CIDR). set_id is big endian so that it is a prefix. */
struct srcrange_key {
	__u32 prefixlen; /* 32 + CIDR bits */
	__u32 set_id;
	__u32 addr[4];
};

struct snat_val {
	__u32 addr[4];
};

/*
 * Connection tracking: one entry per direction of a translated connection, keyed by the full
 * tuple as it arrives. `forward` (client → frontend) says what to rewrite the packet to (source:
 * the SNAT address or the client; destination: the endpoint); `reply` (endpoint → SNAT address
 * or client) rewrites back to (frontend → client). Entries expire by state (ct_timeout in
 * tc_lb.c, kube-proxy's conntrack timeouts), so a client port reused later never meets a stale
 * translation.
 */
#define FERRY_CT_FORWARD 0
#define FERRY_CT_REPLY 1
#define FERRY_CT_NEW 0         /* TCP: SYN seen, no answer yet */
#define FERRY_CT_ESTABLISHED 1 /* TCP: the endpoint answered */
#define FERRY_CT_CLOSING 2     /* TCP: a RST, or the endpoint's FIN after the client's: the endpoint keeps no TIME_WAIT */
#define FERRY_CT_DATAGRAM 3    /* UDP, not answered yet */
#define FERRY_CT_TIME_WAIT 4   /* TCP: the endpoint closed first and holds TIME_WAIT for the tuple */
#define FERRY_CT_FIN_WAIT 5    /* TCP: the client's FIN; the endpoint may still answer (a half-close) */
#define FERRY_CT_DATAGRAM_STREAM 6 /* UDP, answered */

struct ct_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct ct_val {
	__u32 saddr[4]; /* rewrite the packet to this tuple */
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u32 set_id; /* forward: the endpoint's set, checked with ferry_member (UDP, a TCP SYN) */
	__u64 last_ns;
	__u8 state;
	__u8 dir;
	__u8 flags; /* FERRY_CTF_* */
	__u8 pad[5];
};

/* The endpoint set has no ferry_member elements (a TCP ClusterIP without affinity): not even a
 * SYN asks whether the entry's endpoint is still in the set. */
#define FERRY_CTF_NO_MEMBERS 1
/* The endpoint is one of the node's own addresses (a hostNetwork pod, a node address behind a
 * Service): the stack delivers the translated packet, and the reply, the node's own, is
 * translated back on egress (tc_lb.c ferry_tc_egress). */
#define FERRY_CTF_LOCAL 2

/* ClientIP affinity for packets from the network: keyed by the client's address. */
struct xaff_key {
	__u32 addr[4];
	__u32 set_id;
	__u8 family;
	__u8 pad[3];
};

struct tcif_val {
	__u8 own_qdisc; /* ferry created the clsact qdisc (so cleanup removes it) */
	__u8 pad[3];
	char name[16];
};

#ifndef FERRY_MAPS_TYPES_ONLY
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct xsvc_val);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_xsvc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct srcrange_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_srcrange SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* family: 4 or 6 */
	__type(value, struct snat_val);
	__uint(max_entries, 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	/* Two entries per connection: 65,536 connections unless --ebpf-ct-max sizes it at load (both
	 * objects declare it and are given the same size); kube-proxy's --conntrack-min is 131,072.
	 * At 1,000 new connections/s that the endpoints close first, the least recently used entries
	 * pushed out are ~65 s old, past a Linux endpoint's TIME_WAIT (60 s). ~19 MB of kernel memory. */
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct xaff_key);
	__type(value, struct affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_xaffinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, struct tcif_val);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_tcif SEC(".maps");

/*
 * What becomes of a packet or connect() to `addr` that matched no frontend: FERRY_VERDICT_REJECT
 * for a ClusterIP (a port or protocol it does not serve), FERRY_VERDICT_DROP for any other
 * address in the service CIDRs, FERRY_VERDICT_FORWARD (leave it alone) otherwise.
 */
static __always_inline int service_ip_verdict(const __u32 addr[4], __u8 family)
{
	struct nodeaddr_key nk;
	struct srcrange_key rk;

	__builtin_memset(&nk, 0, sizeof(nk));
	__builtin_memcpy(nk.addr, addr, 16);
	nk.family = family;
	if (bpf_map_lookup_elem(&ferry_svcip, &nk))
		return FERRY_VERDICT_REJECT;
	__builtin_memset(&rk, 0, sizeof(rk));
	rk.prefixlen = 32 + (family == 4 ? 32 : 128);
	rk.set_id = bpf_htonl(FERRY_SVCCIDR_SET(family));
	__builtin_memcpy(rk.addr, addr, 16);
	if (bpf_map_lookup_elem(&ferry_srcrange, &rk))
		return FERRY_VERDICT_DROP;
	return FERRY_VERDICT_FORWARD;
}

#endif /* FERRY_MAPS_TYPES_ONLY */
#endif
