import t from 'tap';
import { hostClock, MAX_TIMEOUT_MS, realClock, type TimerHost } from '../../../src/sync/clock.js';

t.test('realClock: a timer due now runs before a 1 ms timer, and either can be cancelled', async (t) => {
  const order: string[] = [];
  await new Promise<void>((done) => {
    realClock.setTimeout(() => {
      order.push('1ms');
      done();
    }, 1);
    realClock.setTimeout(() => order.push('now'), 0);
    const cancelledNow = realClock.setTimeout(() => order.push('cancelled now'), 0);
    const cancelledLater = realClock.setTimeout(() => order.push('cancelled later'), 1);
    realClock.clearTimeout(cancelledNow);
    realClock.clearTimeout(cancelledLater);
  });
  t.same(order, ['now', '1ms']);
});

/** Host timers driven by hand: `fire()` runs the earliest armed one and moves time to it. */
function fakeHost() {
  let t = 0;
  let seq = 0;
  const armed = new Map<number, { at: number; fn: () => void }>();
  const delays: number[] = [];
  const host: TimerHost = {
    now: () => t,
    setTimeout: (fn, ms) => {
      delays.push(ms);
      armed.set(++seq, { at: t + ms, fn });
      return seq;
    },
    clearTimeout: (h) => {
      armed.delete(h as number);
    },
    setImmediate: () => {
      throw new Error('not used here');
    },
    clearImmediate: () => undefined,
  };
  const fire = (): number => {
    const [id, next] = [...armed].sort((a, b) => a[1].at - b[1].at)[0]!;
    armed.delete(id);
    t = next.at;
    next.fn();
    return t;
  };
  return { host, delays, fire, armed: () => armed.size };
}

t.test('a delay beyond setTimeout\'s limit is waited out in chained timeouts, not fired after 1 ms', async (t) => {
  const { host, delays, fire } = fakeHost();
  const clock = hostClock(host);
  const hours1000 = 1000 * 3600 * 1000;
  let firedAt: number | undefined;
  clock.setTimeout(() => (firedAt = host.now()), hours1000);
  t.ok(delays.every((d) => d <= MAX_TIMEOUT_MS), `every host delay within the limit (${delays.join(', ')})`);
  while (firedAt === undefined) fire();
  t.equal(firedAt, hours1000, 'fires exactly when due');
  t.equal(delays.length, Math.ceil(hours1000 / MAX_TIMEOUT_MS), 'one host timeout per 24.8 days');
  t.ok(delays.every((d) => d <= MAX_TIMEOUT_MS));
});

t.test('a chained timeout can be cancelled at any link', async (t) => {
  const { host, fire, armed } = fakeHost();
  const clock = hostClock(host);
  let fired = false;
  const h = clock.setTimeout(() => (fired = true), 3 * MAX_TIMEOUT_MS);
  fire();
  t.equal(armed(), 1, 'the second link is armed');
  clock.clearTimeout(h);
  t.equal(armed(), 0, 'and cancelled');
  t.notOk(fired);
  // Delays within the limit are one host timeout.
  const short = clock.setTimeout(() => (fired = true), MAX_TIMEOUT_MS);
  t.equal(armed(), 1);
  clock.clearTimeout(short);
  t.equal(armed(), 0);
});

t.test('realClock: a delay beyond the limit does not fire early', async (t) => {
  let fired = false;
  const h = realClock.setTimeout(() => (fired = true), 1000 * 3600 * 1000);
  await new Promise<void>((r) => setTimeout(r, 20));
  t.notOk(fired, 'still waiting after 20 ms');
  realClock.clearTimeout(h);
});
