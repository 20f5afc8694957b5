/** The daemon phase's probe Service, shared by the harness (daemon.ts) and its API server (daemon-apiserver.ts). */
export const PROBE_IP = '198.18.0.100';
/**
 * Where the probe's endpoint listens: an extra address of the node, outside the service CIDR.
 * (The synthetic cluster's pods and node live inside 198.18.0.0/15, which this server also uses
 * as its service CIDR; ferry, like kube-proxy's nftables mode, drops DNAT-ed traffic to an
 * unallocated service-CIDR address, so the probe's endpoint must not be one.)
 */
export const PROBE_ENDPOINT_IP = '192.0.2.11';
export const PROBE_PORT = 80;
/** loadgen's connection port on the node address. */
export const PROBE_TARGET_PORT = 9000;
