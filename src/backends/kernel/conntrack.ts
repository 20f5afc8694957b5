/**
 * Listing and deleting conntrack entries: how ferry clears stale UDP/SCTP flows when an endpoint
 * stops serving (filter by replySrc) and when a frontend starts forwarding (the flows it answered
 * itself), and on the first sync after a start reads what the kernel holds. Netlink through the
 * native addon by default, the conntrack command as the fallback, and an in-memory fake for tests.
 * Never decides what to delete.
 */
import { loadNative, nativeLoadError, defaultNativePath, type NativeAddon, type ConntrackEntry, type ConntrackFilter, type ConntrackProtocol } from '../../native/index.js';
import { logger } from '../../util/log.js';
import { runIn } from '../../util/exec.js';

export type { ConntrackFilter, ConntrackEntry, ConntrackProtocol } from '../../native/index.js';

const log = logger('conntrack');

export class ConntrackError extends Error {
  readonly code = 'FERRY_ERR_CONNTRACK';
  constructor(
    readonly via: 'addon' | 'exec',
    /** The filters of the failed call (exec: the ones whose process failed). */
    readonly filters: readonly ConntrackFilter[],
    readonly detail: string,
    readonly errno?: number,
    readonly op: 'delete' | 'list' = 'delete',
  ) {
    super(`conntrack ${op} (${via}) failed for ${describeFilters(filters)}: ${detail}`);
    this.name = 'ConntrackError';
  }
}

/** The first filter and how many more: a first sync brings thousands. */
export function describeFilters(filters: readonly ConntrackFilter[]): string {
  if (filters.length === 0) return 'no filter';
  const first = describeFilter(filters[0]!);
  return filters.length === 1 ? first : `${first} and ${filters.length - 1} more filter${filters.length === 2 ? '' : 's'}`;
}

/** `udp/4 origDst=203.0.113.10:80` — for logs. */
export function describeFilter(f: ConntrackFilter): string {
  const parts = [`${f.protocol}/${f.family}`];
  if (f.origDst !== undefined || f.origDstPort !== undefined) parts.push(`origDst=${f.origDst ?? '*'}:${f.origDstPort ?? '*'}`);
  if (f.replySrc !== undefined || f.replySrcPort !== undefined) parts.push(`replySrc=${f.replySrc ?? '*'}:${f.replySrcPort ?? '*'}`);
  return parts.join(' ');
}

export interface Conntrack {
  readonly via: 'addon' | 'exec' | 'fake';
  /**
   * Deletes every entry that matches all fields of at least one filter; resolves with how many
   * were deleted. A sync's filters go in one call: the addon reads the table once for all of them.
   * Rejects with a ConntrackError after trying every filter.
   */
  delete(filters: readonly ConntrackFilter[]): Promise<number>;
  /**
   * Every entry of one family and protocol: one read of that family's table. Rejects with a
   * ConntrackError (op 'list').
   */
  list(family: 4 | 6, protocol: ConntrackProtocol): Promise<ConntrackEntry[]>;
}

/** Whether an entry matches every field the filter sets (what a delete with it removes). */
export function matchesFilter(e: ConntrackEntry, f: ConntrackFilter): boolean {
  return (
    e.family === f.family &&
    e.protocol === f.protocol &&
    (f.origDst === undefined || e.origDst === f.origDst) &&
    (f.origDstPort === undefined || e.origDstPort === f.origDstPort) &&
    (f.replySrc === undefined || e.replySrc === f.replySrc) &&
    (f.replySrcPort === undefined || e.replySrcPort === f.replySrcPort)
  );
}

export function addonConntrack(addon: NativeAddon): Conntrack {
  return {
    via: 'addon',
    async delete(filters) {
      if (filters.length === 0) return 0;
      try {
        return await addon.conntrackDelete(filters);
      } catch (e) {
        const errno = typeof e === 'object' && e !== null && 'errno' in e && typeof e.errno === 'number' ? e.errno : undefined;
        throw new ConntrackError('addon', filters, e instanceof Error ? e.message : String(e), errno);
      }
    },
    async list(family, protocol) {
      // A filter of family and protocol alone: the addon reads the family's table once.
      const filter: ConntrackFilter = { family, protocol };
      try {
        return await addon.conntrackList(filter);
      } catch (e) {
        const errno = typeof e === 'object' && e !== null && 'errno' in e && typeof e.errno === 'number' ? e.errno : undefined;
        throw new ConntrackError('addon', [filter], e instanceof Error ? e.message : String(e), errno, 'list');
      }
    },
  };
}

const PROTOCOLS: ReadonlySet<string> = new Set(['tcp', 'udp', 'sctp']);

