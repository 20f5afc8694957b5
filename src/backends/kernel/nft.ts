/**
 * The one place nftables transactions reach the kernel. A runner applies a whole transaction
 * (all or nothing) and lists tables; it never builds or edits nft syntax itself (that is the
 * nftables backend's job) and never decides policy. Three runners: the native addon sending the
 * transaction as one nf_tables netlink batch (nft-netlink.ts, the default), libnftables
 * in-process through the addon, and spawning the nft command; the last two apply scripts and
 * are the fallbacks, chosen by defaultNft() with a warning saying why.
 */
import { loadNative, nativeLoadError, defaultNativePath, type NativeAddon } from '../../native/index.js';
import { logger } from '../../util/log.js';
import { runIn, type RunResult } from '../../util/exec.js';
import type { NftFamily, Transaction } from '../nftables/transaction.js';
import { netlinkNft } from './nft-netlink.js';

const log = logger('nft');

export interface FailingLine {
  /** 1-based line number in the script that was applied (netlink: the op's 1-based position in the transaction). */
  lineNo: number;
  /** That line of the script. */
  text: string;
}

export class NftError extends Error {
  readonly code = 'FERRY_ERR_NFT';
  /** nft's own error message without the location, e.g. `Could not process rule: File exists`. */
  readonly nftMessage: string;
  constructor(
    readonly via: NftVia,
    readonly stderr: string,
    readonly failingLine?: FailingLine,
  ) {
    const msg = firstErrorMessage(stderr);
    super(
      failingLine
        ? `nft (${via}) failed at line ${failingLine.lineNo}: ${msg}: ${failingLine.text.trim()}`
        : `nft (${via}) failed: ${msg}`,
    );
    this.name = 'NftError';
    this.nftMessage = msg;
  }
}

/**
 * The kernel refused a message of an nf_tables netlink batch; the batch was aborted, nothing of it
 * applied. Names the op that caused it (its position, the op as an nft line would read, and for a
 * run of elements sent in one message without a precise location, how many).
 */
