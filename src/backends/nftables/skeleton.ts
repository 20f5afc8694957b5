/**
 * The table-level part of ferry's ruleset, per family: base chains and their priorities, the
 * fixed helper chains and their rules, the dispatch maps and sets, and the elements that come
 * from table-level IR fields (local-traffic CIDRs, NodePort addresses). Per-service content
 * lives in service.ts. Pure; must never depend on any single service.
 *
 * Hook placement, as kube-proxy's nftables mode since 1.34 (see docs/nftables.md):
 *  - nat prerouting/output (-100): `services` dispatches by daddr.proto.dport (O(1) verdict maps).
 *  - filter prerouting/output-pre-dnat (-110, before DNAT): loadBalancerSourceRanges
 *    (`firewall-check`).
 *  - filter input/forward/output (0, after DNAT): `reject` for services without endpoints (reject
 *    is only valid in input/forward/output hooks on kernels before 5.9), and traffic to a
 *    ClusterIP that no service port DNAT-ed. After DNAT, so a frontend some other Service serves
 *    (a duplicated externalIP) is reached by the node too, and at kube-proxy's priority, which
 *    the components that order their own chains around it rely on.
 *  - nat postrouting (100): hairpin and masquerade-marked traffic.
 */
import ipaddr from 'ipaddr.js';
import type { ProxyTable } from '../../plan/types.js';
import { Chains, countSetOf, endpointShardProtocol, groupedMapKind, groupedMapName, Maps, Sets } from './names.js';
import * as R from './rules.js';
import type { FamilySyntax, Rule } from './rules.js';
import type { Chain, NamedMap, NamedSet } from './transaction.js';

export interface ChainWithRules {
  readonly chain: Chain;
  readonly rules: readonly Rule[];
}

export interface Skeleton {
  /** Base chains (attached to hooks), with their rules. */
  readonly baseChains: readonly ChainWithRules[];
  /** Fixed regular chains, with their rules. */
  readonly chains: readonly ChainWithRules[];
  readonly sets: readonly NamedSet[];
  readonly maps: readonly NamedMap[];
  /** Elements of the table-level sets (local-cidrs, nodeport-ips), by set name. */
  readonly tableElements: ReadonlyMap<string, readonly string[]>;
}

/** The canary chain's one rule, as nft lists it (never executed: nothing jumps to the chain). */
export const CANARY_RULE = R.RETURN.text;

export const PRIORITY = {
  dstnat: -100,
  srcnat: 100,
  filter: 0,
} as const;

/** The sets and maps whose content is per service (flushed and refilled on full sync). */
export function serviceContainers(fs: FamilySyntax): { sets: NamedSet[]; maps: NamedMap[] } {
  const a = fs.addrType;
  return {
    sets: [
      { name: Sets.clusterIPs, type: a, comment: 'active ClusterIPs' },
      { name: Sets.hairpin, type: `${a} . ${a}`, comment: 'endpoint . endpoint: connections DNAT-ed to their own source' },
      { name: Sets.masqAll, type: `${a} . inet_proto . inet_service`, comment: 'grouped ClusterIP frontends: masquerade all' },
      { name: Sets.masqNonLocal, type: `${a} . inet_proto . inet_service`, comment: 'grouped ClusterIP frontends: masquerade non-local sources' },
      { name: Sets.masqNodePorts, type: 'inet_proto . inet_service', comment: 'grouped NodePorts: masquerade all' },
    ],
    maps: [
      { name: Maps.serviceIPs, type: `${a} . inet_proto . inet_service : verdict`, comment: 'ClusterIP, externalIP and LoadBalancer IP dispatch' },
      { name: Maps.serviceNodePorts, type: 'inet_proto . inet_service : verdict', comment: 'NodePort dispatch' },
      { name: Maps.noEndpointServices, type: `${a} . inet_proto . inet_service : verdict`, comment: 'reject: service IPs without endpoints' },
      { name: Maps.noEndpointNodePorts, type: 'inet_proto . inet_service : verdict', comment: 'reject: NodePorts without endpoints' },
      { name: Maps.firewallIPs, type: `${a} . inet_proto . inet_service : verdict`, comment: 'LoadBalancer IPs with loadBalancerSourceRanges' },
    ],
  };
}

