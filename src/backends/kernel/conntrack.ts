/**
 * Deleting conntrack entries: how ferry clears stale UDP flows when an endpoint goes away
 * (filter by replySrc) and when a Service gets its first endpoints (filter by origDst, since
 * flows that were REJECT-ed stick). Netlink through the native addon by default, the conntrack
 * command as the fallback, and a recording fake for tests. Never decides what to delete.
 */
import { loadNative, nativeLoadError, defaultNativePath, type NativeAddon, type ConntrackFilter } from '../../native/index.js';
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
  ) {
    super(`conntrack delete (${via}) failed for ${describeFilters(filters)}: ${detail}`);
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
  };
}

/**
 * A sync's cleanup, after its rules are in: every filter in one call, failures logged (they never
 * undo a sync). Used by the nftables and iptables backends alike.
 */
export async function deleteStale(conntrack: Pick<Conntrack, 'delete'>, filters: readonly ConntrackFilter[]): Promise<void> {
  if (filters.length === 0) return;
  try {
    const n = await conntrack.delete(filters);
    log.v(4, 'conntrack entries deleted', { filters: filters.length, deleted: n });
  } catch (e) {
    log.warn('conntrack cleanup failed; stale UDP/SCTP flows may keep following removed endpoints until they time out', { filters: filters.length, err: e });
  }
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

/** In-memory Conntrack for tests: records every delete, answers with a chosen count or error. */
export class FakeConntrack implements Conntrack {
  readonly via = 'fake' as const;
  /** Every filter asked for, in order, over all calls. */
  readonly calls: ConntrackFilter[] = [];
  /** How many filters each call brought. */
  readonly batches: number[] = [];
  /** How many entries each filter's deletion reports; default 0. */
  result: (filter: ConntrackFilter) => number = () => 0;
  /** When set, delete rejects with this after recording the call. */
  failWith: Error | undefined;

  async delete(filters: readonly ConntrackFilter[]): Promise<number> {
    for (const f of filters) this.calls.push({ ...f });
    this.batches.push(filters.length);
    if (this.failWith) throw this.failWith;
    return filters.reduce((n, f) => n + this.result(f), 0);
  }

  reset(): void {
    this.calls.length = 0;
    this.batches.length = 0;
  }
}
