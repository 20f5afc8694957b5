/**
 * The tamper watch: nf_tables notifications (NFNLGRP_NFTABLES, subscribed by the native addon's
 * nfnlMonitor) tell ferry within milliseconds when another program changes ferry's own table,
 * so the caller can repair it with a full sync instead of waiting for the canary check or the
 * hourly resync (docs/nftables.md, "Tamper watch").
 *
 * The addon folds each committed transaction into one `generation` event and marks it `own`
 * when the committing socket was one of ferry's netlink batch sockets (by port id: the kernel's
 * NFTA_GEN_PROC_PID is the id of the libuv pool thread that sent the batch, and a pid namespace
 * of ferry's own would make it meaningless anyway). This module only decides: which events
 * concern the watched tables, which are someone else's, what to say, when to ask for a repair
 * (debounced: one repair for a burst of foreign transactions), what to do when notifications
 * were lost. It never touches the kernel; `FakeNftEvents` stands in for the addon in tests.
 */
import type { NativeAddon, NfnlMonitorChange, NfnlMonitorEvent } from '../../native/index.js';
import { logger, type Logger } from '../../util/log.js';
import type { NftFamily } from '../nftables/transaction.js';

export type { NfnlMonitorChange, NfnlMonitorEvent } from '../../native/index.js';

/** Where notifications come from: the addon's subscription or a fake. */
export interface NftEventSource {
  /** Starts delivering events; throws with the reason when the subscription cannot be made. */
  start(onEvent: (e: NfnlMonitorEvent) => void): { stop(): void };
}

/** The addon's subscription for `tables` (any family) in `netns` (default: the process's); undefined when the addon has none. */
export function addonNftEvents(addon: NativeAddon | null, opts: { tables: readonly string[]; netns?: string; rcvbuf?: number }): NftEventSource | undefined {
  const monitor = addon?.nfnlMonitor;
  if (!addon || !monitor) return undefined;
  const netns = opts.netns === undefined || opts.netns === '' ? undefined : opts.netns.includes('/') ? opts.netns : `/var/run/netns/${opts.netns}`;
  return {
    start: (onEvent) =>
      monitor.call(
        addon,
        { tables: [...opts.tables], ...(netns !== undefined ? { netns } : {}), ...(opts.rcvbuf !== undefined ? { rcvbuf: opts.rcvbuf } : {}) },
        onEvent,
      ),
  };
}

/** In-memory event source for tests: emit() delivers synchronously while started. */
export class FakeNftEvents implements NftEventSource {
  private listener: ((e: NfnlMonitorEvent) => void) | undefined;
  starts = 0;
  stops = 0;
  /** When set, start() throws it (an unusable subscription). */
  failWith: Error | undefined;

  start(onEvent: (e: NfnlMonitorEvent) => void): { stop(): void } {
    if (this.failWith) throw this.failWith;
    this.starts++;
    this.listener = onEvent;
    return {
      stop: () => {
        if (this.listener === onEvent) this.listener = undefined;
        this.stops++;
      },
    };
  }

  get started(): boolean {
    return this.listener !== undefined;
  }

  emit(e: NfnlMonitorEvent): void {
    this.listener?.(e);
  }

  /** A committed transaction touching `changes`; `own` as the addon would mark ferry's batches. */
  generation(changes: Partial<NfnlMonitorChange>[], opts: { own?: boolean; procName?: string; procPid?: number } = {}): void {
    this.emit({
      kind: 'generation',
      genId: 0,
      procPid: opts.procPid ?? 4242,
      procName: opts.procName ?? 'nft',
      portid: opts.procPid ?? 4242,
      own: opts.own ?? false,
      changes: changes.map((c) => ({ op: 'delrule', family: 'ip', table: 'ferry', name: '', count: 1, ...c })),
      more: 0,
    });
  }
}

