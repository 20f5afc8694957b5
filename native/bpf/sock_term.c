// SPDX-License-Identifier: GPL-2.0
/*
 * Connected UDP sockets that socket LB pointed at an endpoint which no longer serves.
 *
 * A connect() that sock_lb.c translated fixed the socket's destination to one backend for good:
 * no later hook sees its datagrams, so when the endpoint goes the socket keeps sending to it.
 * kube-proxy's modes delete the flow's conntrack entry and the next datagram is balanced again;
 * here the socket itself is destroyed (bpf_sock_destroy, Linux 6.5+), as Cilium does: the
 * application gets an error and connects again, through socket LB. Which (frontend, endpoint)
 * pairs are stale is decided by ferry from the IR, as for conntrack (conntrack-cleanup.ts).
 *
 * Two UDP socket iterators, run by the addon in each network namespace whose processes socket LB
 * serves (an iterator walks the namespace of the thread that opens it):
 *  - ferry_udp_list writes one sock_rec per connected socket: its backend and the frontend it
 *    asked for (ferry_rev, keyed by the socket's cookie) — the listing a first sync reconciles;
 *  - ferry_udp_term destroys each connected socket whose (frontend, backend) ferry put into
 *    ferry_sockterm, and writes its sock_rec.
 * Loaded by the addon for each cleanup, never attached to anything: nothing here runs otherwise.
 */
#define FERRY_MAPS_TYPES_ONLY
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
/* A connected UDP socket's sk_state (the TCP state numbers are shared). */
#define SK_ESTABLISHED 1

char LICENSE[] SEC("license") = "GPL";

/*
 * The kernel types these programs read, by name: CO-RE relocates each field access against the
 * running kernel's BTF, so only the fields used are declared.
 */
struct in6_addr {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	union {
		struct {
			__u32 skc_daddr;
			__u32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__u16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct udp_sock;
struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

FERRY_REV_MAP;

/* One connected UDP socket, as both programs write it (src/backends/kernel/udp-sockets.ts). */
struct sock_rec {
	__u64 cookie;
	__u32 saddr[4]; /* the socket's own address and port */
	__u32 daddr[4]; /* where it sends: the backend (or the frontend itself, untranslated) */
	__u32 faddr[4]; /* the frontend it asked for; daddr when socket LB did not translate it */
	__u16 sport;    /* host order: the socket's own port number */
	__u16 dport;    /* network order, as the maps */
	__u16 fport;    /* network order */
	__u8 family;    /* 4 or 6 */
	__u8 translated;
};

/*
 * A stale (frontend, backend) pair. faddr all zero: the frontend's port on any address (a
 * NodePort); baddr all zero as well: a NodePort's untranslated sockets (answered by the node).
 */
struct sockterm_key {
	__u32 faddr[4];
	__u32 baddr[4];
	__u16 fport;
	__u16 bport;
	__u8 family;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sockterm_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ferry_sockterm SEC(".maps");

/* Whether a (network order) IPv6 address is IPv4-mapped (::ffff:a.b.c.d). */
static __always_inline int v4_mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/*
 * Fills `r` from a connected IPv4 or IPv6 socket; 0 if it is neither. An IPv6 socket connected to
 * an IPv4-mapped address (a dual-stack socket reaching an IPv4 Service, as Java's are) is recorded
 * as IPv4: socket LB balanced it among the IPv4 Service's endpoints (sock_lb.c), and ferry's
 * filters name IPv4 addresses.
 */
static __always_inline int read_sock(struct sock *sk, struct sock_rec *r)
{
	struct rev_key rk;
	struct rev_val *rv;
	unsigned short family = sk->__sk_common.skc_family;
	int i;

	if (sk->__sk_common.skc_state != SK_ESTABLISHED)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	if (family == AF_INET) {
		r->family = 4;
		r->saddr[0] = sk->__sk_common.skc_rcv_saddr;
		r->daddr[0] = sk->__sk_common.skc_daddr;
	} else if (family == AF_INET6) {
		r->family = 6;
		for (i = 0; i < 4; i++) {
			r->saddr[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			r->daddr[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
	} else {
		return 0;
	}
	r->sport = sk->__sk_common.skc_num;
	r->dport = sk->__sk_common.skc_dport;
	r->cookie = bpf_get_socket_cookie(sk);

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.cookie = r->cookie;
	__builtin_memcpy(rk.addr, r->daddr, sizeof(rk.addr));
	rk.port = r->dport;
	rk.family = r->family;
	rv = bpf_map_lookup_elem(&ferry_rev, &rk);
	if (rv && rv->family == r->family) {
		__builtin_memcpy(r->faddr, rv->addr, sizeof(r->faddr));
		r->fport = rv->port;
		r->translated = 1;
	} else {
		__builtin_memcpy(r->faddr, r->daddr, sizeof(r->faddr));
		r->fport = r->dport;
	}
	/* Keyed by the mapped addresses in ferry_rev (the socket's own view); recorded as IPv4. */
	if (r->family == 6 && v4_mapped(r->daddr) && v4_mapped(r->faddr)) {
		r->family = 4;
		r->daddr[0] = r->daddr[3];
		r->faddr[0] = r->faddr[3];
		r->saddr[0] = v4_mapped(r->saddr) ? r->saddr[3] : 0;
		for (i = 1; i < 4; i++) {
			r->daddr[i] = 0;
			r->faddr[i] = 0;
			r->saddr[i] = 0;
		}
	}
	return 1;
}

SEC("iter/udp")
int ferry_udp_list(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct sock_rec r;

	if (!sk || !read_sock(sk, &r))
		return 0;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

static __always_inline int stale(const struct sock_rec *r)
{
	struct sockterm_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.family = r->family;
	k.fport = r->fport;
	k.bport = r->dport;
	__builtin_memcpy(k.baddr, r->daddr, sizeof(k.baddr));
	__builtin_memcpy(k.faddr, r->faddr, sizeof(k.faddr));
	if (bpf_map_lookup_elem(&ferry_sockterm, &k))
		return 1;
	/* The frontend's port on any node address (a NodePort). */
	__builtin_memset(k.faddr, 0, sizeof(k.faddr));
	if (bpf_map_lookup_elem(&ferry_sockterm, &k))
		return 1;
	if (r->translated)
		return 0;
	/* Untranslated, to a NodePort on any address: what the node answered itself. */
	__builtin_memset(k.baddr, 0, sizeof(k.baddr));
	return bpf_map_lookup_elem(&ferry_sockterm, &k) != NULL;
}

SEC("iter/udp")
int ferry_udp_term(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct sock_rec r;

	if (!sk || !read_sock(sk, &r) || !stale(&r))
		return 0;
	if (bpf_sock_destroy((struct sock_common *)sk) == 0)
		bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
