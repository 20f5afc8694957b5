import t from 'tap';
import type { ChangeSet, ClusterSnapshot, IPFamily, NodeInfo } from '../../../src/model/types.js';
import type { PlanOptions } from '../../../src/plan/planner.js';
import type { ProxyTable, ProxyTables, ServiceEntry, SyncChanges } from '../../../src/plan/types.js';
import { FakeClock } from '../../../src/sync/clock.js';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import { Syncer, type PlanFunctions, type SnapshotSource, type SyncResult, type TrackerSnapshot } from '../../../src/sync/syncer.js';
import { setLogSink } from '../../../src/util/log.js';
import { ep, fwd, svc } from '../backends/ir-builders.js';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

const NODE: NodeInfo = { name: 'node-1', addresses: [], zone: '' };

/** A change tracker stand-in: a set of service keys, each with a version bumped on change. */
class FakeSource implements SnapshotSource {
  readonly versions = new Map<string, number>();
  private changed = new Set<string>();
  takes = 0;
  change(key: string): void {
    this.versions.set(key, (this.versions.get(key) ?? 0) + 1);
    this.changed.add(key);
  }
  pending(): boolean {
    return this.changed.size > 0;
  }
  takeSnapshot(): TrackerSnapshot {
    this.takes++;
    // What bound.ts estimates a port's cost from before planning: as entryFor plans it.
    const hostile = (k: string): boolean => k.startsWith('h/');
    const services = new Map([...this.versions].map(([k, v]) => [k, { v, affinityTimeoutSeconds: hostile(k) ? 60 : 0, healthCheckNodePort: 0 } as never]));
    const endpoints = new Map([...this.versions.keys()].map((k) => [k, (hostile(k) ? [{}, {}] : [{}]) as never]));
    const snap = (family: IPFamily): ClusterSnapshot => ({ family, services, endpoints, node: NODE });
    const cs: ChangeSet = { changed: this.changed, nodeChanged: false };
    this.changed = new Set();
    return { snapshots: { 4: snap(4), 6: snap(6) }, changes: { 4: cs, 6: cs }, triggerTimes: [] };
  }
}

/**
 * A plausible entry for a key (versioned by v): keys of namespace `h` are hostile-sized pieces
 * (affinity, two endpoints: cost 6 in bound.ts), the rest cost 2.
 */
function entryFor(k: string, v: number): ServiceEntry {
  const hostile = k.startsWith('h/');
  const eps = hostile ? fwd(ep('198.18.1.1', 8080), ep('198.18.1.2', 8080)) : fwd(ep('198.18.1.1', 8080 + v));
  return { ...svc({ namespace: 'x', name: 'y', internal: eps, affinityTimeoutSeconds: hostile ? 60 : 0 }), key: k, v } as unknown as ServiceEntry;
}

/** A planner stand-in: one entry per key, reused (===) for keys that did not change. */
class FakePlanner implements PlanFunctions {
  readonly prevs: (ProxyTables | null | undefined)[] = [];
  planTables(snaps: Record<IPFamily, ClusterSnapshot>, _o: PlanOptions, prev?: ProxyTables | null, changes?: Record<IPFamily, ChangeSet>): ProxyTables {
    this.prevs.push(prev);
    const table = (f: IPFamily): ProxyTable => {
      const services = new Map<string, ServiceEntry>();
      // As the planner: given changes, only the keys they name are planned; the rest stay as in prev.
      if (prev && changes) {
        for (const [k, e] of prev[f].services) services.set(k, e);
        for (const k of changes[f].changed) {
          const sp = snaps[f].services.get(k);
          if (sp) services.set(k, entryFor(k, (sp as unknown as { v: number }).v));
          else services.delete(k);
        }
      } else {
        for (const [k, sp] of snaps[f].services) services.set(k, entryFor(k, (sp as unknown as { v: number }).v));
      }
      return { family: f, nodeName: 'node-1', nodeIPs: [], nodePortAddresses: { kind: 'all' }, localTraffic: { kind: 'none' }, masqueradeAll: false, services };
    };
    return { 4: table(4), 6: table(6) };
  }
  diffTables(prev: ProxyTables | null, next: ProxyTables): SyncChanges {
    const changed = new Set<string>();
    if (!prev) {
      for (const k of next[4].services.keys()) changed.add(k);
      return { full: true, changed, tableChanged: true };
    }
    for (const [k, e] of next[4].services) if (prev[4].services.get(k) !== e) changed.add(k);
    for (const k of prev[4].services.keys()) if (!next[4].services.has(k)) changed.add(k);
    return { full: false, changed, tableChanged: false };
  }
}

