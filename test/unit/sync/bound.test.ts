import t from 'tap';
import { boundPlan, boundSync, entryCost, NO_DEBT } from '../../../src/sync/bound.js';
import { ChangeTracker } from '../../../src/model/tracker.js';
import { planTables } from '../../../src/plan/planner.js';
import type { PlanOptions } from '../../../src/plan/planner.js';
import { ip, slice as sliceObject, svc as serviceObject } from '../model/fixtures.js';
import { diffTables, recordDerivation } from '../../../src/plan/diff.js';
import type { ProxyTables, ServiceEntry } from '../../../src/plan/types.js';
import { ep, fwd, svc, table, tables } from '../backends/ir-builders.js';
import { SortedMap } from '../../../src/util/sorted-map.js';

const e1 = ep('198.18.1.1', 8080);
const e2 = ep('198.18.2.2', 8080);

function hostile(name: string, ports: number, affinity = true): ServiceEntry[] {
  return Array.from({ length: ports }, (_, i) =>
    svc({ namespace: 'h', name, portName: `p${String(i).padStart(5, '0')}`, port: 10000 + i, affinityTimeoutSeconds: affinity ? 10800 : 0, internal: fwd(e1, e2) }),
  );
}

const small = (name: string, ...eps: ReturnType<typeof ep>[]): ServiceEntry => svc({ namespace: 'default', name, internal: fwd(...eps) });

/** Applies bounded syncs until nothing is deferred; returns every step's tables. */
function converge(base: ProxyTables | null, next: ProxyTables, budget: number): { steps: ProxyTables[]; deferred: number[] } {
  const steps: ProxyTables[] = [];
  const deferred: number[] = [];
  let applied = base;
  for (let i = 0; i < 10_000; i++) {
    const changes = diffTables(applied, next);
    const b = boundSync(applied, applied, next, changes, budget);
    applied = b ? b.tables : next;
    steps.push(applied);
    deferred.push(b?.deferredKeys ?? 0);
    if (!b) return { steps, deferred };
  }
  throw new Error('no convergence');
}

t.test('cost: frontends plus the largest path, doubled with affinity', async (t) => {
  t.equal(entryCost(undefined), 0);
  t.equal(entryCost(small('a', e1, e2)), 3);
  t.equal(entryCost(hostile('x', 1)[0]), 6);
});

t.test('everything within the budget per Service: no bounding, however much changes', async (t) => {
  const prev = tables(table(4, []));
  const many = Array.from({ length: 500 }, (_, i) => small(`s${i}`, e1, e2));
  const next = tables(table(4, many));
  t.equal(boundSync(prev, prev, next, diffTables(prev, next), 100), undefined, '500 Services × cost 3 with a budget of 100: each fits');
});

t.test('an oversized Service goes in pieces; the others go whole in the first sync', async (t) => {
  const steady = small('steady', e1);
  const prev = tables(table(4, [steady]));
  const next = tables(table(4, [small('steady', e1, e2), small('new', e1), ...hostile('big', 100)]));
  const changes = diffTables(prev, next);
  t.equal(changes.changed.size, 102);
  const b = boundSync(prev, prev, next, changes, 100);
  if (!b) throw new Error('expected bounding');
  t.ok(b.changes.changed.has('default/steady:http/TCP') && b.changes.changed.has('default/new:http/TCP'), 'the small changes are in');
  const pieces = [...b.changes.changed].filter((k) => k.startsWith('h/big:'));
  // Budget 100: steady (3) + new (2) spend 5; each hostile port costs 6 → 15 ports.
  t.equal(pieces.length, 15, 'the big Service gets what the budget has left');
  t.same(pieces, [...pieces].sort(), 'in key order');
  t.equal(pieces[0], 'h/big:p00000/TCP', 'from its first key');
  t.equal(b.deferredKeys, 85);
  t.same(b.deferredServices, ['h/big']);
  t.equal(b.cost, 95);
  t.equal(b.changes.full, false);
  const keys = [...b.tables[4].services.keys()];
  t.same(keys, [...keys].sort(), 'the merged table iterates in key order');
  t.equal(b.tables[4].services.get('default/steady:http/TCP'), next[4].services.get('default/steady:http/TCP'), 'chosen: the planned entry');
  t.equal(b.tables[4].services.size, 2 + 15);
  t.equal(b.tables[4].nodeName, next[4].nodeName, "next's table-level fields");
});

