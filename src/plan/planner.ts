/**
 * The planner: ClusterSnapshot → ProxyTable, every per-node decision made once for every
 * backend (traffic policies, topology, terminating fallback, reject vs drop, masquerade,
 * nodeport addresses). kube-proxy's proxiers are the reference; docs/ir.md records where we
 * had to choose.
 *
 * Pure: no I/O (problems are returned, and logged only by the planTable wrapper), no clocks,
 * no randomness. Given prev + changes it re-plans only the Services that changed and hands back
 * prev's ServiceEntry objects (===) for the rest, in a new version of prev's persistent map, so a
 * one-endpoint change costs O(changed × log n). A service that fails to plan is left out with a
 * problem; it never takes the table down.
 */
import { cidrContains, inAnyCIDR, isLoopback, parseCIDR, parseIP, type ParsedCIDR } from '../model/addr.js';
import { deepEqual } from '../model/equal.js';
import type { ChangeSet, ClusterSnapshot, Endpoint, IPFamily, NodeInfo, ServicePort, ServicePortKey } from '../model/types.js';
import { logger } from '../util/log.js';
import { SortedMap } from '../util/sorted-map.js';
import { categorizeEndpoints, servingEndpoints } from './categorize.js';
import { diffTables, recordDerivation } from './diff.js';
import type {
  ClusterIPMasquerade,
  EndpointSet,
  LocalTrafficDetector,
  NodePortAddresses,
  PlannedEndpoint,
  ProxyTable,
  ProxyTables,
  ServiceEntry,
} from './types.js';

export { diffTables };

export type NodePortAddressSpec = { kind: 'all' } | { kind: 'primary' } | { kind: 'cidrs'; cidrs: readonly string[] };

/**
 * kube-proxy's --detect-local-mode: clusterCIDR reads PlanOptions.clusterCIDRs; nodeCIDR the
 * Node's spec.podCIDRs; the interface modes name the interface(s) local pod traffic arrives on.
 */
export type DetectLocalSpec =
  | { readonly kind: 'clusterCIDR' }
  | { readonly kind: 'nodeCIDR' }
  | { readonly kind: 'bridgeInterface'; readonly name: string }
  | { readonly kind: 'interfaceNamePrefix'; readonly prefix: string };

export interface PlanOptions {
  masqueradeAll: boolean;
  /** Local traffic detection in clusterCIDR mode; empty = no detector. */
  clusterCIDRs: readonly string[];
  /** Absent = clusterCIDR. */
  detectLocal?: DetectLocalSpec;
  /** From --nodeport-addresses. */
  nodePortAddresses: NodePortAddressSpec;
  /** Addresses on this host's interfaces (resolved by the caller), used for 'cidrs' (and 'all' with listAllNodePortAddresses). */
  localAddresses: readonly string[];
  /**
   * nodePortAddresses 'all' also lists the host's addresses of the family (`local`, from
   * localAddresses), for a backend that cannot ask the kernel per packet whether an address is
   * local (ebpf). A change of them is then a table-level change, like a change of CIDR matches.
   */
  listAllNodePortAddresses?: boolean;
  /**
   * --bind-address when it names an address (not 0.0.0.0 or ::): the node's primary IP of its
   * family, ahead of the Node's own (kube-proxy's detectNodeIPs) — for `primary` NodePort
   * addresses and the source-range check of LB IPs.
   */
  bindAddress?: string;
}

export interface PlanReport {
  readonly table: ProxyTable;
  /** One line per problem: a service left out, or an option entry ignored. */
  readonly problems: readonly string[];
}

const EMPTY: readonly PlannedEndpoint[] = Object.freeze([]);
const REJECT: EndpointSet = Object.freeze({ verdict: 'reject', endpoints: EMPTY });
const DROP: EndpointSet = Object.freeze({ verdict: 'drop', endpoints: EMPTY });
const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);
const ALL: NodePortAddresses = Object.freeze({ kind: 'all' });
const NO_DETECTOR: LocalTrafficDetector = Object.freeze({ kind: 'none' });

const log = logger('plan');

/** `namespace/name` part of a ServicePortKey (`namespace/name:port/PROTO`; names hold no ':'). */
export function serviceOfKey(key: ServicePortKey): string {
  const i = key.indexOf(':');
  return i < 0 ? key : key.slice(0, i);
}

type Header = Omit<ProxyTable, 'services'>;

/**
 * Answers about the few address lists every sync plans from (--cluster-cidr, the Node's podCIDRs,
 * --nodeport-addresses, the ServiceCIDRs), by the lists' text: parsing them through ipaddr.js
 * each time was a fifth of a one-endpoint sync's planning. Only lists of strings are remembered
 * (a number and its digits as text would join the same). Bounded: cleared when it fills up.
 */