export class NftNetlinkError extends NftError {
  constructor(
    /** Positive errno, e.g. 2 (ENOENT). */
    readonly errno: number,
    /** errno's name, e.g. `ENOENT`. */
    readonly errnoName: string,
    /** 0-based index of the failing op in the transaction, or -1 when the socket itself failed. */
    readonly opIndex: number,
    /** The failing op as an nft line (`add rule ip ferry services ...`), or ''. */
    readonly opText: string,
    /** The kernel's extended ack message, or ''. */
    readonly kernelMessage: string,
    /** When the kernel could only name a message of several elements: how many (else 1). */
    readonly elements = 1,
  ) {
    const where = opIndex >= 0 ? `${opText}${elements > 1 ? ` (or one of the ${elements - 1} elements after it)` : ''}` : '';
    const text = `${errnoName}: ${errnoText(errnoName)}${kernelMessage ? ` (${kernelMessage})` : ''}`;
    super('netlink', `Error: ${text}`, opIndex >= 0 ? { lineNo: opIndex + 1, text: where } : undefined);
    this.name = 'NftNetlinkError';
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EEXIST: 'File exists',
  EBUSY: 'Device or resource busy',
  EINVAL: 'Invalid argument',
  ELOOP: 'Too many levels of symbolic links',
  EOPNOTSUPP: 'Operation not supported',
  ENOSPC: 'No space left on device',
  ENOMEM: 'Cannot allocate memory',
  EPERM: 'Operation not permitted',
  E2BIG: 'Argument list too long',
  ERANGE: 'Numerical result out of range',
  ENFILE: 'Too many open files in system',
  EMSGSIZE: 'Message too long',
  ENOBUFS: 'No buffer space available',
};

function errnoText(name: string): string {
  return ERRNO_TEXT[name] ?? name;
}

// nft locates errors as `FILE:LINE:COL[-COL]: Error: MESSAGE`; FILE is /dev/stdin for `nft -f -`,
// /proc/self/fd/N for the addon, <cmdline> for argv commands.
const LOCATED = /^(.*?):(\d+):(\d+)(?:-\d+)?: Error: (.*)$/;

function firstErrorMessage(stderr: string): string {
  for (const line of stderr.split('\n')) {
    const m = LOCATED.exec(line);
    if (m) return m[4] ?? '';
    const i = line.indexOf('Error: ');
    if (i >= 0) return line.slice(i + 'Error: '.length);
  }
  const first = stderr.trim().split('\n')[0];
  return first ? first : 'unknown error (nft printed nothing)';
}

/**
 * Finds the script line nft blamed. When nft gives no location (some kernel errors on argv
 * commands) and the script is a single command, that command is the failing line.
 */
export function findFailingLine(stderr: string, script: string): FailingLine | undefined {
  const errLines = stderr.split('\n');
  for (let i = 0; i < errLines.length; i++) {
    const m = LOCATED.exec(errLines[i] ?? '');
    if (!m) continue;
    const lineNo = Number(m[2]);
    const text = script.split('\n')[lineNo - 1] ?? errLines[i + 1] ?? '';
    return { lineNo, text };
  }
  const commands = script.split('\n').filter((l) => l.trim() !== '');
  if (commands.length === 1 && commands[0] !== undefined) {
    return { lineNo: script.split('\n').indexOf(commands[0]) + 1, text: commands[0] };
  }
  return undefined;
}

export interface NftListOptions {
  /** JSON output (`nft -j`). */
  json?: boolean;
  /** Include rule handles (`nft -a`). */
  handles?: boolean;
  /** Omit set and map elements (`nft -t`). */
  terse?: boolean;
}

/** How a runner reaches the kernel: nf_tables netlink batches, libnftables in-process, or the nft command. */
export type NftVia = 'netlink' | 'addon' | 'exec';

/** Names of a table's objects, as a full sync needs them to find stale ones. */
export interface TableNames {
  readonly chains: ReadonlySet<string>;
  readonly maps: ReadonlySet<string>;
  /** Named sets (anonymous ones excluded): a full sync deletes count sets no longer used. */
  readonly sets?: ReadonlySet<string>;
}

export interface NftRunner {
  /** How the last (or next) transaction goes to the kernel; a fallback shows here. */
  readonly via: NftVia;
  /** Applies the script as one transaction; throws NftError naming the failing line. */
  apply(script: string): Promise<void>;
  /** Runs one listing command, e.g. `list table ip ferry`; returns what nft printed. */
  list(cmd: string, opts?: NftListOptions): Promise<string>;
  /**
   * Applies a typed transaction as one kernel transaction; throws NftError naming the failing
   * op. Runners without it get the rendered script (applyTransaction() below).
   */
  applyTransaction?(tx: Transaction): Promise<void>;
  /** Names of the chains, sets and maps of `family table` (empty sets when the table is absent). */
  names?(family: NftFamily, table: string): Promise<TableNames>;
  /** How many rules `family table chain` holds (0 when the chain or table is absent). */
  ruleCount?(family: NftFamily, table: string, chain: string): Promise<number>;
}

/** Applies `tx` with the runner's typed path when it has one, else as a rendered script. */
export async function applyTransaction(nft: NftRunner, tx: Transaction): Promise<void> {
  if (nft.applyTransaction) return nft.applyTransaction(tx);
  return nft.apply(tx.render());
}

interface JSONListing {
  nftables?: unknown[];
}

/** Names of the `kind` objects (chain, set, map) of `table` in an `nft -j list ...` answer. */
export function namesFromJSON(text: string, table: string, kind: 'chain' | 'set' | 'map'): Set<string> {
  const out = new Set<string>();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return out;
  }
  const items = (parsed as JSONListing).nftables;
  if (!Array.isArray(items)) return out;
  for (const it of items) {
    if (typeof it !== 'object' || it === null || !(kind in it)) continue;
    const c = (it as Record<string, unknown>)[kind];
    if (typeof c !== 'object' || c === null) continue;
    const { table: t, name } = c as { table?: unknown; name?: unknown };
    if (t === table && typeof name === 'string') out.add(name);
  }
  return out;
}