/** What a repair is asked for. */
export interface TamperReport {
  /** Human-readable changes, e.g. `ip ferry: rule deleted in chain services`. */
  readonly changes: readonly string[];
  /** Who committed them, e.g. `nft (pid 8269)`; several when a burst came from several programs. */
  readonly by: readonly string[];
  /** Foreign transactions folded into this repair. */
  readonly transactions: number;
  /** `notifications` when seen; `overrun` when notifications were lost and the check failed or could not be trusted. */
  readonly cause: 'notifications' | 'overrun';
  /**
   * How long the repair-loop guard held this repair back beyond the debounce (ms), when it did:
   * repairs that keep coming are spaced (LOOP_GAP_MS), and `ferry status` says so.
   */
  readonly heldBackMs?: number;
}

/** A backend that can watch its kernel objects for changes by others (the nftables backend). */
export interface TamperWatchable {
  watchTamper(onTamper: (report: TamperReport) => void): { stop(): void } | undefined;
}

export function isTamperWatchable(b: unknown): b is TamperWatchable {
  return typeof b === 'object' && b !== null && typeof (b as Partial<TamperWatchable>).watchTamper === 'function';
}

/** Just enough of a clock (src/sync/clock.ts's FakeClock fits) to debounce. */
export interface WatchTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: WatchTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const h = setTimeout(fn, ms);
    // A pending repair alone must not keep a stopping process alive.
    h.unref();
    return h;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface TamperWatchOptions {
  readonly source: NftEventSource;
  /** The tables ferry owns, per family (`ip ferry`, `ip6 ferry`); everything else is ignored. */
  readonly tables: readonly { family: NftFamily; name: string }[];
  /** Asked to repair (a full sync). Called at most once per debounce window. */
  readonly onTamper: (report: TamperReport) => void;
  /**
   * Whether ferry's own transactions go out on netlink batch sockets the addon can recognise.
   * On the libnftables / nft fallbacks they do not, so foreign and own cannot be told apart and
   * the watch stands aside (the intact() check remains).
   */
  readonly ownPathRecognisable: () => boolean;
  /** The cheap check run when notifications were lost during ferry's own sync (the backend's intact()). */
  readonly check?: () => Promise<boolean>;
  /** Window that folds a burst of foreign transactions into one repair. Default 50 ms. */
  readonly debounceMs?: number;
  readonly log?: Logger;
  readonly timers?: WatchTimers;
}

// A repair loop (ferry's own syncs taken for foreign ones, should attribution ever fail) must
// not turn into back-to-back full syncs: after this many repairs within the window, repairs are
// spaced by LOOP_GAP_MS.
const LOOP_REPAIRS = 5;
const LOOP_WINDOW_MS = 10_000;
const LOOP_GAP_MS = 5_000;

const WHAT: Partial<Record<NfnlMonitorChange['op'], [string, string, string]>> = {
  // [singular, plural, preposition + container]
  newrule: ['rule added', 'rules added', 'in chain'],
  delrule: ['rule deleted', 'rules deleted', 'in chain'],
  newsetelem: ['element added', 'elements added', 'to'],
  delsetelem: ['element deleted', 'elements deleted', 'from'],
};

/** One change in words: `ip ferry: 3 rules deleted in chain services`, `ip ferry: table deleted`. */
export function describeChange(c: NfnlMonitorChange): string {
  const where = `${c.family} ${c.table}`;
  const rows = WHAT[c.op];
  if (rows) {
    const [one, many, prep] = rows;
    return `${where}: ${c.count === 1 ? one : `${c.count} ${many}`} ${prep} ${c.name}`;
  }
  switch (c.op) {
    case 'deltable':
      return `${where}: table deleted`;
    case 'newtable':
      return `${where}: table added or changed`;
    case 'newchain':
      return `${where}: chain ${c.name} added or changed`;
    case 'delchain':
      return `${where}: chain ${c.name} deleted`;
    case 'newset':
      return `${where}: set/map ${c.name} added`;
    case 'delset':
      return `${where}: set/map ${c.name} deleted`;
    case 'newobj':
    case 'delobj':
      return `${where}: object ${c.name} ${c.op === 'newobj' ? 'added' : 'deleted'}`;
    case 'newflowtable':
    case 'delflowtable':
      return `${where}: flowtable ${c.name} ${c.op === 'newflowtable' ? 'added' : 'deleted'}`;
    default:
      return `${where}: ${c.count} change(s) to ${c.name}`;
  }
}