function setup(opts: { min?: number; period?: number; intact?: number; fullPeriod?: number; adaptiveMax?: number; bound?: { targetMs: number; initialBudget: number; minBudget?: number } } = {}) {
  const clock = new FakeClock();
  const source = new FakeSource();
  const planner = new FakePlanner();
  const backend = new FakeBackend();
  const results: SyncResult[] = [];
  const syncer = new Syncer({
    source,
    backend,
    planner,
    planOptions: () => ({ masqueradeAll: false, clusterCIDRs: [], nodePortAddresses: { kind: 'all' }, localAddresses: [] }),
    minSyncPeriodMs: opts.min ?? 1000,
    syncPeriodMs: opts.period ?? 30_000,
    ...(opts.fullPeriod !== undefined ? { fullSyncPeriodMs: opts.fullPeriod } : {}),
    intactCheckMs: opts.intact ?? 5000,
    ...(opts.adaptiveMax !== undefined ? { adaptive: { maxMs: opts.adaptiveMax } } : {}),
    ...(opts.bound ? { bound: opts.bound } : {}),
    clock,
  });
  backend.wait = (ms) => new Promise<void>((r) => clock.setTimeout(r, ms));
  syncer.onSync((r) => results.push({ ...r, startedAt: r.startedAt - t0 }));
  const t0 = clock.now();
  /** Ms since the test's start at which each backend call happened. */
  const at = () => results.map((r) => r.startedAt);
  return { clock, source, planner, backend, syncer, results, at, t0 };
}

t.test('the first sync is full and runs at once', async (t) => {
  const { clock, source, backend, syncer, results } = setup();
  source.change('default/web:/TCP');
  syncer.start();
  await clock.advance(0);
  t.equal(backend.calls.length, 1, 'one sync right after start');
  t.equal(backend.calls[0]?.prev, null, 'first sync has no prev');
  t.equal(backend.calls[0]?.changes.full, true);
  t.equal(results[0]?.fullReason, 'first');
  t.same([...(backend.calls[0]?.changes.changed ?? [])], ['default/web:/TCP']);
  await syncer.stop();
});

t.test('bursts within minSyncPeriod coalesce into one partial sync', async (t) => {
  const { clock, source, backend, syncer, at } = setup({ min: 1000 });
  syncer.start();
  await clock.advance(0);
  for (let i = 0; i < 5; i++) {
    source.change(`ns/svc${i}:/TCP`);
    syncer.requestSync();
    await clock.advance(100);
  }
  t.equal(backend.calls.length, 1, `no sync before minSyncPeriod elapsed (calls at ${at().join(',')})`);
  await clock.advance(500);
  t.equal(backend.calls.length, 2, `exactly one more sync by t=1000 (calls at ${at().join(',')})`);
  t.same(at(), [0, 1000], 'second sync exactly minSyncPeriod after the first');
  const second = backend.calls[1]!;
  t.equal(second.changes.full, false, 'coalesced sync is partial');
  t.not(second.prev, null, 'partial sync gets the previous tables');
  t.equal(second.changes.changed.size, 5, 'all five changes in one sync');
  await clock.advance(10_000);
  t.equal(backend.calls.length, 2, 'nothing more without changes');
  await syncer.stop();
});

