/**
 * staleConntrack (src/backends/conntrack-cleanup.ts): which conntrack deletions a sync calls for.
 */
import t from 'tap';
import { conntrackListings, staleConntrack } from '../../../../src/backends/conntrack-cleanup.js';
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

t.test('frontends going from reject/drop/absent to forward lose the flows they answered themselves (never DNAT-ed)', async (t) => {
  const rejected = udp({ namespace: 'd', name: 'dns', clusterIP: '198.19.0.53', nodePort: 30053, externalIPs: ['203.0.113.5'], internal: REJECT });
  const serving = { ...rejected, internal: fwd(ep('198.18.0.2', 53)), external: fwd(ep('198.18.0.2', 53)), cluster: fwd(ep('198.18.0.2', 53)) };
  t.same(staleConntrack(tables(table(4, [rejected])), tables(table(4, [serving]))), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53, replySrc: '203.0.113.5', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrcPort: 30053 },
  ]);
  const localDrop = { ...serving, external: DROP, externalPolicyLocal: true };
  t.same(
    staleConntrack(tables(table(4, [localDrop])), tables(table(4, [serving]))),
    [
      { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53, replySrc: '203.0.113.5', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDstPort: 30053, replySrcPort: 30053 },
    ],
    'external frontends that dropped and now forward: only their own answers, never the flows DNAT-ed to the serving endpoint (a policy shift cuts none); the ClusterIP already forwarded',
  );
  t.same(
    staleConntrack(null, tables(table(4, [serving]))),
    [
      { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53, replySrc: '203.0.113.5', replySrcPort: 53 },
      { family: 4, protocol: 'udp', origDstPort: 30053, replySrcPort: 30053 },
    ],
    'first sync after a start, no listing (it failed): only the flows answered by the frontend itself, never DNAT-ed',
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

/** A UDP conntrack entry as the addon lists it (original source, client side, made up). */
function flow(origDst: string, origDstPort: number, replySrc: string, replySrcPort: number, protocol: 'udp' | 'sctp' | 'tcp' = 'udp', family: 4 | 6 = 4) {
  const client = family === 4 ? '198.18.5.5' : '2001:db8:18::5:5';
  return { family, protocol, origSrc: client, origSrcPort: 40000, origDst, origDstPort, replySrc, replySrcPort, replyDst: client, replyDstPort: 40000 } as const;
}

t.test('first sync after a start, with the listed entries: every flow to a frontend whose reply source is not a serving endpoint is cleared (kube-proxy CleanStaleEntries)', async (t) => {
  // Y replaced X while ferry was down; Z is terminating but still serving.
  const dns = udp({
    namespace: 'kube-system',
    name: 'dns',
    clusterIP: '198.19.0.53',
    nodePort: 30053,
    externalIPs: ['203.0.113.5'],
    internal: fwd(ep('198.18.0.2', 53)),
    serving: fwd(ep('198.18.0.2', 53), ep('198.18.0.4', 53, false, false)).endpoints,
  });
  const web = svc({ namespace: 'd', name: 'web', clusterIP: '198.19.0.80', internal: fwd(ep('198.18.0.9', 53)) });
  const listed = [
    flow('198.19.0.53', 53, '198.18.0.9', 53), // X, gone
    flow('198.19.0.53', 53, '198.18.0.2', 53), // Y, serving
    flow('198.19.0.53', 53, '198.18.0.4', 53), // Z, terminating but serving
    flow('198.19.0.53', 53, '198.18.0.2', 5353), // Y, but a port it does not serve this Service on
    flow('198.19.0.53', 53, '198.19.0.53', 53), // answered by the ClusterIP itself: never DNAT-ed
    flow('203.0.113.5', 53, '198.18.0.9', 53), // X through the externalIP
    flow('192.0.2.10', 30053, '198.18.0.9', 53), // X through the NodePort
    flow('192.0.2.10', 30053, '192.0.2.10', 30053), // the NodePort, never DNAT-ed
    flow('198.19.0.53', 54, '198.18.0.9', 53), // another port of the ClusterIP: not this service port's
    flow('198.18.0.9', 53, '198.18.0.9', 53), // pod to pod, never through the Service
    flow('198.19.0.53', 53, '198.18.0.9', 53, 'tcp'), // TCP: never cleaned
    flow('198.19.0.53', 53, '198.18.0.9', 53, 'sctp'), // SCTP to the UDP port: another protocol
  ];
  t.same(staleConntrack(null, tables(table(4, [dns, web])), undefined, listed), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.2', replySrcPort: 5353 },
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDst: '203.0.113.5', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '198.18.0.9', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '192.0.2.10', replySrcPort: 30053 },
  ]);
});

