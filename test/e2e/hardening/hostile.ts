/**
 * Hostile API objects: Services and EndpointSlices as they might sit in etcd after skipping
 * validation — wrong types everywhere, absurd values, special addresses, huge label maps, no
 * name. Every one is invalid in a way ferry must report (so each is logged and counted once).
 * ClusterIPs that parse are taken from 203.0.113.0/24, outside the simulator's service CIDR, so
 * no good Service can share one.
 * Deterministic: the same list every run.
 */
export interface Hostile {
  /** Storage key in the simulator's store. */
  readonly resource: 'services' | 'endpointslices.discovery.k8s.io';
  readonly obj: Record<string, unknown>;
  /** `namespace/name` when the object has both as strings (the tracker names it), else undefined (the informer skips it). */
  readonly id: string | undefined;
}

const SLICE_RES = 'endpointslices.discovery.k8s.io';

function hugeLabels(n: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < n; i++) out[`hostile.example/l${i}`] = `v${i}`;
  return out;
}

/** Bad Services, one per variant, cycled. `goodNames` are real Services hostile slices claim. */
export function hostileObjects(count: number, goodNames: readonly string[]): Hostile[] {
  const out: Hostile[] = [];
  const ns = 'default';
  const svcVariants: ((i: number) => { meta: Record<string, unknown>; rest: Record<string, unknown> })[] = [
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.1', ports: { port: 80 } } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.2', ports: 'eighty' } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.3', ports: [{ port: 1e9 }, { port: -1 }, { port: '80' }, null, 7] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { type: 'NodePort', clusterIP: '203.0.113.4', ports: [{ port: 80, nodePort: 99999, protocol: 'ICMP', targetPort: {} }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: 'banana', ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '999.1.1.1', ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '127.0.0.1', ports: [{ port: 10256 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIPs: ['0.0.0.0'], ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIPs: ['224.0.0.1'], ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIPs: ['255.255.255.255'], ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIPs: ['169.254.0.1', 'a', 'b'], ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: 42 } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { type: 5, clusterIP: '203.0.113.5' } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.6', ipFamilies: ['IPv4', 'IPv4', 'IPv6'], ports: [{ port: 80 }] } } }),
    (i) => ({
      meta: { name: `bad-svc-${i}` },
      rest: { spec: { clusterIP: '203.0.113.7', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 'forever' } }, ports: [{ port: 80 }] } },
    }),
    (i) => ({ meta: { name: `bad-svc-${i}`, labels: hugeLabels(2000) }, rest: { spec: { clusterIP: '203.0.113.8', ports: [{ port: 80, protocol: 'XTP' }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}`, labels: 'not-a-map' }, rest: { spec: { clusterIP: '203.0.113.9', externalIPs: '1.2.3.4', ports: [{ port: 0 }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.10', externalIPs: ['127.0.0.1'], ports: [{ port: 80, name: 'a:b' }] } } }),
    (i) => ({ meta: { name: `bad-svc-${i}` }, rest: { spec: { clusterIP: '203.0.113.11', ports: [{ port: 80 }] }, status: { loadBalancer: { ingress: [{ ip: 'garbage' }] } } } }),
    // Without a usable name: the informer skips and counts them (metadata.namespace varies so the
    // simulator's store, which files objects by namespace/name, keeps them apart).
    (i) => ({ meta: { namespace: `hostile-${i}` }, rest: { spec: { clusterIP: '203.0.113.12', ports: [{ port: 80 }] } } }),
    (i) => ({ meta: { namespace: `hostile-${i}`, name: 12345 }, rest: { spec: { clusterIP: '203.0.113.13', ports: [{ port: 80 }] } } }),
  ];
  const sliceVariants: ((i: number) => { meta: Record<string, unknown>; rest: Record<string, unknown> })[] = [
    (i) => ({ meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } }, rest: { addressType: 'IPv4', endpoints: { x: 1 }, ports: [{ name: '', port: 8080 }] } }),
    (i) => ({
      meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } },
      rest: { addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'] }, { addresses: ['0.0.0.0'] }, { addresses: ['169.254.169.254'] }], ports: [{ name: '', port: 8080 }] },
    }),
    (i) => ({
      meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } },
      rest: { addressType: 'IPv4', endpoints: [{ addresses: 'not-a-list' }, { addresses: [42] }, { addresses: ['2001:db8::1'] }], ports: [{ name: '', port: 8080 }] },
    }),
    (i) => ({ meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } }, rest: { addressType: 'IPv5', endpoints: [], ports: [] } }),
    (i) => ({
      meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } },
      rest: { addressType: 'IPv4', endpoints: [], ports: [{ name: 7, port: 8080 }, { name: '', port: 70000 }, { name: '', protocol: 'GRE', port: 1 }, 'x'] },
    }),
    (i) => ({ meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': 'nothing', ...hugeLabels(1000) } }, rest: { addressType: 'IPv4', ports: 'all' } }),
    (i) => ({
      meta: { name: `bad-slice-${i}`, labels: { 'kubernetes.io/service-name': goodNames[i % goodNames.length] } },
      rest: { addressType: 'IPv4', endpoints: [{ addresses: ['224.0.0.251'], hints: { forZones: [{ name: 5 }] } }], ports: [{ name: '', port: 8080 }] },
    }),
    (i) => ({ meta: { namespace: `hostile-${i}` }, rest: { addressType: 'IPv4', endpoints: [], ports: [] } }),
    (i) => ({ meta: { namespace: `hostile-${i}`, name: ['x'] }, rest: { addressType: 'IPv4' } }),
  ];
  const half = Math.floor(count / 2);
  for (let i = 0; i < half; i++) {
    const v = svcVariants[i % svcVariants.length]!(i);
    const meta = { namespace: ns, ...v.meta };
    out.push({ resource: 'services', obj: { apiVersion: 'v1', kind: 'Service', metadata: meta, ...v.rest }, id: idOf(meta) });
  }
  for (let i = 0; i < count - half; i++) {
    const v = sliceVariants[i % sliceVariants.length]!(i);
    const meta = { namespace: ns, ...v.meta };
    out.push({ resource: SLICE_RES, obj: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: meta, ...v.rest }, id: idOf(meta) });
  }
  return out;
}

function idOf(meta: Record<string, unknown>): string | undefined {
  const n = meta['name'];
  const s = meta['namespace'];
  return typeof n === 'string' && n !== '' && typeof s === 'string' && s !== '' ? `${s}/${n}` : undefined;
}