const listMemo = new Map<string, unknown>();
const LIST_MEMO_MAX = 64;

function memoByList<T>(what: string, list: readonly unknown[], compute: () => T): T {
  if (!list.every((x) => typeof x === 'string')) return compute();
  const key = `${what}\0${list.join('\0')}`;
  if (listMemo.has(key)) return listMemo.get(key) as T;
  const v = compute();
  if (listMemo.size >= LIST_MEMO_MAX) listMemo.clear();
  listMemo.set(key, v);
  return v;
}

function familyCIDRs(list: readonly string[], family: IPFamily, what: string, problems: string[]): readonly ParsedCIDR[] {
  const r = memoByList(`${family}\0${what}`, list, () => {
    const mine: string[] = [];
    return { cidrs: parseFamilyCIDRs(list, family, what, mine), problems: mine };
  });
  problems.push(...r.problems);
  return r.cidrs;
}

function parseFamilyCIDRs(list: readonly string[], family: IPFamily, what: string, problems: string[]): readonly ParsedCIDR[] {
  const out: ParsedCIDR[] = [];
  const seen = new Set<string>();
  for (const text of list) {
    const c = parseCIDR(typeof text === 'string' ? text.trim() : text);
    if (!c) {
      problems.push(`${what}: ${JSON.stringify(text)} is not a valid CIDR, ignored`);
      continue;
    }
    if (c.family !== family || seen.has(c.cidr)) continue;
    seen.add(c.cidr);
    out.push(c);
  }
  return out;
}

/** fe80::/10, for a canonical IPv6 address. */
function isLinkLocal6(ip: string): boolean {
  return /^fe[89ab][0-9a-f]:/.test(ip);
}

/**
 * --nodeport-addresses for one family, as kube-proxy resolves it: "primary" is the node's
 * primary IP of the family; CIDRs select local addresses; and a family with no usable entry of
 * its own (no CIDR of that family, a zero CIDR, or no primary IP) accepts NodePorts everywhere.
 */
function nodePortAddresses(
  spec: NodePortAddressSpec,
  family: IPFamily,
  nodeIPs: readonly string[],
  opts: PlanOptions,
  problems: string[],
): NodePortAddresses {
  const localAddresses = opts.localAddresses;
  const all = opts.listAllNodePortAddresses ? allWithLocal(localAddresses, family) : ALL;
  if (spec.kind === 'primary') {
    const p = nodeIPs[0];
    return p !== undefined && !isLoopback(p) ? Object.freeze({ kind: 'list', addresses: Object.freeze([p]) }) : all;
  }
  if (spec.kind !== 'cidrs') return all;
  const cidrs = familyCIDRs(spec.cidrs, family, 'nodePortAddresses', problems);
  if (cidrs.length === 0 || cidrs.some((c) => c.bits === 0)) return all;
  // By the host list's identity and the CIDRs, as allWithLocal: a sync does not parse every
  // address of the host again (a link-local one per pod interface) when neither changed.
  const key = `${family} ${cidrs.map((c) => c.cidr).join(',')}`;
  let memo = selectedMemo.get(localAddresses);
  if (!memo) selectedMemo.set(localAddresses, (memo = new Map()));
  const known = memo.get(key);
  if (known) return known;
  const found = new Set<string>();
  for (const a of localAddresses) {
    const p = parseIP(a);
    if (p && p.family === family && cidrs.some((c) => cidrContains(c, p.ip))) found.add(p.ip);
  }
  const selected: NodePortAddresses = Object.freeze({ kind: 'list', addresses: Object.freeze([...found].sort()) });
  memo.set(key, selected);
  return selected;
}

const selectedMemo = new WeakMap<readonly string[], Map<string, NodePortAddresses>>();

/**
 * 'all' with the host's addresses of the family, canonical and sorted (the same object for the
 * same list), but loopback ones and IPv6 link-local ones: those need a scope to be reached at all, and
 * every pod's interface brings one, which would make each new pod a table-level change.
 */
function allWithLocal(localAddresses: readonly string[], family: IPFamily): NodePortAddresses {
  // By the list's identity: the daemon's address watch hands out the same array until the set
  // changes, and a list with a link-local address per pod interface is long to join as text.
  let byFamily = allMemo.get(localAddresses);
  if (!byFamily) allMemo.set(localAddresses, (byFamily = {}));
  const known = byFamily[family];
  if (known) return known;
  const found = new Set<string>();
  for (const a of localAddresses) {
    const p = parseIP(a);
    if (p && p.family === family && !isLoopback(p.ip) && !isLinkLocal6(p.ip)) found.add(p.ip);
  }
  return (byFamily[family] = Object.freeze({ kind: 'all', local: Object.freeze([...found].sort()) }));
}

