/**
 * When to sync: kube-proxy's BoundedFrequencyRunner and sync loop. A sync takes a snapshot
 * from the change tracker, plans the tables, diffs them against what the backend last
 * programmed, and hands both to the backend.
 *
 * - bursts of changes coalesce into one sync: with an explicit min sync period, a sync starts
 *   no sooner than a period after the last one ended (kube-proxy's meaning); without one, a
 *   change meeting an idle proxy is applied at once, and the next sync waits as long as recent
 *   partial syncs took (capped), so under churn syncing takes at most about half the time and
 *   every change waiting meanwhile rides along (docs/sync.md);
 * - at least once per syncPeriod: a periodic FULL resync repairs anything drifted;
 * - the first sync, and every sync after a failure, is full (prev = null);
 * - a failed sync is logged with its context and retried with exponential backoff starting at
 *   minSyncPeriod (at least 500ms), capped at syncPeriod; changes arriving meanwhile wait for it;
 * - every few seconds backend.intact() is asked whether its rules are still in place; false
 *   forces a full sync (someone flushed the ruleset). Such a repair (and the tamper watch's)
 *   applies in full but plans on from the last plan; the first, periodic and after-failure
 *   full syncs plan from scratch.
 *
 * Never decides what the rules are (planner) or how to program them (backend).
 */
import type { ChangeSet, ClusterSnapshot, IPFamily } from '../model/types.js';
import type { PlanOptions } from '../plan/planner.js';
import type { Backend, ProxyTables, SyncChanges } from '../plan/types.js';
import { logger, type Logger } from '../util/log.js';
import { realClock, type Clock } from './clock.js';
import { boundPlan, boundSync, NO_DEBT, type PlanDebt, type PlanPiece } from './bound.js';

export interface TrackerSnapshot {
  readonly snapshots: Record<IPFamily, ClusterSnapshot>;
  readonly changes: Record<IPFamily, ChangeSet>;
  readonly triggerTimes: Date[];
}

/** The part of the model's ChangeTracker the syncer uses. */
export interface SnapshotSource {
  pending(): boolean;
  takeSnapshot(): TrackerSnapshot;
}

/** The planner's two entry points (src/plan/planner.ts), injectable for tests. */
export interface PlanFunctions {
  planTables(
    snaps: Record<IPFamily, ClusterSnapshot>,
    opts: PlanOptions,
    prev?: ProxyTables | null,
    changes?: Record<IPFamily, ChangeSet>,
  ): ProxyTables;
  diffTables(prev: ProxyTables | null, next: ProxyTables): SyncChanges;
}

/** `tampered`: the nftables tamper watch saw another program change ferry's table. */
export type FullSyncReason = 'first' | 'periodic' | 'after-failure' | 'not-intact' | 'tampered' | 'requested';

/** Full syncs that repair the kernel's state only: the plan goes on from the last one. */
const KERNEL_ONLY: ReadonlySet<FullSyncReason> = new Set(['not-intact', 'tampered']);

function owesPlanning(d: PlanDebt): boolean {
  return d.keys[4].size > 0 || d.keys[6].size > 0;
}

export interface SyncResult {
  /** 1-based count of sync attempts. */
  readonly n: number;
  readonly ok: boolean;
  readonly full: boolean;
  /** Why the sync was full; undefined for partial syncs. */
  readonly fullReason: FullSyncReason | undefined;
  readonly startedAt: number;
  readonly durationMs: number;
  /** True when a partial sync found nothing to change and the backend was not called. */
  readonly noop: boolean;
  readonly changes?: SyncChanges;
  readonly tables?: ProxyTables;
  /** EndpointSlice trigger times of the changes this sync applied (for network programming latency). */
  readonly triggerTimes: readonly Date[];
  /** Service ports of oversized Services left for the next syncs (bounded cost per Service). */
  readonly deferredKeys?: number;
  readonly error?: unknown;
  /** When ok is false: ms until the retry. */
  readonly retryInMs?: number;
}

