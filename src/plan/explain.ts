/**
 * `ferry trace`'s explanation: what this node does with one packet (source, destination
 * address:port/protocol, traffic class), read from the planner's IR. Which Service port matched
 * (or why none did), which policy applied, the candidate endpoints, masquerade and the verdict.
 * Shared by every mode; what differs between modes is passed in as ModeFacts (from each
 * backend's trace module) and the objects on the path are added by those modules.
 *
 * Pure: no I/O, no clocks. It reads the IR's decisions and never re-derives Kubernetes
 * semantics (which endpoints a path may use, reject vs drop, masquerade policy): a fact the IR
 * lacks belongs in the planner.
 */
import { inAnyCIDR, isLoopback, parseIP } from '../model/addr.js';
import type { EndpointSet, IPFamily, PlannedEndpoint, Protocol, ProxyTable, ProxyTables, ServiceEntry, ServicePortKey } from './types.js';

/**
 * Where the packet comes from, as this node sees it:
 * - pod:       a pod (the local-traffic detector decides whether the node treats it as local);
 * - node:      the node itself, from one of its addresses;
 * - external:  anything else, arriving from the network;
 * - localhost: the node itself, from a loopback address.
 */
export type TrafficClass = 'pod' | 'node' | 'external' | 'localhost';
export const TRAFFIC_CLASSES: readonly TrafficClass[] = ['pod', 'node', 'external', 'localhost'];

export const TRACE_PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

export interface TraceQuery {
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly protocol: Protocol;
  /** Absent: derived from the source address and the IR's local-traffic detector. */
  readonly from?: TrafficClass;
}

/** What the explanation needs of the host beyond the IR: its interface addresses. */
export interface HostFacts {
  readonly localAddresses: readonly string[];
}

/** How the active mode differs where the IR leaves a choice to the backend (see each backend's trace.ts). */
export interface ModeFacts {
  readonly mode: string;
  /** NodePorts are served on 127.0.0.1 (IPv4 only). */
  readonly localhostNodePorts: boolean;
  /** Traffic to a ClusterIP on a port no Service uses is rejected (else: untouched). */
  readonly rejectsUnknownClusterIPPorts: boolean;
  /** Traffic to an address in a service CIDR that no Service holds is dropped (else: untouched). */
  readonly dropsUnallocatedServiceIPs: boolean;
  /** The data path re-originates every connection from the node (userspace): the source is always the node's. */
  readonly reoriginates: boolean;
  /**
   * Socket-level load balancing (ebpf): a local client's connect() goes straight to the endpoint,
   * so nothing is NATed or masqueraded. Traffic from the network is translated with NAT and the
   * IR's masquerade, as in the kernel NAT modes.
   */
  readonly socketLB?: boolean;
}

export type Frontend = 'clusterIP' | 'nodePort' | 'externalIP' | 'loadBalancerIP';
export type VerdictKind = 'dnat' | 'reject' | 'drop' | 'untouched';
/** Which of the IR's endpoint sets the path uses. */
export type SetRole = 'internal' | 'external' | 'cluster';

export interface TraceMatch {
  readonly service: ServicePortKey;
  readonly namespace: string;
  readonly name: string;
  readonly portName: string;
  readonly frontend: Frontend;
  /** The frontend address and port that matched (for a NodePort: the node address). */
  readonly address: string;
  readonly port: number;
}

export interface TraceEndpoint {
  readonly ip: string;
  readonly port: number;
  readonly local: boolean;
  readonly ready: boolean;
}

/**
 * yes: every connection is masqueraded; no: none is; hairpin: only a connection DNAT-ed back to
 * its own source (the source is one of several candidates).
 */
export type MasqueradeValue = 'yes' | 'no' | 'hairpin';

export interface Explanation {
  readonly node: string;
  readonly mode: string;
  readonly family: IPFamily;
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly protocol: Protocol;
  readonly traffic: {
    readonly class: TrafficClass;
    /** True when --from was not given and the class was derived from the source address. */
    readonly derived: boolean;
    /** Whether the local-traffic detector treats the packet as local pod traffic. */
    readonly detectorMatches: boolean;
    readonly reason: string;
  };
  readonly match: TraceMatch | null;
  /** Why no Service port matched (match null), or why the one that did turns it away. */
  readonly why: string;
  /** The policy decisions on this path, one line each. */
  readonly policy: readonly string[];
  /** The endpoint set the path uses; null when no Service port matched or the source ranges refused it. */
  readonly endpointSet: SetRole | null;
  /** An LB IP's loadBalancerSourceRanges turned the source away (before any endpoint set). */
  readonly blockedBySourceRanges: boolean;
  readonly endpoints: readonly TraceEndpoint[];
  readonly affinitySeconds: number;
  readonly masquerade: { readonly value: MasqueradeValue; readonly reason: string };
  readonly verdict: { readonly kind: VerdictKind; readonly reason: string };
}

