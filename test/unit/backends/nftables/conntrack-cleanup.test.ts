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

t.test('an endpoint that left a UDP service is cleared by reply source', async (t) => {
  const a = udp({ namespace: 'd', name: 'dns', internal: fwd(ep('198.18.0.2', 53), ep('198.18.0.3', 53)) });
  const b = { ...a, internal: fwd(ep('198.18.0.2', 53)), external: fwd(ep('198.18.0.2', 53)), cluster: fwd(ep('198.18.0.2', 53)) };
  t.same(staleConntrack(tables(table(4, [a])), tables(table(4, [b]))), [{ family: 4, protocol: 'udp', replySrc: '198.18.0.3', replySrcPort: 53 }]);
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
  t.same(staleConntrack(null, tables(table(4, [serving]))).length, 3, 'first sync: every forwarding frontend counts as new');
});

t.test('unchanged service ports are skipped when `changed` is given; IPv6 families are covered', async (t) => {
  const a = udp({ namespace: 'd', name: 'v6', family: 6, internal: fwd(ep('2001:db8:18::2', 53)) });
  const b = { ...a, internal: REJECT, external: REJECT, cluster: REJECT };
  const prev = tables(table(4, []), table(6, [a]));
  const next = tables(table(4, []), table(6, [b]));
  t.same(staleConntrack(prev, next, new Set()), [], 'nothing listed as changed: nothing to do');
  t.same(staleConntrack(prev, next, new Set([a.key])), [{ family: 6, protocol: 'udp', replySrc: '2001:db8:18::2', replySrcPort: 53 }]);
});

t.test('over a sequence of syncs, the carried serving index answers as one built from scratch', async (t) => {
  let seed = 99;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return seed % n;
  };
  // Five UDP services over four shared endpoint addresses: removals often leave an address still
  // serving another service (cleared per frontend) and sometimes not (cleared by reply source).
  const names = ['a', 'b', 'c', 'd', 'e'];
  const entry = (name: string, i: number) => {
    const eps = ['198.18.0.2', '198.18.0.3', '198.18.0.4', '198.18.0.5'].filter(() => rnd(2) === 0).map((ip) => ep(ip, 53));
    const set = eps.length > 0 ? fwd(...eps) : REJECT;
    return udp({ namespace: 'd', name, clusterIP: `198.19.0.${i + 1}`, internal: set, external: set, cluster: set });
  };
  let cur = names.map((n, i) => entry(n, i));
  let prev = tables(table(4, cur));
  // The first sync builds the index; the rest carry it.
  staleConntrack(null, prev);
  let perFrontend = 0;
  let byReplySource = 0;
  for (let round = 0; round < 200; round++) {
    const i = rnd(names.length);
    const nextList = cur.slice();
    nextList[i] = entry(names[i]!, i);
    const next = tables(table(4, nextList));
    const changed = new Set([nextList[i]!.key]);
    const got = staleConntrack(prev, next, changed);
    // Copies of the tables carry no index: this walks the whole table.
    const want = staleConntrack({ 4: { ...prev[4] }, 6: prev[6] }, { 4: { ...next[4] }, 6: next[6] }, changed);
    t.same(got, want, `round ${round}`);
    for (const f of got) {
      if (f.origDst !== undefined && f.replySrc !== undefined) perFrontend++;
      else if (f.replySrc !== undefined) byReplySource++;
    }
    cur = nextList;
    prev = next;
  }
  t.ok(perFrontend > 10 && byReplySource > 3, `both kinds of endpoint cleanup were exercised (${perFrontend} per frontend, ${byReplySource} by reply source)`);
});