t.test('a periodic full resync happens every syncPeriod', async (t) => {
  const { clock, source, planner, backend, syncer, results } = setup({ min: 1000, period: 30_000, intact: 0 });
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(0);
  await clock.advance(29_999);
  t.equal(backend.calls.length, 1, 'no resync before syncPeriod');
  await clock.advance(1);
  t.equal(backend.calls.length, 2, 'resync at syncPeriod');
  t.equal(backend.calls[1]?.prev, null, 'periodic resync is full');
  t.equal(results[1]?.fullReason, 'periodic');
  t.same(planner.prevs, [null, null], 'and plans from scratch, so a planning slip cannot outlive it');
  // Partial syncs in between do not postpone the periodic full one.
  for (let i = 0; i < 29; i++) {
    source.change('a/b:/TCP');
    syncer.requestSync();
    await clock.advance(1000);
  }
  await clock.advance(1000);
  const fulls = results.filter((r) => r.full).map((r) => r.startedAt);
  t.same(fulls, [0, 30_000, 60_000], `full syncs at 0, 30s, 60s (all: ${results.map((r) => `${r.startedAt}${r.full ? 'F' : 'p'}`).join(' ')})`);
  await syncer.stop();
});

t.test('with a longer fullSyncPeriod, periodic syncs are partial and the full one comes hourly', async (t) => {
  const { clock, source, backend, syncer, results } = setup({ min: 1000, period: 30_000, fullPeriod: 3_600_000, intact: 0 });
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(0);
  source.change('a/b:/TCP'); // a change nobody asked to sync: the periodic sync picks it up
  await clock.advance(30_000);
  t.equal(backend.calls.length, 2, 'periodic sync at syncPeriod');
  t.equal(backend.calls[1]?.changes.full, false, 'periodic sync is partial');
  t.not(backend.calls[1]?.prev, null);
  await clock.advance(3_600_000 - 30_000);
  const fulls = results.filter((r) => r.full).map((r) => `${r.startedAt}:${r.fullReason}`);
  t.same(fulls, ['0:first', '3600000:periodic'], `one periodic full sync after an hour (all: ${results.map((r) => `${r.startedAt}${r.full ? 'F' : 'p'}`).join(' ')})`);
  t.equal(backend.calls.length, 3, 'periodic partial syncs with nothing changed do not reach the backend');
  await syncer.stop();
});

t.test('a failed sync is retried with backoff, and the retry is full', async (t) => {
  const { clock, source, backend, syncer, results, at } = setup({ min: 1000, period: 30_000, intact: 0 });
  syncer.start();
  await clock.advance(0);
  source.change('x/y:/TCP');
  backend.failNextSyncs(3);
  logLines.length = 0;
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(results.length, 2);
  t.equal(results[1]?.ok, false, 'the partial sync failed');
  t.equal(results[1]?.full, false);
  t.match(logLines.join('\n'), /partial sync failed; retrying with a full sync.*line=7/, 'the error is logged with its context');
  await clock.advance(10_000);
  t.same(at(), [0, 1000, 2000, 4000, 8000], 'retries after 1s, 2s, 4s');
  const retries = backend.calls.slice(2);
  t.ok(retries.every((c) => c.prev === null && c.changes.full), 'every retry is a full sync');
  t.equal(results[4]?.ok, true, 'the fourth attempt succeeds');
  t.equal(results[4]?.fullReason, 'after-failure');
  t.ok(backend.installed?.[4].services.has('x/y:/TCP'), 'the change that failed is installed in the end');
  source.change('x/z:/TCP');
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(backend.calls.at(-1)?.changes.full, false, 'after a success, syncs are partial again');
  await syncer.stop();
});

