/**
 * The netlink runner: a typed nftables Transaction goes to the kernel as ONE nf_tables batch,
 * encoded in TypeScript (../nftables/netlink.ts) and sent by the native addon off the main
 * thread. No nft text, no parsing, no listing of the table per transaction. A refused batch is
 * aborted by the kernel as a whole; the error names the op that caused it.
 *
 * Falls back to the given script runner (libnftables through the addon) when the netlink socket
 * cannot be used at all (the first use fails before anything reached the kernel), with one
 * warning; `via` then reports the fallback. Scripts and listings (apply(), list()) always go to
 * the fallback: they are text by nature (tests, debugging). names() and ruleCount() (the canary
 * check) are netlink dumps.
 */
import { getSystemErrorName } from 'node:util';
import type { NativeAddon } from '../../native/index.js';
import { logger } from '../../util/log.js';
import { countDumpedRules, describeOp, encodeDumpRequest, encodeTransaction, isMapFlags, parseDumpedRules, parseDumpNames, type DumpedRule } from '../nftables/netlink.js';
import type { NftFamily, Transaction } from '../nftables/transaction.js';
import { applyTransaction, namesByListing, NftNetlinkError, type NftRunner, type NftVia, type TableNames } from './nft.js';

/** Rules of one chain by listing it (the script runners' way): lines with a handle that open no block. */
async function ruleCountByListing(nft: NftRunner, family: NftFamily, table: string, chain: string): Promise<number> {
  try {
    const text = await nft.list(`list chain ${family} ${table} ${chain}`, { handles: true });
    return text.split('\n').filter((l) => /# handle \d+\s*$/.test(l) && !l.includes('{')).length;
  } catch {
    return 0;
  }
}

const log = logger('nft');

export interface NetlinkNftOptions {
  /** Where scripts, listings and (if the socket cannot be used) transactions go. */
  readonly fallback: NftRunner;
  /** Act in this network namespace (`/var/run/netns/NAME` or a name under it); default: the process's. */
  readonly netns?: string;
}

function netnsPath(ns: string | undefined): string | undefined {
  if (ns === undefined || ns === '') return undefined;
  return ns.includes('/') ? ns : `/var/run/netns/${ns}`;
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}

/** A socket failure before anything reached the kernel: safe to retry the batch another way. */
function failedBeforeSend(sysError: string): boolean {
  // sendto: a dump request (the first full sync's listing comes before any batch); setsockopt:
  // the dump socket's receive timeout. Until 2026-12-07 neither fell back: a node whose policy
  // refused sending on the socket failed its first sync on every retry.
  return /^(open|setns|socket|bind|sendmsg|sendto|setsockopt)\b/.test(sysError);
}

// Sequence numbers only need to tell one batch's messages apart: the addon reads every answer
// of a batch before its socket carries the next one.
const SEQ_BASE = 1;

/**
 * Batches up to this size go to the kernel from the main thread (nfnlBatchSync): a change of a
 * few elements costs the kernel a fraction of a millisecond (0.4 ms at 10k Services), less than
 * a round trip through the thread pool and its wake-ups. Larger ones (full syncs, pieces of
 * oversized Services) keep the event loop free while the kernel works.
 */
const SYNC_BATCH_BYTES = 16 * 1024;

/** An interrupted dump is asked again this many times before the caller gets EINTR. */
export const DUMP_RETRIES = 5;

export function netlinkNft(addon: NativeAddon, opts: NetlinkNftOptions): NftRunner {
  const { fallback } = opts;
  const ns = netnsPath(opts.netns);
  const batch = addon.nfnlBatch;
  const batchSync = addon.nfnlBatchSync;
  const dump = addon.nfnlDump;
  let disabled = batch === undefined || dump === undefined;
  let proven = false;

  const disable = (why: string): void => {
    disabled = true;
    log.warn('nf_tables netlink socket unusable; applying nftables transactions through the fallback', { via: fallback.via, err: why });
  };

  async function dumpOf(kind: 'chains' | 'sets' | 'rules', family: NftFamily, table: string, chain?: string): Promise<Buffer | undefined> {
    const what = `dump of ${kind} of ${family} ${table}${chain !== undefined ? ` chain ${chain}` : ''}`;
    for (let attempt = 0; ; attempt++) {
      const r = await dump!(encodeDumpRequest(kind, family, table, chain), ns);
      if (r.ok) return r.data;
      // EINTR: a commit landed while the kernel was answering (the addon saw NLM_F_DUMP_INTR),
      // so the answer may mix two rulesets. Asked again right away: commits come in bursts of a
      // few at most, and a dump takes milliseconds.
      if (r.errno === 4 && attempt < DUMP_RETRIES) {
        log.v(1, 'nf_tables dump interrupted by a concurrent commit; asking again', { dump: what, attempt: attempt + 1 });
        continue;
      }
      if (r.errno === 2) return undefined; // no such table or chain
      // sysError first: names() tells a socket that cannot be used by how it starts.
      const why = r.errno === 4 ? `${what}: interrupted by a concurrent commit ${attempt + 1} times in a row` : r.sysError ? `${r.sysError} (${what})` : what;
      throw new NftNetlinkError(r.errno || 5, r.errno ? errnoName(r.errno) : 'EIO', -1, '', why);
    }
  }

  /**
   * The rules the kernel holds in each chain a CountRulesOp of `tx` changes, so that the encoder
   * adds and deletes only the count rules that come and go (a rule binding an endpoints map makes
   * the kernel walk the map). A chain that cannot be read is rewritten instead: no error here.
   */
  async function countChains(tx: Transaction): Promise<Map<string, DumpedRule[]> | undefined> {
    let out: Map<string, DumpedRule[]> | undefined;
    for (const op of tx.ops) {
      if (op.kind !== 'countRules') continue;
      const key = `${op.target}\0${op.chain}`;
      if (out?.has(key)) continue;
      const sp = op.target.indexOf(' ');
      const family = op.target.slice(0, sp) as NftFamily;
      const table = op.target.slice(sp + 1);
      try {
        const data = await dumpOf('rules', family, table, op.chain);
        if (data) (out ??= new Map()).set(key, parseDumpedRules(data, table, op.chain));
      } catch (e) {
        log.v(1, 'cannot read the endpoint-count chain; rewriting it', { chain: `${op.target} ${op.chain}`, err: e instanceof Error ? e.message : String(e) });
      }
    }
    return out;
  }

  async function dumpNames(kind: 'chains' | 'sets', family: NftFamily, table: string): Promise<{ name: string; flags: number }[]> {
    const data = await dumpOf(kind, family, table);
    return data ? parseDumpNames(data, table, kind) : [];
  }

  return {
    get via(): NftVia {
      return disabled ? fallback.via : 'netlink';
    },
    apply: (script) => fallback.apply(script),
    list: (cmd, listOpts) => fallback.list(cmd, listOpts),

    async applyTransaction(tx: Transaction): Promise<void> {
      if (disabled) return applyTransaction(fallback, tx);
      if (tx.size === 0) return;
      const t0 = performance.now();
      const chainRules = await countChains(tx);
      const enc = encodeTransaction(tx, { seqBase: SEQ_BASE, chainRules: (target, chain) => chainRules?.get(`${target}\0${chain}`) });
      const t1 = performance.now();
      // In another namespace (tests, the simulator) the socket is made after a setns of the
      // calling thread: never the JS thread, whose other sockets must stay where they are.
      // The batch's buffer is let go of however this ends (EncodedBatch.release).
      try {
        const r = batchSync !== undefined && ns === undefined && enc.bytes.length <= SYNC_BATCH_BYTES ? batchSync(enc.bytes) : await batch!(enc.bytes, ns);
        log.v(2, 'nf_tables batch sent', {
          ok: r.ok,
          bytes: enc.bytes.length,
          messages: enc.messages,
          encodeMs: Math.round(t1 - t0),
          kernelMs: Math.round(performance.now() - t1),
        });
        if (r.ok) {
          proven = true;
          return;
        }
        if (r.errors.length === 0) {
          if (!proven && failedBeforeSend(r.sysError)) {
            disable(r.sysError);
            return applyTransaction(fallback, tx);
          }
          throw new NftNetlinkError(5, 'EIO', -1, '', r.sysError);
        }
        proven = true;
        // The first refused message is the cause; later ones may only follow from it.
        let first = r.errors[0]!;
        for (const e of r.errors) if (((e.seq - SEQ_BASE) >>> 0) < ((first.seq - SEQ_BASE) >>> 0)) first = e;
        const at = enc.locate(first.seq, first.offset);
        const op = at ? tx.ops[at.opIndex] : undefined;
        throw new NftNetlinkError(first.errno, errnoName(first.errno), at?.opIndex ?? -1, op ? describeOp(op, at?.element) : `message ${first.seq}`, first.message, at?.elements ?? 1);
      } finally {
        enc.release();
      }
    },

    async ruleCount(family: NftFamily, table: string, chain: string): Promise<number> {
      if (disabled) return ruleCountByListing(fallback, family, table, chain);
      const data = await dumpOf('rules', family, table, chain);
      return data ? countDumpedRules(data, table, chain) : 0;
    },

    async names(family: NftFamily, table: string): Promise<TableNames> {
      if (disabled) return namesByListing(fallback, family, table);
      let chains;
      try {
        chains = await dumpNames('chains', family, table);
      } catch (e) {
        if (!proven && e instanceof NftNetlinkError && e.opIndex < 0 && failedBeforeSend(e.kernelMessage)) {
          disable(e.kernelMessage);
          return namesByListing(fallback, family, table);
        }
        throw e;
      }
      const sets = new Set<string>();
      const maps = new Set<string>();
      for (const s of await dumpNames('sets', family, table)) (isMapFlags(s.flags) ? maps : sets).add(s.name);
      return { chains: new Set(chains.map((c) => c.name)), sets, maps };
    },
  };
}
