/**
 * The collections a full sync leaves owed run in idle moments, one per turn of the event loop,
 * never while a change waits or a sync runs (src/proxy/idle-collect.ts).
 */
import t from 'tap';
import { FakeClock } from '../../../src/sync/clock.js';
import { COLLECTIONS_PER_FULL_SYNC, IdleCollector } from '../../../src/proxy/idle-collect.js';

function collectorWith(opts: { busy?: () => boolean; collect?: () => boolean; giveUpMs?: number } = {}) {
  const clock = new FakeClock();
  const log: number[] = [];
  const c = new IdleCollector({
    clock,
    busy: opts.busy ?? (() => false),
    collect: opts.collect ?? (() => (log.push(clock.now()), true)),
    retryMs: 50,
    ...(opts.giveUpMs !== undefined ? { giveUpMs: opts.giveUpMs } : {}),
  });
  return { clock, c, log };
}

t.test('idle: two collections, none inside owe(), each on its own turn', async (t) => {
  const { clock, c, log } = collectorWith();
  c.owe();
  t.equal(log.length, 0, 'not inside the sync that owes them');
  t.equal(c.pending(), COLLECTIONS_PER_FULL_SYNC);
  await clock.advance(0);
  t.equal(log.length, 2, 'both ran once the loop turned');
  t.equal(c.pending(), 0);
  t.equal(clock.pendingTimers(), 0, 'nothing left armed');
  t.same(c.stats, { collected: 2, givenUp: 0 });
});

t.test('busy: nothing runs until the daemon is idle, then both', async (t) => {
  let busy = true;
  const { clock, c, log } = collectorWith({ busy: () => busy });
  c.owe();
  await clock.advance(500);
  t.equal(log.length, 0, 'none while busy');
  t.equal(c.pending(), 2);
  busy = false;
  await clock.advance(50);
  t.equal(log.length, 2, 'both within one retry period of the daemon going idle');
});

t.test('busy again between the two: the second waits', async (t) => {
  let busy = false;
  const { clock, c, log } = collectorWith({
    busy: () => busy,
    collect: () => {
      log.push(clock.now());
      busy = true; // a change arrived during the first collection
      return true;
    },
  });
  c.owe();
  await clock.advance(0);
  t.equal(log.length, 1, 'the first ran');
  await clock.advance(200);
  t.equal(log.length, 1, 'the second waits while busy');
  busy = false;
  await clock.advance(50);
  t.equal(log.length, 2);
  t.ok(log[1]! - log[0]! >= 200, 'the second ran after the busy time');
});

t.test('never idle: given up after giveUpMs, nothing left armed', async (t) => {
  const { clock, c, log } = collectorWith({ busy: () => true, giveUpMs: 1000 });
  c.owe();
  await clock.advance(999);
  t.equal(c.pending(), 2, 'still owed before the limit');
  await clock.advance(100);
  t.equal(log.length, 0);
  t.equal(c.pending(), 0);
  t.same(c.stats, { collected: 0, givenUp: 2 });
  t.equal(clock.pendingTimers(), 0);
});

t.test('owed again before paying: still two, and the wait starts over', async (t) => {
  let busy = true;
  const { clock, c, log } = collectorWith({ busy: () => busy, giveUpMs: 1000 });
  c.owe();
  await clock.advance(800);
  c.owe();
  await clock.advance(800);
  t.equal(c.pending(), 2, 'the second full sync renewed the debt, not doubled it');
  busy = false;
  await clock.advance(50);
  t.equal(log.length, 2);
  t.equal(clock.pendingTimers(), 0);
});

t.test('no collector in the runtime: stops asking', async (t) => {
  let calls = 0;
  const { clock, c } = collectorWith({ collect: () => (calls++, false) });
  c.owe();
  await clock.advance(1000);
  t.equal(calls, 1);
  t.equal(c.pending(), 0);
});

t.test('stop(): nothing runs afterwards', async (t) => {
  const { clock, c, log } = collectorWith();
  c.owe();
  c.stop();
  await clock.advance(1000);
  t.equal(log.length, 0);
  t.equal(clock.pendingTimers(), 0);
});