t.test('intact() false forces a full sync', async (t) => {
  const { clock, source, planner, backend, syncer, results } = setup({ min: 1000, period: 60_000, intact: 5000 });
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(0);
  await clock.advance(5000);
  t.equal(backend.calls.length, 1, 'intact rules: no extra sync');
  t.ok(backend.intactChecks >= 1, 'intact() was asked');
  const applied = syncer.current();
  backend.wipe();
  // A change that waits for the repair (no sync was requested for it).
  source.change('a/c:/TCP');
  await clock.advance(5000);
  t.equal(backend.calls.length, 2, 'a sync after the flush was noticed');
  t.equal(backend.calls[1]?.prev, null, 'and it is full');
  t.equal(results[1]?.fullReason, 'not-intact');
  t.ok(backend.installed, 'rules reinstalled');
  t.equal(planner.prevs.at(-1), applied, 'the repair planned on from the tables the backend had, not from scratch');
  t.ok(backend.installed?.[4].services.has('a/c:/TCP'), 'with the change that came meanwhile');
  t.equal(backend.installed?.[4].services.get('a/b:/TCP'), applied?.[4].services.get('a/b:/TCP'), 'an unchanged entry is the same object');
  await syncer.stop();
});

t.test('a repair after a failed sync plans from scratch', async (t) => {
  const { clock, source, planner, backend, syncer, results } = setup({ min: 1000, period: 60_000, intact: 5000 });
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(0);
  backend.failNextSyncs(1);
  source.change('a/c:/TCP');
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(results[1]?.ok, false, 'the partial sync failed');
  // The tamper watch asks for a repair while the retry is pending: the failure's reason stays.
  syncer.requestFullSync('tampered');
  await clock.advance(2000);
  t.equal(results[2]?.ok, true);
  t.equal(results[2]?.fullReason, 'after-failure');
  t.equal(planner.prevs.at(-1), null, 'planned from scratch');
  t.ok(backend.installed?.[4].services.has('a/c:/TCP'));
  await syncer.stop();
});

t.test('a costly intact() check is spaced out: at most about 2% of the time', async (t) => {
  const { clock, source, backend, syncer } = setup({ min: 1000, period: 600_000, intact: 5000 });
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(0);
  await clock.advance(5000);
  t.equal(backend.intactChecks, 1, 'cheap: every 5 s');
  await clock.advance(5000);
  t.equal(backend.intactChecks, 2);
  // From now on each check takes 1 s (a whole nat table read back per command, at 44k Services).
  backend.intactCostMs = 1000;
  await clock.advance(5000);
  t.equal(backend.intactChecks, 3, 'the costly check ran');
  await clock.advance(1000 + 40_000);
  t.equal(backend.intactChecks, 3, 'the next one not within 40 s of its end');
  await clock.advance(10_000);
  t.equal(backend.intactChecks, 4, 'but 50 × its cost later');
  backend.wipe();
  await clock.advance(52_000);
  t.equal(backend.calls.at(-1)?.prev, null, 'a flush is still noticed and repaired (full sync)');
  backend.intactCostMs = 0;
  await clock.advance(60_000);
  const n = backend.intactChecks;
  await clock.advance(5000);
  t.equal(backend.intactChecks, n + 1, 'cheap again: every 5 s again');
  t.ok(logLines.some((l) => l.includes('checking less often')), 'the stretch is logged');
  await syncer.stop();
});

t.test('a partial sync with nothing changed does not call the backend', async (t) => {
  const { clock, backend, syncer, results } = setup({ intact: 0 });
  syncer.start();
  await clock.advance(0);
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(results.length, 2);
  t.equal(results[1]?.noop, true);
  t.equal(backend.calls.length, 1, 'only the first sync reached the backend');
  await syncer.stop();
});

t.test('after a sync with nothing changed, the next partial sync starts from the tables the backend holds', async (t) => {
  const { clock, source, backend, syncer } = setup({ intact: 0 });
  syncer.start();
  await clock.advance(0);
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(backend.calls.length, 1, 'the second sync was a no-op');
  source.change('a/b:/TCP');
  syncer.requestSync();
  await clock.advance(1000);
  t.equal(backend.calls.length, 2);
  t.equal(backend.calls[1]?.changes.full, false, 'partial');
  // Backends keep compile state for the exact tables they programmed (nftables: by identity);
  // a prev they never saw sends them into a full sync.
  t.equal(backend.calls[1]?.prev, backend.calls[0]?.next, 'prev is the very tables of the last backend call');
  await syncer.stop();
});

