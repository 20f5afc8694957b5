/**
 * Rule bodies: every kind of rule ferry installs is spelled in exactly one function here, per IP
 * family. The compiler decides which rules go where; this module only knows nft syntax.
 * Pure; must never look at Kubernetes semantics (verdicts, policies): callers pass decisions in.
 */
import type { IPFamily, PlannedEndpoint, Protocol } from '../../plan/types.js';
import { Chains, Maps, Sets } from './names.js';
import type { NftFamily } from './transaction.js';

export interface FamilySyntax {
  readonly family: IPFamily;
  /** Table family for commands: `ip` / `ip6`. */
  readonly nft: NftFamily;
  /** Payload protocol keyword for addresses: `ip saddr` / `ip6 saddr`. */
  readonly ipX: 'ip' | 'ip6';
  readonly addrType: 'ipv4_addr' | 'ipv6_addr';
  /** Loopback destinations never accept NodePorts (no route_localnet). */
  readonly loopback: string;
}

export const V4: FamilySyntax = { family: 4, nft: 'ip', ipX: 'ip', addrType: 'ipv4_addr', loopback: '127.0.0.0/8' };
export const V6: FamilySyntax = { family: 6, nft: 'ip6', ipX: 'ip6', addrType: 'ipv6_addr', loopback: '::1' };

export function familySyntax(f: IPFamily): FamilySyntax {
  return f === 4 ? V4 : V6;
}

export function hexMark(mark: number): string {
  return `0x${mark.toString(16)}`;
}

export function proto(p: Protocol): string {
  return p.toLowerCase();
}

/** `addr . proto . port` — the key of service-ips, no-endpoint-services and firewall-ips. */
export function addrProtoPortKey(addr: string, p: Protocol, port: number): string {
  return `${addr} . ${proto(p)} . ${port}`;
}

/** `proto . port` — the key of service-nodeports and no-endpoint-nodeports. */
export function protoPortKey(p: Protocol, port: number): string {
  return `${proto(p)} . ${port}`;
}

export function hairpinKey(ip: string): string {
  return `${ip} . ${ip}`;
}