/** The changes of one transaction in words, the table's deletion swallowing what went with it. */
export function describeChanges(changes: readonly NfnlMonitorChange[], more = 0): string[] {
  const deleted = new Set(changes.filter((c) => c.op === 'deltable').map((c) => `${c.family} ${c.table}`));
  const out: string[] = [];
  for (const c of changes) {
    if (c.op !== 'deltable' && deleted.has(`${c.family} ${c.table}`)) continue;
    out.push(describeChange(c));
  }
  if (more > 0) out.push(`${more} more change(s)`);
  return out;
}

/**
 * Watches the owned tables and asks for a repair when someone else changed them. start() is
 * false (after one warning) when the subscription cannot be made; the caller's periodic checks
 * then remain the only safety net.
 */
export class TamperWatch {
  private readonly log: Logger;
  private readonly timers: WatchTimers;
  private readonly debounceMs: number;
  private readonly owned: Set<string>;
  private handle: { stop(): void } | undefined;
  private timer: unknown;
  private pending: { changes: string[]; by: Set<string>; transactions: number; cause: TamperReport['cause']; heldBackMs?: number } | undefined;
  private readonly recentRepairs: number[] = [];
  private warnedUnrecognisable = false;
  private warnedLoop = false;
  private checking = false;
  private stopped = false;
  /** Counters for tests and debugging. */
  readonly seen = { own: 0, foreign: 0, ignored: 0, overruns: 0, repairs: 0 };

  constructor(private readonly opts: TamperWatchOptions) {
    this.log = opts.log ?? logger('nft-watch');
    this.timers = opts.timers ?? realTimers;
    this.debounceMs = opts.debounceMs ?? 50;
    this.owned = new Set(opts.tables.map((t) => `${t.family} ${t.name}`));
  }

  get running(): boolean {
    return this.handle !== undefined;
  }

  start(): boolean {
    if (this.handle || this.stopped) return this.handle !== undefined;
    try {
      this.handle = this.opts.source.start((e) => this.onEvent(e));
    } catch (e) {
      this.log.warn('nf_tables tamper watch unavailable; changes to ferry\'s table by others are caught by the periodic canary check only', {
        tables: [...this.owned].join(','),
        err: e,
      });
      return false;
    }
    this.log.v(1, 'watching nf_tables notifications for changes by others', { tables: [...this.owned].join(',') });
    return true;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
    const h = this.handle;
    this.handle = undefined;
    h?.stop();
  }

  /** Decides about one event (public for tests driving it without a source). */
  onEvent(e: NfnlMonitorEvent): void {
    if (this.stopped) return;
    switch (e.kind) {
      case 'error': {
        this.log.warn('nf_tables tamper watch stopped: its socket failed; changes by others are caught by the periodic canary check only', { err: e.error });
        // The addon's thread has ended, but its socket stays open and subscribed until stop().
        const h = this.handle;
        this.handle = undefined;
        h?.stop();
        return;
      }
      case 'overrun':
        this.onOverrun(e.ownRecent);
        return;
      case 'generation':
        this.onGeneration(e);
        return;
    }
  }

  private onGeneration(e: Extract<NfnlMonitorEvent, { kind: 'generation' }>): void {
    // The addon filters by table name only: `inet ferry` or `bridge ferry` are not ours.
    const mine = e.changes.filter((c) => this.owned.has(`${c.family} ${c.table}`));
    if (mine.length === 0) {
      this.seen.ignored++;
      return;
    }
    if (e.own) {
      this.seen.own++;
      return;
    }
    if (!this.opts.ownPathRecognisable()) {
      // On the fallbacks ferry's own commits come from libnftables' or nft's sockets: they would
      // all look foreign, and repairing them would loop.
      if (!this.warnedUnrecognisable) {
        this.warnedUnrecognisable = true;
        this.log.warn('nf_tables tamper watch cannot tell ferry\'s own changes apart on the fallback apply path; relying on the periodic canary check');
      }
      this.seen.ignored++;
      return;
    }
    this.seen.foreign++;
    const by = `${e.procName || '?'} (pid ${e.procPid})`;
    this.queue(describeChanges(mine, e.more), by, 'notifications');
  }

