/**
 * Names of everything ferry creates in its nftables tables: the fixed chains, sets and maps, and
 * the per-service chains (`svc-`, `ext-`, `fw-`, `ep-`) and the affinity keys of endpoints.
 *
 * Per-service names are readable and stable across syncs: `svc-<hash8>-<ns>/<name>/<proto>/<port>`.
 * The hash is of the service port key (and, for endpoints, of the endpoint), so
 * similar names stay visually distinct; uniqueness comes from the readable part, which contains
 * the whole key. Pure; must never produce a name longer than the kernel's 255 bytes or with
 * characters nft's scanner does not accept unquoted ([A-Za-z0-9_./-], starting with a letter).
 */
import { createHash } from 'node:crypto';
import type { PlannedEndpoint, Protocol, ServiceEntry } from '../../plan/types.js';

export const FERRY_TABLE = 'ferry';
/** kube-proxy's nftables table; removed by cleanup() so switching modes leaves nothing behind. */
export const KUBE_PROXY_TABLE = 'kube-proxy';

export const Chains = {
  filterPrerouting: 'filter-prerouting',
  filterInput: 'filter-input',
  filterForward: 'filter-forward',
  filterOutput: 'filter-output',
  filterOutputPreDnat: 'filter-output-pre-dnat',
  natPrerouting: 'nat-prerouting',
  natOutput: 'nat-output',
  natPostrouting: 'nat-postrouting',
  services: 'services',
  firewallCheck: 'firewall-check',
  serviceEndpointsCheck: 'service-endpoints-check',
  nodePortEndpointsCheck: 'nodeport-endpoints-check',
  clusterIPsCheck: 'cluster-ips-check',
  reject: 'reject-chain',
  markForMasquerade: 'mark-for-masquerade',
  masquerading: 'masquerading',
  canary: 'ferry-canary',
  servicesByCount: 'services-by-count',
  nodePortsByCount: 'nodeports-by-count',
} as const;

export const Sets = {
  clusterIPs: 'cluster-ips',
  nodePortIPs: 'nodeport-ips',
  localCIDRs: 'local-cidrs',
  hairpin: 'hairpin',
  serviceCIDRs: 'service-cidrs',
  masqAll: 'masq-all',
  masqNonLocal: 'masq-nonlocal',
  masqNodePorts: 'masq-nodeports',
  affinity: 'affinity',
} as const;

export const Maps = {
  serviceIPs: 'service-ips',
  serviceNodePorts: 'service-nodeports',
  noEndpointServices: 'no-endpoint-services',
  noEndpointNodePorts: 'no-endpoint-nodeports',
  firewallIPs: 'firewall-ips',
} as const;

/**
 * Blocks per endpoints map (slots.ts). The kernel validates every element added to a map
 * against every rule bound to that map, and walks all elements when a rule binds to it, so one
 * map for all services is quadratic (10k services x 10 endpoints: 22 s to apply, 4 min to
 * re-apply). Shards of 32 blocks keep both factors small; 10k x 10 applies in about 2 s.
 */
export const BLOCKS_PER_SHARD = 32;

/**
 * The endpoints map holding block `blockId` of a service of protocol `p`: one set of shards per
 * protocol, because nft 1.0.6 can only type the value as `ip daddr . <proto> dport` and refuses
 * a rule of another protocol that uses it (`th dport` and `ct original proto-dst` fail).
 */
export function endpointShard(p: Protocol, blockId: number): string {
  return `endpoints-${p.toLowerCase()}-${Math.floor(blockId / BLOCKS_PER_SHARD)}`;
}

const SHARD_NAME = /^endpoints-(tcp|udp|sctp)-\d+$/;

/** The protocol of an endpoints shard map, or undefined for any other name. */
export function endpointShardProtocol(name: string): Protocol | undefined {
  const m = SHARD_NAME.exec(name);
  return m ? (m[1]!.toUpperCase() as Protocol) : undefined;
}