t.test('first sync with the listed entries: a Service with no serving endpoint keeps no flow; a Local path that drops keeps the serving ones; IPv6 and SCTP too', async (t) => {
  const gone = udp({ namespace: 'd', name: 'gone', clusterIP: '198.19.0.7', internal: REJECT, serving: [] });
  const local = udp({
    namespace: 'd',
    name: 'local',
    clusterIP: '198.19.0.8',
    nodePort: 30008,
    internal: fwd(ep('198.18.0.8', 53)),
    external: DROP,
    externalPolicyLocal: true,
    serving: fwd(ep('198.18.0.8', 53)).endpoints,
  });
  const sctp = svc({ namespace: 'd', name: 'sig', family: 6, protocol: 'SCTP', portName: 'sig', port: 36412, clusterIP: '2001:db8:19::9', internal: fwd(ep('2001:db8:18::9', 36412)), serving: fwd(ep('2001:db8:18::9', 36412)).endpoints });
  const listed = [
    flow('198.19.0.7', 53, '198.18.0.70', 53),
    flow('192.0.2.10', 30008, '198.18.0.8', 53),
    flow('2001:db8:19::9', 36412, '2001:db8:18::9', 36412, 'sctp', 6),
    flow('2001:db8:19::9', 36412, '2001:db8:18::1', 36412, 'sctp', 6),
  ];
  t.same(staleConntrack(null, tables(table(4, [gone, local]), table(6, [sctp])), undefined, listed), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.7', origDstPort: 53, replySrc: '198.18.0.70', replySrcPort: 53 },
    { family: 6, protocol: 'sctp', origDst: '2001:db8:19::9', origDstPort: 36412, replySrc: '2001:db8:18::1', replySrcPort: 36412 },
  ]);
});

t.test('conntrackListings: one read per served family and connectionless protocol in use', async (t) => {
  const u4 = udp({ namespace: 'd', name: 'a', internal: fwd(ep('198.18.0.2', 53)) });
  const s4 = svc({ namespace: 'd', name: 'b', protocol: 'SCTP', internal: fwd(ep('198.18.0.2', 53)) });
  const tcp6 = svc({ namespace: 'd', name: 'c', family: 6, internal: fwd(ep('2001:db8:18::2', 80)) });
  const u6 = udp({ namespace: 'd', name: 'd', family: 6, internal: fwd(ep('2001:db8:18::2', 53)) });
  t.same(conntrackListings(tables(table(4, [u4]), table(6, [tcp6])), [4, 6]), [{ family: 4, protocol: 'udp' }], 'no connectionless port in IPv6: no read');
  t.same(conntrackListings(tables(table(4, [u4, s4]), table(6, [u6])), [4, 6]), [
    { family: 4, protocol: 'udp' },
    { family: 4, protocol: 'sctp' },
    { family: 6, protocol: 'udp' },
  ]);
  t.same(conntrackListings(tables(table(4, [u4]), table(6, [u6])), [6]), [{ family: 6, protocol: 'udp' }], 'a family not served is not read');
});

t.test('terminating but serving, topology and policy shifts cut no flow; the endpoint that stops serving loses its flows (kube-proxy: IsServing only)', async (t) => {
  const A = ep('198.18.0.2', 53);
  const B = ep('198.18.0.3', 53);
  const Aterm = ep('198.18.0.2', 53, false, false);
  const both = udp({ namespace: 'd', name: 'dns', clusterIP: '198.19.0.53', nodePort: 30053, internal: fwd(A, B), serving: fwd(A, B).endpoints });
  // A starts graceful termination: out of the cluster set, still serving.
  const aTerminating = { ...both, internal: fwd(B), external: fwd(B), cluster: fwd(B), serving: fwd(Aterm, B).endpoints };
  t.same(staleConntrack(tables(table(4, [both])), tables(table(4, [aTerminating]))), [], 'terminating but serving: its flows stay');
  // A topology hint moves A out of this zone's subset; a Local policy leaves only B locally.
  const aOtherZone = { ...both, internal: fwd(B), external: fwd(B), cluster: fwd(B), topology: 'PreferSameZone' as const };
  t.same(staleConntrack(tables(table(4, [both])), tables(table(4, [aOtherZone]))), [], 'topology: A still serves');
  const localOnlyB = { ...both, internal: fwd(B), internalPolicyLocal: true };
  t.same(staleConntrack(tables(table(4, [both])), tables(table(4, [localOnlyB]))), [], 'internalTrafficPolicy Local: A still serves');
  // A finally goes away.
  const aGone = { ...aTerminating, serving: fwd(B).endpoints };
  t.same(staleConntrack(tables(table(4, [aTerminating])), tables(table(4, [aGone]))), [
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.2', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '198.18.0.2', replySrcPort: 53 },
  ]);
});
