/**
 * The nftables backend: compile (full or partial) → apply as one atomic nftables transaction
 * through an NftRunner (an nf_tables netlink batch by default, a script on the fallbacks) →
 * clear stale conntrack entries. The only kernel reads are the names of chains and maps on a
 * full sync (to find stale ones), the canary check of intact(), and the UDP/SCTP conntrack
 * entries on the first sync after a start (conntrack-sync.ts). Policy comes from the IR;
 * this module never decides which endpoints or verdicts apply.
 */
import type { Backend, IPFamily, ProxyTables, SyncChanges } from '../../plan/types.js';
import { logger, type Logger } from '../../util/log.js';
import { cleanConntrack, type ConntrackCleanupState } from '../conntrack-sync.js';
import type { Conntrack } from '../kernel/conntrack.js';
import { applyTransaction, namesByListing, NftError, type NftRunner, type NftVia } from '../kernel/nft.js';
import { addonNftEvents, TamperWatch, type NftEventSource, type TamperReport } from '../kernel/nft-monitor.js';
import { loadNative } from '../../native/index.js';
import { CompileState, compileFull, compilePartial, DEFAULT_MASQUERADE_MARK, SetFullError, partialBaseKnown, type CompileOptions } from './compiler.js';
import { Chains, FERRY_TABLE, KUBE_PROXY_TABLE } from './names.js';
import { CANARY_RULE } from './skeleton.js';
import { familySyntax } from './rules.js';
import { tableTarget, Transaction } from './transaction.js';

export interface NftablesBackendOptions {
  readonly nft: NftRunner;
  readonly conntrack?: Pick<Conntrack, 'delete' | 'list'>;
  /** Families ferry serves; default both. The other family's table is left alone. */
  readonly families?: readonly IPFamily[];
  readonly log?: Logger;
  /** Default 0x4000 (kube-proxy's --iptables-masquerade-bit 14). */
  readonly masqueradeMark?: number;
  /** Default `ferry` (tests may use another name). */
  readonly table?: string;
  /**
   * nf_tables notifications for the tamper watch (watchTamper()); default: the addon's
   * subscription in the process's network namespace. null: no watch.
   */
  readonly events?: NftEventSource | null;
}

/** A sync that did not apply; the previous ruleset is still in force. The syncer goes full next. */
export class NftSyncError extends Error {
  readonly code = 'FERRY_ERR_NFT_SYNC';
  readonly failingLine: { lineNo: number; text: string } | undefined;
  readonly stderr: string;
  constructor(
    readonly full: boolean,
    readonly stage: 'list' | 'apply',
    override readonly cause: unknown,
    /** Lines in the transaction that failed (for logs). */
    readonly scriptLines: number,
  ) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(`nftables ${full ? 'full' : 'partial'} sync failed (${stage}): ${detail}`);
    this.name = 'NftSyncError';
    this.failingLine = cause instanceof NftError ? cause.failingLine : undefined;
    this.stderr = cause instanceof NftError ? cause.stderr : '';
  }
}

export interface SyncStats {
  readonly full: boolean;
  /** Operations in the transaction (elements counted one by one). */
  readonly ops: number;
  /** Lines of nft script the transaction renders to (0: nothing to do, nothing applied). */
  readonly lines: number;
  readonly conntrackFilters: number;
  /** How it reached the kernel: `netlink` normally; `addon`/`exec` when a fallback is in use. */
  readonly via: NftVia;
}

export interface NftablesBackend extends Backend {
  readonly name: 'nftables';
  intact(): Promise<boolean>;
  /** What the last sync did, for logs and metrics; undefined before the first sync. */
  lastSync(): SyncStats | undefined;
  /**
   * The last transaction applied (or attempted) as an nft script, for debugging (rendered on
   * demand); undefined when it was too large to keep (over 10,000 operations).
   */
  lastScript(): string | undefined;
  /**
   * Starts the tamper watch: `onTamper` is called (debounced) when another program changes this
   * backend's tables; the caller repairs with a full sync. Undefined when no subscription can be
   * made (warned once; intact() remains the safety net). Stop it with stop().
   */
  watchTamper(onTamper: (report: TamperReport) => void): TamperWatch | undefined;
}

