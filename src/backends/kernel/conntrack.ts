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
    readonly filter: ConntrackFilter,
    readonly detail: string,
    readonly errno?: number,
  ) {
    super(`conntrack delete (${via}) failed for ${describeFilter(filter)}: ${detail}`);
    this.name = 'ConntrackError';
  }
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
  /** Deletes every entry matching all given fields; resolves with how many were deleted. */
  delete(filter: ConntrackFilter): Promise<number>;
}

export function addonConntrack(addon: NativeAddon): Conntrack {
  return {
    via: 'addon',
    async delete(filter) {
      try {
        return await addon.conntrackDelete(filter);
      } catch (e) {
        const errno = typeof e === 'object' && e !== null && 'errno' in e && typeof e.errno === 'number' ? e.errno : undefined;
        throw new ConntrackError('addon', filter, e instanceof Error ? e.message : String(e), errno);
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
 * The fallback: one conntrack process per delete. conntrack exits 1 when nothing matched
 * ("0 flow entries have been deleted"); that is a count of 0, not an error.
 */
export function execConntrack(opts: { netns?: string } = {}): Conntrack {
  return {
    via: 'exec',
    async delete(filter) {
      const argv = conntrackDeleteArgv(filter);
      let r;
      try {
        r = await runIn(opts.netns, argv, { allowFailure: true });
      } catch (e) {
        throw new ConntrackError('exec', filter, `cannot run conntrack: ${e instanceof Error ? e.message : String(e)}`);
      }
      const m = DELETED.exec(r.stderr);
      if (m && (r.exitCode === 0 || m[1] === '0')) return Number(m[1]);
      throw new ConntrackError('exec', filter, `${argv.join(' ')} exited ${r.exitCode}: ${r.stderr.trim()}`);
    },
  };
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
  readonly calls: ConntrackFilter[] = [];
  /** How many entries each delete reports; default 0. */
  result: (filter: ConntrackFilter) => number = () => 0;
  /** When set, delete rejects with this after recording the call. */
  failWith: Error | undefined;

  async delete(filter: ConntrackFilter): Promise<number> {
    this.calls.push({ ...filter });
    if (this.failWith) throw this.failWith;
    return this.result(filter);
  }

  reset(): void {
    this.calls.length = 0;
  }
}
