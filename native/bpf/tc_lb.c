// SPDX-License-Identifier: GPL-2.0
/*
 * ferry's tc data path (ebpf mode): packets that arrive from the network at a node interface —
 * an outside client to a NodePort on a node address, an externalIP or a LoadBalancer IP, and a
 * connection to a ClusterIP that socket LB did not translate (a pod process outside ferry's
 * cgroup, a packet routed to the node) — are
 * translated here, on clsact ingress, with connection tracking of our own (ferry_ct), and sent
 * on with bpf_redirect_neigh. Replies (from an endpoint on this node: its veth's ingress; from
 * another node: the uplink's ingress) meet their reply entry and are translated back.
 *
 * Every translated packet is redirected, never handed back to the stack: after SNAT the source
 * is a node address, after reverse translation of a NodePort reply too, and the stack drops a
 * packet that arrives with a local source ("martian"). Redirecting also keeps netfilter's own
 * conntrack out of these flows. The one exception is an endpoint that is one of the node's own
 * addresses (a hostNetwork pod): its packets go up the stack, unmasqueraded (as kube-proxy's
 * masquerade, in POSTROUTING, never meets a locally delivered packet), and its replies — the
 * node's own packets — are translated back on clsact egress (ferry_tc_egress), which touches
 * nothing else.
 *
 * All policy is in the maps ferry writes from the planner's decisions (ferry_xsvc: which set,
 * verdict, masquerade, source ranges; ferry_svc's ClusterIP flags); nothing here knows
 * Kubernetes but that a client reaching itself must be masqueraded (hairpin).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define NSEC_PER_SEC 1000000000ULL
/*
 * SNAT source ports: two ranges, set by ferry before the program is loaded (the node's ports
 * outside its ephemeral range, ip_local_port_range: a translated flow then never shares a tuple
 * with a connection the node opens itself; and outside the NodePort range 30000-32767: the
 * endpoint's packet after its reply entry expired would otherwise meet a NodePort's wildcard
 * entry as a new connection, src/backends/ebpf/snat-ports.ts). The default is the part of
 * 1024-65535 above the kernel's default ephemeral range.
 */
struct snat_ports {
	__u16 lo_min;
	__u16 lo_count;
	__u16 hi_min;
	__u16 hi_count;
};
const volatile struct snat_ports ferry_snat_ports = { 0, 0, 61000, 4536 };
/* Ports probed from a random start, one after another: with 8 random tries, ~3% of new
 * NodePort connections found no port once a burst of closing flows had taken two thirds of a
 * small range to one endpoint (1,000 connections/s, scripts/bench datapath). */
#define SNAT_PORT_TRIES 64

/*
 * Connection-tracking timeouts in seconds, kube-proxy's conntrack settings (set at load by the
 * addon, src/backends/ebpf/ct-timeouts.ts): an idle established TCP connection
 * (--conntrack-tcp-timeout-established, 24 h by default), a connection the client half-closed
 * while the endpoint still answers (--conntrack-tcp-timeout-close-wait, 1 h; conntrack's
 * FIN_WAIT/CLOSE_WAIT), a UDP flow not answered yet and one answered
 * (--conntrack-udp-timeout[-stream]; the kernel's 30 and 120 s when those are left unset).
 */
struct ct_timeouts {
	__u32 established;
	__u32 close_wait;
	__u32 udp;
	__u32 udp_stream;
};
const volatile struct ct_timeouts ferry_ct_timeouts = { 86400, 3600, 30, 120 };

char LICENSE[] SEC("license") = "GPL";

struct pkt {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 tcp_flags; /* FIN 1, SYN 2, RST 4, ACK 16 */
	__u32 l3off;
	__u32 l4off;
};

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 eth_proto;

	if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2) < 0)
		return 0;
	p->l3off = ETH_HLEN;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, p->l3off, &ip, sizeof(ip)) < 0)
			return 0;
		if (ip.ihl < 5 || (ip.frag_off & bpf_htons(0x3fff)))
			return 0; /* fragments are left to the stack */
		p->family = 4;
		p->proto = ip.protocol;
		p->saddr[0] = ip.saddr;
		p->daddr[0] = ip.daddr;
		p->l4off = p->l3off + ip.ihl * 4;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, p->l3off, &ip6, sizeof(ip6)) < 0)
			return 0;
		p->family = 6;
		p->proto = ip6.nexthdr; /* extension headers are left to the stack */
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->l4off = p->l3off + sizeof(ip6);
	} else {
		return 0;
	}
	if (p->proto == IPPROTO_TCP) {
		__u8 hdr[14];

		if (bpf_skb_load_bytes(skb, p->l4off, hdr, sizeof(hdr)) < 0)
			return 0;
		__builtin_memcpy(&p->sport, hdr, 2);
		__builtin_memcpy(&p->dport, hdr + 2, 2);
		p->tcp_flags = hdr[13];
	} else if (p->proto == IPPROTO_UDP) {
		__u16 ports[2];

		if (bpf_skb_load_bytes(skb, p->l4off, ports, sizeof(ports)) < 0)
			return 0;
		p->sport = ports[0];
		p->dport = ports[1];
	} else {
		return 0;
	}
	return 1;
}

