/**
 * IR builders shared by the backends' tests (nftables, iptables, userspace): endpoints, endpoint sets,
 * service entries, tables and change sets, with defaults that keep fixtures short.
 */
import type {
  EndpointSet,
  IPFamily,
  PlannedEndpoint,
  ProxyTable,
  ProxyTables,
  ServiceEntry,
  SyncChanges,
} from '../../../src/plan/types.js';
import { servicePortKey } from '../../../src/model/types.js';

export function ep(ip: string, port: number, isLocal = false, ready = true): PlannedEndpoint {
  return { ip, port, isLocal, ready };
}

export function fwd(...endpoints: PlannedEndpoint[]): EndpointSet {
  const sorted = [...endpoints].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
  return { verdict: 'forward', endpoints: sorted };
}

export const REJECT: EndpointSet = { verdict: 'reject', endpoints: [] };
export const DROP: EndpointSet = { verdict: 'drop', endpoints: [] };

type SvcInput = Partial<ServiceEntry> & { namespace: string; name: string };

export function svc(s: SvcInput): ServiceEntry {
  const portName = s.portName ?? 'http';
  const protocol = s.protocol ?? 'TCP';
  const family = s.family ?? 4;
  const internal = s.internal ?? REJECT;
  return {
    key: servicePortKey(s.namespace, s.name, portName, protocol),
    namespace: s.namespace,
    name: s.name,
    portName,
    protocol,
    family,
    clusterIP: s.clusterIP ?? (family === 4 ? '198.19.0.10' : '2001:db8:19::10'),
    port: s.port ?? 80,
    nodePort: s.nodePort ?? 0,
    externalIPs: s.externalIPs ?? [],
    loadBalancerIPs: s.loadBalancerIPs ?? [],
    loadBalancerSourceRanges: s.loadBalancerSourceRanges ?? [],
    allowLoadBalancerIPSources: s.allowLoadBalancerIPSources ?? false,
    affinityTimeoutSeconds: s.affinityTimeoutSeconds ?? 0,
    internal,
    external: s.external ?? internal,
    cluster: s.cluster ?? internal,
    clusterIPMasquerade: s.clusterIPMasquerade ?? 'nonLocal',
    externalMasquerade: s.externalMasquerade ?? !(s.externalPolicyLocal ?? false),
    externalPolicyLocal: s.externalPolicyLocal ?? false,
    internalPolicyLocal: s.internalPolicyLocal ?? false,
    healthCheckNodePort: s.healthCheckNodePort ?? 0,
    localReadyEndpoints: s.localReadyEndpoints ?? 0,
    ...(s.serving !== undefined ? { serving: s.serving } : {}),
  };
}

export function table(family: IPFamily, services: ServiceEntry[], over: Partial<ProxyTable> = {}): ProxyTable {
  const sorted = [...services].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return {
    family,
    nodeName: 'node-a',
    nodeIPs: family === 4 ? ['192.0.2.10'] : ['2001:db8:2::10'],
    nodePortAddresses: { kind: 'all' },
    localTraffic: { kind: 'clusterCIDR', cidrs: family === 4 ? ['198.18.0.0/16'] : ['2001:db8:18::/64'] },
    masqueradeAll: false,
    ...over,
    services: new Map(sorted.map((s) => [s.key, s])),
  };
}

export function emptyTable(family: IPFamily): ProxyTable {
  return table(family, []);
}

export function tables(v4: ProxyTable, v6: ProxyTable = emptyTable(6)): ProxyTables {
  return { 4: v4, 6: v6 };
}

export const FULL: SyncChanges = { full: true, changed: new Set(), tableChanged: true };

export function changesOf(keys: Iterable<string>, tableChanged = false): SyncChanges {
  return { full: false, changed: new Set(keys), tableChanged };
}

/**
 * The detect-local-interface golden's IR, the same for both kernel backends: local pod traffic
 * recognized by incoming interface — a bridge (IPv4), a name prefix (IPv6) — with masquerade
 * nonLocal and externalTrafficPolicy Local.
 */
export function detectLocalInterfaceIR(): ProxyTables {
  const e1 = ep('198.18.1.1', 8080, true);
  const e2 = ep('198.18.2.2', 8080);
  const e3 = ep('198.18.3.3', 8080);
  return tables(
    table(
      4,
      [
        svc({ namespace: 'i', name: 'nonlocal', clusterIP: '198.19.0.42', clusterIPMasquerade: 'nonLocal', internal: fwd(e1, e2) }),
        svc({ namespace: 'i', name: 'etp', clusterIP: '198.19.0.31', nodePort: 30083, internal: fwd(e2, e3), cluster: fwd(e2, e3), external: DROP, externalPolicyLocal: true, externalMasquerade: false }),
      ],
      { localTraffic: { kind: 'bridgeInterface', name: 'cbr0' } },
    ),
    table(
      6,
      [
        svc({ namespace: 'i', name: 'nonlocal', family: 6, clusterIP: '2001:db8:19::42', clusterIPMasquerade: 'nonLocal', internal: fwd(ep('2001:db8:18::1', 8080, true)) }),
        svc({ namespace: 'i', name: 'etp', family: 6, clusterIP: '2001:db8:19::31', nodePort: 30083, internal: fwd(ep('2001:db8:18::2', 8080)), cluster: fwd(ep('2001:db8:18::2', 8080)), external: DROP, externalPolicyLocal: true, externalMasquerade: false }),
      ],
      { localTraffic: { kind: 'interfaceNamePrefix', prefix: 'veth' } },
    ),
  );
}

/** The lb-local golden's IR (both kernel backends): LoadBalancer, Local policy, source ranges, health check port. */
export function lbLocalIR(): ProxyTables {
  const e1 = ep('198.18.1.1', 8080, true);
  const e2 = ep('198.18.2.2', 8080);
  return tables(
    table(4, [
      svc({
        namespace: 'shop',
        name: 'front',
        portName: 'https',
        port: 443,
        clusterIP: '198.19.0.20',
        nodePort: 30443,
        loadBalancerIPs: ['198.51.100.7'],
        loadBalancerSourceRanges: ['203.0.113.0/24', '192.0.2.0/24'],
        // The planner's decision: a range contains the node's primary IP (192.0.2.10).
        allowLoadBalancerIPSources: true,
        internal: fwd(e1, e2),
        external: fwd(e1),
        cluster: fwd(e1, e2),
        externalPolicyLocal: true,
        externalMasquerade: false,
        healthCheckNodePort: 32000,
        localReadyEndpoints: 1,
      }),
    ]),
  );
}

/** The externalips golden's IR (both kernel backends): two externalIPs, Cluster policy. */
export function externalIPsIR(): ProxyTables {
  return tables(table(4, [svc({ namespace: 'default', name: 'ext', externalIPs: ['203.0.113.5', '203.0.113.6'], internal: fwd(ep('198.18.2.2', 8080), ep('198.18.3.3', 8080)) })]));
}
