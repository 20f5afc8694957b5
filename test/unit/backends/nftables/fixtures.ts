/**
 * Hand-built IR for the nftables backend's tests: small builders, the golden fixtures, and a
 * seeded random generator of IR change sequences for the partial-vs-full property tests.
 * Addresses: ClusterIPs 198.19.0.0/16, pods 198.18.0.0/16, nodes 192.0.2.0/24, externalIPs
 * 203.0.113.0/24, LB IPs 198.51.100.0/24, IPv6 under 2001:db8::/32.
 */
import type {
  EndpointSet,
  IPFamily,
  PlannedEndpoint,
  ProxyTable,
  ProxyTables,
  ServiceEntry,
  SyncChanges,
} from '../../../../src/plan/types.js';

export { ep, fwd, REJECT, DROP, svc, table, emptyTable, tables, FULL, changesOf } from '../ir-builders.js';
import { ep, fwd, REJECT, DROP, svc, table, emptyTable, tables, changesOf, detectLocalInterfaceIR, lbLocalIR, externalIPsIR } from '../ir-builders.js';

const e1 = ep('198.18.1.1', 8080, true);
const e2 = ep('198.18.2.2', 8080);
const e3 = ep('198.18.3.3', 8080);

export interface Golden {
  readonly name: string;
  readonly what: string;
  readonly ir: ProxyTables;
  readonly families: readonly IPFamily[];
}