static __always_inline void tuple_key(struct ct_key *k, const __u32 saddr[4], const __u32 daddr[4], __u16 sport, __u16 dport, __u8 proto, __u8 family)
{
	__builtin_memset(k, 0, sizeof(*k));
	__builtin_memcpy(k->saddr, saddr, 16);
	__builtin_memcpy(k->daddr, daddr, 16);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->family = family;
}

static __always_inline __u64 ct_timeout(__u8 state)
{
	switch (state) {
	case FERRY_CT_NEW:
		return 60 * NSEC_PER_SEC;
	case FERRY_CT_ESTABLISHED:
		return (__u64)ferry_ct_timeouts.established * NSEC_PER_SEC;
	case FERRY_CT_FIN_WAIT:
		return (__u64)ferry_ct_timeouts.close_wait * NSEC_PER_SEC;
	case FERRY_CT_CLOSING:
		return 10 * NSEC_PER_SEC;
	case FERRY_CT_TIME_WAIT:
		/* As long as the endpoint's TIME_WAIT socket may live (Linux: 60 s; conntrack keeps
		 * 120 s for any peer): a SYN from another client meeting it is refused when its
		 * timestamp or sequence number is not newer (PAWS), which is a stall of a second or more. */
		return 120 * NSEC_PER_SEC;
	case FERRY_CT_DATAGRAM_STREAM:
		return (__u64)ferry_ct_timeouts.udp_stream * NSEC_PER_SEC;
	default:
		return (__u64)ferry_ct_timeouts.udp * NSEC_PER_SEC;
	}
}

static __always_inline int ct_live(const struct ct_val *v, __u64 now)
{
	return now - v->last_ns <= ct_timeout(v->state);
}

/* The state after this packet, from the state before it. */
static __always_inline __u8 ct_next(__u8 state, const struct pkt *p, __u8 dir)
{
	if (p->proto != IPPROTO_TCP)
		/* Answered once, a stream (conntrack's ASSURED UDP): the longer timeout from then on. */
		return dir == FERRY_CT_REPLY || state == FERRY_CT_DATAGRAM_STREAM ? FERRY_CT_DATAGRAM_STREAM : FERRY_CT_DATAGRAM;
	if (p->tcp_flags & TCPF_RST)
		/* A RST ends the endpoint's TIME_WAIT too, unless it is the TIME_WAIT socket's own. */
		return state == FERRY_CT_TIME_WAIT && dir == FERRY_CT_REPLY ? state : FERRY_CT_CLOSING;
	if (p->tcp_flags & TCPF_FIN) {
		if (state == FERRY_CT_CLOSING || state == FERRY_CT_TIME_WAIT)
			return state; /* the second FIN: whoever closed first decided */
		if (state == FERRY_CT_FIN_WAIT)
			/* The endpoint's FIN answers the client's: only the last ACK is left to come. */
			return dir == FERRY_CT_REPLY ? FERRY_CT_CLOSING : state;
		/* The client's FIN first: it may still wait long for the answer (a half-close). */
		return dir == FERRY_CT_REPLY ? FERRY_CT_TIME_WAIT : FERRY_CT_FIN_WAIT;
	}
	if (state == FERRY_CT_NEW && dir == FERRY_CT_REPLY && (p->tcp_flags & TCPF_ACK))
		return FERRY_CT_ESTABLISHED;
	return state;
}

/*
 * Is (addr, port) still in the set? Asked of a tracked UDP flow's every datagram (a removed
 * endpoint's flows choose afresh: the conntrack flush kube-proxy does for UDP) and of a TCP SYN
 * (a new connection never reuses an entry whose endpoint left), never of the other segments of an
 * established TCP connection: kube-proxy leaves TCP conntrack entries alone, so a connection
 * drains on its endpoint while the pod terminates, also after its Service is gone.
 */
static __always_inline int is_member(__u32 set_id, const __u32 addr[4], __u16 port, __u8 family)
{
	struct member_key mk;

	__builtin_memset(&mk, 0, sizeof(mk));
	mk.set_id = set_id;
	__builtin_memcpy(mk.addr, addr, 16);
	mk.port = port;
	mk.family = family;
	return bpf_map_lookup_elem(&ferry_member, &mk) != NULL;
}