t.test('yieldToOthers: ordinary changes go alone, the oversized Service waits whole; never in a full sync', async (t) => {
  const prev = tables(table(4, [small('steady', e1)]));
  const next = tables(table(4, [small('steady', e1, e2), ...hostile('big', 100)]));
  const b = boundSync(prev, prev, next, diffTables(prev, next), 100, true);
  if (!b) throw new Error('expected bounding');
  t.same([...b.changes.changed], ['default/steady:http/TCP'], 'only the ordinary change');
  t.equal(b.withheld, true);
  t.equal(b.deferredKeys, 100);
  t.same(b.deferredServices, ['h/big']);
  const alone = tables(table(4, [small('steady', e1), ...hostile('big', 100)]));
  const onlyBig = boundSync(prev, prev, alone, diffTables(prev, alone), 100, true);
  t.equal(onlyBig?.withheld, false, 'nothing ordinary changed: the piece goes');
  t.equal(onlyBig?.changes.changed.size, 16);
  const full = boundSync(null, null, next, diffTables(null, next), 100, true);
  t.equal(full?.withheld, false, 'a full sync applies a piece as ever');
  t.ok([...(full?.changes.changed ?? [])].some((k) => k.startsWith('h/')));
});

t.test('repeated bounded syncs converge on the plan, a piece each time', async (t) => {
  const prev = tables(table(4, [small('steady', e1)]));
  const next = tables(table(4, [small('steady', e1, e2), ...hostile('big', 100), ...hostile('bigger', 150)]));
  const { steps, deferred } = converge(prev, next, 120);
  const last = steps[steps.length - 1]!;
  t.same([...last[4].services.keys()], [...next[4].services.keys()], 'in the end every key is applied');
  t.same(diffTables(last, next).changed.size, 0, 'and equal to the plan');
  // (100 + 150) ports × 6 + 3 = 1,503 at 120 (20 ports) a sync: ⌈1503 / 120⌉ = 13 syncs.
  t.equal(steps.length, 13);
  t.ok(deferred.slice(0, -1).every((d, i, a) => i === 0 || d < a[i - 1]!), `deferred shrinks every step: ${deferred.join(' ')}`);
});

t.test('first (full) sync: the oversized Service is left out, the rest is one atomic full sync', async (t) => {
  const next = tables(table(4, [small('a', e1), small('b', e2), ...hostile('big', 50)]));
  const b = boundSync(null, null, next, diffTables(null, next), 60);
  if (!b) throw new Error('expected bounding');
  t.equal(b.changes.full, true);
  t.same([...b.changes.changed].sort(), [...b.tables[4].services.keys()].sort(), 'a full sync names every key it writes');
  t.ok(b.tables[4].services.has('default/a:http/TCP') && b.tables[4].services.has('default/b:http/TCP'));
  t.equal([...b.tables[4].services.keys()].filter((k) => k.startsWith('h/')).length, 9, '(60 − 4) / 6 = 9 ports of the big one');
});

t.test('a periodic full sync keeps what is installed of an oversized Service', async (t) => {
  const half = tables(table(4, [small('a', e1), ...hostile('big', 50).slice(0, 25)]));
  const next = tables(table(4, [small('a', e1), ...hostile('big', 50)]));
  const b = boundSync(half, null, next, diffTables(null, next), 60);
  if (!b) throw new Error('expected bounding');
  t.equal(b.changes.full, true);
  t.ok(b.tables[4].services.size > 25 + 1, 'the 25 installed ports stay, more are added');
  for (const k of half[4].services.keys()) t.ok(b.tables[4].services.has(k), `${k} stays`);
});

/** The planner's tables are sorted maps: the walk that bounds a full sync needs their order. */
function sortedTables(ts: ProxyTables): ProxyTables {
  const sorted = (f: 4 | 6) => ({ ...ts[f], services: SortedMap.from(ts[f].services) });
  return { 4: sorted(4), 6: sorted(6) };
}

