/**
 * Waiting by polling, never by sleeping: the kernel rules appear when the proxy has synced, and
 * a test must neither race that nor pad it with fixed delays. On timeout the error says what was
 * awaited and what was seen on the last attempt, which is what a reader of a red run needs.
 */

import { scaledMs } from '../../../src/util/timescale.js';

export class EventuallyTimeout extends Error {
  readonly code = 'FERRY_ERR_E2E_EVENTUALLY';
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly attempts: number,
    readonly last: string,
  ) {
    super(`${what}: still not true after ${timeoutMs} ms (${attempts} attempts); last seen: ${last}`);
    this.name = 'EventuallyTimeout';
  }
}

export interface EventuallyOptions {
  /** What is being waited for, as a sentence fragment ("web reachable from cli-1"). */
  what: string;
  timeoutMs?: number;
  intervalMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Calls fn until it resolves; a throw means "not yet" and its message is kept as the last thing seen,
 * except GiveUp, which ends the wait at once.
 * Returns fn's value.
 */
export async function eventually<T>(fn: () => Promise<T>, opts: EventuallyOptions): Promise<T> {
  // Deadlines guard against hangs; on an emulated VM (FERRY_TIME_SCALE) they stretch.
  const timeoutMs = scaledMs(opts.timeoutMs ?? 30_000);
  const intervalMs = opts.intervalMs ?? 250;
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  let last = 'nothing (no attempt finished)';
  for (;;) {
    attempts++;
    try {
      return await fn();
    } catch (e) {
      if (e instanceof GiveUp) throw e;
      last = e instanceof Error ? e.message : String(e);
    }
    if (Date.now() >= deadline) throw new EventuallyTimeout(opts.what, timeoutMs, attempts, last);
    await sleep(intervalMs);
  }
}

/** Thrown inside an eventually() callback when waiting longer cannot help (a ferry process died). */
export class GiveUp extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GiveUp';
  }
}

/** Thrown inside an eventually() callback to say "not yet, and this is what I saw". */
export class NotYet extends Error {
  constructor(seen: string) {
    super(seen);
    this.name = 'NotYet';
  }
}