/* Rewrites the packet's addresses and ports, fixing the IPv4 header and L4 checksums. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, const __u32 saddr[4], const __u32 daddr[4], __u16 sport, __u16 dport)
{
	__u32 csum_off = p->l4off + (p->proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (p->family == 4) {
		__u32 l3csum = p->l3off + 10;

		if (saddr[0] != p->saddr[0]) {
			if (bpf_l4_csum_replace(skb, csum_off, p->saddr[0], saddr[0], BPF_F_PSEUDO_HDR | mangled | 4) < 0 ||
			    bpf_l3_csum_replace(skb, l3csum, p->saddr[0], saddr[0], 4) < 0 ||
			    bpf_skb_store_bytes(skb, p->l3off + 12, &saddr[0], 4, 0) < 0)
				return 0;
		}
		if (daddr[0] != p->daddr[0]) {
			if (bpf_l4_csum_replace(skb, csum_off, p->daddr[0], daddr[0], BPF_F_PSEUDO_HDR | mangled | 4) < 0 ||
			    bpf_l3_csum_replace(skb, l3csum, p->daddr[0], daddr[0], 4) < 0 ||
			    bpf_skb_store_bytes(skb, p->l3off + 16, &daddr[0], 4, 0) < 0)
				return 0;
		}
	} else {
		__u32 from[8], to[8];
		__s64 diff;

		__builtin_memcpy(from, p->saddr, 16);
		__builtin_memcpy(from + 4, p->daddr, 16);
		__builtin_memcpy(to, saddr, 16);
		__builtin_memcpy(to + 4, daddr, 16);
		diff = bpf_csum_diff(from, sizeof(from), to, sizeof(to), 0);
		if (diff < 0)
			return 0;
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0 ||
		    bpf_skb_store_bytes(skb, p->l3off + 8, to, sizeof(to), 0) < 0)
			return 0;
	}
	if (sport != p->sport) {
		if (bpf_l4_csum_replace(skb, csum_off, p->sport, sport, mangled | 2) < 0 || bpf_skb_store_bytes(skb, p->l4off, &sport, 2, 0) < 0)
			return 0;
	}
	if (dport != p->dport) {
		if (bpf_l4_csum_replace(skb, csum_off, p->dport, dport, mangled | 2) < 0 || bpf_skb_store_bytes(skb, p->l4off + 2, &dport, 2, 0) < 0)
			return 0;
	}
	return 1;
}

/* Sends the (rewritten) packet out of the interface the FIB picks for its new destination. */
static __always_inline int send_on(struct __sk_buff *skb, const __u32 saddr[4], const __u32 daddr[4], __u8 family, __u8 proto)
{
	struct bpf_fib_lookup fib;
	long rc;

	__builtin_memset(&fib, 0, sizeof(fib));
	fib.l4_protocol = proto;
	fib.ifindex = skb->ingress_ifindex;
	if (family == 4) {
		fib.family = AF_INET;
		fib.ipv4_src = saddr[0];
		fib.ipv4_dst = daddr[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* A local destination (an endpoint on a node address): the stack delivers it. */
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return TC_ACT_OK;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_SHOT; /* no route for a translated packet: it could only be misdelivered */
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

/* Whether `addr` is one of the node's addresses (ferry_nodeaddr); `nk` is the caller's scratch
 * space (new_connection's stack is at the verifier's limit). */
static __always_inline int node_address(const __u32 addr[4], __u8 family, struct nodeaddr_key *nk)
{
	__builtin_memset(nk, 0, sizeof(*nk));
	__builtin_memcpy(nk->addr, addr, 16);
	nk->family = family;
	return bpf_map_lookup_elem(&ferry_nodeaddr, nk) != NULL;
}

/*
 * Rejects a TCP segment to a frontend without endpoints that is not a node address (an
 * externalIP, an LB IP: the stack would route it on, not answer it): the segment itself becomes
 * the RST (RFC 9293 3.10.7.1), sent back out of the interface it came in on. Addresses, ports
 * and MACs are swapped (the checksum does not change for that), sequence, acknowledgment and
 * flags rewritten; its options stay (allowed on a RST), a segment with payload is just dropped.
 */
static __always_inline int reject_tcp(struct __sk_buff *skb, const struct pkt *p)
{
	__u32 csum_off = p->l4off + 16;
	__u32 seq, ack, new_seq, new_ack, hdr_len, len;
	__u8 flags_word[2], new_word[2];
	__u8 mac[12], swapped[12];
	__u16 ports[2];

	if (p->tcp_flags & TCPF_RST)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, p->l4off + 4, &seq, 4) < 0 || bpf_skb_load_bytes(skb, p->l4off + 8, &ack, 4) < 0 ||
	    bpf_skb_load_bytes(skb, p->l4off + 12, flags_word, 2) < 0)
		return TC_ACT_SHOT;
	hdr_len = (flags_word[0] >> 4) * 4;
	if (p->family == 4) {
		__u16 tot;

		if (bpf_skb_load_bytes(skb, p->l3off + 2, &tot, 2) < 0)
			return TC_ACT_SHOT;
		len = bpf_ntohs(tot) - (p->l4off - p->l3off);
	} else {
		__u16 plen;

		if (bpf_skb_load_bytes(skb, p->l3off + 4, &plen, 2) < 0)
			return TC_ACT_SHOT;
		len = bpf_ntohs(plen);
	}
	if (len != hdr_len)
		return TC_ACT_SHOT;
	new_word[0] = flags_word[0];
	if (p->tcp_flags & TCPF_ACK) {
		new_seq = ack;
		new_ack = 0;
		new_word[1] = TCPF_RST;
	} else {
		new_seq = 0;
		new_ack = bpf_htonl(bpf_ntohl(seq) + ((p->tcp_flags & TCPF_SYN) ? 1 : 0) + ((p->tcp_flags & TCPF_FIN) ? 1 : 0));
		new_word[1] = TCPF_RST | TCPF_ACK;
	}
	if (bpf_l4_csum_replace(skb, csum_off, seq, new_seq, 4) < 0 || bpf_l4_csum_replace(skb, csum_off, ack, new_ack, 4) < 0 ||
	    bpf_l4_csum_replace(skb, csum_off, *(__u16 *)flags_word, *(__u16 *)new_word, 2) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, p->l4off + 4, &new_seq, 4, 0) < 0 || bpf_skb_store_bytes(skb, p->l4off + 8, &new_ack, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, p->l4off + 12, new_word, 2, 0) < 0)
		return TC_ACT_SHOT;
	ports[0] = p->dport;
	ports[1] = p->sport;
	if (bpf_skb_store_bytes(skb, p->l4off, ports, 4, 0) < 0)
		return TC_ACT_SHOT;
	if (p->family == 4) {
		if (bpf_skb_store_bytes(skb, p->l3off + 12, &p->daddr[0], 4, 0) < 0 || bpf_skb_store_bytes(skb, p->l3off + 16, &p->saddr[0], 4, 0) < 0)
			return TC_ACT_SHOT;
	} else {
		if (bpf_skb_store_bytes(skb, p->l3off + 8, p->daddr, 16, 0) < 0 || bpf_skb_store_bytes(skb, p->l3off + 24, p->saddr, 16, 0) < 0)
			return TC_ACT_SHOT;
	}
	if (bpf_skb_load_bytes(skb, 0, mac, 12) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * ICMP errors are rate-limited as the kernel limits its own (net.ipv4.icmp_msgs_per_sec 1000,
 * icmp_msgs_burst 50): a flood of datagrams to a frontend without endpoints is not reflected one
 * for one. The time the bucket is next empty, shared by every CPU and updated without a lock: a
 * race lets one extra error through, never holds one back for long.
 */
#define ICMP_INTERVAL_NS (NSEC_PER_SEC / 1000)
#define ICMP_BURST 50
__u64 ferry_icmp_tat = 0;

static __always_inline int icmp_allowed(__u64 now)
{
	__u64 tat = ferry_icmp_tat;

	if (tat < now)
		tat = now;
	if (tat - now > ICMP_BURST * ICMP_INTERVAL_NS)
		return 0;
	ferry_icmp_tat = tat + ICMP_INTERVAL_NS;
	return 1;
}

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* What an ICMP port unreachable quotes: the datagram's IP header (IPv4 without options) and UDP header. */
#define QUOTE4 (sizeof(struct iphdr) + sizeof(struct udphdr))
#define QUOTE6 (sizeof(struct ipv6hdr) + sizeof(struct udphdr))

struct icmp_hdr {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 unused;
};

struct icmp4_out {
	struct iphdr ip;
	struct icmp_hdr icmp;
	__u8 quote[QUOTE4];
};

struct icmp6_out {
	struct {
		__u32 saddr[4];
		__u32 daddr[4];
		__u32 len;
		__u32 next;
	} pseudo; /* for the checksum only */
	struct ipv6hdr ip;
	struct icmp_hdr icmp;
	__u8 quote[QUOTE6];
};

/* Where an ICMP error is built: the program's stack (512 bytes) is taken by the connection path. */
struct icmp_scratch {
	union {
		struct icmp4_out v4;
		struct icmp6_out v6;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
} ferry_icmp_scratch SEC(".maps");

/*
 * Rejects a UDP datagram to a frontend without endpoints that is not a node address (there the
 * stack answers, as for TCP): as the kernel's reject does, an ICMP (ICMPv6) port unreachable
 * quoting the datagram's IP and UDP headers goes back out of the interface it came in on. The
 * datagram is cut to what is quoted and the new headers are put in front of it; addresses and
 * MACs swapped. IPv4 with IP options is dropped (IPv6 extension headers never get here: parse
 * leaves them to the stack).
 */
static __always_inline int reject_udp(struct __sk_buff *skb, const struct pkt *p, __u64 now)
{
	__u32 zero = 0;
	struct icmp_scratch *o = bpf_map_lookup_elem(&ferry_icmp_scratch, &zero);
	__u8 mac[12], swapped[12];
	__u16 eth_proto;
	__s64 sum;

	if (!o || !icmp_allowed(now) || bpf_skb_load_bytes(skb, 0, mac, 12) < 0)
		return TC_ACT_SHOT;
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	if (p->family == 4) {
		struct icmp4_out *out = &o->v4;

		if (p->l4off - p->l3off != sizeof(struct iphdr) || bpf_skb_load_bytes(skb, p->l3off, out->quote, QUOTE4) < 0)
			return TC_ACT_SHOT;
		__builtin_memset(&out->ip, 0, sizeof(out->ip) + sizeof(out->icmp));
		out->ip.version = 4;
		out->ip.ihl = 5;
		out->ip.tos = 0xc0; /* IPTOS_PREC_INTERNETCONTROL, as the kernel's ICMP errors */
		out->ip.tot_len = bpf_htons(sizeof(*out));
		out->ip.ttl = 64;
		out->ip.protocol = IPPROTO_ICMP;
		out->ip.saddr = p->daddr[0];
		out->ip.daddr = p->saddr[0];
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&out->ip, sizeof(out->ip), 0);
		if (sum < 0)
			return TC_ACT_SHOT;
		out->ip.check = csum_fold(sum);
		out->icmp.type = 3; /* destination unreachable */
		out->icmp.code = 3; /* port unreachable */
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&out->icmp, sizeof(out->icmp) + QUOTE4, 0);
		if (sum < 0)
			return TC_ACT_SHOT;
		out->icmp.csum = csum_fold(sum);
		/* The tail cut first, so that the head's room is all that is added. */
		if (bpf_skb_change_tail(skb, ETH_HLEN + QUOTE4, 0) < 0 || bpf_skb_change_head(skb, sizeof(*out) - QUOTE4, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_HLEN, out, sizeof(*out), 0) < 0)
			return TC_ACT_SHOT;
		eth_proto = bpf_htons(ETH_P_IP);
	} else {
		struct icmp6_out *out = &o->v6;
		__u32 len = sizeof(out->ip) + sizeof(out->icmp) + QUOTE6;

		if (bpf_skb_load_bytes(skb, p->l3off, out->quote, QUOTE6) < 0)
			return TC_ACT_SHOT;
		__builtin_memset(&out->ip, 0, sizeof(out->ip) + sizeof(out->icmp));
		out->ip.version = 6;
		out->ip.payload_len = bpf_htons(sizeof(out->icmp) + QUOTE6);
		out->ip.nexthdr = 58; /* IPPROTO_ICMPV6 */
		out->ip.hop_limit = 64;
		__builtin_memcpy(&out->ip.saddr, p->daddr, 16);
		__builtin_memcpy(&out->ip.daddr, p->saddr, 16);
		__builtin_memcpy(out->pseudo.saddr, p->daddr, 16);
		__builtin_memcpy(out->pseudo.daddr, p->saddr, 16);
		out->pseudo.len = bpf_htonl(sizeof(out->icmp) + QUOTE6);
		out->pseudo.next = bpf_htonl(58);
		out->icmp.type = 1; /* destination unreachable */
		out->icmp.code = 4; /* port unreachable */
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&out->pseudo, sizeof(out->pseudo), 0);
		if (sum < 0)
			return TC_ACT_SHOT;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&out->icmp, sizeof(out->icmp) + QUOTE6, (__u32)sum);
		if (sum < 0)
			return TC_ACT_SHOT;
		out->icmp.csum = csum_fold(sum);
		if (bpf_skb_change_tail(skb, ETH_HLEN + QUOTE6, 0) < 0 || bpf_skb_change_head(skb, len - QUOTE6, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_HLEN, &out->ip, len, 0) < 0)
			return TC_ACT_SHOT;
		eth_proto = bpf_htons(ETH_P_IPV6);
	}
	if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0) < 0 || bpf_skb_store_bytes(skb, 12, &eth_proto, 2, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/* Moves both directions' entries on with the packet and rewrites it to the entry's tuple; 0 if it cannot. */
static __always_inline int ct_translate(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v, __u64 now)
{
	struct ct_key other;
	struct ct_val *o;
	__u8 state = ct_next(v->state, p, v->dir);

	/* The other direction's entry: its key is this entry's rewritten tuple, reversed. */
	tuple_key(&other, v->daddr, v->saddr, v->dport, v->sport, p->proto, p->family);
	o = bpf_map_lookup_elem(&ferry_ct, &other);
	if (o) {
		o->state = state;
		o->last_ns = now;
	}
	v->state = state;
	v->last_ns = now;
	return rewrite(skb, p, v->saddr, v->daddr, v->sport, v->dport);
}

/* Translates a packet of a tracked connection and sends it on. */
static __always_inline int ct_forward(struct __sk_buff *skb, const struct pkt *p, struct ct_val *v, __u64 now)
{
	if (!ct_translate(skb, p, v, now))
		return TC_ACT_SHOT;
	return send_on(skb, v->saddr, v->daddr, p->family, p->proto);
}

/* The external frontend for the packet; `key` is left as the entry's key (the NodePort wildcard's too). */
static __always_inline struct xsvc_val *lookup_frontend(const struct pkt *p, struct svc_key *key, int *node_addr)
{
	struct nodeaddr_key nk;
	struct xsvc_val *svc;

	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->addr, p->daddr, 16);
	key->port = p->dport;
	key->proto = p->proto;
	key->family = p->family;
	__builtin_memset(&nk, 0, sizeof(nk));
	__builtin_memcpy(nk.addr, p->daddr, 16);
	nk.family = p->family;
	*node_addr = bpf_map_lookup_elem(&ferry_nodeaddr, &nk) != NULL;
	svc = bpf_map_lookup_elem(&ferry_xsvc, key);
	if (svc || !*node_addr)
		return svc;
	/* A NodePort: the wildcard entry, the destination being one of the node's addresses. */
	__builtin_memset(key->addr, 0, sizeof(key->addr));
	return bpf_map_lookup_elem(&ferry_xsvc, key);
}