t.test('stop() leaves no timers and no further syncs', async (t) => {
  const { clock, source, backend, syncer } = setup();
  syncer.start();
  await clock.advance(0);
  await syncer.stop();
  source.change('a/b:/TCP');
  syncer.requestSync();
  await clock.advance(120_000);
  t.equal(backend.calls.length, 1);
  t.equal(clock.pendingTimers(), 0, 'no timer left armed');
  t.equal(backend.cleanups, 0, 'stopping never removes rules');
});

t.test('cost-aware coalescing: a lone change meeting an idle proxy is applied at once', async (t) => {
  const { clock, source, backend, syncer, results, t0 } = setup({ adaptiveMax: 1000, intact: 0 });
  backend.costMs = 2;
  syncer.start();
  await clock.advance(0);
  for (const idle of [10, 500, 3000]) {
    await clock.advance(idle);
    source.change(`ns/svc-${idle}:/TCP`);
    const requestedAt = clock.now() - t0;
    syncer.requestSync();
    await clock.advance(5);
    const last = results.at(-1)!;
    t.equal(last.startedAt, requestedAt, `after ${idle} ms idle the sync started the moment the change arrived`);
    t.ok(last.changes?.changed.has(`ns/svc-${idle}:/TCP`));
  }
  await syncer.stop();
});

t.test('cost-aware coalescing: the change right behind another (a Service, then its slice) goes out at once too; a third waits', async (t) => {
  const { clock, source, backend, syncer, results, t0 } = setup({ adaptiveMax: 1000, intact: 0 });
  backend.costMs = 4;
  syncer.start();
  await clock.advance(0);
  await clock.advance(1000);
  // A tight sequence after an idle spell: a, then b 1 ms after a's sync ended, then c 1 ms after b's.
  source.change('ns/a:/TCP');
  const aAt = clock.now() - t0;
  syncer.requestSync();
  await clock.advance(5); // a's sync: 4 ms
  source.change('ns/b:/TCP');
  const bAt = clock.now() - t0;
  syncer.requestSync();
  await clock.advance(5);
  source.change('ns/c:/TCP');
  const cAt = clock.now() - t0;
  syncer.requestSync();
  await clock.advance(50);
  const startedOf = (k: string): number => results.find((x) => x.changes?.changed.has(`ns/${k}:/TCP`))!.startedAt;
  t.equal(startedOf('a'), aAt, 'a lone change: at once');
  t.equal(startedOf('b'), bAt, 'the change right behind it: at once, no coalescing gap');
  t.ok(startedOf('c') > cAt, `a third in a row waits for the gap (requested at ${cAt}, started at ${startedOf('c')})`);
  await syncer.stop();
});

t.test('cost-aware coalescing: a burst becomes few syncs, each gap as long as recent syncs took', async (t) => {
  const { clock, source, backend, syncer, results } = setup({ adaptiveMax: 1000, intact: 0 });
  backend.costMs = 20;
  syncer.start();
  await clock.advance(0);
  await clock.advance(100);
  const before = backend.calls.length;
  // 200 changes, one every millisecond.
  for (let i = 0; i < 200; i++) {
    source.change(`ns/svc${i}:/TCP`);
    syncer.requestSync();
    await clock.advance(1);
  }
  await clock.advance(500);
  const syncs = backend.calls.length - before;
  const applied = backend.calls.slice(before).reduce((n, c) => n + c.changes.changed.size, 0);
  t.equal(applied, 200, 'every change applied');
  t.ok(syncs <= 12, `200 changes in ${syncs} syncs, not one sync each`);
  t.ok(syncs >= 3, `the burst was not held back for one late sync (${syncs} syncs)`);
  const partial = results.filter((r) => !r.full && !r.noop);
  const lastStart = Math.max(...partial.map((r) => r.startedAt));
  t.ok(lastStart <= 100 + 200 + 2 * 20 + 5, `the last change went out within about two sync costs of arriving (last sync started at ${lastStart})`);
  t.ok(syncer.currentWindowMs() > 5 && syncer.currentWindowMs() <= 20, `the window follows the measured cost (${syncer.currentWindowMs()} ms)`);
  await syncer.stop();
});