/** Bad trace input (address, port, protocol, class); the message is one line for the user. */
export class TraceInputError extends Error {
  readonly code = 'FERRY_ERR_TRACE_INPUT';
  constructor(message: string) {
    super(message);
    this.name = 'TraceInputError';
  }
}

/** Checks and normalizes a query; throws TraceInputError with one clear line. */
export function validateQuery(q: { src: unknown; dst: unknown; port: unknown; protocol: unknown; from?: unknown }): TraceQuery {
  const src = parseIP(q.src);
  if (!src) throw new TraceInputError(`source ${JSON.stringify(q.src)} is not an IP address`);
  const dst = parseIP(q.dst);
  if (!dst) throw new TraceInputError(`destination ${JSON.stringify(q.dst)} is not an IP address`);
  if (src.family !== dst.family) throw new TraceInputError(`source ${src.ip} and destination ${dst.ip} are of different IP families`);
  const portText = typeof q.port === 'number' ? String(q.port) : q.port;
  if (typeof portText !== 'string' || !/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new TraceInputError(`port ${JSON.stringify(q.port)} is out of range (1-65535)`);
  }
  const proto = typeof q.protocol === 'string' ? q.protocol.toUpperCase() : q.protocol;
  if (!TRACE_PROTOCOLS.includes(proto as Protocol)) throw new TraceInputError(`protocol ${JSON.stringify(q.protocol)} is not one of tcp, udp, sctp`);
  let from: TrafficClass | undefined;
  if (q.from !== undefined && q.from !== '') {
    if (!TRAFFIC_CLASSES.includes(q.from as TrafficClass)) throw new TraceInputError(`--from ${JSON.stringify(q.from)} is not one of ${TRAFFIC_CLASSES.join(', ')}`);
    from = q.from as TrafficClass;
  }
  const out = { src: src.ip, dst: dst.ip, port: Number(portText), protocol: proto as Protocol };
  return from === undefined ? out : { ...out, from };
}

function sameIP(a: string, b: string): boolean {
  return a === b || parseIP(a)?.ip === parseIP(b)?.ip;
}

function isLocalAddress(ip: string, table: ProxyTable, host: HostFacts): boolean {
  return table.nodeIPs.some((a) => sameIP(a, ip)) || host.localAddresses.some((a) => sameIP(a, ip));
}

function detectorText(table: ProxyTable): string {
  const d = table.localTraffic;
  switch (d.kind) {
    case 'clusterCIDR':
      return `source in ${d.cidrs.join(', ')}`;
    case 'bridgeInterface':
      return `arrives on interface ${d.name}`;
    case 'interfaceNamePrefix':
      return `arrives on an interface named ${d.prefix}*`;
    case 'none':
      return 'no local-traffic detector';
  }
}

function classify(q: TraceQuery, table: ProxyTable, host: HostFacts): Explanation['traffic'] {
  const d = table.localTraffic;
  const cidrMatch = d.kind === 'clusterCIDR' && inAnyCIDR(q.src, d.cidrs);
  if (q.from !== undefined) {
    // An interface detector sees the interface, not the address: a pod's packet matches it.
    const detectorMatches = q.from === 'pod' && (cidrMatch || d.kind === 'bridgeInterface' || d.kind === 'interfaceNamePrefix');
    const note = q.from === 'pod' && !detectorMatches ? ` (the local-traffic detector does not match: ${detectorText(table)})` : '';
    return { class: q.from, derived: false, detectorMatches, reason: `given with --from${note}` };
  }
  if (isLoopback(q.src)) return { class: 'localhost', derived: true, detectorMatches: false, reason: `${q.src} is a loopback address` };
  if (isLocalAddress(q.src, table, host)) return { class: 'node', derived: true, detectorMatches: false, reason: `${q.src} is an address of node ${table.nodeName}` };
  if (cidrMatch) return { class: 'pod', derived: true, detectorMatches: true, reason: `local-traffic detector: ${detectorText(table)}` };
  const hint = d.kind === 'bridgeInterface' || d.kind === 'interfaceNamePrefix' ? ` (the detector matches by interface, ${detectorText(table)}: pass --from pod for a pod)` : '';
  return { class: 'external', derived: true, detectorMatches: false, reason: `neither a node address nor matched by the local-traffic detector${hint}` };
}