export interface SyncerOptions {
  readonly source: SnapshotSource;
  readonly backend: Backend;
  readonly planner: PlanFunctions;
  /** Called on every sync, so localAddresses can be refreshed. */
  readonly planOptions: () => PlanOptions;
  readonly minSyncPeriodMs: number;
  /**
   * Cost-aware coalescing instead of minSyncPeriodMs (which then only sets the retry delay): the
   * gap after a sync follows the measured cost of recent partial syncs, at most `maxMs`.
   */
  readonly adaptive?: { readonly maxMs: number };
  readonly syncPeriodMs: number;
  /**
   * How often a periodic sync is FULL; the syncs in between (every syncPeriod) are partial and
   * cost nothing when nothing changed. kube-proxy forces a full sync hourly; the daemon does the
   * same. Default: syncPeriodMs (every periodic sync is full).
   */
  readonly fullSyncPeriodMs?: number;
  /** How often to ask backend.intact(); 0 disables. Default 5000. */
  readonly intactCheckMs?: number;
  /** First retry delay after a failure. Default max(minSyncPeriod, 500ms). */
  readonly retryInitialMs?: number;
  /** Retry delay cap. Default max(syncPeriod, retryInitialMs). */
  readonly retryMaxMs?: number;
  /**
   * Bounded cost per Service (bound.ts): a Service whose change is estimated above the budget is
   * applied a piece per sync, so that it never delays anyone else's change by more than about
   * `targetMs`. The budget follows what those pieces cost. Absent: every sync applies everything.
   */
  readonly bound?: { readonly targetMs: number; readonly initialBudget?: number; readonly minBudget?: number; readonly maxBudget?: number };
  /** How long stop() waits for a sync in flight. Default 5000. */
  readonly stopWaitMs?: number;
  readonly clock?: Clock;
  readonly log?: Logger;
}