const allMemo = new WeakMap<readonly string[], Partial<Record<IPFamily, NodePortAddresses>>>();

/** The detector for one family; a family without a CIDR to match gets none (as kube-proxy). */
function localTraffic(opts: PlanOptions, node: NodeInfo, family: IPFamily, problems: string[]): LocalTrafficDetector {
  const spec = opts.detectLocal ?? { kind: 'clusterCIDR' };
  switch (spec.kind) {
    case 'bridgeInterface':
      return Object.freeze({ kind: 'bridgeInterface', name: spec.name });
    case 'interfaceNamePrefix':
      return Object.freeze({ kind: 'interfaceNamePrefix', prefix: spec.prefix });
    case 'clusterCIDR':
    case 'nodeCIDR': {
      const list = spec.kind === 'clusterCIDR' ? opts.clusterCIDRs : (node.podCIDRs ?? []);
      const what = spec.kind === 'clusterCIDR' ? 'clusterCIDRs' : 'node podCIDRs';
      const cidrs = familyCIDRs(list, family, what, problems).map((c) => c.cidr);
      return cidrs.length > 0 ? Object.freeze({ kind: 'clusterCIDR', cidrs: Object.freeze(cidrs) }) : NO_DETECTOR;
    }
  }
}

function header(snap: ClusterSnapshot, opts: PlanOptions, problems: string[]): Header {
  const family = snap.family;
  let ips = snap.node.addresses.filter((a) => parseIP(a)?.family === family);
  const bind = opts.bindAddress !== undefined ? parseIP(opts.bindAddress) : undefined;
  if (bind && bind.family === family) ips = [bind.ip, ...ips.filter((a) => a !== bind.ip)];
  const nodeIPs = Object.freeze(ips);
  const h: Header = {
    family,
    nodeName: snap.node.name,
    nodeIPs,
    nodePortAddresses: nodePortAddresses(opts.nodePortAddresses, family, nodeIPs, opts, problems),
    localTraffic: localTraffic(opts, snap.node, family, problems),
    masqueradeAll: opts.masqueradeAll,
  };
  const cidrs = outermost(snap.serviceCIDRs ?? [], family);
  return cidrs.length > 0 ? { ...h, serviceCIDRs: Object.freeze(cidrs) } : h;
}

/**
 * This family's ranges without those inside another one (ServiceCIDRs may overlap: a new, larger
 * one often covers the old default). Two CIDRs either nest or are disjoint, so what remains is
 * disjoint and fits an nftables interval set without "conflicting intervals". Input order kept.
 */
function outermost(list: readonly string[], family: IPFamily): readonly string[] {
  return memoByList(`${family}\0serviceCIDRs`, list, () => outermostOf(list, family));
}

function outermostOf(list: readonly string[], family: IPFamily): string[] {
  const parsed = list.map((c) => parseCIDR(c)).filter((c): c is ParsedCIDR => c !== undefined && c.family === family);
  return parsed
    .filter((c, i) => !parsed.some((o, j) => j !== i && (o.bits < c.bits || (o.bits === c.bits && j < i)) && cidrContains(o, c.addr.toString())))
    .map((c) => c.cidr);
}

export function headersEqual(a: Header, b: Header): boolean {
  return (
    a.family === b.family &&
    a.nodeName === b.nodeName &&
    a.masqueradeAll === b.masqueradeAll &&
    deepEqual(a.nodeIPs, b.nodeIPs) &&
    deepEqual(a.nodePortAddresses, b.nodePortAddresses) &&
    deepEqual(a.localTraffic, b.localTraffic) &&
    deepEqual(a.serviceCIDRs ?? [], b.serviceCIDRs ?? [])
  );
}

/** Distinct IPs of ready local endpoints over all ports of one Service (kube-proxy's HC count). */
function localReadyIPs(snap: ClusterSnapshot, keys: readonly ServicePortKey[]): number {
  const ips = new Set<string>();
  for (const k of keys) {
    for (const ep of snap.endpoints.get(k) ?? NO_ENDPOINTS) if (ep.isLocal && ep.ready) ips.add(ep.ip);
  }
  return ips.size;
}

const NO_IPS: readonly string[] = Object.freeze([]);

