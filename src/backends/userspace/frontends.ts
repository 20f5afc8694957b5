/**
 * Userspace mode's nouns and its desired state: from the IR, which addresses ferry must hold on
 * its own interface (ferry0) and which sockets (`Frontend`s: protocol, address, port) it must
 * listen on, each bound to the service port and role it serves.
 *
 * Pure: no I/O, no sockets. It never decides Kubernetes policy (verdicts, endpoint sets); it only
 * lays the IR's frontends out as listeners.
 *
 * NodePorts are bound per address, never on the wildcard: Linux refuses a TCP listener on
 * 0.0.0.0:P while another listens on A:P (and the reverse) even with SO_REUSEADDR, so a wildcard
 * NodePort would collide with any ClusterIP/externalIP frontend on the same port number; and a
 * wildcard UDP socket cannot tell which local address a datagram came to (Node has no
 * IP_PKTINFO), so its replies could leave from the wrong source address.
 */
import { isLoopback } from '../../model/addr.js';
import ipaddr from 'ipaddr.js';
import type { IPFamily, ProxyTables, ServiceEntry, ServicePortKey } from '../../plan/types.js';

/** Which of the service's frontends a listener serves; it selects the IR's endpoint set. */
export type FrontendRole = 'clusterIP' | 'externalIP' | 'loadBalancer' | 'nodePort';

export type ForwardedProtocol = 'TCP' | 'UDP';

/** One socket ferry listens on. */
export interface Frontend {
  /** `TCP 198.19.0.10:80`, `UDP [2001:db8::10]:53`: unique per socket. */
  readonly key: string;
  readonly protocol: ForwardedProtocol;
  readonly family: IPFamily;
  /** Normalized address (ipaddr.js toString). */
  readonly ip: string;
  readonly port: number;
  readonly service: ServicePortKey;
  readonly role: FrontendRole;
}

/** The node's own addresses outside ferry0 (read from the kernel), per family. */
export interface LocalAddresses {
  readonly 4: readonly string[];
  readonly 6: readonly string[];
}

export interface FrontendOptions {
  readonly families: readonly IPFamily[];
  /**
   * Accept NodePorts on 127.0.0.1 (IPv4 only, as kube-proxy): added when nodePortAddresses is
   * 'all'; with a list, whether its IPv4 loopback addresses are kept.
   */
  readonly localhostNodePorts: boolean;
}

/** Two service ports want the same socket; the first in key order keeps it. */
export interface FrontendConflict {
  readonly key: string;
  readonly kept: ServicePortKey;
  readonly refused: ServicePortKey;
}

export interface DesiredFrontends {
  /** Normalized addresses ferry0 must hold (ClusterIPs, externalIPs, LB IPs not local elsewhere). */
  readonly addresses: ReadonlySet<string>;
  readonly frontends: ReadonlyMap<string, Frontend>;
  readonly conflicts: readonly FrontendConflict[];
  /** Service ports this mode cannot serve (SCTP). */
  readonly unsupported: readonly ServicePortKey[];
  /** Addresses in the IR that do not parse; skipped. */
  readonly invalid: readonly { readonly service: ServicePortKey; readonly address: string }[];
}

/** Canonical text form of an address, or undefined if it does not parse. */
export function normalizeIP(ip: string): string | undefined {
  if (!ipaddr.isValid(ip)) return undefined;
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv6') {
    const v6 = a as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  }
  return a.toString();
}

export function familyOf(ip: string): IPFamily {
  return ip.includes(':') ? 6 : 4;
}

export function frontendKey(protocol: ForwardedProtocol, ip: string, port: number): string {
  return ip.includes(':') ? `${protocol} [${ip}]:${port}` : `${protocol} ${ip}:${port}`;
}

function isLinkLocal6(ip: string): boolean {
  return /^fe[89ab]/i.test(ip);
}

