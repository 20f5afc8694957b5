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

export const realClock: Clock = {
  now: () => Date.now(),
  // A lone change is synced at once; 1 ms of timer slack would be most of its latency.
  setTimeout: (fn, ms) => (ms <= 0 ? new Immediate(setImmediate(fn)) : setTimeout(fn, ms)),
  clearTimeout: (h) => {
    if (h instanceof Immediate) clearImmediate(h.handle);
    else clearTimeout(h as NodeJS.Timeout);
  },
};

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