/**
 * An endpoints shard map (names.ts), keyed by numgen's result: each multi-endpoint dispatch owns
 * a block of keys in one (slots.ts). Created when first used, deleted when emptied.
 */
export function endpointShardSpec(fs: FamilySyntax, name: string): NamedMap {
  const p = endpointShardProtocol(name);
  if (p === undefined) throw new Error(`not an endpoints shard map: ${name}`);
  return {
    name,
    type: `numgen random mod 2 : ${fs.ipX} daddr . ${p.toLowerCase()} dport`,
    typeof: true,
    comment: `${p} endpoints of services with several: block offset + index -> endpoint`,
  };
}

/**
 * An endpoints map: a shard (slots.ts) or the grouped map of a kind, protocol and count
 * (names.ts), the latter with room for `size` elements when given (groupedSetSize).
 */
export function endpointMapSpec(fs: FamilySyntax, name: string, size?: number): NamedMap {
  const g = groupedMapKind(name);
  if (g === undefined) return endpointShardSpec(fs, name);
  const key = g.kind === 'addr' ? `${fs.ipX} daddr . meta l4proto . th dport` : 'meta l4proto . th dport';
  return {
    name,
    type: `${key} . numgen random mod 2 : ${fs.ipX} daddr . ${g.proto.toLowerCase()} dport`,
    typeof: true,
    ...(size !== undefined ? { size } : {}),
    comment: `${g.proto} endpoints of grouped ${g.kind === 'addr' ? 'ClusterIP frontends' : 'NodePorts'}: key . index -> endpoint`,
  };
}

/** The fewest elements a sized set or map is made for (small clusters, counts barely in use). */
export const GROUPED_SET_MIN_SIZE = 1024;

/**
 * The size a grouped endpoints map, count set or service set (compiler.ts SIZED_SETS) is created
 * with when it must hold `elements`:
 * half again as many, in steps of 1,024, at least GROUPED_SET_MIN_SIZE. Without a size the
 * kernel's hash grows while a full sync inserts, which at 44k × 10 was most of the batch's kernel
 * time; the headroom lets the set grow by half through partial syncs before it must be made
 * again (a full sync).
 */
export function groupedSetSize(elements: number): number {
  return Math.max(GROUPED_SET_MIN_SIZE, Math.ceil((elements * 1.5) / 1024) * 1024);
}

/**
 * A count set (names.ts): the frontend keys of one kind and protocol with one endpoint count,
 * with room for `size` of them when given (groupedSetSize).
 */
export function countSetSpec(fs: FamilySyntax, name: string, size?: number): NamedSet {
  const c = countSetOf(name);
  if (c === undefined) throw new Error(`not a count set: ${name}`);
  return { name, type: c.kind === 'addr' ? `${fs.addrType} . inet_proto . inet_service` : 'inet_proto . inet_service', ...(size !== undefined ? { size } : {}) };
}

/**
 * The endpoint-count chain's rules: the masquerade variants first (a frontend key in their set
 * is marked), then one DNAT rule per count set of ClusterIP frontends in use (of `countSets`, in
 * order; the NodePort ones are nodePortsByCountRules').
 */
export function servicesByCountRules(fs: FamilySyntax, table: ProxyTable, countSets: readonly string[]): Rule[] {
  const rules: Rule[] = [R.frontendJump(fs, Sets.masqAll, '', Chains.markForMasquerade)];
  if (table.localTraffic.kind !== 'none') rules.push(R.frontendJump(fs, Sets.masqNonLocal, 'notLocalSrc', Chains.markForMasquerade));
  for (const name of countSets) {
    const c = countSetOf(name)!;
    if (c.kind === 'addr') rules.push(R.dnatCount(fs, c.proto, c.n, name, groupedMapName(c.proto, c.n)));
  }
  return rules;
}

/**
 * The grouped NodePorts' chain (behind the NodePort address check): every one is masqueraded
 * (Cluster policy), then one DNAT rule per NodePort count set in use (of `countSets`, in order).
 */