/**
 * The endpoint-count layout (docs/nftables.md): ClusterIP frontends that forward to 1 ..
 * GROUPED_MAX_ENDPOINTS endpoints, without affinity, have no chain of their own. Their key
 * (`addr . proto . port`) sits in the count set `n-<proto>-<N>` of their endpoint count, and
 * their endpoints in `endpoints-<proto>-n<N>` keyed `addr . proto . port . index`; one rule per
 * count set in use picks `numgen random mod N`. An endpoint change then only moves a key between
 * count sets and changes map elements: no rule, so no table validation walk at commit.
 * Larger sets keep their `svc-` chain (each count in use is one more rule per new connection).
 * The external frontends of Cluster-policy Services are grouped the same way (GroupedKind).
 */
export const GROUPED_MAX_ENDPOINTS = 256;

/**
 * The two kinds of grouped frontend: `addr` — ClusterIPs, and the externalIPs and LB IPs of
 * Cluster-policy Services, keyed `addr . proto . port` (count sets
 * `n-<proto>-<N>`, maps `endpoints-<proto>-n<N>`, dispatched in `services-by-count`); `port` —
 * NodePorts of Cluster-policy Services, keyed `proto . port` (count sets `np-<proto>-<N>`, maps
 * `np-endpoints-<proto>-n<N>`, dispatched in `nodeports-by-count` behind the NodePort address
 * check), so that an endpoint change of a NodePort Service is elements only too.
 */
export type GroupedKind = 'addr' | 'port';

/** The count set of the grouped frontends of `kind` and protocol `p` with `n` endpoints. */
export function countSetName(p: Protocol, n: number, kind: GroupedKind = 'addr'): string {
  return `${kind === 'addr' ? 'n' : 'np'}-${p.toLowerCase()}-${n}`;
}

const COUNT_SET = /^(n|np)-(tcp|udp|sctp)-(\d+)$/;

/** The kind, protocol and endpoint count of a count set, or undefined for any other name. */
export function countSetOf(name: string): { kind: GroupedKind; proto: Protocol; n: number } | undefined {
  const m = COUNT_SET.exec(name);
  return m ? { kind: m[1] === 'n' ? 'addr' : 'port', proto: m[2]!.toUpperCase() as Protocol, n: Number(m[3]) } : undefined;
}

/**
 * The endpoints map of the grouped frontends of `kind` and protocol `p` with `n` endpoints: one per
 * count set (and per protocol: nft types its value by protocol). A rule binding a map makes the
 * kernel walk all of the map's elements, so with one map per protocol every count rule written —
 * each time a count came into use or went out of use, the whole `services-by-count` chain — walked
 * every grouped endpoint again (10k Services with 20 counts in use: ~0.2 s a commit). Per count,
 * a rule binds only the endpoints of its own count.
 */
export function groupedMapName(p: Protocol, n: number, kind: GroupedKind = 'addr'): string {
  return `${kind === 'addr' ? '' : 'np-'}endpoints-${p.toLowerCase()}-n${n}`;
}

const GROUPED_MAP = /^(np-)?endpoints-(tcp|udp|sctp)-n(\d+)$/;

/** The kind, protocol and endpoint count of a grouped endpoints map, or undefined for any other name. */
export function groupedMapOf(name: string): { kind: GroupedKind; proto: Protocol; n: number } | undefined {
  const m = GROUPED_MAP.exec(name);
  return m ? { kind: m[1] === undefined ? 'addr' : 'port', proto: m[2]!.toUpperCase() as Protocol, n: Number(m[3]) } : undefined;
}

const LEGACY_GROUPED_MAP = /^endpoints-(tcp|udp|sctp)$/;

/**
 * The kind and protocol of a grouped endpoints map — one of a count, or the one map per protocol
 * of an earlier ferry (kind `addr`), which holds the same keys and values (the encoder and the
 * map's spec read it) — or undefined for any other name.
 */
export function groupedMapKind(name: string): { kind: GroupedKind; proto: Protocol } | undefined {
  const g = groupedMapOf(name);
  if (g !== undefined) return g;
  const m = LEGACY_GROUPED_MAP.exec(name);
  return m ? { kind: 'addr', proto: m[1]!.toUpperCase() as Protocol } : undefined;
}

/** The protocol of a grouped endpoints map (groupedMapKind), or undefined for any other name. */
export function groupedMapProtocol(name: string): Protocol | undefined {
  return groupedMapKind(name)?.proto;
}