/** The error's message plus its own primitive fields (line, service, backend, stderr...). */
export function errorContext(e: unknown): Record<string, unknown> {
  if (!(e instanceof Error)) return { error: String(e) };
  const out: Record<string, unknown> = { error: e.message };
  for (const [k, v] of Object.entries(e)) {
    if (k === 'message' || k === 'stack') continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  return out;
}

/** An intact() check may keep the proxy busy at most 1 / this of the time (about 2%). */
const INTACT_COST_FACTOR = 50;

export class Syncer {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly intactCheckMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly listeners: ((r: SyncResult) => void)[] = [];

  private started = false;
  private timer: unknown;
  private timerAt = Infinity;
  private intactTimer: unknown;
  private intactInFlight = false;
  /** How long the last intact() check took (ms); it spaces the next one (armIntactCheck). */
  private lastIntactMs = 0;
  private intactStretched = false;

  private running: Promise<void> | undefined;
  private requested = false;
  private needFull = true;
  private fullReason: FullSyncReason = 'first';
  private lastStart = -Infinity;
  private lastEnd = -Infinity;
  /** Smoothed duration of recent partial syncs (ms): the adaptive gap under sustained changes. */
  private partialCostMs = 0;
  /**
   * Sync time not yet paid back by idle time (ms), as of lastEnd: each partial sync adds what it
   * took, the idle time before it pays that back. Cost-aware coalescing waits only for the part
   * above one sync's worth (earliestNext).
   */
  private debtMs = 0;
  /** When debtMs was last brought up to date (the end of the last partial sync). */
  private debtAt = -Infinity;
  /** How long the last partial sync took (ms). */
  private lastPartialMs = 0;
  private lastFullStart = -Infinity;
  private retryAt: number | undefined;
  private failures = 0;
  private attempts = 0;

  /** What the backend last programmed successfully. */
  private applied: ProxyTables | null = null;
  /** Cost budget per sync for oversized Services (bound.ts); adapts to what their pieces cost. */
  private budget: number;
  /** Oversized Services still being trickled in: the next sync runs without the coalescing gap. */
  private deferred = 0;
  /** The last plan (successful or not): the base for incremental planning. */
  private planned: ProxyTables | null = null;
  /** Changed keys of oversized Services not planned yet (bound.ts, boundPlan). */
  private planDebt: PlanDebt = NO_DEBT;
  /**
   * The last sync held the oversized Services' piece back for ordinary changes (bound.ts,
   * yieldToOthers): the next one applies a piece whatever else changed, so they cannot starve.
   */
  private withheld = false;

  constructor(private readonly opts: SyncerOptions) {
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? logger('sync');
    this.intactCheckMs = opts.intactCheckMs ?? 5000;
    this.retryInitialMs = opts.retryInitialMs ?? Math.max(opts.minSyncPeriodMs, 500);
    this.retryMaxMs = opts.retryMaxMs ?? Math.max(opts.syncPeriodMs, this.retryInitialMs);
    this.budget = opts.bound?.initialBudget ?? 4000;
  }

  /** The current per-sync cost budget for oversized Services (bound.ts). */
  currentBudget(): number {
    return this.budget;
  }

  /** Subscribes to the result of every sync attempt (metrics, health, healthcheck servers). */
  onSync(fn: (r: SyncResult) => void): void {
    this.listeners.push(fn);
  }

  /** The tables the backend last programmed successfully (null before the first success). */
  current(): ProxyTables | null {
    return this.applied;
  }

  /** No sync is running and none is requested (the periodic one's timer aside). */
  idle(): boolean {
    return this.running === undefined && !this.requested;
  }

  /** Consecutive failed syncs. */
  consecutiveFailures(): number {
    return this.failures;
  }

  /** Begins syncing: the first (full) sync runs at once. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.requested = true;
    this.schedule();
    this.armIntactCheck();
  }

  /** Something changed: sync soon, but not sooner than minSyncPeriod after the last one. */
  requestSync(): void {
    this.requested = true;
    this.schedule();
  }

  /** Sync soon and make it full (the next sync to start, if one is running now). */
  requestFullSync(reason: FullSyncReason = 'requested'): void {
    if (!this.needFull) {
      this.needFull = true;
      this.fullReason = reason;
    }
    this.requestSync();
  }

  /**
   * Stops scheduling and waits for a sync in flight, at most stopWaitMs: each kernel transaction
   * is atomic, so a sync left behind at exit leaves a consistent state, and the next start's
   * first (full) sync rewrites it anyway. Leaves the kernel state as it is.
   */
  async stop(): Promise<void> {
    this.started = false;
    this.clearTimer();
    if (this.intactTimer !== undefined) this.clock.clearTimeout(this.intactTimer);
    this.intactTimer = undefined;
    const running = this.running;
    if (running === undefined) return;
    const waitMs = this.opts.stopWaitMs ?? 5000;
    let bound: unknown;
    const timedOut = await Promise.race([
      running.then(
        () => false,
        () => false,
      ),
      new Promise<boolean>((resolve) => {
        bound = this.clock.setTimeout(() => resolve(true), waitMs);
      }),
    ]);
    this.clock.clearTimeout(bound);
    if (timedOut) this.log.warn('stopping without waiting longer for the sync in flight', { backend: this.opts.backend.name, waitedMs: waitMs });
  }

  private fullSyncPeriodMs(): number {
    return this.opts.fullSyncPeriodMs ?? this.opts.syncPeriodMs;
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private schedule(): void {
    if (!this.started || this.running) return;
    const now = this.clock.now();
    let due: number;
    // After a failure the retry (full, so it serves any request and the periodic sync too) is the
    // next sync: requests must not bring it forward, or a persistent failure turns every watch
    // event into a plan and an apply from scratch (full syncs add no cost debt to slow them).
    if (this.retryAt !== undefined) due = this.retryAt;
    else {
      due = Math.min(this.lastFullStart + this.fullSyncPeriodMs(), this.lastStart + this.opts.syncPeriodMs);
      if (this.requested) due = Math.min(due, Math.max(now, this.earliestNext()));
    }
    due = Math.max(due, now);
    if (this.timer !== undefined && this.timerAt === due) return;
    this.clearTimer();
    this.timerAt = due;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.runNow();
    }, due - now);
  }

  /** When a requested sync may start at the earliest. */
  private earliestNext(): number {
    const a = this.opts.adaptive;
    // The rest of an oversized Service waits for nobody: the gap exists to let changes coalesce,
    // and whatever arrives meanwhile is applied whole in the next piece's sync anyway.
    if (this.deferred > 0 && a) return this.lastEnd;
    // As kube-proxy's BoundedFrequencyRunner (pkg/proxy/runner): the period runs from the end of
    // one sync to the start of the next, so slow syncs cannot take all of the proxy's time.
    if (!a) return this.lastEnd + this.opts.minSyncPeriodMs;
    // One sync's worth of debt (the last one's, or the recent average if larger) is allowed: a lone change and the one right behind it (a Service,
    // then its EndpointSlice a few ms later) both go out at once. Beyond it, each sync waits
    // until idle time has paid back what the syncs before it took, so under a burst a sync is
    // followed by a gap as long as it took: syncing stays at about half of the proxy's time.
    const paidBack = this.debtAt + Math.max(0, this.debtMs - Math.max(this.partialCostMs, this.lastPartialMs));
    return Math.min(this.lastEnd + a.maxMs, Math.max(this.lastEnd, paidBack));
  }

  /**
   * The gap cost-aware coalescing leaves after each sync while changes keep coming (ms): the
   * smoothed cost of recent partial syncs; minSyncPeriod otherwise.
   */
  currentWindowMs(): number {
    return this.opts.adaptive ? Math.min(this.opts.adaptive.maxMs, this.partialCostMs) : this.opts.minSyncPeriodMs;
  }

  private runNow(): void {
    if (!this.started || this.running) return;
    const start = this.clock.now();
    let full = this.needFull;
    let reason: FullSyncReason | undefined = full ? this.fullReason : undefined;
    if (!full && start >= this.lastFullStart + this.fullSyncPeriodMs()) {
      full = true;
      reason = 'periodic';
    }
    // Taken now, as kube-proxy reads needFullSync under its lock: a full sync requested while
    // this one runs (the tamper watch) is owed by the next one.
    this.needFull = false;
    this.requested = false;
    this.retryAt = undefined;
    this.lastStart = start;
    if (full) this.lastFullStart = start;
    let noop = false;
    this.running = this.syncOnce(full, reason, start)
      .then((found) => {
        noop = found;
      })
      .finally(() => {
        this.running = undefined;
        const end = this.clock.now();
        this.lastEnd = end;
        // Full syncs are rare and far costlier; letting them widen the gap would delay the next
        // lone change by seconds. Syncs that found nothing to do say nothing about cost either.
        if (!full && !noop) {
          this.partialCostMs = this.partialCostMs * 0.7 + (end - start) * 0.3;
          this.debtMs = Math.max(0, this.debtMs - Math.max(0, start - this.debtAt)) + (end - start);
          this.debtAt = end;
          this.lastPartialMs = end - start;
        }
        this.schedule();
      });
  }

  /** One sync attempt; its outcome goes to the listeners. Whether it found nothing to do. */
  private async syncOnce(full: boolean, reason: FullSyncReason | undefined, start: number): Promise<boolean> {
    const n = ++this.attempts;
    let triggerTimes: readonly Date[] = [];
    let changes: SyncChanges | undefined;
    let next: ProxyTables | undefined;
    let noop = false;
    let deferredKeys = 0;
    let planDeferred = 0;
    try {
      const snap = this.opts.source.takeSnapshot();
      triggerTimes = snap.triggerTimes;
      // An oversized Service is planned (not only applied) a piece per sync.
      let planChanges = snap.changes;
      // Read before the debt is replaced below: a repair must know that ports are still unplanned.
      const owed = owesPlanning(this.planDebt);
      let piece: PlanPiece | undefined;
      if (!full && this.planned !== null && this.opts.bound) {
        piece = boundPlan(snap.snapshots, snap.changes, this.planDebt, this.applied, this.budget, !this.withheld);
        planChanges = piece.changes;
      }
      this.planDebt = piece?.later ?? NO_DEBT;
      planDeferred = piece?.deferredKeys ?? 0;
      // A full sync also re-plans from scratch, so a planning slip cannot outlive it — except one
      // that only repairs the kernel (rules lost behind our back): the last plan is what the
      // backend had, so planning goes on from it as a partial sync would and only the apply is
      // full. At 44k Services that spares the repair a second IR (hundreds of ms, and the
      // garbage of the first). The periodic full sync re-plans.
      const replan = full && !(reason !== undefined && KERNEL_ONLY.has(reason) && this.planned !== null && this.planned === this.applied && !owed);
      next = this.opts.planner.planTables(
        snap.snapshots,
        this.opts.planOptions(),
        replan ? null : this.planned,
        replan ? undefined : planChanges,
      );
      this.planned = next;
      const prev = full ? null : this.applied;
      changes = this.opts.planner.diffTables(prev, next);
      if (full && !changes.full) changes = { ...changes, full: true };
      const bounded = this.opts.bound ? boundSync(this.applied, prev, next, changes, this.budget, !this.withheld) : undefined;
      const withheld = (piece?.withheld ?? false) || (bounded?.withheld ?? false);
      const planMs = this.clock.now() - start;
      let target = next;
      if (bounded) {
        target = bounded.tables;
        changes = bounded.changes;
      }
      if ((bounded || planDeferred > 0) && this.deferred === 0) {
        this.log.info('oversized Services are applied in pieces so they delay no other change', {
          services: [...new Set([...(bounded?.deferredServices ?? []), ...(piece?.deferredServices ?? [])])].join(','),
          deferredServicePorts: (bounded?.deferredKeys ?? 0) + planDeferred,
          budget: this.budget,
        });
      }
      if (!full && changes.changed.size === 0 && !changes.tableChanged) {
        noop = true;
        // next equals what the backend holds; keep the tables it knows (and the base of the next
        // plan), or the next partial sync would find a prev the backend never saw and go full.
        if (this.applied !== null) target = this.planned = this.applied;
      } else {
        await this.opts.backend.sync(prev, target, changes);
      }
      this.applied = target;
      deferredKeys = (bounded?.deferredKeys ?? 0) + planDeferred;
      // A sync that held the pieces back says nothing about what a piece costs.
      if ((bounded || planDeferred > 0) && !withheld) this.adaptBudget(this.clock.now() - start);
      this.withheld = withheld;
      if (deferredKeys > 0) this.requested = true;
      else if (this.deferred > 0) this.log.info('oversized Services are fully applied', { budget: this.budget });
      this.deferred = deferredKeys;
      if (this.failures > 0) this.log.info('sync succeeded again', { afterFailures: this.failures });
      this.failures = 0;
      const durationMs = this.clock.now() - start;
      this.log.v(full ? 1 : 2, full ? 'full sync done' : 'partial sync done', {
        n,
        ...(reason ? { reason } : {}),
        changed: changes.changed.size,
        tableChanged: changes.tableChanged,
        ...(deferredKeys > 0 ? { deferred: deferredKeys } : {}),
        planMs,
        durationMs,
      });
      this.emit({ n, ok: true, full, fullReason: reason, startedAt: start, durationMs, noop, changes, tables: this.applied ?? next, triggerTimes, deferredKeys });
      return noop;
    } catch (err) {
      this.failures++;
      // The kernel state is now unknown: the next attempt assumes nothing and rewrites all.
      this.needFull = true;
      this.fullReason = 'after-failure';
      // Planning from scratch too, in case the failure was in planning (changes were consumed).
      this.planned = null;
      this.planDebt = NO_DEBT;
      this.withheld = false;
      const delay = Math.min(this.retryMaxMs, this.retryInitialMs * 2 ** Math.min(this.failures - 1, 30));
      this.retryAt = this.clock.now() + delay;
      this.log.error(`${full ? 'full' : 'partial'} sync failed; retrying with a full sync`, {
        backend: this.opts.backend.name,
        n,
        attempt: this.failures,
        retryInMs: delay,
        ...errorContext(err),
      });
      this.emit({
        n,
        ok: false,
        full,
        fullReason: reason,
        startedAt: start,
        durationMs: this.clock.now() - start,
        noop: false,
        changes,
        tables: next,
        triggerTimes,
        error: err,
        retryInMs: delay,
      });
      return false;
    }
  }

  /**
   * A piece that took longer than the target shrinks the budget, a quicker one grows it (at most
   * 2× a step). Never below minBudget (default 2,000): where each sync has a cost of its own
   * that grows with the table (an iptables-restore), smaller pieces would only multiply it.
   */
  private adaptBudget(tookMs: number): void {
    const b = this.opts.bound;
    if (!b) return;
    const factor = Math.min(2, Math.max(0.25, b.targetMs / Math.max(tookMs, 1)));
    this.budget = Math.round(Math.min(b.maxBudget ?? 200_000, Math.max(b.minBudget ?? 2000, this.budget * factor)));
  }

  private emit(r: SyncResult): void {
    for (const fn of this.listeners) {
      try {
        fn(r);
      } catch (e) {
        this.log.error('sync listener failed', errorContext(e));
      }
    }
  }

  /**
   * The next check comes intactCheckMs after this one, or INTACT_COST_FACTOR times as long as
   * this one took if that is longer: at 44k Services every `iptables-legacy` call reads the whole
   * nat table back from the kernel, and checks every 5 s kept 40% of a core busy (docs/iptables.md).
   */
  private armIntactCheck(): void {
    if (!this.started || this.intactCheckMs <= 0 || !this.opts.backend.intact) return;
    const delay = Math.max(this.intactCheckMs, INTACT_COST_FACTOR * this.lastIntactMs);
    if (delay > this.intactCheckMs && !this.intactStretched) {
      this.intactStretched = true;
      this.log.info('the check for rules changed behind our back is costly here; checking less often', {
        backend: this.opts.backend.name,
        checkMs: this.lastIntactMs,
        everyMs: delay,
      });
    }
    this.intactTimer = this.clock.setTimeout(() => {
      this.intactTimer = undefined;
      void this.checkIntact().finally(() => this.armIntactCheck());
    }, delay);
  }

  private async checkIntact(): Promise<void> {
    const backend = this.opts.backend;
    if (!backend.intact || this.intactInFlight || this.running || this.needFull || this.applied === null) return;
    this.intactInFlight = true;
    const attemptsBefore = this.attempts;
    const t0 = this.clock.now();
    let ok: boolean;
    try {
      ok = await backend.intact();
    } catch (e) {
      this.log.warn('backend intact check failed; treating its rules as missing', { backend: backend.name, ...errorContext(e) });
      ok = false;
    } finally {
      this.intactInFlight = false;
      this.lastIntactMs = this.clock.now() - t0;
    }
    // A sync that ran meanwhile answered the question already.
    if (ok || !this.started || this.attempts !== attemptsBefore) return;
    this.log.warn('backend rules are missing or changed behind our back (external flush?); forcing a full sync', {
      backend: backend.name,
    });
    this.requestFullSync('not-intact');
  }
}