export function nodePortsByCountRules(fs: FamilySyntax, countSets: readonly string[]): Rule[] {
  const rules: Rule[] = [R.frontendJump(fs, Sets.masqNodePorts, '', Chains.markForMasquerade, true)];
  for (const name of countSets) {
    const c = countSetOf(name)!;
    if (c.kind === 'port') rules.push(R.dnatCount(fs, c.proto, c.n, name, groupedMapName(c.proto, c.n, 'port'), true));
  }
  return rules;
}

/** The rules of a chain that holds count rules (`chain`), for the count sets in use. */
export function countChainRules(fs: FamilySyntax, table: ProxyTable, chain: string, countSets: readonly string[]): Rule[] {
  if (chain === Chains.servicesByCount) return servicesByCountRules(fs, table, countSets);
  if (chain === Chains.nodePortsByCount) return nodePortsByCountRules(fs, countSets);
  throw new Error(`not a chain of count rules: ${chain}`);
}

/**
 * How many client . endpoint records the shared affinity set holds per family. kube-proxy's
 * per-endpoint sets get nft's default of 65,535 each; one shared set needs a table-wide limit.
 * When it is full, a new client's `update` fails, which ends only that rule: the endpoint
 * chain's DNAT still runs, so the connection works, without stickiness until records expire.
 */
export const AFFINITY_SET_SIZE = 1 << 20;

/**
 * The one affinity set of a family table (ClientIP affinity; names.ts affinityId): keyed
 * `client . id0 . id1`, elements added by the endpoint chains' `update` with the service
 * port's timeout. Added on every full sync, never flushed, so stickiness survives resyncs and
 * restarts. The typeof names the key's expressions (rules.ts affinityKeyText).
 */
export function affinitySetSpec(fs: FamilySyntax): NamedSet {
  return {
    name: Sets.affinity,
    type: `${fs.ipX} saddr . numgen random mod 1 . numgen random mod 1`,
    typeof: true,
    size: AFFINITY_SET_SIZE,
    flags: ['dynamic', 'timeout'],
    comment: 'ClientIP affinity: client . (service port, endpoint) id, timeout per element',
  };
}

/** Table-level sets (content from table fields, rewritten whenever the table changes). */
export function tableSets(fs: FamilySyntax): NamedSet[] {
  return [
    { name: Sets.localCIDRs, type: fs.addrType, flags: ['interval'], comment: 'local pod traffic (cluster CIDRs)' },
    { name: Sets.nodePortIPs, type: fs.addrType, comment: 'addresses that accept NodePorts' },
    { name: Sets.serviceCIDRs, type: fs.addrType, flags: ['interval'], comment: 'service CIDRs (ServiceCIDR objects): unallocated addresses in them are dropped' },
  ];
}

/**
 * CIDRs as canonical network addresses, without any CIDR contained in another (interval sets
 * reject overlaps), sorted. Invalid or other-family entries are dropped.
 */
export function normalizeCIDRs(family: 4 | 6, cidrs: readonly string[]): string[] {
  const parsed: { net: ipaddr.IPv4 | ipaddr.IPv6; bits: number; text: string }[] = [];
  for (const c of cidrs) {
    const withLen = c.includes('/') ? c : `${c}/${family === 4 ? 32 : 128}`;
    if (!ipaddr.isValidCIDR(withLen)) continue;
    const [addr, bits] = ipaddr.parseCIDR(withLen);
    if ((addr.kind() === 'ipv4') !== (family === 4)) continue;
    const net = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(withLen) : ipaddr.IPv6.networkAddressFromCIDR(withLen);
    parsed.push({ net, bits, text: `${net.toString()}/${bits}` });
  }
  parsed.sort((x, y) => x.bits - y.bits);
  const kept: typeof parsed = [];
  for (const p of parsed) {
    if (kept.some((k) => p.net.match(k.net, k.bits))) continue;
    kept.push(p);
  }
  return kept.map((k) => k.text).sort();
}

function nodePortAddressElements(table: ProxyTable): string[] {
  if (table.nodePortAddresses.kind !== 'list') return [];
  const out = new Set<string>();
  for (const a of table.nodePortAddresses.addresses) {
    if (!ipaddr.isValid(a)) continue;
    const addr = ipaddr.parse(a);
    // Loopback NodePorts would need route_localnet, which ferry never enables.
    if (addr.range() === 'loopback') continue;
    out.add(addr.toString());
  }
  return [...out].sort();
}