t.test('full syncs over sorted tables: bounded as over plain maps', async (t) => {
  const a = small('a', e1);
  const cases: [string, ProxyTables | null, ProxyTables, number][] = [
    ['first sync, an oversized Service', null, tables(table(4, [a, small('b', e2), ...hostile('big', 50)])), 60],
    ['periodic, half installed', tables(table(4, [a, ...hostile('big', 50).slice(0, 25)])), tables(table(4, [a, ...hostile('big', 50)])), 60],
    ['the largest Service exactly at the budget', null, tables(table(4, [a, ...hostile('big', 10)])), 60],
    ['dual-stack, over in sum only', null, tables(table(4, hostile('big', 6)), table(6, hostile('big', 6).map((e) => ({ ...e, family: 6 as const, clusterIP: '2001:db8:19::10' })))), 60],
  ];
  for (const [name, base, next, budget] of cases) {
    const plain = boundSync(base, null, next, diffTables(null, next), budget);
    const sb = base && sortedTables(base);
    const sn = sortedTables(next);
    const sorted = boundSync(sb, null, sn, diffTables(null, sn), budget);
    t.equal(sorted === undefined, plain === undefined, `${name}: bounded alike (${plain === undefined ? 'not bounded' : 'bounded'})`);
    t.equal(sorted?.deferredKeys, plain?.deferredKeys, `${name}: the same keys deferred`);
    t.same(sorted && [...sorted.changes.changed].sort(), plain && [...plain.changes.changed].sort(), `${name}: the same keys written`);
  }
  const big = sortedTables(tables(table(4, [a, ...hostile('big', 50)])));
  t.equal(boundSync(big, null, big, diffTables(null, big), 60), undefined, 'a repair with nothing changed keeps what is installed, oversized or not');
  const grown = sortedTables(tables(table(4, [a, ...hostile('big', 70)])));
  t.ok(boundSync(big, null, grown, diffTables(null, grown), 60), 'with the oversized Service changed meanwhile, it is bounded');
  const many = tables(table(4, Array.from({ length: 500 }, (_, i) => small(`s${i}`, e1, e2))));
  t.equal(boundSync(sortedTables(many), null, sortedTables(many), diffTables(null, many), 6), undefined, 'a resync of 500 Services of cost 3 under a budget of 6');
});

t.test('removing an oversized Service goes in pieces too; progress even with a tiny budget', async (t) => {
  const prev = tables(table(4, [small('a', e1), ...hostile('big', 30)]));
  const next = tables(table(4, [small('a', e1)]));
  const { steps } = converge(prev, next, 1);
  t.equal(steps.length, 30, 'one port per sync with a budget below one port; the last one is no longer oversized');
  t.same([...steps[steps.length - 1]![4].services.keys()], ['default/a:http/TCP']);
  t.equal(steps[0]![4].services.size, 30, 'the first sync removed one port');
});

t.test('dual-stack keys count in both families and are applied in both at once', async (t) => {
  const big6 = (n: number): ServiceEntry[] => hostile('big', n).map((e) => ({ ...e, family: 6 as const, clusterIP: '2001:db8:19::10' }));
  const prev = tables(table(4, []), table(6, []));
  const next = tables(table(4, hostile('big', 10)), table(6, big6(10)));
  const b = boundSync(prev, prev, next, diffTables(prev, next), 24);
  if (!b) throw new Error('expected bounding');
  t.equal(b.changes.changed.size, 2, 'each port costs 6 + 6: two fit in 24');
  for (const k of b.changes.changed) t.ok(b.tables[4].services.has(k) && b.tables[6].services.has(k), `${k} in both families`);
});

t.test('while pieces are applied, the diff over recorded keys finds what a full walk finds', async (t) => {
  // As the syncer does: each sync diffs what was applied against the plan, then bounds it. The
  // plan itself changes meanwhile (a small Service gains an endpoint, the big one loses a port).
  let applied: ProxyTables = tables(table(4, [small('steady', e1)]));
  const plans = [
    tables(table(4, [small('steady', e1), ...hostile('big', 300)])),
    tables(table(4, [small('steady', e1, e2), ...hostile('big', 300)])),
    tables(table(4, [small('steady', e1, e2), ...hostile('big', 299)])),
  ];
  let steps = 0;
  for (let i = 0; i < 200; i++) {
    const next = plans[Math.min(i, plans.length - 1)]!;
    if (i > 0 && i < plans.length) {
      // As the planner records a plan made from the previous one (what it re-planned).
      const prevPlan = plans[i - 1]!;
      const touched = diffTables({ 4: { ...prevPlan[4] }, 6: prevPlan[6] }, { 4: { ...next[4] }, 6: next[6] }).changed;
      recordDerivation(next[4], prevPlan[4], touched);
    }
    const changes = diffTables(applied, next);
    // Copies carry no derivation record: this walks every entry.
    const walked = diffTables({ 4: { ...applied[4] }, 6: applied[6] }, { 4: { ...next[4] }, 6: next[6] });
    t.same([...changes.changed].sort(), [...walked.changed].sort(), `step ${i}: same changed keys`);
    const b = boundSync(applied, applied, next, changes, 100);
    steps++;
    if (!b) break;
    applied = b.tables;
  }
  t.ok(steps > 10, `applied in pieces over ${steps} syncs`);
});