/** Table names by the runner's names() (a netlink dump), else by listing (`list chains|maps|sets FAMILY`, JSON, terse). */
export async function namesByListing(nft: NftRunner, family: NftFamily, table: string): Promise<TableNames> {
  if (nft.names) return nft.names(family, table);
  return {
    chains: namesFromJSON(await nft.list(`list chains ${family}`, { json: true }), table, 'chain'),
    maps: namesFromJSON(await nft.list(`list maps ${family}`, { json: true, terse: true }), table, 'map'),
    sets: namesFromJSON(await nft.list(`list sets ${family}`, { json: true, terse: true }), table, 'set'),
  };
}

/** libnftables in-process through the native addon (no process per sync). */
export function addonNft(addon: NativeAddon): NftRunner {
  return {
    via: 'addon',
    async apply(script) {
      const r = await addon.nftRun(script);
      if (!r.ok) throw new NftError('addon', r.error, findFailingLine(r.error, script));
    },
    async list(cmd, opts = {}) {
      const r = await addon.nftRun(cmd, { json: opts.json === true, handles: opts.handles === true, terse: opts.terse === true });
      if (!r.ok) throw new NftError('addon', r.error, findFailingLine(r.error, cmd));
      return r.output;
    },
  };
}

export interface ExecNftOptions {
  /** Run nft inside this network namespace (`ip netns exec`); default: ferry's own. */
  netns?: string;
}

async function spawnNft(netns: string | undefined, argv: string[], input?: string): Promise<RunResult> {
  try {
    return await runIn(netns, ['nft', ...argv], { allowFailure: true, ...(input !== undefined ? { input } : {}) });
  } catch (e) {
    // Only reached when nft cannot be started at all.
    return { stdout: '', stderr: `Error: cannot run nft: ${e instanceof Error ? e.message : String(e)}`, exitCode: null };
  }
}

/**
 * The fallback: `nft -f -` with the script on stdin (one transaction, as with the addon) and
 * `nft [-j] [-a] list ...` with the listing command as arguments (nft cannot read JSON-mode
 * commands from stdin: it consumes stdin trying to parse it as JSON first).
 */
export function execNft(opts: ExecNftOptions = {}): NftRunner {
  const { netns } = opts;
  return {
    via: 'exec',
    async apply(script) {
      const r = await spawnNft(netns, ['-f', '-'], script);
      if (r.exitCode !== 0) throw new NftError('exec', r.stderr, r.exitCode === null ? undefined : findFailingLine(r.stderr, script));
    },
    async list(cmd, listOpts = {}) {
      const flags: string[] = [];
      if (listOpts.json) flags.push('-j');
      if (listOpts.handles) flags.push('-a');
      if (listOpts.terse) flags.push('-t');
      const words = cmd.trim().split(/\s+/).filter((w) => w !== '');
      const r = await spawnNft(netns, [...flags, ...words]);
      if (r.exitCode !== 0) throw new NftError('exec', r.stderr, r.exitCode === null ? undefined : findFailingLine(r.stderr, cmd));
      return r.stdout;
    },
  };
}

let warnedFallback = false;
let warnedNoNetlink = false;

/**
 * nf_tables netlink batches through the addon when it has them, falling back to libnftables
 * (the addon) and then to the nft command, warning once per process why. The netlink runner
 * also falls back to libnftables by itself when its socket cannot be used (see nft-netlink.ts);
 * `via` always says which path is in use.
 */
export function defaultNft(opts: { preferExec?: boolean; preferScripts?: boolean } = {}): NftRunner {
  if (opts.preferExec) return execNft();
  const addon = loadNative();
  if (addon && !opts.preferScripts && addon.nfnlBatch && addon.nfnlDump) return netlinkNft(addon, { fallback: addonNft(addon) });
  if (addon) {
    if (!opts.preferScripts && !warnedNoNetlink) {
      warnedNoNetlink = true;
      log.warn('native addon has no nf_tables netlink support (old build?); applying nft scripts through libnftables', { path: defaultNativePath() });
    }
    return addonNft(addon);
  }
  if (!warnedFallback) {
    warnedFallback = true;
    log.warn('native addon not loaded; applying nft rules by running the nft command (one process per sync)', {
      path: defaultNativePath(),
      err: nativeLoadError(),
    });
  }
  return execNft();
}