/** Addresses NodePorts are accepted on, for this destination. */
function acceptsNodePort(dst: string, table: ProxyTable, host: HostFacts, mode: ModeFacts): { ok: boolean; why: string } {
  const list = table.nodePortAddresses;
  if (isLoopback(dst)) {
    const ok = mode.localhostNodePorts && table.family === 4 && (list.kind === 'all' || list.addresses.some((a) => isLoopback(a)));
    return { ok, why: ok ? `${mode.mode} mode serves NodePorts on localhost` : `${mode.mode} mode does not serve NodePorts on loopback addresses` };
  }
  if (list.kind === 'list') {
    const ok = list.addresses.some((a) => sameIP(a, dst));
    return { ok, why: ok ? `${dst} is in --nodeport-addresses` : `${dst} is not one of the NodePort addresses (${list.addresses.join(', ') || 'none'})` };
  }
  const ok = isLocalAddress(dst, table, host);
  return { ok, why: ok ? `${dst} is an address of node ${table.nodeName}` : `${dst} is not an address of node ${table.nodeName}` };
}

interface Found {
  readonly svc: ServiceEntry;
  readonly frontend: Frontend;
}

function findFrontend(q: TraceQuery, table: ProxyTable, host: HostFacts, mode: ModeFacts): { found?: Found; why: string } {
  let clusterIPOtherPort: ServiceEntry | undefined;
  let nodePortRefusal: string | undefined;
  for (const svc of table.services.values()) {
    const ipMatch = sameIP(svc.clusterIP, q.dst);
    if (ipMatch && svc.protocol === q.protocol && svc.port === q.port) return { found: { svc, frontend: 'clusterIP' }, why: `${q.dst} is the ClusterIP of ${svc.key}` };
    if (ipMatch) clusterIPOtherPort ??= svc;
  }
  for (const svc of table.services.values()) {
    if (svc.protocol !== q.protocol || svc.port !== q.port) continue;
    if (svc.externalIPs.some((a) => sameIP(a, q.dst))) return { found: { svc, frontend: 'externalIP' }, why: `${q.dst} is an externalIP of ${svc.key}` };
    if (svc.loadBalancerIPs.some((a) => sameIP(a, q.dst))) return { found: { svc, frontend: 'loadBalancerIP' }, why: `${q.dst} is a LoadBalancer ingress IP of ${svc.key}` };
  }
  for (const svc of table.services.values()) {
    if (svc.nodePort !== q.port || svc.protocol !== q.protocol) continue;
    const a = acceptsNodePort(q.dst, table, host, mode);
    if (a.ok) return { found: { svc, frontend: 'nodePort' }, why: `NodePort ${q.port} of ${svc.key}; ${a.why}` };
    nodePortRefusal ??= `port ${q.port} is the NodePort of ${svc.key}, but ${a.why}`;
  }
  if (clusterIPOtherPort) {
    return { why: `${q.dst} is the ClusterIP of ${clusterIPOtherPort.namespace}/${clusterIPOtherPort.name}, which has no ${q.protocol} port ${q.port}` };
  }
  if (nodePortRefusal) return { why: nodePortRefusal };
  if (table.serviceCIDRs && inAnyCIDR(q.dst, table.serviceCIDRs)) return { why: `${q.dst} is in the service CIDRs (${table.serviceCIDRs.join(', ')}) but no Service holds it` };
  return { why: `no Service of node ${table.nodeName} has the frontend ${q.dst} ${q.protocol}/${q.port}` };
}

function noMatchVerdict(q: TraceQuery, table: ProxyTable, mode: ModeFacts, why: string): Explanation['verdict'] {
  const isClusterIP = [...table.services.values()].some((s) => sameIP(s.clusterIP, q.dst));
  if (isClusterIP) {
    return mode.rejectsUnknownClusterIPPorts
      ? { kind: 'reject', reason: `${mode.mode} mode rejects traffic to a ClusterIP on a port no Service uses` }
      : { kind: 'untouched', reason: `${mode.mode} mode leaves traffic to unused ClusterIP ports alone` };
  }
  if (table.serviceCIDRs && inAnyCIDR(q.dst, table.serviceCIDRs) && mode.dropsUnallocatedServiceIPs) {
    return { kind: 'drop', reason: `${mode.mode} mode drops traffic to unallocated addresses in the service CIDRs` };
  }
  return { kind: 'untouched', reason: why };
}