// Planning in pieces (boundPlan) with the real tracker and planner: a hostile Service arriving
// with its slices is planned a budget's worth per sync, a normal Service arriving beside it is
// planned in the first one, and once nothing is carried the plan is the full plan.
t.test('boundPlan: an oversized Service is planned in pieces; the result equals a full plan', async (t) => {
  const quiet = { info() {}, v() {}, warn() {}, error() {} };
  const opts: PlanOptions = { masqueradeAll: false, clusterCIDRs: ['198.18.0.0/16'], nodePortAddresses: { kind: 'all' }, localAddresses: ['192.0.2.1'] };
  const tr = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log: quiet });
  tr.upsertService(serviceObject({ name: 'steady' }));
  tr.upsertEndpointSlice(sliceObject({ service: 'steady', endpoints: [{ ip: ip(4, 1) }] }));
  let first = tr.takeSnapshot();
  let planned = planTables(first.snapshots, opts);
  const PORTS = 300;
  const ports = Array.from({ length: PORTS }, (_, i) => ({ name: `p${String(i).padStart(3, '0')}`, port: 10000 + i }));
  tr.upsertService(serviceObject({ name: 'big', clusterIPs: ['198.18.0.77'], affinity: 600, ports }));
  for (let s = 0; s < PORTS / 100; s++) {
    tr.upsertEndpointSlice(sliceObject({ service: 'big', name: `big-${s}`, ports: ports.slice(s * 100, s * 100 + 100).map((p) => ({ name: p.name, port: 8080 })), endpoints: [{ ip: ip(4, 9) }] }));
  }
  tr.upsertService(serviceObject({ name: 'normal', clusterIPs: ['198.18.0.78'] }));
  tr.upsertEndpointSlice(sliceObject({ service: 'normal', endpoints: [{ ip: ip(4, 2) }] }));

  const budget = 200; // a big port costs (1 + 1) × 2 = 4: 50 ports per piece
  let debt = NO_DEBT;
  const pieces: number[] = [];
  for (let i = 0; i < 100; i++) {
    const snap = tr.takeSnapshot();
    const piece = boundPlan(snap.snapshots, snap.changes, debt, planned, budget);
    planned = planTables(snap.snapshots, opts, planned, piece.changes);
    if (i === 0) {
      t.ok(piece.changes[4].changed.has('default/normal:http/TCP'), 'the normal Service is planned in the first piece');
      t.ok(planned[4].services.has('default/normal:http/TCP'), 'and is in the first plan');
      t.same(piece.deferredServices, ['default/big'], 'the big Service is the one carried');
    }
    pieces.push(piece.changes[4].changed.size);
    debt = piece.later;
    if (piece.deferredKeys === 0) break;
    // A slice of the big Service changes while it is being planned: the next pieces see it.
    if (i === 1) tr.upsertEndpointSlice(sliceObject({ service: 'big', name: 'big-0', ports: ports.slice(0, 100).map((p) => ({ name: p.name, port: 8080 })), endpoints: [{ ip: ip(4, 10) }], resourceVersion: '2' }));
  }
  t.ok(pieces.length > 3 && Math.max(...pieces.slice(0, -1)) <= 51, `planned in pieces of at most a budget's worth: ${pieces.join(',')}`);
  const fresh = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log: quiet });
  fresh.upsertService(serviceObject({ name: 'steady' }));
  fresh.upsertEndpointSlice(sliceObject({ service: 'steady', endpoints: [{ ip: ip(4, 1) }] }));
  fresh.upsertService(serviceObject({ name: 'big', clusterIPs: ['198.18.0.77'], affinity: 600, ports }));
  fresh.upsertEndpointSlice(sliceObject({ service: 'big', name: 'big-0', ports: ports.slice(0, 100).map((p) => ({ name: p.name, port: 8080 })), endpoints: [{ ip: ip(4, 10) }], resourceVersion: '2' }));
  for (let s = 1; s < PORTS / 100; s++) {
    fresh.upsertEndpointSlice(sliceObject({ service: 'big', name: `big-${s}`, ports: ports.slice(s * 100, s * 100 + 100).map((p) => ({ name: p.name, port: 8080 })), endpoints: [{ ip: ip(4, 9) }] }));
  }
  fresh.upsertService(serviceObject({ name: 'normal', clusterIPs: ['198.18.0.78'] }));
  fresh.upsertEndpointSlice(sliceObject({ service: 'normal', endpoints: [{ ip: ip(4, 2) }] }));
  const full = planTables(fresh.takeSnapshot().snapshots, opts);
  t.same([...planned[4].services], [...full[4].services], 'the pieces add up to the full plan');
  t.equal(planned[4].services.size, PORTS + 2);
});

t.test('boundPlan: nothing near the budget and nothing carried: the changes as they are', async (t) => {
  const quiet = { info() {}, v() {}, warn() {}, error() {} };
  const tr = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log: quiet });
  tr.upsertService(serviceObject({ name: 'a' }));
  const snap = tr.takeSnapshot();
  const piece = boundPlan(snap.snapshots, snap.changes, NO_DEBT, null, 100);
  t.equal(piece.changes, snap.changes, 'the same object');
  t.equal(piece.deferredKeys, 0);
});
