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
	__u8 pad[3];
};

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

/* Is (addr, port) still in the set? Checked before an affinity or UDP flow entry is reused. */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rev_key);
	__type(value, struct rev_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct backend_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_udpflow SEC(".maps");

#endif