static __always_inline int source_allowed(const struct pkt *p, __u32 set_id)
{
	struct srcrange_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.prefixlen = 32 + (p->family == 4 ? 32 : 128);
	k.set_id = bpf_htonl(set_id);
	__builtin_memcpy(k.addr, p->saddr, 16);
	return bpf_map_lookup_elem(&ferry_srcrange, &k) != NULL;
}

/* A frontend as the connection path uses it: an xsvc entry, or a ClusterIP's svc entry. */
struct frontend {
	__u32 set_id;
	__u32 count;
	__u32 affinity_timeout;
	__u8 verdict;
	__u8 masq;
	__u8 clusterip;
	__u8 local; /* the chosen endpoint is a node address (new_connection) */
};

/* The connection path's frontend: the 512-byte stack has no room for it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct frontend);
	__uint(max_entries, 1);
} ferry_fe_scratch SEC(".maps");

static __always_inline struct backend_val *pick(const struct pkt *p, const struct frontend *svc, __u64 now)
{
	struct backend_val *found = NULL;
	struct xaff_key ak;
	struct affinity_val *aff;
	struct backend_key bk;

	if (svc->affinity_timeout) {
		__builtin_memset(&ak, 0, sizeof(ak));
		__builtin_memcpy(ak.addr, p->saddr, 16);
		ak.set_id = svc->set_id;
		ak.family = p->family;
		aff = bpf_map_lookup_elem(&ferry_xaffinity, &ak);
		if (aff && now - aff->last_ns <= (__u64)svc->affinity_timeout * NSEC_PER_SEC &&
		    is_member(svc->set_id, aff->backend.addr, aff->backend.port, aff->backend.family)) {
			aff->last_ns = now;
			return &aff->backend;
		}
	}
	bk.set_id = svc->set_id;
	bk.slot = bpf_get_prandom_u32() % svc->count;
	found = bpf_map_lookup_elem(&ferry_backend, &bk);
	if (found && svc->affinity_timeout) {
		struct affinity_val av;

		av.backend = *found;
		av.last_ns = now;
		bpf_map_update_elem(&ferry_xaffinity, &ak, &av, BPF_ANY);
	}
	return found;
}

/* A reply entry that translates back to this packet's own tuple: the same client connection. */
static __always_inline int same_client(const struct ct_val *reply, const struct pkt *p)
{
	return reply->dport == p->sport && reply->sport == p->dport && reply->daddr[0] == p->saddr[0] && reply->daddr[1] == p->saddr[1] &&
	       reply->daddr[2] == p->saddr[2] && reply->daddr[3] == p->saddr[3] && reply->saddr[0] == p->daddr[0] &&
	       reply->saddr[1] == p->daddr[1] && reply->saddr[2] == p->daddr[2] && reply->saddr[3] == p->daddr[3];
}

