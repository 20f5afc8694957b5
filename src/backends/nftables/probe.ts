/**
 * The nftables mode's start-up probe (`--proxy-mode-fallback`): the transaction a first sync
 * sends for a small table — the skeleton (base chains at their priorities, sets and maps with
 * concatenated keys, interval sets, verdict maps) and one Service with most of what a Service can
 * need (endpoints chosen by numgen, ClientIP affinity, a NodePort, an LB IP with source ranges,
 * masquerading) — under a table of its own that the same transaction deletes, so the kernel
 * holds none of it at any moment. A kernel that can make a NAT chain but refuses something of
 * ferry's real rules fails here, at start, where the fallback can still act (a probe of a NAT
 * chain alone passed there, and every sync then failed; kube-proxy refuses nftables mode below
 * Linux 5.13 by version instead).
 *
 * probeTransaction is pure; probeNftables applies it through the runner the backend will use.
 */
import type { IPFamily, PlannedEndpoint, ProxyTable, ProxyTables, ServiceEntry } from '../../plan/types.js';
import { servicePortKey } from '../../model/types.js';
import { compileFull } from './compiler.js';
import type { Transaction } from './transaction.js';
import { applyTransaction, type NftRunner } from '../kernel/nft.js';

export const PROBE_TABLE = 'ferry-probe';

/** Documentation addresses (RFC 5737, RFC 3849): nothing of the probe is ever live. */
const ADDR: Record<IPFamily, { cluster: string; lb: string; range: string; eps: [string, string]; node: string; pods: string; services: string }> = {
  4: { cluster: '198.51.100.10', lb: '198.51.100.20', range: '203.0.113.0/24', eps: ['198.51.100.2', '198.51.100.3'], node: '192.0.2.10', pods: '198.51.100.0/25', services: '198.51.100.0/24' },
  6: { cluster: '2001:db8:ffff::10', lb: '2001:db8:ffff::20', range: '2001:db8:fffe::/64', eps: ['2001:db8:ffff::2', '2001:db8:ffff::3'], node: '2001:db8:fffd::10', pods: '2001:db8:ffff::/112', services: '2001:db8:ffff::/108' },
};

function probeTable(family: IPFamily): ProxyTable {
  const a = ADDR[family];
  const endpoints: PlannedEndpoint[] = a.eps.map((ip) => ({ ip, port: 8080, isLocal: false, ready: true }));
  const set = { verdict: 'forward' as const, endpoints };
  const svc: ServiceEntry = {
    key: servicePortKey(PROBE_TABLE, 'probe', 'http', 'TCP'),
    namespace: PROBE_TABLE,
    name: 'probe',
    portName: 'http',
    protocol: 'TCP',
    family,
    clusterIP: a.cluster,
    port: 80,
    nodePort: 30999,
    externalIPs: [],
    loadBalancerIPs: [a.lb],
    loadBalancerSourceRanges: [a.range],
    allowLoadBalancerIPSources: false,
    affinityTimeoutSeconds: 10800,
    internal: set,
    external: set,
    cluster: set,
    clusterIPMasquerade: 'nonLocal',
    externalMasquerade: true,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    localReadyEndpoints: 0,
  };
  return {
    family,
    nodeName: PROBE_TABLE,
    nodeIPs: [a.node],
    nodePortAddresses: { kind: 'all' },
    localTraffic: { kind: 'clusterCIDR', cidrs: [a.pods] },
    masqueradeAll: false,
    serviceCIDRs: [a.services],
    services: new Map([[svc.key, svc]]),
  };
}

/** The probe for `families`: ferry's rules for one Service in table `ferry-probe`, then its deletion. */
export function probeTransaction(families: readonly IPFamily[], masqueradeMark: number): Transaction {
  const tables: ProxyTables = { 4: probeTable(4), 6: probeTable(6) };
  const tx = compileFull(tables, { families, masqueradeMark, table: PROBE_TABLE });
  for (const f of families) tx.deleteTable(`${f === 4 ? 'ip' : 'ip6'} ${PROBE_TABLE}`);
  return tx;
}

/** Applies the probe through `nft` (the backend's runner); rejects with the kernel's or nft's words. */
export async function probeNftables(nft: NftRunner, families: readonly IPFamily[], masqueradeMark: number): Promise<void> {
  await applyTransaction(nft, probeTransaction(families, masqueradeMark));
}
