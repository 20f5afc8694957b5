/**
 * Per-connection routing: which of the IR's endpoint sets (and so which picker) a new connection
 * or UDP session on a frontend uses, or whether it is rejected or dropped. This module reads the
 * IR's decisions; it never re-derives them:
 *  - ClusterIP → `internal`;
 *  - NodePort / externalIP / LB IP → `external`, except that with externalTrafficPolicy Local
 *    traffic from the node itself or a local pod (the table's localTraffic detector) goes to
 *    `cluster`, as the IR's ServiceEntry.cluster documents;
 *  - LB IP with loadBalancerSourceRanges and a client outside them → drop.
 * No I/O.
 */
import ipaddr from 'ipaddr.js';
import type { LocalTrafficDetector, ServiceEntry } from '../../plan/types.js';
import type { FrontendRole } from './frontends.js';
import { EndpointPicker, type Clock } from './picker.js';

type Range = [ipaddr.IPv4 | ipaddr.IPv6, number];

function parseRanges(cidrs: readonly string[]): Range[] {
  const out: Range[] = [];
  for (const c of cidrs) {
    try {
      out.push(ipaddr.parseCIDR(c));
    } catch {
      /* the plan stage validated them; an unparsable one matches nothing */
    }
  }
  return out;
}

function parseAddr(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    const a = ipaddr.parse(ip);
    if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) return (a as ipaddr.IPv6).toIPv4Address();
    return a;
  } catch {
    return undefined;
  }
}

function inRanges(addr: ipaddr.IPv4 | ipaddr.IPv6, ranges: readonly Range[]): boolean {
  for (const r of ranges) {
    if (r[0].kind() === addr.kind() && addr.match(r)) return true;
  }
  return false;
}

export function isInterfaceDetector(d: LocalTrafficDetector): d is Extract<LocalTrafficDetector, { kind: 'bridgeInterface' | 'interfaceNamePrefix' }> {
  return d.kind === 'bridgeInterface' || d.kind === 'interfaceNamePrefix';
}

/** Whether an interface name is one the detector names (exactly, or by prefix). */
export function interfaceMatches(d: LocalTrafficDetector, ifname: string): boolean {
  if (d.kind === 'bridgeInterface') return ifname === d.name;
  if (d.kind === 'interfaceNamePrefix') return ifname.startsWith(d.prefix);
  return false;
}

/** "Is this client the node itself or a local pod?" (for externalTrafficPolicy Local). */
export class LocalSourceDetector {
  private readonly ranges: Range[];
  /**
   * `interfaceRoutes`: for the interface detectors (BridgeInterface, InterfaceNamePrefix), the
   * destinations routed out of the matching interfaces. A proxied connection reaches ferry as an
   * accepted socket that does not say which interface its packets came in on, so the pods
   * behind those interfaces are recognized by their addresses instead (docs/cli.md).
   */
  constructor(
    private readonly nodeAddresses: ReadonlySet<string>,
    detectors: readonly LocalTrafficDetector[],
    interfaceRoutes: readonly string[] = [],
  ) {
    this.ranges = [];
    for (const d of detectors) if (d.kind === 'clusterCIDR') this.ranges.push(...parseRanges(d.cidrs));
    if (detectors.some(isInterfaceDetector)) this.ranges.push(...parseRanges(interfaceRoutes));
  }

  isLocal(clientIP: string): boolean {
    if (this.nodeAddresses.has(clientIP)) return true;
    const a = parseAddr(clientIP);
    if (!a) return false;
    if (a.range() === 'loopback') return true;
    if (this.nodeAddresses.has(a.toString())) return true;
    return inRanges(a, this.ranges);
  }
}

/** The live state of one service port: its IR entry and a picker per endpoint set. */
export class ServiceRuntime {
  readonly internal: EndpointPicker;
  readonly external: EndpointPicker;
  readonly cluster: EndpointPicker;
  private sourceRanges: Range[] = [];
  entry!: ServiceEntry;

  constructor(entry: ServiceEntry, now?: Clock) {
    this.internal = new EndpointPicker(now);
    this.external = new EndpointPicker(now);
    this.cluster = new EndpointPicker(now);
    this.update(entry);
  }

  update(entry: ServiceEntry): void {
    if (this.entry === entry) return;
    this.entry = entry;
    this.internal.update(entry.internal, entry.affinityTimeoutSeconds);
    this.external.update(entry.external, entry.affinityTimeoutSeconds);
    this.cluster.update(entry.cluster, entry.affinityTimeoutSeconds);
    this.sourceRanges = parseRanges(
      entry.allowLoadBalancerIPSources ? [...entry.loadBalancerSourceRanges, ...entry.loadBalancerIPs] : entry.loadBalancerSourceRanges,
    );
  }

  /** Whether any of the port's endpoint sets holds the endpoint (`endpointId`). */
  has(endpoint: string): boolean {
    return this.internal.has(endpoint) || this.external.has(endpoint) || this.cluster.has(endpoint);
  }

  /** Where a new connection from `clientIP` on a frontend with `role` goes. */
  route(role: FrontendRole, clientIP: string, local: LocalSourceDetector): Route {
    if (role === 'clusterIP') return decide(this.internal);
    if (role === 'loadBalancer' && this.sourceRanges.length > 0) {
      const a = parseAddr(clientIP);
      if (!a || !inRanges(a, this.sourceRanges)) return DROP_ROUTE;
    }
    if (this.entry.externalPolicyLocal && local.isLocal(clientIP)) return decide(this.cluster);
    return decide(this.external);
  }
}

export type Route =
  | { readonly verdict: 'forward'; readonly picker: EndpointPicker }
  | { readonly verdict: 'reject' }
  | { readonly verdict: 'drop' };

const DROP_ROUTE: Route = { verdict: 'drop' };
const REJECT_ROUTE: Route = { verdict: 'reject' };

function decide(p: EndpointPicker): Route {
  if (p.verdict === 'forward' && p.size > 0) return { verdict: 'forward', picker: p };
  return p.verdict === 'drop' ? DROP_ROUTE : REJECT_ROUTE;
}