export function buildSkeleton(fs: FamilySyntax, table: ProxyTable, mark: number): Skeleton {
  const all = table.nodePortAddresses.kind === 'all';
  const bc = (name: string, type: 'filter' | 'nat', hook: 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting', priority: number, rules: Rule[]): ChainWithRules => ({
    chain: { name, base: { type, hook, priority } },
    rules,
  });
  const baseChains: ChainWithRules[] = [
    bc(Chains.filterPrerouting, 'filter', 'prerouting', PRIORITY.dstnat - 10, [R.jumpIfNew(Chains.firewallCheck)]),
    bc(Chains.filterInput, 'filter', 'input', PRIORITY.filter, [R.jumpIfNew(Chains.nodePortEndpointsCheck), R.jumpIfNew(Chains.serviceEndpointsCheck)]),
    bc(Chains.filterForward, 'filter', 'forward', PRIORITY.filter, [R.jumpIfNew(Chains.serviceEndpointsCheck), R.jumpIfNew(Chains.clusterIPsCheck)]),
    bc(Chains.filterOutputPreDnat, 'filter', 'output', PRIORITY.dstnat - 10, [R.jumpIfNew(Chains.firewallCheck)]),
    bc(Chains.filterOutput, 'filter', 'output', PRIORITY.filter, [R.jumpIfNew(Chains.serviceEndpointsCheck), R.jumpIfNew(Chains.clusterIPsCheck)]),
    bc(Chains.natPrerouting, 'nat', 'prerouting', PRIORITY.dstnat, [R.jump(Chains.services)]),
    bc(Chains.natOutput, 'nat', 'output', PRIORITY.dstnat, [R.jump(Chains.services)]),
    bc(Chains.natPostrouting, 'nat', 'postrouting', PRIORITY.srcnat, [R.hairpinRule(fs), R.jump(Chains.masquerading)]),
  ];
  const c = (name: string, rules: Rule[], comment?: string): ChainWithRules => ({
    chain: comment === undefined ? { name } : { name, comment },
    rules,
  });
  const chains: ChainWithRules[] = [
    // Never jumped to. intact() lists it: a missing chain or rule means someone flushed or
    // deleted ferry's table, and the next sync must be full.
    c(Chains.canary, [R.RETURN], 'ferry canary: if this chain or its rule is missing, ferry resyncs everything'),
    c(Chains.reject, [R.REJECT]),
    c(Chains.markForMasquerade, [R.markForMasquerade(mark)]),
    c(Chains.masquerading, R.masqueradingRules(mark)),
    c(Chains.firewallCheck, [R.serviceIPsDispatch(fs, 'firewall-ips')]),
    c(Chains.serviceEndpointsCheck, [R.serviceIPsDispatch(fs, 'no-endpoint-services')]),
    c(Chains.nodePortEndpointsCheck, [R.nodePortRejectCheck(fs, all)]),
    c(Chains.clusterIPsCheck, [R.clusterIPsReject(fs), R.serviceCIDRsDrop(fs)]),
    c(Chains.services, [R.jump(Chains.servicesByCount), R.serviceIPsDispatch(fs), R.nodePortDispatch(fs, all), R.nodePortGroupsJump(fs, all, Chains.nodePortsByCount)]),
    // Count rules are appended by the compiler (they follow the count sets in use).
    c(Chains.servicesByCount, servicesByCountRules(fs, table, [])),
    c(Chains.nodePortsByCount, nodePortsByCountRules(fs, [])),
  ];
  const containers = serviceContainers(fs);
  const tableElements = new Map<string, readonly string[]>([
    [Sets.localCIDRs, table.localTraffic.kind === 'clusterCIDR' ? normalizeCIDRs(fs.family, table.localTraffic.cidrs) : []],
    [Sets.nodePortIPs, nodePortAddressElements(table)],
    [Sets.serviceCIDRs, normalizeCIDRs(fs.family, table.serviceCIDRs ?? [])],
  ]);
  return { baseChains, chains, sets: [...tableSets(fs), ...containers.sets], maps: containers.maps, tableElements };
}
