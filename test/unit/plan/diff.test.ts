import t from 'tap';
import { ChangeTracker } from '../../../src/model/tracker.js';
import { EntryFollower } from '../../../src/plan/follow.js';
import { diffTables, planTables, type PlanOptions } from '../../../src/plan/planner.js';
import { FAMILIES, ip, slice, svc } from '../model/fixtures.js';
import { defaultNode, NODE, OPTS, quietLog } from './helpers.js';

function world(n: number) {
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: quietLog });
  tr.setNode(defaultNode());
  for (let i = 0; i < n; i++) {
    tr.upsertService(svc({ name: `s${i}`, families: [4, 6] }));
    for (const f of FAMILIES) tr.upsertEndpointSlice(slice({ service: `s${i}`, family: f, endpoints: [{ ip: ip(f, (i % 200) + 1) }] }));
  }
  return tr;
}

t.test('reuse: a one-endpoint change replans one entry and reuses the rest (===)', async (t) => {
  const tr = world(100);
  const s1 = tr.takeSnapshot();
  const t1 = planTables(s1.snapshots, OPTS);
  tr.upsertEndpointSlice(slice({ service: 's7', family: 6, endpoints: [{ ip: ip(6, 8) }, { ip: ip(6, 99) }] }));
  const s2 = tr.takeSnapshot();
  const t2 = planTables(s2.snapshots, OPTS, t1, s2.changes);
  let reused = 0;
  for (const f of FAMILIES) {
    for (const [k, e] of t2[f].services) {
      if (e === t1[f].services.get(k)) reused++;
      else t.same([f, k], [6, 'default/s7:http/TCP'], `unexpected replanned entry ${f} ${k}`);
    }
  }
  t.equal(reused, 199, 'all entries but one reused');
  t.same(t2, planTables(s2.snapshots, OPTS), 'incremental plan equals a plan from scratch');
  const d = diffTables(t1, t2);
  t.same(d, { full: false, changed: new Set(['default/s7:http/TCP']), tableChanged: false });
});

t.test("the host's addresses, when listed for 'all', are a table-level change and nothing else", async (t) => {
  const tr = world(3);
  const listed = (addrs: string[]): PlanOptions => ({ ...OPTS, nodePortAddresses: { kind: 'all' }, localAddresses: addrs, listAllNodePortAddresses: true });
  const s1 = tr.takeSnapshot();
  const t1 = planTables(s1.snapshots, listed(['127.0.0.1', '198.18.0.10']));
  const s2 = tr.takeSnapshot();
  t.same(diffTables(t1, planTables(s2.snapshots, listed(['198.18.0.10', '127.0.0.1']), t1, s2.changes)), { full: false, changed: new Set(), tableChanged: false }, 'the same set in another order: no change');
  const s3 = tr.takeSnapshot();
  const t3 = planTables(s3.snapshots, listed(['127.0.0.1', '198.18.0.10', '198.18.0.200']), t1, s3.changes);
  t.same(diffTables(t1, t3), { full: false, changed: new Set(), tableChanged: true }, 'an address gained: table-level, no Service changed');
  const s4 = tr.takeSnapshot();
  const t4 = planTables(s4.snapshots, { ...OPTS, nodePortAddresses: { kind: 'all' }, localAddresses: ['198.18.0.200'] }, t1, s4.changes);
  t.same(t4[4].nodePortAddresses, { kind: 'all' }, 'not asked to list: plain all');
});

t.test('reuse is off when table-level inputs change', async (t) => {
  const tr = world(3);
  const s1 = tr.takeSnapshot();
  const t1 = planTables(s1.snapshots, OPTS);
  const s2 = tr.takeSnapshot();
  const opts: PlanOptions = { ...OPTS, masqueradeAll: true };
  const t2 = planTables(s2.snapshots, opts, t1, s2.changes);
  t.equal(t2[4].services.get('default/s0:http/TCP')!.clusterIPMasquerade, 'all', 'option change reaches unchanged services');
  const d = diffTables(t1, t2);
  t.equal(d.tableChanged, true);
  t.equal(d.changed.size, 3, 'every entry differs (clusterIPMasquerade)');

  tr.setNode(defaultNode({ 'topology.kubernetes.io/zone': 'z9' }));
  const s3 = tr.takeSnapshot();
  t.equal(s3.changes[4].nodeChanged, true);
  const t3 = planTables(s3.snapshots, opts, t2, s3.changes);
  t.not(t3[4].services.get('default/s0:http/TCP'), t2[4].services.get('default/s0:http/TCP'), 'node change replans');
  t.same(diffTables(t2, t3).changed, new Set(), 'but nothing actually differs');
});

t.test('reuse follows health-check counts across ports of one service', async (t) => {
  const tr = new ChangeTracker({ nodeName: NODE, families: [4], log: quietLog });
  tr.setNode(defaultNode());
  const ports = [{ name: 'a', port: 80, nodePort: 30080 }, { name: 'b', port: 81, nodePort: 30081 }];
  tr.upsertService(svc({ type: 'LoadBalancer', etp: 'Local', hcPort: 32000, ports }));
  tr.upsertEndpointSlice(slice({ name: 'sa', ports: [{ name: 'a', port: 1 }], endpoints: [{ ip: ip(4, 1), node: NODE }] }));
  const s1 = tr.takeSnapshot();
  const t1 = planTables(s1.snapshots, OPTS);
  t.equal(t1[4].services.get('default/web:a/TCP')!.localReadyEndpoints, 1);
  tr.upsertEndpointSlice(slice({ name: 'sb', ports: [{ name: 'b', port: 2 }], endpoints: [{ ip: ip(4, 2), node: NODE }] }));
  const s2 = tr.takeSnapshot();
  t.same([...s2.changes[4].changed], ['default/web:b/TCP'], 'the tracker reports only port b');
  const t2 = planTables(s2.snapshots, OPTS, t1, s2.changes);
  t.equal(t2[4].services.get('default/web:a/TCP')!.localReadyEndpoints, 2, 'port a sees the new local endpoint of port b');
});

