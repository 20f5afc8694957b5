/**
 * Hand-built IR for the iptables backend's tests: small builders and the golden fixtures.
 * Addresses: ClusterIPs 198.19.0.0/16, pods 198.18.0.0/16, nodes 192.0.2.0/24, externalIPs
 * 203.0.113.0/24, LB IPs 198.51.100.0/24, IPv6 under 2001:db8::/32.
 * (The random IR walks for the partial-vs-full tests come from the nftables fixtures.)
 */
import type { IPFamily, PlannedEndpoint, ProxyTable, ProxyTables, ServiceEntry } from '../../../../src/plan/types.js';
import type { CompileOptions } from '../../../../src/backends/iptables/compiler.js';

/** The options every golden is compiled with. */
export const GOLDEN_OPTS: CompileOptions = { masqueradeMark: 0x4000, largeClusterThreshold: 1000, dropInvalid: true };

export { ep, fwd, REJECT, DROP, svc, table, emptyTable, tables, FULL, changesOf } from '../ir-builders.js';
import { ep, fwd, REJECT, DROP, svc, table, tables, detectLocalInterfaceIR, lbLocalIR, externalIPsIR } from '../ir-builders.js';

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
    what: 'ClusterIP, 3 endpoints, masquerade of non-local traffic; a UDP port with one endpoint; an unnamed port',
    families: [4],
    ir: tables(
      table(4, [
        svc({ namespace: 'default', name: 'web', internal: fwd(e1, e2, e3) }),
        svc({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.1.5', 53, true)) }),
        svc({ namespace: 'default', name: 'plain', portName: '', port: 8000, clusterIP: '198.19.0.11', internal: fwd(e2) }),
      ]),
    ),
  },
  {
    name: 'nodeport-cluster',
    what: 'NodePort, externalTrafficPolicy Cluster: external traffic masqueraded; NodePorts on every local address but loopback',
    families: [4],
    ir: tables(table(4, [svc({ namespace: 'default', name: 'np', nodePort: 30080, internal: fwd(e1, e2) })])),
  },
  {
    name: 'nodeport-local',
    what: 'NodePort, externalTrafficPolicy Local with a local endpoint: KUBE-SVL, short-circuit for pods and the node',
    families: [4],
    ir: tables(
      table(4, [
        svc({ namespace: 'default', name: 'npl', nodePort: 30081, internal: fwd(e1, e2), cluster: fwd(e1, e2), external: fwd(e1), externalPolicyLocal: true, externalMasquerade: false }),
      ]),
    ),
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
    what: 'ClientIP affinity (3h) on ClusterIP and NodePort: -m recent in KUBE-SVC and KUBE-SEP',
    families: [4],
    ir: tables(table(4, [svc({ namespace: 'default', name: 'sticky', nodePort: 30082, affinityTimeoutSeconds: 10800, internal: fwd(e1, e2) })])),
  },
  {
    name: 'no-endpoints',
    what: 'no endpoints anywhere: ClusterIP, externalIP, LB IP and NodePort rejected in filter',
    families: [4],
    ir: tables(
      table(4, [svc({ namespace: 'default', name: 'empty', nodePort: 30083, externalIPs: ['203.0.113.9'], loadBalancerIPs: ['198.51.100.9'], loadBalancerSourceRanges: ['203.0.113.0/24'], internal: REJECT })]),
    ),
  },
  {
    name: 'local-drop',
    what: 'Local policies without local endpoints: internal dropped; external dropped except pods and the node',
    families: [4],
    ir: tables(
      table(4, [
        svc({ namespace: 'default', name: 'itp', internal: DROP, cluster: fwd(e2), external: fwd(e2), internalPolicyLocal: true, clusterIP: '198.19.0.30' }),
        svc({ namespace: 'default', name: 'itp-np', internal: DROP, cluster: fwd(e2), external: fwd(e2), internalPolicyLocal: true, clusterIP: '198.19.0.33', nodePort: 30085 }),
        svc({
          namespace: 'default',
          name: 'etp',
          clusterIP: '198.19.0.31',
          nodePort: 30084,
          loadBalancerIPs: ['198.51.100.8'],
          internal: fwd(e2, e3),
          cluster: fwd(e2, e3),
          external: DROP,
          externalPolicyLocal: true,
          externalMasquerade: false,
        }),
      ]),
    ),
  },
  {
    name: 'dual-stack',
    what: 'one Service in both families (ip6tables input for IPv6), IPv6 endpoint chains with affinity',
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
    what: "local pod traffic recognized by incoming interface: a bridge (IPv4, `-i cbr0`), a name prefix (IPv6, `-i veth+`)",
    families: [4, 6],
    ir: detectLocalInterfaceIR(),
  },
  {
    name: 'nodeport-list',
    what: 'NodePorts only on listed addresses (loopback skipped: no route_localnet); SCTP',
    families: [4],
    ir: tables(
      table(4, [svc({ namespace: 'default', name: 'sctp', protocol: 'SCTP', portName: 'sig', port: 3868, nodePort: 30868, internal: fwd(e3) })], {
        nodePortAddresses: { kind: 'list', addresses: ['192.0.2.10', '127.0.0.1', '192.0.2.11'] },
      }),
    ),
  },
];

/** `count` ClusterIP(+NodePort) services with `epsPer` endpoints each (scale tests). */
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
