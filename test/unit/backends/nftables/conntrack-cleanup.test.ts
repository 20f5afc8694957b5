/**
 * staleConntrack (src/backends/conntrack-cleanup.ts): which conntrack deletions a sync calls for.
 */
import t from 'tap';
import { staleConntrack } from '../../../../src/backends/conntrack-cleanup.js';
import { DROP, ep, fwd, REJECT, svc, table, tables } from './fixtures.js';

const udp = (over: Parameters<typeof svc>[0]) => svc({ protocol: 'UDP', portName: 'dns', port: 53, ...over });

t.test('TCP services never need conntrack cleanup', async (t) => {
  const a = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 80)) });
  const b = { ...a, internal: fwd(ep('198.18.0.3', 80)), external: fwd(ep('198.18.0.3', 80)), cluster: fwd(ep('198.18.0.3', 80)) };
  t.same(staleConntrack(tables(table(4, [a])), tables(table(4, [b]))), []);
});

t.test("an endpoint that left a UDP service is cleared through that service's frontends only (kube-proxy's filters)", async (t) => {
  const a = udp({ namespace: 'd', name: 'dns', clusterIP: '198.19.0.10', nodePort: 30053, internal: fwd(ep('198.18.0.2', 53), ep('198.18.0.3', 53)) });
  const b = { ...a, internal: fwd(ep('198.18.0.2', 53)), external: fwd(ep('198.18.0.2', 53)), cluster: fwd(ep('198.18.0.2', 53)) };
  t.same(
    staleConntrack(tables(table(4, [a])), tables(table(4, [b]))),
    [
      { family: 4, protocol: 'udp', origDst: '198.19.0.10', origDstPort: 53, replySrc: '198.18.0.3', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '198.18.0.3', replySrcPort: 53 },
    ],
    'never by reply source alone: a pod-to-pod or hostPort flow to the same ip:port is not the proxy\'s',
  );
});

t.test('an endpoint still serving another UDP service is cleared only for the old frontends', async (t) => {
  const a = udp({ namespace: 'd', name: 'a', clusterIP: '198.19.0.1', nodePort: 30053, internal: fwd(ep('198.18.0.3', 53)) });
  const other = udp({ namespace: 'd', name: 'b', clusterIP: '198.19.0.2', internal: fwd(ep('198.18.0.3', 53)) });
  const a2 = { ...a, internal: REJECT, external: REJECT, cluster: REJECT };
  t.same(staleConntrack(tables(table(4, [a, other])), tables(table(4, [a2, other]))), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.1', origDstPort: 53, replySrc: '198.18.0.3', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '198.18.0.3', replySrcPort: 53 },
  ]);
});

t.test('frontends going from reject/drop/absent to forward are cleared by original destination', async (t) => {
  const rejected = udp({ namespace: 'd', name: 'dns', clusterIP: '198.19.0.53', nodePort: 30053, externalIPs: ['203.0.113.5'], internal: REJECT });
  const serving = { ...rejected, internal: fwd(ep('198.18.0.2', 53)), external: fwd(ep('198.18.0.2', 53)), cluster: fwd(ep('198.18.0.2', 53)) };
  t.same(staleConntrack(tables(table(4, [rejected])), tables(table(4, [serving]))), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53 },
    { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053 },
  ]);
  const localDrop = { ...serving, external: DROP, externalPolicyLocal: true };
  t.same(
    staleConntrack(tables(table(4, [localDrop])), tables(table(4, [serving]))),
    [
      { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53 },
      { family: 4, protocol: 'udp', origDstPort: 30053 },
    ],
    'external frontends that dropped and now forward are cleared; the ClusterIP already forwarded',
  );
  t.same(
    staleConntrack(null, tables(table(4, [serving]))),
    [
      { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53, replySrc: '203.0.113.5', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDstPort: 30053, replySrcPort: 30053 },
    ],
    'first sync after a start (nothing known): only the flows answered by the frontend itself, never DNAT-ed; DNAT-ed flows survive',
  );
  t.same(staleConntrack(tables(table(4, [serving])), tables(table(4, [serving]))), [], 'a full sync against the tables the kernel held: nothing changed, nothing cleared');
});

t.test('unchanged service ports are skipped when `changed` is given; IPv6 families are covered', async (t) => {
  const a = udp({ namespace: 'd', name: 'v6', family: 6, internal: fwd(ep('2001:db8:18::2', 53)) });
  const b = { ...a, internal: REJECT, external: REJECT, cluster: REJECT };
  const prev = tables(table(4, []), table(6, [a]));
  const next = tables(table(4, []), table(6, [b]));
  t.same(staleConntrack(prev, next, new Set()), [], 'nothing listed as changed: nothing to do');
  t.same(staleConntrack(prev, next, new Set([a.key])), [
    { family: 6, protocol: 'udp', origDst: a.clusterIP, origDstPort: 53, replySrc: '2001:db8:18::2', replySrcPort: 53 },
  ]);
});
