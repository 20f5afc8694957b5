// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level load balancing for ferry's ebpf mode: a connect() or sendmsg() to a Service
 * frontend from a process under the attached cgroup is rewritten to one backend before any
 * packet exists, so the data path needs no per-packet NAT. getpeername() and recvmsg() translate
 * the backend back to the frontend the application asked for.
 *
 * All policy is in the maps (maps.h), written by ferry from the planner's decisions; nothing
 * here knows Kubernetes. Traffic that no local socket sends (from outside, forwarded pod
 * traffic) is not seen here.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define ERR_CONNREFUSED 111
#define ERR_HOSTUNREACH 113
#define SYS_PROCEED 1
#define SYS_REJECT 0
#define NSEC_PER_SEC 1000000000ULL

char LICENSE[] SEC("license") = "GPL";

/*
 * The network namespace ferry runs in (the node's), by its cookie: set by ferry before the
 * program is loaded (SO_NETNS_COOKIE, Linux 5.14+). 0 = unknown (an older kernel): the initial
 * namespace's, which is the node's where ferry runs as a DaemonSet with hostNetwork.
 */
const volatile __u64 ferry_host_netns = 0;

static __always_inline void read_dst(struct bpf_sock_addr *ctx, __u8 family, __u32 addr[4])
{
	if (family == 4) {
		addr[0] = ctx->user_ip4;
		addr[1] = 0;
		addr[2] = 0;
		addr[3] = 0;
	} else {
		addr[0] = ctx->user_ip6[0];
		addr[1] = ctx->user_ip6[1];
		addr[2] = ctx->user_ip6[2];
		addr[3] = ctx->user_ip6[3];
	}
}

static __always_inline void write_dst(struct bpf_sock_addr *ctx, __u8 family, const __u32 addr[4], __u16 port)
{
	if (family == 4) {
		ctx->user_ip4 = addr[0];
	} else {
		ctx->user_ip6[0] = addr[0];
		ctx->user_ip6[1] = addr[1];
		ctx->user_ip6[2] = addr[2];
		ctx->user_ip6[3] = addr[3];
	}
	ctx->user_port = port;
}

static __always_inline int is_member(__u32 set_id, const struct backend_val *b)
{
	struct member_key mk;

	__builtin_memset(&mk, 0, sizeof(mk));
	mk.set_id = set_id;
	mk.addr[0] = b->addr[0];
	mk.addr[1] = b->addr[1];
	mk.addr[2] = b->addr[2];
	mk.addr[3] = b->addr[3];
	mk.port = b->port;
	mk.family = b->family;
	return bpf_map_lookup_elem(&ferry_member, &mk) != NULL;
}

