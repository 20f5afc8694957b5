/**
 * The simulated cluster's address plan and naming rules, as pure functions.
 * Every address here comes from documentation/benchmark ranges (198.18.0.0/15, 203.0.113.0/24,
 * 2001:db8::/32) so nothing the simulator builds can collide with or leak to a real network.
 * Pure: no I/O, no kernel access.
 */
import { randomInt } from 'node:crypto';

/** The host side of the LAN; the simulated API server listens here. */
export const HOST_IP = '198.18.0.1';
export const HOST_IP6 = '2001:db8:0:1::1';
export const LAN_CIDR = '198.18.0.0/24';
export const LAN_CIDR6 = '2001:db8:0:1::/64';
export const CLIENT_IP = '198.18.0.100';
export const CLIENT_IP6 = '2001:db8:0:1::100';
export const CLUSTER_CIDR = '198.19.0.0/16';
export const CLUSTER_CIDR6 = '2001:db8:1::/48';
/** Service CIDRs the caller hands to the API server. */
export const SERVICE_CIDR = '198.18.64.0/18';
export const SERVICE_CIDR6 = '2001:db8:2::/112';
/** External IPs and load-balancer IPs used by tests and the demo. */
export const EXTERNAL_CIDR = '203.0.113.0/24';
export const EXTERNAL_CIDR6 = '2001:db8:3::/64';
/** Link-local gateway every pod uses for IPv6; lives on the node side of each pod's veth. */
export const POD_GATEWAY6 = 'fe80::1';

/** Every name a run creates starts with this, so leftovers of any run can be found. */
export const NAME_ROOT = 'fy';
export const MAX_NODES = 89; // node IPs are 198.18.0.11 .. .99, below the client at .100
export const MAX_PODS_PER_NODE = 253; // 198.19.i.2 .. .254
const IFNAMSIZ = 15;

export function randomPrefix(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let p = NAME_ROOT;
  for (let i = 0; i < 4; i++) p += alphabet[randomInt(alphabet.length)];
  return p;
}

export class InvalidPrefixError extends Error {
  readonly code = 'FERRY_ERR_SIM_PREFIX';
  constructor(readonly prefix: string) {
    super(`invalid simulator prefix ${JSON.stringify(prefix)}: must be "${NAME_ROOT}" followed by 1-4 lowercase letters or digits`);
    this.name = 'InvalidPrefixError';
  }
}

/** Prefixes longer than 6 characters would push per-pod interface names past IFNAMSIZ. */
export function validatePrefix(prefix: string): void {
  if (!/^fy[a-z0-9]{1,4}$/.test(prefix)) throw new InvalidPrefixError(prefix);
}

/** 1-based node index i → names and addresses. */
export function nodeNetns(prefix: string, i: number): string {
  return `${prefix}-n${i}`;
}
export function nodeIP(i: number): string {
  return `198.18.0.${10 + i}`;
}
export function nodeIP6(i: number): string {
  return `2001:db8:0:1::${10 + i}`;
}
export function podCIDR(i: number): string {
  return `198.19.${i}.0/24`;
}
export function podCIDR6(i: number): string {
  return `2001:db8:1:${i.toString(16)}::/64`;
}
/** The pod gateway lives on the node's loopback so the node answers ARP for it on every pod veth. */
export function podGateway(i: number): string {
  return `198.19.${i}.1`;
}

/** Pod slot k (1-based) on node i. */
export function podIP(i: number, k: number): string {
  return `198.19.${i}.${k + 1}`;
}
export function podIP6(i: number, k: number): string {
  return `2001:db8:1:${i.toString(16)}::${(k + 1).toString(16)}`;
}
export function podNetns(prefix: string, i: number, k: number): string {
  return `${prefix}-n${i}p${k}`;
}
/** Node-side end of a pod's veth; carries the prefix so a stray one is still recognisable. */
export function podVeth(prefix: string, i: number, k: number): string {
  const name = `${prefix}i${i}p${k}`;
  if (name.length > IFNAMSIZ) throw new Error(`interface name ${name} is longer than ${IFNAMSIZ} characters`);
  return name;
}

export function lanNetns(prefix: string): string {
  return `${prefix}-lan`;
}
export function clientNetns(prefix: string): string {
  return `${prefix}-client`;
}
/** The host's end of the LAN veth: the only interface the simulator creates in the host namespace. */
export function hostVeth(prefix: string): string {
  return `${prefix}h`;
}

/** "addr:port" → addr; works for IPv6 because the port is always after the last colon. */
export function splitHostPort(s: string): { ip: string; port: number } | undefined {
  const at = s.lastIndexOf(':');
  if (at <= 0) return undefined;
  const port = Number(s.slice(at + 1));
  if (!Number.isInteger(port)) return undefined;
  let ip = s.slice(0, at);
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  return { ip, port };
}
