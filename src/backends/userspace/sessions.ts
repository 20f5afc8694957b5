/**
 * The UDP session table: client (frontend, address, port) → its session, in least-recently-used
 * order. Sessions idle longer than the timeout expire on sweep; when the table is full the oldest
 * is evicted (counted). The owner closes the session's socket in `onClose`, and may lower the
 * bound at run time (the descriptor budget): the next add then evicts down to it.
 *
 * No I/O and no timers of its own; the clock is injectable. Must never hold a closed session:
 * every removal goes through onClose exactly once.
 */
import type { Clock } from './picker.js';

export type SessionCloseReason = 'idle' | 'evicted' | 'closed';

export interface SessionTableOptions<V> {
  readonly idleTimeoutMs: number;
  readonly maxSessions: number;
  readonly now?: Clock;
  readonly onClose: (key: string, value: V, reason: SessionCloseReason) => void;
}

interface Slot<V> {
  readonly value: V;
  last: number;
}

export class SessionTable<V> {
  // A Map iterates in insertion order; touching re-inserts, so the first entry is the oldest.
  private readonly slots = new Map<string, Slot<V>>();
  private readonly now: Clock;
  private max: number;
  evictions = 0;
  expirations = 0;

  constructor(private readonly opts: SessionTableOptions<V>) {
    this.max = checkedMax(opts.maxSessions);
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.slots.size;
  }

  get maxSessions(): number {
    return this.max;
  }

  /** Sessions already over a lowered bound stay until the next add, which evicts down to it. */
  set maxSessions(n: number) {
    this.max = checkedMax(n);
  }

  /** The session for `key`, marked as used now. */
  get(key: string): V | undefined {
    const s = this.slots.get(key);
    if (!s) return undefined;
    this.slots.delete(key);
    s.last = this.now();
    this.slots.set(key, s);
    return s.value;
  }

  /** Marks the session as used now (a reply went through). */
  touch(key: string): void {
    this.get(key);
  }

  /** Adds a session; evicts the oldest first when full. Replaces (closing) an existing one. */
  add(key: string, value: V): void {
    if (this.slots.has(key)) this.delete(key);
    while (this.slots.size >= this.max) {
      const oldest = this.slots.keys().next();
      if (oldest.done) break;
      const slot = this.slots.get(oldest.value) as Slot<V>;
      this.slots.delete(oldest.value);
      this.evictions++;
      this.opts.onClose(oldest.value, slot.value, 'evicted');
    }
    this.slots.set(key, { value, last: this.now() });
  }

  delete(key: string): boolean {
    const s = this.slots.get(key);
    if (!s) return false;
    this.slots.delete(key);
    this.opts.onClose(key, s.value, 'closed');
    return true;
  }

  /** Expires sessions idle longer than the timeout; returns how many. */
  sweep(): number {
    const cutoff = this.now() - this.opts.idleTimeoutMs;
    let n = 0;
    for (const [key, s] of this.slots) {
      if (s.last > cutoff) break; // LRU order: everything after is newer
      this.slots.delete(key);
      this.expirations++;
      n++;
      this.opts.onClose(key, s.value, 'idle');
    }
    return n;
  }

  /** Closes every session whose key matches. */
  deleteWhere(pred: (key: string, value: V) => boolean): number {
    let n = 0;
    for (const [key, s] of [...this.slots]) {
      if (!pred(key, s.value)) continue;
      this.slots.delete(key);
      n++;
      this.opts.onClose(key, s.value, 'closed');
    }
    return n;
  }
}

function checkedMax(n: number): number {
  if (!(n >= 1)) throw new RangeError(`maxSessions must be >= 1, got ${n}`);
  return n;
}