function endpointAddr(fs: FamilySyntax, ep: PlannedEndpoint): string {
  return fs.family === 6 ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

// ---- skeleton rules ----

export function jumpIfNew(chain: string): string {
  return `ct state new jump ${chain}`;
}

export function jump(chain: string): string {
  return `jump ${chain}`;
}

export function markForMasquerade(mark: number): string {
  return `meta mark set meta mark | ${hexMark(mark)}`;
}

/** The masquerading chain: only marked packets; the mark bit is cleared before masquerading. */
export function masqueradingRules(mark: number): string[] {
  return [
    `meta mark & ${hexMark(mark)} == 0 return`,
    `meta mark set meta mark ^ ${hexMark(mark)}`,
    'masquerade fully-random',
  ];
}

/**
 * Hairpin: a connection DNAT-ed back to its own source (a pod reaching itself through its
 * Service) must be masqueraded or the reply would bypass conntrack. With map-based endpoint
 * selection there is no per-endpoint chain to check `saddr == endpoint` in, so postrouting looks
 * up `saddr . daddr` in a set holding `ep . ep` for every endpoint IP.
 */
export function hairpinRule(fs: FamilySyntax): string {
  return `ct status dnat ${fs.ipX} saddr . ${fs.ipX} daddr @${Sets.hairpin} jump ${Chains.markForMasquerade}`;
}

export function serviceIPsDispatch(fs: FamilySyntax, map: string = Maps.serviceIPs): string {
  return `${fs.ipX} daddr . meta l4proto . th dport vmap @${map}`;
}

/** NodePort dispatch (nat) — `all`: every local address but loopback; `list`: @nodeport-ips. */
export function nodePortDispatch(fs: FamilySyntax, all: boolean, map: string = Maps.serviceNodePorts): string {
  return all
    ? `fib daddr type local ${fs.ipX} daddr != ${fs.loopback} meta l4proto . th dport vmap @${map}`
    : `${fs.ipX} daddr @${Sets.nodePortIPs} meta l4proto . th dport vmap @${map}`;
}

/** NodePort reject check, in the input hook (where daddr is always local). */
export function nodePortRejectCheck(fs: FamilySyntax, all: boolean): string {
  return all
    ? `${fs.ipX} daddr != ${fs.loopback} meta l4proto . th dport vmap @${Maps.noEndpointNodePorts}`
    : `${fs.ipX} daddr @${Sets.nodePortIPs} meta l4proto . th dport vmap @${Maps.noEndpointNodePorts}`;
}

/** Traffic to a ClusterIP that no service port DNAT-ed (a port that is not a service port). */
export function clusterIPsReject(fs: FamilySyntax): string {
  return `${fs.ipX} daddr @${Sets.clusterIPs} reject`;
}

// ---- per-service rules ----

export function ifNotLocalTraffic(fs: FamilySyntax): string {
  return `${fs.ipX} saddr != @${Sets.localCIDRs}`;
}

export function ifLocalTraffic(fs: FamilySyntax): string {
  return `${fs.ipX} saddr @${Sets.localCIDRs}`;
}

export const IF_FROM_NODE = 'fib saddr type local';

/**
 * DNAT to one endpoint picked at random: a single rule with an anonymous map from
 * `numgen random mod N` to `addr . port` (no per-endpoint chains).
 */
export function dnatRandom(fs: FamilySyntax, p: Protocol, eps: readonly PlannedEndpoint[], prefix: string): string {
  const head = prefix ? `${prefix} ` : '';
  if (eps.length === 1) return `${head}meta l4proto ${proto(p)} dnat to ${endpointAddr(fs, eps[0]!)}`;
  const items: string[] = [];
  for (let i = 0; i < eps.length; i++) items.push(`${i} : ${eps[i]!.ip} . ${eps[i]!.port}`);
  return `${head}meta l4proto ${proto(p)} dnat ${fs.ipX} to numgen random mod ${eps.length} map { ${items.join(', ')} }`;
}

/**
 * Several endpoints in the shared endpoints map: keys base .. base+n-1 (slots.ts). One named
 * map for all services, because every anonymous map costs the kernel a scan of all sets.
 */
export function dnatSlot(fs: FamilySyntax, p: Protocol, n: number, base: number, map: string, prefix: string): string {
  const head = prefix ? `${prefix} ` : '';
  return `${head}meta l4proto ${proto(p)} dnat ${fs.ipX} to numgen random mod ${n} offset ${base} map @${map}`;
}

/** An element of the endpoints map: `ip . port`. */
export function endpointValue(ep: PlannedEndpoint): string {
  return `${ep.ip} . ${ep.port}`;
}

/** Affinity: a client seen recently goes back to the endpoint it used. */
export function affinityCheck(fs: FamilySyntax, affinitySet: string, epChain: string, prefix: string): string {
  return `${prefix ? `${prefix} ` : ''}${fs.ipX} saddr @${affinitySet} goto ${epChain}`;
}

/** Affinity: otherwise pick an endpoint chain at random. */
export function randomEndpointChain(epChains: readonly string[], prefix: string): string {
  const head = prefix ? `${prefix} ` : '';
  if (epChains.length === 1) return `${head}goto ${epChains[0]!}`;
  const items: string[] = [];
  for (let i = 0; i < epChains.length; i++) items.push(`${i} : goto ${epChains[i]!}`);
  return `${head}numgen random mod ${epChains.length} vmap { ${items.join(', ')} }`;
}

export function affinityUpdate(fs: FamilySyntax, affinitySet: string): string {
  return `update @${affinitySet} { ${fs.ipX} saddr }`;
}

export function dnatTo(fs: FamilySyntax, p: Protocol, ep: PlannedEndpoint): string {
  return `meta l4proto ${proto(p)} dnat to ${endpointAddr(fs, ep)}`;
}

/** loadBalancerSourceRanges: drop every source outside the allowed ones. */
export function firewallDrop(fs: FamilySyntax, sources: readonly string[]): string {
  return `${fs.ipX} saddr != { ${sources.join(', ')} } drop`;
}