/**
 * One line of `conntrack -L` (default or extended output) as an entry of `family`: the first
 * src/dst/sport/dport are the original tuple, the second the reply. Undefined for anything else
 * (the summary line, an entry without ports). Pure.
 */
export function parseConntrackLine(line: string, family: 4 | 6): ConntrackEntry | undefined {
  const words = line.trim().split(/\s+/);
  // Extended output starts with the layer-3 protocol: `ipv4     2 udp      17 …`.
  const name = words[0] === 'ipv4' || words[0] === 'ipv6' ? words[2] : words[0];
  if (name === undefined) return undefined;
  const field: Record<'src' | 'dst' | 'sport' | 'dport', string[]> = { src: [], dst: [], sport: [], dport: [] };
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq < 0) continue;
    const k = w.slice(0, eq);
    if (k === 'src' || k === 'dst' || k === 'sport' || k === 'dport') field[k].push(w.slice(eq + 1));
  }
  if (field.src.length < 2 || field.dst.length < 2 || field.sport.length < 2 || field.dport.length < 2) return undefined;
  return {
    family,
    protocol: PROTOCOLS.has(name) ? (name as ConntrackProtocol) : 'other',
    origSrc: field.src[0]!,
    origSrcPort: Number(field.sport[0]),
    origDst: field.dst[0]!,
    origDstPort: Number(field.dport[0]),
    replySrc: field.src[1]!,
    replySrcPort: Number(field.sport[1]),
    replyDst: field.dst[1]!,
    replyDstPort: Number(field.dport[1]),
  };
}

/** The conntrack-tools argv for a filter: `conntrack -D -f ipv4 -p udp --orig-dst X --orig-port-dst P ...`. */
export function conntrackDeleteArgv(f: ConntrackFilter): string[] {
  const argv = ['conntrack', '-D', '-f', f.family === 6 ? 'ipv6' : 'ipv4', '-p', f.protocol];
  if (f.origDst !== undefined) argv.push('--orig-dst', f.origDst);
  if (f.origDstPort !== undefined) argv.push('--orig-port-dst', String(f.origDstPort));
  if (f.replySrc !== undefined) argv.push('--reply-src', f.replySrc);
  if (f.replySrcPort !== undefined) argv.push('--reply-port-src', String(f.replySrcPort));
  return argv;
}

const DELETED = /(\d+) flow entries have been deleted/;

/**
 * The fallback: one conntrack process per filter (conntrack-tools takes one), each reading the
 * whole table. conntrack exits 1 when nothing matched ("0 flow entries have been deleted"); that
 * is a count of 0, not an error. A failed filter does not stop the others.
 */
export function execConntrack(opts: { netns?: string } = {}): Conntrack {
  async function one(filter: ConntrackFilter): Promise<number | string> {
    const argv = conntrackDeleteArgv(filter);
    let r;
    try {
      r = await runIn(opts.netns, argv, { allowFailure: true });
    } catch (e) {
      return `cannot run conntrack: ${e instanceof Error ? e.message : String(e)}`;
    }
    const m = DELETED.exec(r.stderr);
    if (m && (r.exitCode === 0 || m[1] === '0')) return Number(m[1]);
    return `${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`;
  }
  return {
    via: 'exec',
    async delete(filters) {
      let deleted = 0;
      const failed: ConntrackFilter[] = [];
      let firstError = '';
      for (const f of filters) {
        const r = await one(f);
        if (typeof r === 'number') deleted += r;
        else {
          if (failed.length === 0) firstError = r;
          failed.push(f);
        }
      }
      if (failed.length > 0) throw new ConntrackError('exec', failed, firstError);
      return deleted;
    },
    async list(family, protocol) {
      const argv = ['conntrack', '-L', '-f', family === 6 ? 'ipv6' : 'ipv4', '-p', protocol];
      const entries: ConntrackEntry[] = [];
      let r;
      try {
        // Line by line: a busy node's table is hundreds of thousands of lines.
        r = await runIn(opts.netns, argv, { allowFailure: true, onStdoutLine: (line) => {
          const e = parseConntrackLine(line, family);
          if (e !== undefined && e.protocol === protocol) entries.push(e);
        } });
      } catch (e) {
        throw new ConntrackError('exec', [{ family, protocol }], `cannot run conntrack: ${e instanceof Error ? e.message : String(e)}`, undefined, 'list');
      }
      if (r.exitCode !== 0) throw new ConntrackError('exec', [{ family, protocol }], `${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`, undefined, 'list');
      return entries;
    },
  };
}

/**
 * A sync's cleanup, after its rules are in: every filter in one call, failures logged (they never
 * undo a sync). Used by the nftables and iptables backends alike.
 */