static __always_inline int is_loopback(const __u32 a[4], __u8 family)
{
	if (family == 4)
		return (a[0] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline int in_host_netns(struct bpf_sock_addr *ctx)
{
	__u64 host = ferry_host_netns;

	if (!host)
		host = bpf_get_netns_cookie(NULL); /* the initial namespace's */
	return bpf_get_netns_cookie(ctx) == host;
}

static __always_inline struct svc_val *lookup_frontend(struct bpf_sock_addr *ctx, struct svc_key *key)
{
	struct svc_val *svc = bpf_map_lookup_elem(&ferry_svc, key);
	struct nodeaddr_key nk;

	/* An entry only the tc program reads (an LB IP with source ranges) is as good as absent. */
	if (svc && !(svc->flags & FERRY_SF_NOSOCK))
		return svc;
	/* localhost is the node's only in the node's own network namespace: in a pod's, 127.0.0.1 is
	 * the pod itself, and its localhost:<NodePort> is whatever the pod listens on there (as
	 * kube-proxy's rules, which only the node's namespace has). */
	if (is_loopback(key->addr, key->family) && !in_host_netns(ctx))
		return NULL;
	/* A NodePort: the wildcard entry, if the destination is one of the node's addresses. */
	__builtin_memset(&nk, 0, sizeof(nk));
	nk.addr[0] = key->addr[0];
	nk.addr[1] = key->addr[1];
	nk.addr[2] = key->addr[2];
	nk.addr[3] = key->addr[3];
	nk.family = key->family;
	if (!bpf_map_lookup_elem(&ferry_nodeaddr, &nk))
		return NULL;
	key->addr[0] = 0;
	key->addr[1] = 0;
	key->addr[2] = 0;
	key->addr[3] = 0;
	return bpf_map_lookup_elem(&ferry_svc, key);
}

/*
 * The translation shared by connect and sendmsg. `flows`: an unconnected UDP send, whose later
 * datagrams to the same frontend must keep their backend.
 */
static __always_inline int translate(struct bpf_sock_addr *ctx, __u8 family, int flows)
{
	struct svc_key key;
	struct svc_val *svc;
	struct backend_val be;
	struct backend_val *found = NULL;
	struct affinity_key ak;
	struct affinity_val *aff = NULL;
	struct flow_key fk;
	struct rev_key rk;
	struct rev_val rv;
	__u32 orig[4];
	__u32 dst[4];
	__u16 orig_port;
	__u64 cookie, now = 0;
	__u32 proto = ctx->protocol;
	int mapped = 0;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SYS_PROCEED;
	__builtin_memset(&key, 0, sizeof(key));
	read_dst(ctx, family, key.addr);
	orig[0] = key.addr[0];
	orig[1] = key.addr[1];
	orig[2] = key.addr[2];
	orig[3] = key.addr[3];
	orig_port = (__u16)ctx->user_port;
	key.port = orig_port;
	key.proto = (__u8)proto;
	key.family = family;
	/* An IPv6 socket connecting to an IPv4-mapped address (::ffff:a.b.c.d) reaches IPv4 Services. */
	if (family == 6 && key.addr[0] == 0 && key.addr[1] == 0 && key.addr[2] == bpf_htonl(0xffff)) {
		mapped = 1;
		key.addr[0] = key.addr[3];
		key.addr[2] = 0;
		key.addr[3] = 0;
		key.family = 4;
	}
	/* The unspecified address is where the kernel connects to its own loopback address (0.0.0.0
	 * → 127.0.0.1, :: → ::1); looked up as such, never as the NodePort wildcard's all-zero key. */
	if (key.addr[0] == 0 && key.addr[1] == 0 && key.addr[2] == 0 && key.addr[3] == 0) {
		if (key.family == 4)
			key.addr[0] = bpf_htonl(0x7f000001);
		else
			key.addr[3] = bpf_htonl(1);
	}

	svc = lookup_frontend(ctx, &key);
	if (!svc) {
		/* No frontend: a ClusterIP's other port is refused, an unallocated address in the
		 * service CIDRs unreachable (kube-proxy's nftables mode rejects and drops them). A
		 * node address (the key's address zeroed for the NodePort wildcard) is neither. */
		int v;

		if (!(key.addr[0] | key.addr[1] | key.addr[2] | key.addr[3]))
			return SYS_PROCEED;
		v = service_ip_verdict(key.addr, key.family);
		if (v == FERRY_VERDICT_REJECT) {
			bpf_set_retval(-ERR_CONNREFUSED);
			return SYS_REJECT;
		}
		if (v == FERRY_VERDICT_DROP) {
			bpf_set_retval(-ERR_HOSTUNREACH);
			return SYS_REJECT;
		}
		return SYS_PROCEED;
	}
	if (svc->verdict == FERRY_VERDICT_REJECT) {
		bpf_set_retval(-ERR_CONNREFUSED);
		return SYS_REJECT;
	}
	if (svc->verdict != FERRY_VERDICT_FORWARD || svc->count == 0) {
		/* No packet exists yet that could be dropped: the connect fails as unreachable. */
		bpf_set_retval(-ERR_HOSTUNREACH);
		return SYS_REJECT;
	}
	cookie = bpf_get_socket_cookie(ctx);
	if (svc->affinity_timeout) {
		now = bpf_ktime_get_ns();
		__builtin_memset(&ak, 0, sizeof(ak));
		ak.netns = bpf_get_netns_cookie(ctx);
		ak.set_id = svc->set_id;
	}

	if (flows) {
		__builtin_memset(&fk, 0, sizeof(fk));
		fk.cookie = cookie;
		fk.addr[0] = orig[0];
		fk.addr[1] = orig[1];
		fk.addr[2] = orig[2];
		fk.addr[3] = orig[3];
		fk.port = orig_port;
		fk.family = family;
		fk.proto = (__u8)proto;
		found = bpf_map_lookup_elem(&ferry_udpflow, &fk);
		if (found && !is_member(svc->set_id, found))
			found = NULL;
	}

	if (!found && svc->affinity_timeout) {
		aff = bpf_map_lookup_elem(&ferry_affinity, &ak);
		if (aff && now - aff->last_ns <= (__u64)svc->affinity_timeout * NSEC_PER_SEC && is_member(svc->set_id, &aff->backend))
			found = &aff->backend;
	}

	if (!found) {
		struct backend_key bk;

		bk.set_id = svc->set_id;
		bk.slot = bpf_get_prandom_u32() % svc->count;
		found = bpf_map_lookup_elem(&ferry_backend, &bk);
		if (!found)
			return SYS_PROCEED; /* mid-update; the next sync repairs it */
	}
	be = *found;
	if (be.family != key.family)
		return SYS_PROCEED;
	/* The address as this socket sees it: IPv4-mapped for an IPv6 socket reaching IPv4. */
	dst[0] = be.addr[0];
	dst[1] = be.addr[1];
	dst[2] = be.addr[2];
	dst[3] = be.addr[3];
	if (mapped) {
		dst[0] = 0;
		dst[1] = 0;
		dst[2] = bpf_htonl(0xffff);
		dst[3] = be.addr[0];
	}

	if (svc->affinity_timeout) {
		struct affinity_val av;

		av.backend = be;
		av.last_ns = now;
		bpf_map_update_elem(&ferry_affinity, &ak, &av, BPF_ANY);
	}
	if (flows)
		bpf_map_update_elem(&ferry_udpflow, &fk, &be, BPF_ANY);

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.cookie = cookie;
	rk.addr[0] = dst[0];
	rk.addr[1] = dst[1];
	rk.addr[2] = dst[2];
	rk.addr[3] = dst[3];
	rk.port = be.port;
	rk.family = family;
	__builtin_memset(&rv, 0, sizeof(rv));
	rv.addr[0] = orig[0];
	rv.addr[1] = orig[1];
	rv.addr[2] = orig[2];
	rv.addr[3] = orig[3];
	rv.port = orig_port;
	rv.family = family;
	bpf_map_update_elem(&ferry_rev, &rk, &rv, BPF_ANY);

	write_dst(ctx, family, dst, be.port);
	return SYS_PROCEED;
}

/* getpeername/recvmsg: the backend the socket talks to → the frontend it asked for. */
static __always_inline int reverse(struct bpf_sock_addr *ctx, __u8 family)
{
	struct rev_key rk;
	struct rev_val *rv;

	__builtin_memset(&rk, 0, sizeof(rk));
	rk.cookie = bpf_get_socket_cookie(ctx);
	read_dst(ctx, family, rk.addr);
	rk.port = (__u16)ctx->user_port;
	rk.family = family;
	rv = bpf_map_lookup_elem(&ferry_rev, &rk);
	if (rv)
		write_dst(ctx, family, rv->addr, rv->port);
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int ferry_connect4(struct bpf_sock_addr *ctx)
{
	return translate(ctx, 4, 0);
}

SEC("cgroup/connect6")
int ferry_connect6(struct bpf_sock_addr *ctx)
{
	return translate(ctx, 6, 0);
}

SEC("cgroup/sendmsg4")
int ferry_sendmsg4(struct bpf_sock_addr *ctx)
{
	return translate(ctx, 4, 1);
}

SEC("cgroup/sendmsg6")
int ferry_sendmsg6(struct bpf_sock_addr *ctx)
{
	return translate(ctx, 6, 1);
}

SEC("cgroup/recvmsg4")
int ferry_recvmsg4(struct bpf_sock_addr *ctx)
{
	return reverse(ctx, 4);
}

SEC("cgroup/recvmsg6")
int ferry_recvmsg6(struct bpf_sock_addr *ctx)
{
	return reverse(ctx, 6);
}

SEC("cgroup/getpeername4")
int ferry_getpeername4(struct bpf_sock_addr *ctx)
{
	return reverse(ctx, 4);
}

SEC("cgroup/getpeername6")
int ferry_getpeername6(struct bpf_sock_addr *ctx)
{
	return reverse(ctx, 6);
}