/** The LoadBalancer ingress IPs in VIP mode, each once, in order (most Services have none: no Set, no array). */
function vipIngressIPs(sp: ServicePort): readonly string[] {
  const ingress = sp.loadBalancerIngress;
  if (ingress.length === 0) return NO_IPS;
  const seen = new Set<string>();
  for (let i = 0; i < ingress.length; i++) if (ingress[i]!.ipMode === 'VIP') seen.add(ingress[i]!.ip);
  return seen.size === 0 ? NO_IPS : Object.freeze([...seen]);
}

function planEntry(sp: ServicePort, eps: readonly Endpoint[], node: NodeInfo, h: Header, localReady: number): ServiceEntry {
  const loadBalancerIPs = vipIngressIPs(sp);
  const externallyAccessible = sp.nodePort !== 0 || sp.externalIPs.length > 0 || loadBalancerIPs.length > 0;
  const internalPolicyLocal = sp.internalTrafficPolicy === 'Local';
  const externalPolicyLocal = externallyAccessible && sp.externalTrafficPolicy === 'Local';

  const cat = categorizeEndpoints(eps, { internalPolicyLocal, externalPolicyLocal, externallyAccessible }, node.name, node.zone);
  // The snapshot's Endpoint objects are the IR's PlannedEndpoints (a PlannedEndpoint is a view
  // of four of their fields): at 100,000 endpoints a copy per stage is megabytes for nothing.
  // A set equal to the whole list shares the list too.
  const toSet = (list: readonly Endpoint[]): EndpointSet => {
    if (list.length === 0) return DROP;
    const endpoints: readonly PlannedEndpoint[] = list === eps || Object.isFrozen(list) ? list : Object.freeze(list);
    if (sp.family !== 4) return Object.freeze({ verdict: 'forward', endpoints });
    // The endpoints were just read by categorizeEndpoints: still in the cache. Not frozen: a
    // frozen array of doubles holds each as a boxed number.
    const v4: number[] = [];
    for (let i = 0; i < list.length; i++) v4.push(list[i]!.v4);
    return Object.freeze({ verdict: 'forward', endpoints, v4 });
  };
  let internal: EndpointSet;
  let external: EndpointSet;
  let cluster: EndpointSet;
  if (!cat.hasAnyEndpoints) {
    // kube-proxy: "has no endpoints" → REJECT on every path.
    internal = external = cluster = REJECT;
  } else {
    cluster = toSet(cat.cluster);
    const local = toSet(cat.local);
    // kube-proxy: endpoints exist, but none this path may use → "has no local endpoints", DROP.
    internal = internalPolicyLocal ? local : cluster;
    external = externalPolicyLocal ? local : cluster;
  }
  // Connectionless ports only: their conntrack entries are cleaned, and it is the flows of
  // serving endpoints that cleanup keeps. Usually every endpoint serves: the list is shared.
  let serving: readonly PlannedEndpoint[] | undefined;
  if (sp.protocol !== 'TCP') {
    const list = servingEndpoints(eps);
    serving = list === eps || Object.isFrozen(list) ? list : Object.freeze(list);
  }
  const clusterIPMasquerade: ClusterIPMasquerade = h.masqueradeAll
    ? 'all'
    : h.localTraffic.kind !== 'none'
      ? 'nonLocal'
      : 'none';
  return Object.freeze({
    key: sp.key,
    namespace: sp.namespace,
    name: sp.name,
    portName: sp.portName,
    protocol: sp.protocol,
    family: sp.family,
    clusterIP: sp.clusterIP,
    port: sp.port,
    nodePort: sp.nodePort,
    externalIPs: sp.externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges: sp.loadBalancerSourceRanges,
    allowLoadBalancerIPSources:
      loadBalancerIPs.length > 0 && h.nodeIPs[0] !== undefined && inAnyCIDR(h.nodeIPs[0], sp.loadBalancerSourceRanges),
    affinityTimeoutSeconds: sp.affinityTimeoutSeconds,
    internal,
    external,
    cluster,
    clusterIPMasquerade,
    externalMasquerade: !externalPolicyLocal,
    externalPolicyLocal,
    internalPolicyLocal,
    healthCheckNodePort: sp.healthCheckNodePort,
    localReadyEndpoints: sp.healthCheckNodePort !== 0 ? localReady : 0,
    ...(cat.hasAnyEndpoints && cat.topologyMode !== '' ? { topology: cat.topologyMode } : {}),
    ...(serving !== undefined ? { serving } : {}),
  });
}

