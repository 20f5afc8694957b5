/**
 * Time as the syncer sees it: injectable so unit tests drive the schedule deterministically
 * (FakeClock) instead of sleeping. Real code uses realClock.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A timer due at once: Node's setTimeout(fn, 0) waits at least 1 ms, setImmediate does not. */
class Immediate {
  constructor(readonly handle: NodeJS.Immediate) {}
}

/**
 * The longest delay Node's setTimeout honours: a longer one (a signed 32-bit overflow) fires
 * after 1 ms, so `--iptables-sync-period 1000h` would sync about every millisecond.
 */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** The host timers realClock runs on; injectable so the chaining of long delays is testable. */
export interface TimerHost {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setImmediate(fn: () => void): NodeJS.Immediate;
  clearImmediate(handle: NodeJS.Immediate): void;
}

/** A delay beyond MAX_TIMEOUT_MS, waited out in chained host timeouts; `current` is the one armed. */
class Chained {
  current: unknown;
}

export function hostClock(host: TimerHost): Clock {
  const arm = (c: Chained, fn: () => void, ms: number): void => {
    if (ms <= MAX_TIMEOUT_MS) c.current = host.setTimeout(fn, ms);
    else c.current = host.setTimeout(() => arm(c, fn, ms - MAX_TIMEOUT_MS), MAX_TIMEOUT_MS);
  };
  return {
    now: () => host.now(),
    setTimeout: (fn, ms) => {
      // A lone change is synced at once; 1 ms of timer slack would be most of its latency.
      if (ms <= 0) return new Immediate(host.setImmediate(fn));
      if (ms <= MAX_TIMEOUT_MS) return host.setTimeout(fn, ms);
      const c = new Chained();
      arm(c, fn, ms);
      return c;
    },
    clearTimeout: (h) => {
      if (h instanceof Immediate) host.clearImmediate(h.handle);
      else if (h instanceof Chained) host.clearTimeout(h.current);
      else host.clearTimeout(h);
    },
  };
}

export const realClock: Clock = hostClock({
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setImmediate: (fn) => setImmediate(fn),
  clearImmediate: (h) => clearImmediate(h),
});

interface FakeTimer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
}

/** Lets pending promise chains (fake backends resolve at once) run to completion. */
export async function settle(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A manual clock: time moves only in advance(), which fires due timers in order. */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers: FakeTimer[] = [];

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { id: ++this.seq, at: this.t + Math.max(0, ms), fn };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Number of armed timers (for tests asserting that nothing is left running). */
  pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, and settling after each. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    await settle();
    for (;;) {
      let next: FakeTimer | undefined;
      for (const tm of this.timers) if (tm.at <= target && (!next || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      if (!next) break;
      const fire = next;
      this.timers = this.timers.filter((tm) => tm !== fire);
      this.t = Math.max(this.t, fire.at);
      fire.fn();
      await settle();
    }
    this.t = target;
    await settle();
  }
}