/**
 * The claim index's container of grouped frontends (never a kernel object): key `addr . proto .
 * port` (a ClusterIP, or an externalIP / LB IP of a Cluster-policy Service: variant `ext`), value
 * rules.ts's groupedClaim(). The compiler expands the winning claim, with the winner's endpoints,
 * into the count set, masquerade set and endpoints map elements.
 */
export const GROUPED_FRONTENDS = '<grouped-frontends>';

/**
 * The claim index's container of grouped NodePorts (never a kernel object): key `proto . port`,
 * value groupedClaim('all', n) — Cluster policy, so always masqueraded. The compiler expands the
 * winner, with its `external` endpoints, into `masq-nodeports`, the `np-` count set and map.
 */
export const GROUPED_NODEPORTS = '<grouped-nodeports>';

export const SERVICE_CHAIN_PREFIXES = ['svc-', 'ext-', 'fw-', 'ep-'] as const;

/** FNV-1a (32 bit) as 8 hex digits: cheap, stable, only for telling names apart by eye. */
export function hash8(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

// Kubernetes names are [a-z0-9-.]; anything else (never expected) becomes '_' so the name
// stays a valid unquoted nft identifier.
function safe(s: string): string {
  return /^[A-Za-z0-9_.\-]*$/.test(s) ? s : s.replace(/[^A-Za-z0-9_.\-]/g, '_');
}

function readable(svc: ServiceEntry): string {
  return `${safe(svc.namespace)}/${safe(svc.name)}/${svc.protocol.toLowerCase()}/${safe(svc.portName)}`;
}

/** The per-service chain names. Computed once per ServiceEntry. */
export interface ServiceNames {
  /** Internal (ClusterIP) traffic. */
  readonly svc: string;
  /** External traffic: NodePort, externalIPs, LB IPs. */
  readonly ext: string;
  /** loadBalancerSourceRanges filter. */
  readonly fw: string;
}

const nameCache = new WeakMap<ServiceEntry, ServiceNames>();

export function serviceNames(svc: ServiceEntry): ServiceNames {
  let n = nameCache.get(svc);
  if (!n) {
    const base = `${hash8(svc.key)}-${readable(svc)}`;
    n = { svc: `svc-${base}`, ext: `ext-${base}`, fw: `fw-${base}` };
    nameCache.set(svc, n);
  }
  return n;
}

/**
 * The endpoint chain (`ep-...`) of a service port with ClientIP affinity. The name does not
 * depend on the affinity timeout: the timeout is a parameter of the chain's `update` rule (a
 * changed timeout rewrites that rule), not of a set that would have to be recreated.
 */
export function endpointSuffix(svc: ServiceEntry, ep: PlannedEndpoint): string {
  const ip = ep.ip.includes(':') ? ep.ip.replace(/:/g, '.') : ep.ip;
  const h = hash8(`${svc.key}|${ep.ip}|${ep.port}`);
  return `${h}-${readable(svc)}__${ip}/${ep.port}`;
}

export function endpointChainName(suffix: string): string {
  return `ep-${suffix}`;
}

/**
 * The identity of (service port, endpoint) in the shared `affinity` set: two 32-bit words of
 * SHA-256 of the service port key and the endpoint. Deterministic, so a restarted ferry finds
 * the clients the previous one recorded; 64 bits, so two pairs of a cluster practically never
 * share one. Even if two did, a lookup only ever leads to the endpoint chain of the rule that
 * made it, an endpoint the service port has now: a collision could bend stickiness, never
 * send a client to a removed endpoint or to another Service.
 */
export function affinityId(svc: ServiceEntry, ep: PlannedEndpoint): readonly [number, number] {
  const d = createHash('sha256').update(`${svc.key}|${ep.ip}|${ep.port}`).digest();
  return [d.readUInt32BE(0), d.readUInt32BE(4)];
}

/** A set of an earlier ferry's layout (one `aff-…` set per endpoint), deleted on a full sync. */
export function isLegacyAffinitySet(name: string): boolean {
  return name.startsWith('aff-');
}

export function isServiceChain(name: string): boolean {
  return SERVICE_CHAIN_PREFIXES.some((p) => name.startsWith(p)) && name.includes('/');
}