t.test('cost-aware coalescing: the window is capped, and full syncs do not widen it', async (t) => {
  const { clock, source, backend, syncer } = setup({ adaptiveMax: 50, intact: 0 });
  backend.fullCostMs = 5000;
  backend.costMs = 400;
  syncer.start();
  await clock.advance(0);
  await clock.advance(5000);
  t.equal(syncer.currentWindowMs(), 0, 'a 5 s full sync leaves the window at zero');
  for (let i = 0; i < 5; i++) {
    source.change(`ns/s${i}:/TCP`);
    syncer.requestSync();
    await clock.advance(1000);
  }
  t.equal(syncer.currentWindowMs(), 50, 'slow partial syncs widen it only up to the cap');
  await syncer.stop();
});

t.test('an explicit min sync period keeps its meaning even when syncs are cheap', async (t) => {
  const { clock, source, backend, syncer, at } = setup({ min: 1000, intact: 0 });
  backend.costMs = 1;
  syncer.start();
  await clock.advance(0);
  await clock.advance(10);
  source.change('ns/a:/TCP');
  syncer.requestSync();
  await clock.advance(500);
  t.equal(backend.calls.length, 1, 'still waiting for the period');
  await clock.advance(500);
  t.same(at(), [0, 1000]);
  await syncer.stop();
});

/**
 * A started syncer (budget 60, pieces aimed at 100 ms) that has synced one steady Service and
 * has just started the first sync of a 40-port oversized Service, each sync taking `costMs`.
 */
async function withOversized(costMs: number) {
  const s = setup({ adaptiveMax: 1000, intact: 0, bound: { targetMs: 100, initialBudget: 60, minBudget: 1 } });
  s.source.change('default/steady:/TCP');
  s.syncer.start();
  await s.clock.advance(0);
  s.backend.costMs = costMs;
  for (let i = 0; i < 40; i++) s.source.change(`h/big:p${String(i).padStart(2, '0')}/TCP`);
  s.syncer.requestSync();
  await s.clock.advance(0);
  return s;
}

t.test('bounded cost per Service: an oversized Service goes in pieces, back to back; a change arriving meanwhile goes alone before the next piece', async (t) => {
  const { clock, source, backend, syncer, results } = await withOversized(100);
  // A normal change arrives while the first piece is in the kernel.
  await clock.advance(50);
  source.change('default/normal:/TCP');
  syncer.requestSync();
  await clock.advance(50);
  t.equal(backend.calls.length, 2, 'the first piece went at once');
  t.equal(backend.calls[1]!.changes.changed.size, 5, 'budget 60 at cost 6 in each family: five ports');
  t.equal(results[1]!.deferredKeys, 35);
  await clock.advance(0);
  await clock.advance(100);
  t.equal(backend.calls.length, 3, 'the next sync follows without a coalescing gap');
  t.same([...backend.calls[2]!.changes.changed], ['default/normal:/TCP'], 'and carries the normal change alone: it waits for no second piece');
  t.equal(results[2]!.deferredKeys, 35, 'the oversized Service waited one sync');
  await clock.advance(100);
  t.equal(backend.calls.length, 4, 'its next piece follows at once');
  t.equal(backend.calls[3]!.changes.changed.size, 5);
  for (let i = 0; i < 20; i++) await clock.advance(100);
  const last = backend.installed!;
  t.equal(last[4].services.size, 42, 'in the end every port of the oversized Service is installed');
  t.equal(results[results.length - 1]!.deferredKeys, 0);
  t.ok(backend.calls.slice(1).every((c) => !c.changes.full), 'pieces are partial syncs');
  t.ok(
    logLines.some((l) => /oversized Services are applied in pieces .*services=h\/big/.test(l)),
    'logged once with the Service',
  );
  t.equal(syncer.currentBudget(), 60, 'each piece took exactly the target: the budget stays');
  await syncer.stop();
});