function endpointsOf(set: EndpointSet): TraceEndpoint[] {
  return set.endpoints.map((e: PlannedEndpoint) => ({ ip: e.ip, port: e.port, local: e.isLocal, ready: e.ready }));
}

/** The explanation for one packet; the table is chosen by the destination's family. */
export function explain(tables: ProxyTables, query: TraceQuery, host: HostFacts, mode: ModeFacts): Explanation {
  const q = validateQuery(query);
  const family = parseIP(q.dst)!.family;
  const table = tables[family];
  const traffic = classify(q, table, host);
  const base = { node: table.nodeName, mode: mode.mode, family, src: q.src, dst: q.dst, port: q.port, protocol: q.protocol, traffic };
  const { found, why } = findFrontend(q, table, host, mode);
  if (!found) {
    return {
      ...base,
      match: null,
      why,
      policy: [],
      endpointSet: null,
      blockedBySourceRanges: false,
      endpoints: [],
      affinitySeconds: 0,
      masquerade: { value: 'no', reason: 'no Service port matched' },
      verdict: noMatchVerdict(q, table, mode, why),
    };
  }
  const { svc, frontend } = found;
  const match: TraceMatch = {
    service: svc.key,
    namespace: svc.namespace,
    name: svc.name,
    portName: svc.portName,
    frontend,
    address: q.dst,
    port: q.port,
  };
  const policy: string[] = [];
  const fromNode = traffic.class === 'node' || traffic.class === 'localhost';

  let role: SetRole;
  let masq: { value: boolean; reason: string };
  let firewallDrop: string | undefined;
  if (frontend === 'clusterIP') {
    role = 'internal';
    policy.push(`internalTrafficPolicy ${svc.internalPolicyLocal ? 'Local: only endpoints on this node' : 'Cluster'}`);
    switch (svc.clusterIPMasquerade) {
      case 'all':
        masq = { value: true, reason: '--masquerade-all' };
        break;
      case 'nonLocal':
        masq = traffic.detectorMatches
          ? { value: false, reason: `local pod traffic (${detectorText(table)}) keeps its source` }
          : { value: true, reason: `not local pod traffic (detector: ${detectorText(table)}), so masqueraded` };
        break;
      case 'none':
        masq = { value: false, reason: 'no local-traffic detector and no --masquerade-all: only hairpin traffic is masqueraded' };
        break;
    }
  } else {
    if (frontend === 'loadBalancerIP' && svc.loadBalancerSourceRanges.length > 0) {
      const inRange = inAnyCIDR(q.src, svc.loadBalancerSourceRanges);
      const asLBIP = svc.allowLoadBalancerIPSources && svc.loadBalancerIPs.some((a) => sameIP(a, q.src));
      const ranges = svc.loadBalancerSourceRanges.join(', ');
      if (inRange || asLBIP) policy.push(`loadBalancerSourceRanges ${ranges}: ${q.src} allowed${asLBIP && !inRange ? ' (a LoadBalancer IP of the Service, which a range containing the node IP admits)' : ''}`);
      else {
        firewallDrop = `loadBalancerSourceRanges ${ranges}: ${q.src} is outside them`;
        policy.push(firewallDrop);
      }
    }
    policy.push(`externalTrafficPolicy ${svc.externalPolicyLocal ? 'Local: only endpoints on this node, client source kept' : 'Cluster'}`);
    const shortCircuit =
      firewallDrop === undefined && svc.externalPolicyLocal && svc.cluster.verdict === 'forward' && (fromNode || (traffic.class === 'pod' && traffic.detectorMatches));
    if (shortCircuit) {
      role = 'cluster';
      policy.push(`${fromNode ? 'the node itself' : 'a local pod'} reaching an external address of a Local Service uses the cluster-wide endpoints`);
      masq = fromNode
        ? { value: true, reason: "the node's own source address could not be answered by endpoints elsewhere" }
        : { value: false, reason: 'local pod traffic keeps its source' };
    } else {
      role = 'external';
      masq = svc.externalMasquerade
        ? { value: true, reason: 'externalTrafficPolicy Cluster: external traffic is masqueraded so replies come back through this node' }
        : { value: false, reason: 'externalTrafficPolicy Local: the client source is preserved' };
    }
  }
  const set = svc[role];
  // Topology narrows the cluster set, which internal and external traffic use unless their policy
  // is Local (planner: external = cluster under externalTrafficPolicy Cluster).
  const usesClusterSet = role === 'cluster' || (role === 'internal' ? !svc.internalPolicyLocal : !svc.externalPolicyLocal);
  if (firewallDrop === undefined && svc.topology && usesClusterSet) {
    policy.push(`topology: ${svc.topology} (endpoints hinted for this ${svc.topology === 'PreferSameNode' ? 'node' : 'zone'})`);
  }
  if (set.verdict === 'forward' && set.endpoints.some((e) => !e.ready)) {
    policy.push('terminating fallback: no ready endpoint in scope, so serving-terminating endpoints are used');
  }
  if (svc.affinityTimeoutSeconds > 0) policy.push(`sessionAffinity ClientIP, timeout ${svc.affinityTimeoutSeconds}s: a client sticks to one endpoint`);

  const endpoints = set.verdict === 'forward' ? endpointsOf(set) : [];
  let verdict: Explanation['verdict'];
  if (firewallDrop !== undefined) verdict = { kind: 'drop', reason: firewallDrop };
  else if (set.verdict === 'forward') {
    verdict =
      endpoints.length === 1
        ? { kind: 'dnat', reason: `DNAT to the only endpoint of the ${role} set` }
        : { kind: 'dnat', reason: `DNAT to one of ${endpoints.length} endpoints of the ${role} set${svc.affinityTimeoutSeconds > 0 ? ', sticky per client' : ', at random'}` };
  } else if (set.verdict === 'drop') {
    const policyName = role === 'internal' ? 'internalTrafficPolicy' : 'externalTrafficPolicy';
    verdict = { kind: 'drop', reason: `${policyName} Local and no usable endpoint on node ${table.nodeName} (endpoints exist elsewhere)` };
  } else {
    verdict = { kind: 'reject', reason: `${svc.key} has no usable endpoint anywhere` };
  }

  let masquerade: Explanation['masquerade'];
  const hairpin = endpoints.filter((e) => sameIP(e.ip, q.src));
  if (verdict.kind !== 'dnat') masquerade = { value: 'no', reason: 'the packet is not forwarded' };
  else if (mode.reoriginates) masquerade = { value: 'yes', reason: `${mode.mode} mode re-originates every connection from the node` };
  else if (mode.socketLB && traffic.class !== 'external') masquerade = { value: 'no', reason: `${mode.mode} mode connects the client's socket straight to the endpoint: no NAT, nothing to masquerade` };
  else if (masq.value) masquerade = { value: 'yes', reason: masq.reason };
  else if (hairpin.length > 0 && hairpin.length === endpoints.length) masquerade = { value: 'yes', reason: 'hairpin: the only candidate endpoint is the source itself' };
  else if (hairpin.length > 0) masquerade = { value: 'hairpin', reason: `${masq.reason}; masqueraded only when DNAT-ed back to the source itself (hairpin)` };
  else masquerade = { value: 'no', reason: masq.reason };

  return {
    ...base,
    match,
    why,
    policy,
    endpointSet: firewallDrop === undefined ? role : null,
    blockedBySourceRanges: firewallDrop !== undefined,
    endpoints: firewallDrop === undefined ? endpoints : [],
    affinitySeconds: svc.affinityTimeoutSeconds,
    masquerade,
    verdict,
  };
}

/** One object a packet meets in the active mode: where (table/chain/listener) and what happens there. */
export interface PathStep {
  readonly at: string;
  readonly does: string;
}

/** The path through one mode's objects, from an explanation and the entry that matched (if any). */
export type PathOf = (e: Explanation, svc: ServiceEntry | undefined, table: ProxyTable) => PathStep[];

/** An explanation with the active mode's objects on the path. */
export interface Trace extends Explanation {
  readonly path: readonly PathStep[];
}

/** explain() plus the path in the mode described by `facts` and `pathOf`. */
export function trace(tables: ProxyTables, query: TraceQuery, host: HostFacts, facts: ModeFacts, pathOf: PathOf): Trace {
  const e = explain(tables, query, host, facts);
  const table = tables[e.family];
  const svc = e.match ? table.services.get(e.match.service) : undefined;
  return { ...e, path: pathOf(e, svc, table) };
}