/*
 * The frontend of a new connection: an external one (ferry_xsvc: NodePort, externalIP, LB IP),
 * else, for a destination that is not a node address, a ClusterIP that socket LB did not
 * translate (ferry_svc with FERRY_SF_CLUSTERIP) — only for what can open a connection: a TCP
 * SYN or a UDP datagram. 0 when the packet is for none.
 */
static __always_inline int find_frontend(const struct pkt *p, struct frontend *f, int *node_addr)
{
	struct svc_key key;
	struct xsvc_val *x = lookup_frontend(p, &key, node_addr);
	struct svc_val *s;

	if (x) {
		f->set_id = x->set_id;
		f->count = x->count;
		f->affinity_timeout = x->affinity_timeout;
		f->verdict = x->verdict;
		f->masq = (x->flags & FERRY_XF_MASQ) != 0;
		f->clusterip = 0;
		/* loadBalancerSourceRanges first, against the frontend's own set (its ranges are
		 * written under it), as kube-proxy's firewall check comes before everything else:
		 * a source outside them is dropped, a local pod's too. */
		if ((x->flags & FERRY_XF_SRCRANGE) && !source_allowed(p, x->set_id)) {
			f->verdict = FERRY_VERDICT_DROP;
			return 1;
		}
		/* externalTrafficPolicy Local from a local pod (source in the local-traffic CIDRs; one
		 * outside ferry's cgroup, or another node's): the IR's short-circuit — the cluster-wide
		 * set, which socket LB's entry for this same frontend holds, unmasqueraded (for an LB
		 * IP with source ranges, an entry flagged FERRY_SF_NOSOCK that socket LB leaves alone). */
		if ((x->flags & FERRY_XF_LOCAL) && source_allowed(p, FERRY_LOCAL_SET(p->family))) {
			s = bpf_map_lookup_elem(&ferry_svc, &key);
			if (s) {
				f->set_id = s->set_id;
				f->count = s->count;
				f->affinity_timeout = s->affinity_timeout;
				f->verdict = s->verdict;
				f->masq = 0;
			}
		}
		return 1;
	}
	if (*node_addr || (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN))
		return 0;
	/* The key is still the exact destination (no wildcard without a node address). */
	s = bpf_map_lookup_elem(&ferry_svc, &key);
	if (!s || !(s->flags & FERRY_SF_CLUSTERIP)) {
		/* A ClusterIP's other port: rejected; an unallocated address in the service CIDRs:
		 * dropped (kube-proxy's nftables mode, after DNAT, in its filter chains). */
		int v = service_ip_verdict(p->daddr, p->family);

		if (v == FERRY_VERDICT_FORWARD)
			return 0;
		f->verdict = v;
		f->count = 0;
		f->clusterip = 1;
		return 1;
	}
	f->set_id = s->set_id;
	f->count = s->count;
	f->affinity_timeout = s->affinity_timeout;
	f->verdict = s->verdict;
	f->masq = (s->flags & FERRY_SF_MASQ_ALL) || ((s->flags & FERRY_SF_MASQ_NONLOCAL) && !source_allowed(p, FERRY_LOCAL_SET(p->family)));
	f->clusterip = 1;
	return 1;
}

