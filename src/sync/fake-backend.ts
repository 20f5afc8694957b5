/**
 * An in-memory Backend for tests: records every sync call, can be told to fail the next N
 * syncs, and to report its rules as gone (intact() → false) until the next full sync.
 * Touches nothing outside this object.
 */
import type { Backend, ProxyTables, SyncChanges } from '../plan/types.js';

export interface RecordedSync {
  readonly prev: ProxyTables | null;
  readonly next: ProxyTables;
  readonly changes: SyncChanges;
  readonly ok: boolean;
}

export class FakeSyncError extends Error {
  readonly code = 'FERRY_ERR_FAKE_SYNC';
  constructor(
    readonly backend: string,
    readonly line: number,
  ) {
    super(`fake backend rejected the transaction at line ${line}`);
    this.name = 'FakeSyncError';
  }
}

export class FakeBackend implements Backend {
  readonly name = 'fake';
  readonly calls: RecordedSync[] = [];
  cleanups = 0;
  intactChecks = 0;
  /** What the last successful sync installed. */
  installed: ProxyTables | null = null;
  private failNext = 0;
  private wiped = false;
  /** Simulated cost of each sync: awaited through `wait` (a fake clock's timer in tests). */
  costMs = 0;
  fullCostMs = 0;
  wait: ((ms: number) => Promise<void>) | undefined;

  /** The next `n` sync calls throw FakeSyncError (and change nothing). */
  failNextSyncs(n: number): void {
    this.failNext = n;
  }

  /** Simulates an external flush: intact() answers false until a full sync reinstalls. */
  wipe(): void {
    this.wiped = true;
    this.installed = null;
  }

  async sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
    const cost = changes.full ? this.fullCostMs : this.costMs;
    if (cost > 0 && this.wait) await this.wait(cost);
    if (this.failNext > 0) {
      this.failNext--;
      this.calls.push({ prev, next, changes, ok: false });
      throw new FakeSyncError(this.name, 7);
    }
    this.calls.push({ prev, next, changes, ok: true });
    if (changes.full) this.wiped = false;
    this.installed = next;
  }

  /** Simulated cost of each intact() check, awaited through `wait` like costMs. */
  intactCostMs = 0;

  async intact(): Promise<boolean> {
    this.intactChecks++;
    if (this.intactCostMs > 0 && this.wait) await this.wait(this.intactCostMs);
    return !this.wiped;
  }

  async cleanup(): Promise<void> {
    this.cleanups++;
    this.installed = null;
  }
}