/**
 * Removes those of `tables` (ip and ip6) that exist, in one transaction; returns the ones removed
 * as `family name`. For the start of another mode, or of nftables mode after kube-proxy's: their
 * tables would keep catching traffic in the same hooks (kube-proxy's platformCleanup does the same).
 */
export async function removeTables(nft: NftRunner, tables: readonly string[]): Promise<string[]> {
  const present = new Set((await nft.list('list tables')).split('\n').map((l) => l.trim()));
  const tx = new Transaction();
  const removed: string[] = [];
  for (const fam of ['ip', 'ip6'] as const) {
    for (const t of tables) {
      if (!present.has(`table ${fam} ${t}`)) continue;
      tx.deleteTable(tableTarget(fam, t));
      removed.push(`${fam} ${t}`);
    }
  }
  if (removed.length > 0) await applyTransaction(nft, tx);
  return removed;
}

/** Transactions up to this many operations stay available to lastScript(). */
const LAST_TX_KEEP_OPS = 10_000;

export function createNftablesBackend(opts: NftablesBackendOptions): NftablesBackend {
  const families: readonly IPFamily[] = opts.families ?? [4, 6];
  const table = opts.table ?? FERRY_TABLE;
  const mark = opts.masqueradeMark ?? DEFAULT_MASQUERADE_MARK;
  const log = opts.log ?? logger('nftables');
  const { nft } = opts;
  let stats: SyncStats | undefined;
  let lastTx: Transaction | undefined;
  /** The tables last programmed successfully: a full sync's conntrack cleanup diffs against them. */
  let applied: ProxyTables | null = null;
  /** Whether the next conntrack cleanup lists the table (the last one did not finish). */
  const conntrackState: ConntrackCleanupState = { reconcile: false };
  const state = new CompileState();

  /** What a full sync must know of the kernel: chains (to delete stale ones), maps (stale endpoint maps) and sets (stale count sets). */
  async function existing(): Promise<Pick<CompileOptions, 'existingChains' | 'existingMaps' | 'existingSets'>> {
    const chains: Partial<Record<IPFamily, ReadonlySet<string>>> = {};
    const maps: Partial<Record<IPFamily, ReadonlySet<string>>> = {};
    const sets: Partial<Record<IPFamily, ReadonlySet<string>>> = {};
    for (const f of families) {
      // Names only (no rules, no elements): cheap at any scale; a netlink dump by default.
      const names = await namesByListing(nft, familySyntax(f).nft, table);
      chains[f] = names.chains;
      maps[f] = names.maps;
      if (names.sets) sets[f] = names.sets;
    }
    return { existingChains: chains, existingMaps: maps, existingSets: sets };
  }

  const backend: NftablesBackend = {
    name: 'nftables',

    async sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
      // A partial sync needs the endpoint blocks the last compile allocated; a previous table
      // this backend did not compile last (never expected) gets a full sync instead.
      const known = prev !== null && partialBaseKnown(prev, families, state);
      if (prev !== null && !changes.full && !known) log.warn('previous table unknown to the compiler: syncing in full');
      let full = changes.full || !known;
      const base: CompileOptions = { families, masqueradeMark: mark, table, state };
      const t0 = performance.now();
      let listMs = 0;
      let tx: Transaction | undefined;
      if (!full) {
        try {
          tx = compilePartial(prev!, next, changes, base);
        } catch (e) {
          if (!(e instanceof SetFullError)) throw e;
          // Expected as a cluster grows (a sized set or map has room for half again what it held when made).
          log.info('a set outgrew its size: syncing in full, which makes it again', { set: e.set, elements: e.elements, size: e.size });
          full = true;
        }
      }
      if (tx === undefined) {
        let known;
        try {
          known = await existing();
        } catch (e) {
          throw new NftSyncError(true, 'list', e, 0);
        }
        listMs = performance.now() - t0;
        // A full compile starts from nothing: let the last index (16 MB at 10k × 10) go now
        // instead of holding it beside the one being built. Should the compile fail, the empty
        // state makes the next sync full too (partialBaseKnown).
        for (const f of families) state.take(f, next[f]);
        tx = compileFull(next, { ...base, ...known });
      }
      const compileMs = performance.now() - t0 - listMs;
      // Kept for debugging only while small: a full sync at 10k Services is 200,000 operations
      // that would otherwise stay in memory until the next sync.
      lastTx = tx.size <= LAST_TX_KEEP_OPS ? tx : undefined;
      const lines = tx.lineCount();
      const t1 = performance.now();
      if (lines > 0) {
        try {
          await applyTransaction(nft, tx);
        } catch (e) {
          const err = new NftSyncError(full, 'apply', e, lines);
          log.error('nftables sync failed', { full, lines, via: nft.via, line: err.failingLine?.lineNo, text: err.failingLine?.text, err });
          throw err;
        }
      }
      // A full compile leaves its set claims uncounted until the rules are in (claims.ts
      // deferCounts): counted now, before the next change can need them.
      const t2 = performance.now();
      const settled = full && state.settle();
      const indexMs = settled ? performance.now() - t2 : 0;
      // The compile's working state is kept until the next full compile for its hidden classes
      // (util/shapes.ts), not for the IR it reaches: let go of that unless the transaction is
      // kept to be rendered (lastScript), which reads it.
      if (full && lastTx !== tx) state.releaseFull();
      log.v(2, 'nftables sync applied', {
        full,
        ops: tx.size,
        lines,
        via: nft.via,
        listMs: Math.round(listMs),
        compileMs: Math.round(compileMs),
        applyMs: Math.round(t2 - t1),
        ...(settled ? { indexMs: Math.round(indexMs) } : {}),
      });

      // Rules are in; conntrack cleanup failures are logged, never undo a sync.
      // Against what the kernel held, also on a full sync: flows follow the rules they met.
      const held = full ? applied : prev;
      applied = next;
      const filters = opts.conntrack ? await cleanConntrack(opts.conntrack, held, next, full || changes.tableChanged ? undefined : changes.changed, families, conntrackState) : 0;
      stats = { full, ops: tx.size, lines, conntrackFilters: filters, via: nft.via };
    },

    async intact(): Promise<boolean> {
      for (const f of families) {
        try {
          if (nft.ruleCount) {
            // A netlink dump of that one chain: its one rule must be there (no text, no cache).
            if ((await nft.ruleCount(familySyntax(f).nft, table, Chains.canary)) !== 1) return false;
            continue;
          }
          const text = await nft.list(`list chain ${familySyntax(f).nft} ${table} ${Chains.canary}`);
          if (!text.includes(CANARY_RULE)) return false;
        } catch {
          return false;
        }
      }
      return true;
    },

    async cleanup(): Promise<void> {
      // add-then-delete: absent tables are not an error, and it is one atomic transaction.
      const tx = new Transaction();
      for (const fam of ['ip', 'ip6'] as const) {
        for (const t of [table, KUBE_PROXY_TABLE]) tx.addTable(tableTarget(fam, t)).deleteTable(tableTarget(fam, t));
      }
      try {
        await applyTransaction(nft, tx);
      } catch (e) {
        throw new NftSyncError(true, 'apply', e, tx.size);
      }
      log.info('removed nftables tables', { tables: `${table},${KUBE_PROXY_TABLE}` });
    },

    lastSync: () => stats,
    lastScript: () => lastTx?.render(),

    watchTamper(onTamper: (report: TamperReport) => void): TamperWatch | undefined {
      if (opts.events === null) return undefined;
      const source = opts.events ?? addonNftEvents(loadNative(), { tables: [table] });
      const watch = new TamperWatch({
        source: source ?? {
          start: () => {
            throw new Error('the native addon is not loaded or has no nfnlMonitor');
          },
        },
        tables: families.map((f) => ({ family: familySyntax(f).nft, name: table })),
        onTamper,
        // Only netlink batches are recognisable as ferry's own in the notifications.
        ownPathRecognisable: () => nft.via === 'netlink',
        check: () => backend.intact(),
        log,
      });
      return watch.start() ? watch : undefined;
    },
  };
  return backend;
}