/** Where this table's NodePorts are accepted. */
export function nodePortAddresses(
  tables: ProxyTables,
  family: IPFamily,
  local: LocalAddresses,
  opts: FrontendOptions,
): string[] {
  const spec = tables[family].nodePortAddresses;
  const out = new Set<string>();
  if (spec.kind === 'list') {
    // A listed loopback address only with localhost NodePorts, and never [::1]: kube-proxy's
    // syncProxyRules skips them ("localhost NodePorts are not supported on IPv6", "...but
    // --iptables-localhost-nodeports=false was passed"), as ferry's other modes do.
    const loopbackServed = family === 4 && opts.localhostNodePorts;
    for (const a of spec.addresses) {
      const n = normalizeIP(a);
      if (n === undefined || familyOf(n) !== family) continue;
      if (isLoopback(n) && !loopbackServed) continue;
      out.add(n);
    }
  } else {
    // 'all' = every local address except loopback (and link-local, which needs a scope to bind).
    for (const a of local[family]) {
      const n = normalizeIP(a);
      if (n === undefined || familyOf(n) !== family || isLoopback(n) || (family === 6 && isLinkLocal6(n))) continue;
      out.add(n);
    }
    if (family === 4 && opts.localhostNodePorts) out.add('127.0.0.1');
  }
  return [...out].sort();
}

/**
 * Whether a UDP frontend needs a socket. With no endpoint anywhere (verdict reject on every path
 * the role can take) ferry does not bind it, so the kernel answers ICMP port unreachable — the
 * reject the IR asks for, which a userspace socket cannot send. 'drop' keeps the socket (and
 * discards), so the client gets no ICMP.
 *
 * An LB IP with loadBalancerSourceRanges keeps its socket even then: the IR drops sources
 * outside the ranges before any reject (kube-proxy's filter-prerouting-pre-dnat), and the kernel
 * would answer them ICMP too. Clients inside the ranges then get a drop instead of the ICMP.
 */
function udpNeedsSocket(s: ServiceEntry, role: FrontendRole): boolean {
  if (role === 'clusterIP') return s.internal.verdict !== 'reject';
  if (role === 'loadBalancer' && s.loadBalancerSourceRanges.length > 0) return true;
  if (s.external.verdict !== 'reject') return true;
  return s.externalPolicyLocal && s.cluster.verdict !== 'reject';
}

/** Lays the IR's frontends out as addresses and sockets. */
export function planFrontends(tables: ProxyTables, local: LocalAddresses, opts: FrontendOptions): DesiredFrontends {
  const addresses = new Set<string>();
  const frontends = new Map<string, Frontend>();
  const conflicts: FrontendConflict[] = [];
  const unsupported: ServicePortKey[] = [];
  const invalid: { service: ServicePortKey; address: string }[] = [];
  const localSet = new Set<string>();
  for (const f of [4, 6] as const) for (const a of local[f]) localSet.add(normalizeIP(a) ?? a);

  for (const family of opts.families) {
    const table = tables[family];
    const npAddrs = nodePortAddresses(tables, family, local, opts);
    for (const s of table.services.values()) {
      if (s.protocol === 'SCTP') {
        unsupported.push(s.key);
        continue;
      }
      const protocol: ForwardedProtocol = s.protocol;
      const add = (rawIP: string, port: number, role: FrontendRole, holdAddress: boolean): void => {
        const ip = normalizeIP(rawIP);
        if (ip === undefined || familyOf(ip) !== family) {
          invalid.push({ service: s.key, address: rawIP });
          return;
        }
        // An address the node already has elsewhere (an externalIP that is a node IP) is
        // already local: ferry0 does not need it, and must not own it.
        if (holdAddress && !localSet.has(ip)) addresses.add(ip);
        if (protocol === 'UDP' && !udpNeedsSocket(s, role)) return;
        const key = frontendKey(protocol, ip, port);
        const existing = frontends.get(key);
        if (existing) {
          if (existing.service !== s.key) conflicts.push({ key, kept: existing.service, refused: s.key });
          return;
        }
        frontends.set(key, { key, protocol, family, ip, port, service: s.key, role });
      };
      if (s.clusterIP !== '' && s.clusterIP !== 'None') add(s.clusterIP, s.port, 'clusterIP', true);
      for (const ip of s.externalIPs) add(ip, s.port, 'externalIP', true);
      for (const ip of s.loadBalancerIPs) add(ip, s.port, 'loadBalancer', true);
      if (s.nodePort > 0) for (const ip of npAddrs) add(ip, s.nodePort, 'nodePort', false);
    }
  }
  return { addresses, frontends, conflicts, unsupported, invalid };
}