t.test('diffTables: full, additions, removals, header changes', async (t) => {
  const tr = world(2);
  const s1 = tr.takeSnapshot();
  const t1 = planTables(s1.snapshots, OPTS);
  const full = diffTables(null, t1);
  t.same(full, { full: true, changed: new Set(['default/s0:http/TCP', 'default/s1:http/TCP']), tableChanged: true });
  t.same(diffTables(t1, t1), { full: false, changed: new Set(), tableChanged: false });

  tr.deleteService(svc({ name: 's0', families: [4, 6] }));
  tr.upsertService(svc({ name: 's2', families: [6] }));
  const s2 = tr.takeSnapshot();
  const t2 = planTables(s2.snapshots, OPTS, t1, s2.changes);
  t.same([...t2[6].services.keys()], ['default/s1:http/TCP', 'default/s2:http/TCP'], 'sorted after an addition');
  t.same(diffTables(t1, t2), { full: false, changed: new Set(['default/s0:http/TCP', 'default/s2:http/TCP']), tableChanged: false });
  t.same(t2, planTables(s2.snapshots, OPTS), 'incremental plan equals a plan from scratch');

  const t3 = planTables(s2.snapshots, { ...OPTS, nodePortAddresses: { kind: 'primary' } }, t2, s2.changes);
  const d3 = diffTables(t2, t3);
  t.equal(d3.tableChanged, true, 'nodeport addresses are table-level');
  t.equal(d3.changed.size, 0, 'entries unchanged');
});

t.test('random changes: incremental plan, its diff and followers equal what a from-scratch walk finds', async (t) => {
  let seed = 0x2545f491;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    return seed % n;
  };
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: quietLog });
  tr.setNode(defaultNode());
  const entries = (tables: ReturnType<typeof planTables>) => FAMILIES.map((f) => [...tables[f].services]);
  const hc = new EntryFollower((e) => e.healthCheckNodePort > 0);
  let prev = planTables(tr.takeSnapshot().snapshots, OPTS);
  hc.update(prev);
  let diffsChecked = 0;
  for (let round = 0; round < 150; round++) {
    for (let c = 1 + rnd(4); c > 0; c--) {
      const name = `s${rnd(25)}`;
      const ns = rnd(3) === 0 ? 'other' : 'default';
      const what = rnd(10);
      if (what === 0) tr.deleteService(svc({ ns, name }));
      else if (what === 1) tr.deleteEndpointSlice(slice({ ns, service: name, family: rnd(2) === 0 ? 4 : 6 }));
      else if (what < 5) {
        const local = rnd(2) === 0;
        tr.upsertService(
          svc({
            ns,
            name,
            families: [4, 6],
            type: local ? 'LoadBalancer' : 'ClusterIP',
            etp: local ? 'Local' : undefined,
            hcPort: local ? 30000 + rnd(50) : undefined,
            ports: Array.from({ length: 1 + rnd(3) }, (_, i) => ({ name: `p${i}`, port: 80 + i, ...(local ? { nodePort: 31000 + rnd(500) } : {}) })),
          }),
        );
      } else {
        const f = rnd(2) === 0 ? 4 : 6;
        const eps = Array.from({ length: rnd(4) }, () => ({ ip: ip(f, 1 + rnd(50)), node: rnd(2) === 0 ? NODE : 'other' }));
        // Now and then a slice for one port only: a change that reaches some ports of a Service.
        const ports = rnd(3) === 0 ? [rnd(3)] : [0, 1, 2];
        tr.upsertEndpointSlice(slice({ ns, service: name, family: f, ports: ports.map((i) => ({ name: `p${i}`, port: 8080 + i })), endpoints: eps }));
      }
    }
    const s = tr.takeSnapshot();
    const next = planTables(s.snapshots, OPTS, prev, s.changes);
    t.same(entries(next), entries(planTables(s.snapshots, OPTS)), `round ${round}: incremental plan equals a plan from scratch`);
    const d = diffTables(prev, next);
    // The same tables without the planner's derivation record: the diff walks every entry.
    const walked = diffTables(prev, { 4: { ...next[4] }, 6: { ...next[6] } });
    t.same([...d.changed].sort(), [...walked.changed].sort(), `round ${round}: the diff over touched keys finds what a full walk finds`);
    if (d.changed.size > 0) diffsChecked++;
    hc.update(next, d);
    const fresh = new EntryFollower((e) => e.healthCheckNodePort > 0);
    fresh.update(next);
    for (const f of FAMILIES) t.same(hc.entries(f), fresh.entries(f), `round ${round}: followed health-check entries (family ${f})`);
    prev = next;
  }
  t.ok(diffsChecked > 100, `most rounds changed something (${diffsChecked})`);
});
