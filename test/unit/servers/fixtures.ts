/** Small IR builders for the servers' tests. */
import { createServer } from 'node:net';
import type { ProxyTable, ProxyTables, ServiceEntry } from '../../../src/plan/types.js';

export function entry(over: Partial<ServiceEntry> & { namespace: string; name: string }): ServiceEntry {
  const key = over.key ?? `${over.namespace}/${over.name}:/TCP`;
  return {
    key,
    portName: '',
    protocol: 'TCP',
    family: 4,
    clusterIP: '198.18.0.10',
    port: 80,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    allowLoadBalancerIPSources: false,
    affinityTimeoutSeconds: 0,
    internal: { verdict: 'reject', endpoints: [] },
    external: { verdict: 'reject', endpoints: [] },
    cluster: { verdict: 'reject', endpoints: [] },
    clusterIPMasquerade: 'none',
    externalMasquerade: true,
    externalPolicyLocal: false,
    internalPolicyLocal: false,
    healthCheckNodePort: 0,
    localReadyEndpoints: 0,
    ...over,
  };
}

export function tables(entries4: ServiceEntry[], entries6: ServiceEntry[] = []): ProxyTables {
  const table = (family: 4 | 6, es: ServiceEntry[]): ProxyTable => ({
    family,
    nodeName: 'node-1',
    nodeIPs: [],
    nodePortAddresses: { kind: 'all' },
    localTraffic: { kind: 'none' },
    masqueradeAll: false,
    services: new Map(es.map((e) => [e.key, e])),
  });
  return { 4: table(4, entries4), 6: table(6, entries6) };
}

/** A TCP port that was free a moment ago (bind to 0, read, release). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}