t.test('bounded cost per Service: ordinary changes in every sync do not starve an oversized Service', async (t) => {
  const { clock, source, backend, syncer, results } = await withOversized(100);
  // An ordinary change lands while each sync is in the kernel, for as long as the pieces go on.
  for (let i = 0; i < 40 && (results.length < 2 || (results[results.length - 1]!.deferredKeys ?? 0) > 0); i++) {
    await clock.advance(50);
    source.change(`default/n${i}:/TCP`);
    syncer.requestSync();
    await clock.advance(50);
    await clock.advance(0);
  }
  const syncs = backend.calls.slice(1);
  const pieces = syncs.filter((c) => [...c.changes.changed].some((k) => k.startsWith('h/')));
  const installed = [...backend.installed![4].services.keys()];
  t.equal(installed.filter((k) => k.startsWith('h/')).length, 40, 'every port of the oversized Service installed');
  t.equal(installed.length - 41, syncs.length - 1, 'and every ordinary change, one per sync');
  t.ok(syncs.length <= 2 * pieces.length, 'at most one ordinary-only sync per piece');
  for (let i = 1; i < syncs.length; i++) {
    const alone = (c: (typeof syncs)[number]) => ![...c.changes.changed].some((k) => k.startsWith('h/'));
    t.notOk(alone(syncs[i - 1]!) && alone(syncs[i]!) && (results[i]!.deferredKeys ?? 0) > 0, `no two syncs in a row without a piece while ports wait (sync ${i})`);
  }
  t.equal(syncer.currentBudget(), 60, 'syncs without a piece do not move the budget');
  await syncer.stop();
});

t.test('bounded cost per Service: the budget follows what pieces cost', async (t) => {
  const { clock, backend, syncer } = await withOversized(400);
  await clock.advance(400);
  t.equal(backend.calls.length, 2);
  t.equal(syncer.currentBudget(), 15, 'a piece four times too slow: a quarter of the budget');
  backend.costMs = 0;
  for (let i = 0; i < 50; i++) await clock.advance(400);
  t.equal(backend.installed![4].services.size, 41, 'the rest went in smaller pieces');
  await syncer.stop();
});

t.test('a full sync requested while a sync runs is made by the next sync', async (t) => {
  const { clock, source, backend, syncer, results } = setup({ min: 1000, intact: 0 });
  backend.fullCostMs = 100;
  backend.costMs = 100;
  // The tamper watch fires while the backend is at work, once per arming.
  let armed = true;
  const work = backend.wait!;
  backend.wait = (ms) => {
    if (armed) {
      armed = false;
      syncer.requestFullSync('tampered');
    }
    return work(ms);
  };
  source.change('a/b:/TCP');
  syncer.start();
  await clock.advance(3000);
  t.same(
    results.map((r) => r.fullReason ?? 'partial'),
    ['first', 'tampered'],
    'a request during the first (full) sync got a full sync of its own',
  );
  t.equal(backend.calls[1]?.prev, null, 'which reached the backend as a full sync');
  armed = true;
  source.change('a/c:/TCP');
  syncer.requestSync();
  await clock.advance(3000);
  t.same(
    results.slice(2).map((r) => r.fullReason ?? 'partial'),
    ['partial', 'tampered'],
    'a request during a partial sync: the next sync is full',
  );
  t.equal(backend.calls[3]?.prev, null);
  await syncer.stop();
});

t.test('a repair while an oversized Service is planned in pieces plans from scratch, and every port still arrives', async (t) => {
  const { clock, planner, backend, syncer, results } = await withOversized(100);
  // The tamper watch fires right after the first piece, whose planning left 35 ports unplanned.
  let asked = false;
  syncer.onSync(() => {
    if (asked) return;
    asked = true;
    syncer.requestFullSync('tampered');
  });
  await clock.advance(100);
  t.equal(results[1]?.deferredKeys, 35, 'the first piece left 35 ports for later');
  await clock.advance(0);
  const repair = results[2]!;
  t.equal(repair.fullReason, 'tampered');
  t.equal(planner.prevs[2], null, 'the repair planned from scratch');
  t.ok((repair.deferredKeys ?? 0) > 0, `ports are still owed after the repair (${repair.deferredKeys})`);
  for (let i = 0; i < 20; i++) await clock.advance(100);
  const hostile = [...backend.installed![4].services.keys()].filter((k) => k.startsWith('h/'));
  t.equal(hostile.length, 40, 'every port of the oversized Service is installed in the end');
  t.equal(results.at(-1)?.deferredKeys, 0);
  await syncer.stop();
});