/** planTable, with its problems returned instead of logged. */
export function planTableReport(snap: ClusterSnapshot, opts: PlanOptions, prev?: ProxyTable, changes?: ChangeSet): PlanReport {
  const problems: string[] = [];
  const h = header(snap, opts, problems);
  const reuse = prev !== undefined && changes !== undefined && !changes.nodeChanged && headersEqual(prev, h);
  const spMap = SortedMap.from(snap.services);
  const plan = (key: ServicePortKey, sp: ServicePort, localReady: () => number): ServiceEntry | undefined => {
    try {
      return planEntry(sp, snap.endpoints.get(key) ?? NO_ENDPOINTS, snap.node, h, sp.healthCheckNodePort !== 0 ? localReady() : 0);
    } catch (err) {
      problems.push(`${key}: planning failed, service left out: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
  };

  if (reuse) {
    // Only the Services named by the change set are planned again; the table is a new version
    // of prev's persistent map that shares every other entry (and the tree around them).
    // A port's entry depends on its own spec and endpoints, which the change set follows port
    // by port, and on the Service's local ready endpoints only when it has a health check node
    // port: those Services are planned whole, the others port by port (a slice of a Service with
    // thousands of ports changes only its own ports' entries).
    const prevMap = SortedMap.from(prev.services);
    const dirty = new Set<string>();
    const single: ServicePortKey[] = [];
    for (const k of changes.changed) {
      if ((spMap.get(k)?.healthCheckNodePort ?? 0) !== 0 || (prevMap.get(k)?.healthCheckNodePort ?? 0) !== 0) dirty.add(serviceOfKey(k));
      else single.push(k);
    }
    const out = prevMap.edit();
    const touched = new Set<ServicePortKey>();
    for (const key of single) {
      if (dirty.size > 0 && dirty.has(serviceOfKey(key))) continue;
      touched.add(key);
      const sp = spMap.get(key);
      const e = sp ? plan(key, sp, () => 0) : undefined;
      if (e) out.set(key, e);
      else out.delete(key);
    }
    for (const svcName of dirty) {
      const prefix = `${svcName}:`;
      for (const k of prevMap.keysWithPrefix(prefix)) {
        if (!spMap.has(k)) {
          out.delete(k);
          touched.add(k);
        }
      }
      const run = [...spMap.keysWithPrefix(prefix)];
      let ready = -1;
      const localReady = (): number => (ready < 0 ? (ready = localReadyIPs(snap, run)) : ready);
      for (const key of run) {
        touched.add(key);
        const e = plan(key, spMap.get(key)!, localReady);
        if (e) out.set(key, e);
        else out.delete(key);
      }
    }
    const table: ProxyTable = Object.freeze({ ...h, services: out.finish() });
    recordDerivation(table, prev, touched);
    return { table, problems };
  }

  // Keys are in order, so the ports of one Service form one contiguous run: plan run by run, so
  // the health-check count (which spans a Service's ports) needs no index over the table.
  const keys: ServicePortKey[] = [];
  const entries: ServiceEntry[] = [];
  let run: ServicePortKey[] = [];
  let runService = '';
  let ready = -1;
  const localReady = (): number => (ready < 0 ? (ready = localReadyIPs(snap, run)) : ready);
  const flush = (): void => {
    ready = -1;
    for (const key of run) {
      const e = plan(key, spMap.get(key)!, localReady);
      if (e) {
        keys.push(key);
        entries.push(e);
      }
    }
    run = [];
  };
  for (const key of spMap.keys()) {
    const svcName = serviceOfKey(key);
    if (svcName !== runService) {
      flush();
      runService = svcName;
    }
    run.push(key);
  }
  flush();
  return { table: Object.freeze({ ...h, services: SortedMap.fromSorted(keys, entries) }), problems };
}

/** Problems already logged, so a bad option or service is not logged again at every sync. */
const logged = new Set<string>();
const LOGGED_MAX = 10000;

export function planTable(snap: ClusterSnapshot, opts: PlanOptions, prev?: ProxyTable, changes?: ChangeSet): ProxyTable {
  const { table, problems } = planTableReport(snap, opts, prev, changes);
  for (const p of problems) {
    const id = `${snap.family} ${p}`;
    if (logged.has(id)) continue;
    if (logged.size >= LOGGED_MAX) logged.clear();
    logged.add(id);
    log.warn('plan problem', { family: snap.family, problem: p });
  }
  return table;
}

export function planTables(
  snaps: Record<IPFamily, ClusterSnapshot>,
  opts: PlanOptions,
  prev?: ProxyTables | null,
  changes?: Record<IPFamily, ChangeSet>,
): ProxyTables {
  return {
    4: planTable(snaps[4], opts, prev?.[4], changes?.[4]),
    6: planTable(snaps[6], opts, prev?.[6], changes?.[6]),
  };
}