/*
 * A loopback (127.0.0.0/8, ::1) or unspecified (0.0.0.0, ::) address. From the network such a
 * destination is never a frontend: the stack drops it as a martian, and translating it would open
 * the NodePorts on localhost to every L2-adjacent host, whatever --nodeport-addresses says
 * (kube-proxy drops `-d 127.0.0.0/8 ! -s 127.0.0.0/8`, CVE-2020-8558); an all-zero destination
 * would even match the NodePort wildcard's key itself. Such a source is a martian as well.
 */
static __always_inline int martian(const __u32 a[4], __u8 family)
{
	if (family == 4)
		return (a[0] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) || a[0] == 0;
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && (a[3] == 0 || a[3] == bpf_htonl(1));
}

/* A new connection to a frontend: choose, record both directions, translate. */
static __always_inline int new_connection(struct __sk_buff *skb, const struct pkt *p, __u64 now)
{
	__u32 zero = 0;
	struct frontend *svc = bpf_map_lookup_elem(&ferry_fe_scratch, &zero);
	struct backend_val be;
	struct backend_val *found;
	struct ct_key fk, rk;
	struct ct_val fv, rv;
	struct ct_val *old;
	__u32 src[4];
	__u16 sport = p->sport;
	int node_addr = 0;
	int i;

	if (martian(p->daddr, p->family) || martian(p->saddr, p->family))
		return TC_ACT_OK; /* the stack drops it */
	if (!svc || !find_frontend(p, svc, &node_addr))
		return TC_ACT_OK;
	if (svc->verdict == FERRY_VERDICT_REJECT) {
		/* On a node address nothing listens on the port: the stack answers with a TCP RST or
		 * an ICMP port unreachable. Elsewhere (externalIPs, LB IPs) the stack would route the
		 * packet on: the answer is made here. */
		if (node_addr)
			return TC_ACT_OK;
		return p->proto == IPPROTO_TCP ? reject_tcp(skb, p) : reject_udp(skb, p, now);
	}
	if (svc->verdict != FERRY_VERDICT_FORWARD || svc->count == 0)
		return TC_ACT_SHOT;
	found = pick(p, svc, now);
	if (!found || found->family != p->family)
		return TC_ACT_OK; /* mid-update; the next sync repairs it */
	be = *found;
	/* Hairpin: a client reaching itself through a Service (its ClusterIP, or a Local NodePort
	 * short-circuited to the cluster-wide set) is masqueraded whatever the settings, or its
	 * reply would not come back through here. */
	if (be.addr[0] == p->saddr[0] && be.addr[1] == p->saddr[1] && be.addr[2] == p->saddr[2] && be.addr[3] == p->saddr[3])
		svc->masq = 1;
	/* An endpoint on a node address: delivered by the stack, never masqueraded (kube-proxy's
	 * masquerade is in POSTROUTING, which a locally delivered packet never reaches). */
	_Static_assert(sizeof(struct ct_key) >= sizeof(struct nodeaddr_key), "rk holds a nodeaddr_key");
	svc->local = node_address(be.addr, p->family, (struct nodeaddr_key *)&rk);
	if (svc->local)
		svc->masq = 0;

	__builtin_memcpy(src, p->saddr, 16);
	if (svc->masq) {
		__u32 fam = p->family;
		struct snat_val *sn = bpf_map_lookup_elem(&ferry_snat, &fam);

		if (!sn)
			return TC_ACT_SHOT;
		__builtin_memcpy(src, sn->addr, 16);
		/* A source port whose reply tuple is free, only held by an expired entry, or held by
		 * this same client connection before (a client reusing its own port: the endpoint
		 * takes its SYN as the kernel would without NAT). */
		__u32 lo = ferry_snat_ports.lo_count, total = lo + ferry_snat_ports.hi_count;
		__u32 start, idx;

		if (total == 0)
			return TC_ACT_SHOT;
		start = bpf_get_prandom_u32() % total;
		for (i = 0; i < SNAT_PORT_TRIES; i++) {
			idx = (start + i) % total;
			sport = bpf_htons(idx < lo ? ferry_snat_ports.lo_min + idx : ferry_snat_ports.hi_min + (idx - lo));
			tuple_key(&rk, be.addr, src, be.port, sport, p->proto, p->family);
			old = bpf_map_lookup_elem(&ferry_ct, &rk);
			if (!old || !ct_live(old, now) || same_client(old, p))
				break;
		}
		if (i == SNAT_PORT_TRIES)
			return TC_ACT_SHOT;
	}

	tuple_key(&fk, p->saddr, p->daddr, p->sport, p->dport, p->proto, p->family);
	tuple_key(&rk, be.addr, src, be.port, sport, p->proto, p->family);
	__builtin_memset(&fv, 0, sizeof(fv));
	__builtin_memcpy(fv.saddr, src, 16);
	__builtin_memcpy(fv.daddr, be.addr, 16);
	fv.sport = sport;
	fv.dport = be.port;
	fv.set_id = svc->set_id;
	fv.last_ns = now;
	fv.state = ct_next(FERRY_CT_NEW, p, FERRY_CT_FORWARD);
	fv.dir = FERRY_CT_FORWARD;
	/* The sets tc reads for external frontends always have members; a ClusterIP's only with
	 * affinity or for UDP (the compiler's socketSetMembers). */
	if (svc->clusterip && !svc->affinity_timeout && p->proto == IPPROTO_TCP)
		fv.flags = FERRY_CTF_NO_MEMBERS;
	if (svc->local)
		fv.flags |= FERRY_CTF_LOCAL;
	__builtin_memset(&rv, 0, sizeof(rv));
	__builtin_memcpy(rv.saddr, p->daddr, 16);
	__builtin_memcpy(rv.daddr, p->saddr, 16);
	rv.sport = p->dport;
	rv.dport = p->sport;
	rv.set_id = svc->set_id;
	rv.last_ns = now;
	rv.state = fv.state;
	rv.dir = FERRY_CT_REPLY;
	rv.flags = svc->local ? FERRY_CTF_LOCAL : 0;
	/* The reply entry first: a reply can only come once the forward packet went out. */
	if (bpf_map_update_elem(&ferry_ct, &rk, &rv, BPF_ANY) < 0 || bpf_map_update_elem(&ferry_ct, &fk, &fv, BPF_ANY) < 0)
		return TC_ACT_SHOT;
	if (!rewrite(skb, p, fv.saddr, fv.daddr, fv.sport, fv.dport))
		return TC_ACT_SHOT;
	return send_on(skb, fv.saddr, fv.daddr, p->family, p->proto);
}