  private onOverrun(ownRecent: boolean): void {
    this.seen.overruns++;
    if (!ownRecent) {
      // Nobody at ferry was committing: the flood was someone else's, and what it did is lost.
      this.log.warn('nf_tables notifications lost (receive buffer overrun) while ferry was not syncing; repairing to be safe');
      this.queue(['notifications lost: changes unknown'], 'unknown', 'overrun');
      return;
    }
    // The usual cause: ferry's own large transaction. What someone else may have slipped in
    // meanwhile cannot be known; the canary check catches the common case (a flushed or deleted
    // table) cheaply, the periodic full sync the rest.
    this.log.v(2, 'nf_tables notifications lost during ferry\'s own sync; running the canary check');
    const check = this.opts.check;
    if (!check || this.checking) return;
    this.checking = true;
    check().then(
      (ok) => {
        this.checking = false;
        if (!ok) this.queue(['notifications lost, and the canary check failed'], 'unknown', 'overrun');
      },
      (err: unknown) => {
        this.checking = false;
        this.log.warn('canary check after lost notifications failed; repairing to be safe', { err });
        this.queue(['notifications lost, and the canary check failed'], 'unknown', 'overrun');
      },
    );
  }

  private queue(changes: string[], by: string, cause: TamperReport['cause']): void {
    if (this.stopped) return;
    const p = (this.pending ??= { changes: [], by: new Set(), transactions: 0, cause });
    for (const c of changes) if (!p.changes.includes(c) && p.changes.length < 20) p.changes.push(c);
    p.by.add(by);
    p.transactions++;
    if (cause === 'notifications') p.cause = 'notifications';
    if (this.timer !== undefined) return;
    const now = this.timers.now();
    while (this.recentRepairs.length > 0 && this.recentRepairs[0]! < now - LOOP_WINDOW_MS) this.recentRepairs.shift();
    let delay = this.debounceMs;
    if (this.recentRepairs.length >= LOOP_REPAIRS) {
      if (!this.warnedLoop) {
        this.warnedLoop = true;
        this.log.warn('ferry\'s nftables table keeps being changed by others; spacing repairs', { repairs: this.recentRepairs.length, windowMs: LOOP_WINDOW_MS, gapMs: LOOP_GAP_MS });
      }
      delay = Math.max(delay, this.recentRepairs[this.recentRepairs.length - 1]! + LOOP_GAP_MS - now);
      if (delay > this.debounceMs) p.heldBackMs = Math.round(delay - this.debounceMs);
    }
    this.timer = this.timers.setTimeout(() => this.fire(), delay);
  }

  private fire(): void {
    this.timer = undefined;
    const p = this.pending;
    this.pending = undefined;
    if (!p || this.stopped) return;
    this.recentRepairs.push(this.timers.now());
    this.seen.repairs++;
    const report: TamperReport = { changes: p.changes, by: [...p.by], transactions: p.transactions, cause: p.cause, ...(p.heldBackMs !== undefined ? { heldBackMs: p.heldBackMs } : {}) };
    this.log.warn('ferry\'s nftables table was changed by another program; repairing with a full sync', {
      what: report.changes.join('; '),
      by: report.by.join(', '),
      transactions: report.transactions,
      ...(report.heldBackMs !== undefined ? { heldBackMs: report.heldBackMs } : {}),
    });
    try {
      this.opts.onTamper(report);
    } catch (err) {
      this.log.error('tamper repair request failed', { err });
    }
  }
}
