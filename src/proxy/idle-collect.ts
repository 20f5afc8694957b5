/**
 * The full collections a full sync leaves owed (src/util/gc.ts), run when the daemon is idle.
 *
 * Each full collection stops the main thread for as long as it takes to mark the whole heap —
 * about a quarter of a second at 44,000 Services — and two are needed before the garbage's pages
 * go back to the kernel. Run straight after the full sync, they held back every change that had
 * arrived while it ran (a full sync at that size takes seconds, so there often are some): those
 * waited for the sync, then for both collections. Now each collection runs on its own turn of
 * the event loop, only when no change is waiting and no sync is running or requested; while the
 * daemon is busy it looks again a little later. A change that arrives during a collection still
 * waits for that one, but never for both, and never for a collection that could have waited.
 *
 * Stage: the daemon's lifecycle (no Kubernetes semantics). The clock and the collection are
 * injected so that tests drive the schedule.
 */
import type { Clock } from '../sync/clock.js';
import { logger } from '../util/log.js';

const log = logger('proxy');

export interface IdleCollectorOptions {
  readonly clock: Clock;
  /** A change waits, or a sync runs or is requested: not the moment to stop the thread. */
  readonly busy: () => boolean;
  /** One full collection; false when the runtime offers none. */
  readonly collect: () => boolean;
  /** How long to wait before looking again while busy (ms). Default 50. */
  readonly retryMs?: number;
  /**
   * How long collections stay owed while the daemon is never idle (ms). Default 60 s. By then
   * V8 has collected on its own; forcing it would only stop a daemon that is busy.
   */
  readonly giveUpMs?: number;
}

/** Collections per full sync: the first frees the garbage into V8's page pool, the second returns the pool to the kernel. */
export const COLLECTIONS_PER_FULL_SYNC = 2;

export class IdleCollector {
  private owed = 0;
  private owedSince = 0;
  private timer: unknown;
  private readonly retryMs: number;
  private readonly giveUpMs: number;
  /** Collections run, and owed ones given up (the daemon stayed busy), since start. */
  readonly stats = { collected: 0, givenUp: 0 };

  constructor(private readonly opts: IdleCollectorOptions) {
    this.retryMs = opts.retryMs ?? 50;
    this.giveUpMs = opts.giveUpMs ?? 60_000;
  }

  /** A full sync has just finished: its garbage is owed a collection as soon as the daemon is idle. */
  owe(): void {
    this.owed = COLLECTIONS_PER_FULL_SYNC;
    this.owedSince = this.opts.clock.now();
    // Never now, inside the sync's completion: changes read from the socket in this turn of the
    // event loop have not reached the tracker yet, so busy() could not see them.
    this.arm(0);
  }

  /** Collections still owed (for tests and status). */
  pending(): number {
    return this.owed;
  }

  stop(): void {
    if (this.timer !== undefined) this.opts.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.owed = 0;
  }

  private arm(ms: number): void {
    if (this.timer !== undefined) this.opts.clock.clearTimeout(this.timer);
    this.timer = this.opts.clock.setTimeout(() => {
      this.timer = undefined;
      this.step();
    }, ms);
  }

  private step(): void {
    if (this.owed === 0) return;
    if (this.opts.busy()) {
      if (this.opts.clock.now() - this.owedSince >= this.giveUpMs) {
        log.v(2, 'full collections after a full sync given up: the daemon was never idle', { owed: this.owed, waitedMs: this.opts.clock.now() - this.owedSince });
        this.stats.givenUp += this.owed;
        this.owed = 0;
        return;
      }
      this.arm(this.retryMs);
      return;
    }
    const t0 = performance.now();
    if (!this.opts.collect()) {
      this.owed = 0;
      return;
    }
    this.stats.collected++;
    this.owed--;
    log.v(3, 'full collection after a full sync', { left: this.owed, ms: Math.round(performance.now() - t0), waitedMs: this.opts.clock.now() - this.owedSince });
    // The next one on a later turn, after whatever arrived during this one.
    if (this.owed > 0) this.arm(0);
  }
}