export const GOLDENS: readonly Golden[] = [
  {
    name: 'clusterip',
    what: 'ClusterIP, 3 endpoints, masquerade of non-local traffic; a UDP port with one endpoint; two service CIDRs (unallocated addresses dropped)',
    families: [4],
    ir: tables(
      table(
        4,
        [
          svc({ namespace: 'default', name: 'web', internal: fwd(e1, e2, e3) }),
          svc({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.1.5', 53, true)) }),
        ],
        { serviceCIDRs: ['198.19.0.0/16', '203.0.113.0/24'] },
      ),
    ),
  },
  {
    name: 'nodeport-cluster',
    what: 'NodePort, externalTrafficPolicy Cluster: external traffic masqueraded; NodePorts on every local address',
    families: [4],
    ir: tables(table(4, [svc({ namespace: 'default', name: 'np', nodePort: 30080, internal: fwd(e1, e2) })])),
  },
  {
    name: 'lb-local',
    what: 'LoadBalancer, Local policy, source ranges (one contains the node IP), health check port',
    families: [4],
    ir: lbLocalIR(),
  },
  {
    name: 'externalips',
    what: 'externalIPs, Cluster policy',
    families: [4],
    ir: externalIPsIR(),
  },
  {
    name: 'affinity',
    what: 'ClientIP affinity (3h) on ClusterIP and NodePort: per-endpoint chains, one shared affinity set',
    families: [4],
    ir: tables(table(4, [svc({ namespace: 'default', name: 'sticky', nodePort: 30081, affinityTimeoutSeconds: 10800, internal: fwd(e1, e2) })])),
  },
  {
    name: 'no-endpoints',
    what: 'no endpoints anywhere: ClusterIP, externalIP and NodePort rejected',
    families: [4],
    ir: tables(table(4, [svc({ namespace: 'default', name: 'empty', nodePort: 30082, externalIPs: ['203.0.113.9'], internal: REJECT })])),
  },
  {
    name: 'local-drop',
    what: 'Local policies without local endpoints: internal dropped; external dropped except pods and the node (cluster set)',
    families: [4],
    ir: tables(
      table(4, [
        svc({ namespace: 'default', name: 'itp', internal: DROP, cluster: fwd(e2), external: fwd(e2), internalPolicyLocal: true, clusterIP: '198.19.0.30' }),
        svc({
          namespace: 'default',
          name: 'etp',
          clusterIP: '198.19.0.31',
          nodePort: 30083,
          loadBalancerIPs: ['198.51.100.8'],
          internal: fwd(e2, e3),
          cluster: fwd(e2, e3),
          external: DROP,
          externalPolicyLocal: true,
          externalMasquerade: false,
        }),
        svc({ namespace: 'default', name: 'etp-nodetector', clusterIP: '198.19.0.32', nodePort: 30084, internal: fwd(e2), cluster: fwd(e2), external: DROP, externalPolicyLocal: true, externalMasquerade: false }),
      ]),
    ),
  },
  {
    name: 'dual-stack',
    what: 'one Service in both families: ip and ip6 tables, IPv6 endpoint chains with affinity',
    families: [4, 6],
    ir: tables(
      table(4, [svc({ namespace: 'default', name: 'ds', nodePort: 30090, internal: fwd(e1, e2) })]),
      table(6, [
        svc({ namespace: 'default', name: 'ds', family: 6, nodePort: 30090, internal: fwd(ep('2001:db8:18::1', 8080, true), ep('2001:db8:18::2', 8080)) }),
        svc({ namespace: 'default', name: 'ds6', family: 6, clusterIP: '2001:db8:19::11', affinityTimeoutSeconds: 60, externalIPs: ['2001:db8:113::5'], internal: fwd(ep('2001:db8:18::3', 9090)) }),
      ]),
    ),
  },
  {
    name: 'masquerade-modes',
    what: 'ClusterIP masquerade all / nonLocal / none; no local-traffic detector',
    families: [4],
    ir: tables(
      table(
        4,
        [
          svc({ namespace: 'm', name: 'all', clusterIP: '198.19.0.41', clusterIPMasquerade: 'all', internal: fwd(e1) }),
          svc({ namespace: 'm', name: 'nonlocal', clusterIP: '198.19.0.42', clusterIPMasquerade: 'nonLocal', internal: fwd(e1) }),
          svc({ namespace: 'm', name: 'none', clusterIP: '198.19.0.43', clusterIPMasquerade: 'none', internal: fwd(e1) }),
        ],
        { localTraffic: { kind: 'none' } },
      ),
    ),
  },
  {
    name: 'detect-local-interface',
    what: 'local pod traffic recognized by incoming interface: a bridge (IPv4), a name prefix (IPv6); masquerade nonLocal and externalTrafficPolicy Local',
    families: [4, 6],
    ir: detectLocalInterfaceIR(),
  },
  {
    name: 'nodeport-list',
    what: 'NodePorts only on listed addresses (loopback in the list is skipped: no route_localnet); SCTP',
    families: [4],
    ir: tables(
      table(4, [svc({ namespace: 'default', name: 'sctp', protocol: 'SCTP', portName: 'sig', port: 3868, nodePort: 30868, internal: fwd(e3) })], {
        nodePortAddresses: { kind: 'list', addresses: ['192.0.2.10', '127.0.0.1', '192.0.2.11'] },
        localTraffic: { kind: 'clusterCIDR', cidrs: ['198.18.0.0/16', '198.18.5.0/24', '10.0.0.0/8'] },
      }),
    ),
  },
];

// ---- random IR sequences (deterministic) ----

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

function addr(family: IPFamily, kind: 'pod' | 'ext' | 'lb' | 'cluster', n: number): string {
  if (family === 4) {
    const net = { pod: '198.18', ext: '203.0.113', lb: '198.51.100', cluster: '198.19' }[kind];
    return kind === 'pod' || kind === 'cluster' ? `${net}.${Math.floor(n / 250)}.${(n % 250) + 1}` : `${net}.${(n % 250) + 1}`;
  }
  const net = { pod: '2001:db8:18::', ext: '2001:db8:113::', lb: '2001:db8:100::', cluster: '2001:db8:19::' }[kind];
  return `${net}${(n + 1).toString(16)}`;
}

/** A random ServiceEntry for `name` in `family`; small address pools so that sharing happens. */
export function randomService(r: () => number, family: IPFamily, ns: string, name: string, portName: string, protocol: 'TCP' | 'UDP' | 'SCTP', clusterIP: string): ServiceEntry {
  const eps = (): PlannedEndpoint[] => {
    const n = Math.floor(r() * 4);
    const out = new Map<string, PlannedEndpoint>();
    for (let i = 0; i < n; i++) {
      const e = ep(addr(family, 'pod', Math.floor(r() * 12)), pick(r, [8080, 9090]), r() < 0.4);
      out.set(`${e.ip}|${e.port}`, e);
    }
    return [...out.values()];
  };
  const set = (): EndpointSet => {
    const x = r();
    if (x < 0.15) return REJECT;
    if (x < 0.25) return DROP;
    const e = eps();
    return e.length ? fwd(...e) : REJECT;
  };
  const internal = set();
  const local = r() < 0.3;
  const cluster = r() < 0.7 ? internal : set();
  const external = local ? set() : cluster;
  const lbIPs = r() < 0.3 ? [addr(family, 'lb', Math.floor(r() * 4))] : [];
  return svc({
    namespace: ns,
    name,
    portName,
    protocol,
    family,
    clusterIP,
    port: pick(r, [80, 443, 53]),
    nodePort: r() < 0.4 ? 30000 + Math.floor(r() * 8) : 0,
    externalIPs: r() < 0.3 ? [addr(family, 'ext', Math.floor(r() * 4))] : [],
    loadBalancerIPs: lbIPs,
    loadBalancerSourceRanges: lbIPs.length && r() < 0.5 ? [family === 4 ? '203.0.113.0/25' : '2001:db8:113::/64'] : [],
    allowLoadBalancerIPSources: lbIPs.length > 0 && r() < 0.3,
    affinityTimeoutSeconds: r() < 0.25 ? pick(r, [60, 10800]) : 0,
    internal,
    cluster,
    external,
    clusterIPMasquerade: pick(r, ['all', 'nonLocal', 'none'] as const),
    externalPolicyLocal: local,
    externalMasquerade: !local,
    internalPolicyLocal: false,
  });
}

export interface Step {
  readonly next: ProxyTables;
  readonly changes: SyncChanges;
}

/**
 * A random walk of `steps` IR versions over a pool of service ports in the given families. Each
 * step mutates a few service ports (add, remove, re-randomize) and sometimes table fields.
 */
export function randomWalk(seed: number, steps: number, families: readonly IPFamily[], pool = 12): { initial: ProxyTables; steps: Step[] } {
  const r = rng(seed);
  const slots: { ns: string; name: string; portName: string; protocol: 'TCP' | 'UDP' | 'SCTP'; ip: number }[] = [];
  for (let i = 0; i < pool; i++) {
    // Pairs of ports share a Service (and its ClusterIP) to exercise shared elements.
    const svcNo = Math.floor(i / 2);
    slots.push({ ns: pick(r, ['a', 'b']), name: `s${svcNo}`, portName: i % 2 ? 'p1' : 'p0', protocol: pick(r, ['TCP', 'UDP', 'SCTP'] as const), ip: svcNo });
  }
  // Same ns for both ports of a Service.
  for (let i = 1; i < pool; i += 2) slots[i] = { ...slots[i]!, ns: slots[i - 1]!.ns };

  const state: Record<IPFamily, Map<string, ServiceEntry>> = { 4: new Map(), 6: new Map() };
  const fields: Record<IPFamily, { -readonly [K in keyof ProxyTable]?: ProxyTable[K] }> = { 4: {}, 6: {} };
  const mk = (): ProxyTables => ({
    4: families.includes(4) ? table(4, [...state[4].values()], fields[4]) : emptyTable(4),
    6: families.includes(6) ? table(6, [...state[6].values()], fields[6]) : emptyTable(6),
  });
  const mutate = (changed: Set<string>): boolean => {
    let tableChanged = false;
    const n = 1 + Math.floor(r() * 3);
    for (let i = 0; i < n; i++) {
      const family = pick(r, families);
      const s = pick(r, slots);
      const e = randomService(r, family, s.ns, s.name, s.portName, s.protocol, addr(family, 'cluster', s.ip));
      if (state[family].has(e.key) && r() < 0.25) state[family].delete(e.key);
      else state[family].set(e.key, e);
      changed.add(e.key);
    }
    if (r() < 0.1) {
      const family = pick(r, families);
      const f = fields[family];
      const x = r();
      if (x < 0.3) f.localTraffic = r() < 0.5 ? { kind: 'none' } : { kind: 'clusterCIDR', cidrs: family === 4 ? ['198.18.0.0/17'] : ['2001:db8:18::/80'] };
      else if (x < 0.6) f.nodePortAddresses = r() < 0.5 ? { kind: 'all' } : { kind: 'list', addresses: family === 4 ? ['192.0.2.10'] : ['2001:db8:2::10'] };
      else f.nodeIPs = family === 4 ? [pick(r, ['192.0.2.10', '203.0.113.77'])] : ['2001:db8:2::10'];
      tableChanged = true;
    }
    return tableChanged;
  };
  mutate(new Set());
  mutate(new Set());
  const initial = mk();
  const out: Step[] = [];
  for (let i = 0; i < steps; i++) {
    const changed = new Set<string>();
    const tableChanged = mutate(changed);
    out.push({ next: mk(), changes: changesOf(changed, tableChanged) });
  }
  return { initial, steps: out };
}

/** `count` ClusterIP+NodePort services with `epsPer` endpoints each (scale tests). */
export function bigTable(family: IPFamily, count: number, epsPer: number): ProxyTable {
  const services: ServiceEntry[] = [];
  for (let i = 0; i < count; i++) {
    const eps: PlannedEndpoint[] = [];
    for (let j = 0; j < epsPer; j++) {
      const n = i * epsPer + j;
      eps.push(family === 4 ? ep(`198.18.${Math.floor(n / 250) % 250}.${(n % 250) + 1}`, 8080) : ep(`2001:db8:18::${n.toString(16)}`, 8080));
    }
    services.push(
      svc({
        namespace: `ns${i % 50}`,
        name: `svc${i}`,
        family,
        clusterIP: family === 4 ? `198.19.${Math.floor(i / 250)}.${(i % 250) + 1}` : `2001:db8:19::${i.toString(16)}`,
        nodePort: i % 3 === 0 ? 30000 + (i % 2700) : 0,
        internal: fwd(...eps),
      }),
    );
  }
  return table(family, services);
}