/**
 * What the cleanup's log lines call the thing cleaned: conntrack entries (the NAT modes) or
 * connected UDP sockets (ebpf mode, kernel/udp-sockets.ts), which fail and recover the same way.
 */
export interface StaleFlowWords {
  readonly deleteFailed: string;
  readonly listFailed: string;
  readonly deleted: string;
  readonly listed: string;
}

export const CONNTRACK_WORDS: StaleFlowWords = {
  deleteFailed: 'conntrack cleanup failed; the next sync lists the table and deletes what is stale (until then stale UDP/SCTP flows keep following removed endpoints)',
  listFailed:
    'conntrack listing failed; tried again at the next sync (until then flows to endpoints replaced while ferry was not running, or left by a failed cleanup, keep following them)',
  deleted: 'conntrack entries deleted',
  listed: 'conntrack entries listed',
};

export async function deleteStale(conntrack: Pick<Conntrack, 'delete'>, filters: readonly ConntrackFilter[], quiet = false, words: StaleFlowWords = CONNTRACK_WORDS): Promise<boolean> {
  if (filters.length === 0) return true;
  try {
    const n = await conntrack.delete(filters);
    log.v(4, words.deleted, { filters: filters.length, deleted: n });
    return true;
  } catch (e) {
    if (quiet) log.v(2, words.deleteFailed, { filters: filters.length, err: e });
    else log.warn(words.deleteFailed, { filters: filters.length, err: e });
    return false;
  }
}

/**
 * The entries of each (family, protocol) asked for, one list call each, concatenated; undefined
 * when one fails (logged with which one): the caller then knows nothing of the table.
 */
export async function listEntries(
  conntrack: Pick<Conntrack, 'list'>,
  listings: readonly { readonly family: 4 | 6; readonly protocol: ConntrackProtocol }[],
  quiet = false,
  words: StaleFlowWords = CONNTRACK_WORDS,
): Promise<ConntrackEntry[] | undefined> {
  const out: ConntrackEntry[] = [];
  for (const { family, protocol } of listings) {
    try {
      const got = await conntrack.list(family, protocol);
      for (const e of got) out.push(e);
    } catch (e) {
      if (quiet) log.v(2, words.listFailed, { family, protocol, err: e });
      else log.warn(words.listFailed, { family, protocol, err: e });
      return undefined;
    }
  }
  log.v(4, words.listed, { listings: listings.length, entries: out.length });
  return out;
}

let warnedFallback = false;

/** Netlink through the addon when it loads, else the conntrack command (warning once why). */
export function defaultConntrack(opts: { preferExec?: boolean } = {}): Conntrack {
  if (opts.preferExec) return execConntrack();
  const addon = loadNative();
  if (addon) return addonConntrack(addon);
  if (!warnedFallback) {
    warnedFallback = true;
    log.warn('native addon not loaded; deleting conntrack entries by running the conntrack command', {
      path: defaultNativePath(),
      err: nativeLoadError(),
    });
  }
  return execConntrack();
}

/**
 * In-memory Conntrack for tests: a table of entries that list reads and delete removes from,
 * recording every call; answers with a chosen count or error.
 */
export class FakeConntrack implements Conntrack {
  readonly via = 'fake' as const;
  /** The table: what list answers from and delete removes matches from. Empty by default. */
  entries: ConntrackEntry[] = [];
  /** Every filter asked for, in order, over all calls. */
  readonly calls: ConntrackFilter[] = [];
  /** How many filters each call brought. */
  readonly batches: number[] = [];
  /** Every list call's family and protocol, in order. */
  readonly lists: { family: 4 | 6; protocol: ConntrackProtocol }[] = [];
  /** How many entries each filter's deletion reports beyond those removed from `entries`; default 0. */
  result: (filter: ConntrackFilter) => number = () => 0;
  /** When set, delete rejects with this after recording the call. */
  failWith: Error | undefined;
  /** When set, list rejects with this after recording the call. */
  listFailWith: Error | undefined;

  async delete(filters: readonly ConntrackFilter[]): Promise<number> {
    for (const f of filters) this.calls.push({ ...f });
    this.batches.push(filters.length);
    if (this.failWith) throw this.failWith;
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !filters.some((f) => matchesFilter(e, f)));
    return before - this.entries.length + filters.reduce((n, f) => n + this.result(f), 0);
  }

  async list(family: 4 | 6, protocol: ConntrackProtocol): Promise<ConntrackEntry[]> {
    this.lists.push({ family, protocol });
    if (this.listFailWith) throw this.listFailWith;
    return this.entries.filter((e) => e.family === family && e.protocol === protocol).map((e) => ({ ...e }));
  }

  reset(): void {
    this.calls.length = 0;
    this.batches.length = 0;
    this.lists.length = 0;
  }
}