SEC("tc")
int ferry_tc_ingress(struct __sk_buff *skb)
{
	struct pkt p;
	struct ct_key k;
	struct ct_val *v;
	__u64 now;

	__builtin_memset(&p, 0, sizeof(p));
	if (!parse(skb, &p))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	tuple_key(&k, p.saddr, p.daddr, p.sport, p.dport, p.proto, p.family);
	v = bpf_map_lookup_elem(&ferry_ct, &k);
	if (v && ct_live(v, now)) {
		int fresh = v->dir == FERRY_CT_FORWARD && p.proto == IPPROTO_TCP && (p.tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;

		if (v->dir == FERRY_CT_REPLY)
			return ct_forward(skb, &p, v, now);
		/* A new SYN on a closing connection is a new connection (the client reused its port):
		 * it chooses afresh. So does a SYN or a UDP datagram whose endpoint left its set (a new
		 * connection never goes to an endpoint that left; a UDP flow is moved, as kube-proxy's
		 * conntrack flush moves it). The other segments of a TCP connection keep their endpoint,
		 * in its set or not (a terminating pod, a deleted Service): kube-proxy keeps TCP
		 * conntrack entries, and choosing afresh would send them where only a RST answers. */
		if (!(fresh && (v->state == FERRY_CT_CLOSING || v->state == FERRY_CT_TIME_WAIT || v->state == FERRY_CT_FIN_WAIT)) &&
		    ((p.proto == IPPROTO_TCP && !fresh) || (v->flags & FERRY_CTF_NO_MEMBERS) || is_member(v->set_id, v->daddr, v->dport, p.family)))
			return ct_forward(skb, &p, v, now);
	}
	return new_connection(skb, &p, now);
}

/*
 * clsact egress: the replies of an endpoint on a node address (FERRY_CTF_LOCAL), which the node
 * sends itself, translated back to the frontend the client asked for. Every other packet leaves
 * as it is (one hash lookup).
 */
SEC("tc")
int ferry_tc_egress(struct __sk_buff *skb)
{
	struct pkt p;
	struct ct_key k;
	struct ct_val *v;
	__u64 now;

	__builtin_memset(&p, 0, sizeof(p));
	if (!parse(skb, &p))
		return TC_ACT_OK;
	tuple_key(&k, p.saddr, p.daddr, p.sport, p.dport, p.proto, p.family);
	v = bpf_map_lookup_elem(&ferry_ct, &k);
	if (!v || v->dir != FERRY_CT_REPLY || !(v->flags & FERRY_CTF_LOCAL))
		return TC_ACT_OK;
	now = bpf_ktime_get_ns();
	if (!ct_live(v, now))
		return TC_ACT_OK;
	if (!ct_translate(skb, &p, v, now))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