t.test('while syncs fail, changes that keep coming wait for the backoff (cost-aware mode)', async (t) => {
  const { clock, source, backend, syncer, results } = setup({ adaptiveMax: 1000, intact: 0 });
  backend.costMs = 5;
  backend.fullCostMs = 5;
  syncer.start();
  await clock.advance(0);
  await clock.advance(100);
  backend.failNextSyncs(4);
  // A change every 10 ms for 10 s: a busy cluster during a backend outage.
  for (let i = 0; i < 1000; i++) {
    source.change(`ns/s${i % 7}:/TCP`);
    syncer.requestSync();
    await clock.advance(10);
  }
  await clock.advance(6000);
  const attempts = results.slice(1).map((r) => `${r.startedAt}${r.ok ? '' : '!'}`);
  // Failed at 100 (ending 105): retries 1 s, 2 s, 4 s after each failed attempt's end.
  t.same(attempts.slice(0, 5), ['100!', '1105!', '3110!', '7115!', '15120'], `retries follow the backoff (attempts: ${attempts.join(' ')})`);
  t.equal(results[5]?.fullReason, 'after-failure');
  t.equal(results[5]?.ok, true);
  await syncer.stop();
});

t.test('an explicit min sync period runs from the end of the last sync to the start of the next', async (t) => {
  const { clock, source, backend, syncer, at } = setup({ min: 1000, intact: 0 });
  backend.costMs = 300;
  syncer.start();
  await clock.advance(0);
  await clock.advance(10);
  source.change('ns/a:/TCP');
  syncer.requestSync();
  await clock.advance(1300);
  source.change('ns/b:/TCP');
  syncer.requestSync();
  await clock.advance(989);
  t.equal(source.takes, 2, 'no sync one period after the last one started (at 2000)');
  await clock.advance(1);
  t.equal(source.takes, 3, 'but one period after it ended');
  await clock.advance(300);
  t.same(at(), [0, 1000, 2300], 'kube-proxy pkg/proxy/runner: minInterval from completion to start');
  await syncer.stop();
});

t.test('stop() waits for a sync in flight, but not for ever', async (t) => {
  const { clock, source, backend, syncer } = setup({ intact: 0 });
  backend.costMs = 100;
  syncer.start();
  await clock.advance(0);
  source.change('a/b:/TCP');
  syncer.requestSync();
  await clock.advance(1000 + 50);
  let stopped = false;
  void syncer.stop().then(() => (stopped = true));
  await clock.advance(40);
  t.notOk(stopped, 'waiting for the sync in flight');
  await clock.advance(10);
  t.ok(stopped, 'done when the sync ends');
  t.equal(backend.calls.length, 2);

  // A sync that hangs.
  const s = setup({ intact: 0 });
  s.backend.costMs = 3_600_000;
  s.syncer.start();
  await s.clock.advance(0);
  s.source.change('a/b:/TCP');
  s.syncer.requestSync();
  await s.clock.advance(1000);
  logLines.length = 0;
  let hungStopped = false;
  void s.syncer.stop().then(() => (hungStopped = true));
  await s.clock.advance(4999);
  t.notOk(hungStopped, 'stop() waits up to 5 s');
  await s.clock.advance(1);
  t.ok(hungStopped, 'then returns, leaving the sync behind');
  t.match(logLines.join('\n'), /stopping without waiting longer for the sync in flight/, 'and says so');
  t.equal(s.clock.pendingTimers(), 1, 'only the hung sync itself has a timer left');
});
