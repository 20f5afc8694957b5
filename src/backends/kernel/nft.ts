/**
 * The one place nft scripts reach the kernel. A runner applies a whole script as one transaction
 * (all or nothing) and lists tables; it never builds or edits nft syntax itself (that is the
 * nftables backend's job) and never decides policy. Two runners: libnftables in-process through
 * the native addon (the default), and spawning the nft command (the documented fallback).
 */
import { loadNative, nativeLoadError, defaultNativePath, type NativeAddon } from '../../native/index.js';
import { logger } from '../../util/log.js';
import { runIn, type RunResult } from '../../util/exec.js';

const log = logger('nft');

export interface FailingLine {
  /** 1-based line number in the script that was applied. */
  lineNo: number;
  /** That line of the script. */
  text: string;
}

export class NftError extends Error {
  readonly code = 'FERRY_ERR_NFT';
  /** nft's own error message without the location, e.g. `Could not process rule: File exists`. */
  readonly nftMessage: string;
  constructor(
    readonly via: 'addon' | 'exec',
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

export interface NftRunner {
  readonly via: 'addon' | 'exec';
  /** Applies the script as one transaction; throws NftError naming the failing line. */
  apply(script: string): Promise<void>;
  /** Runs one listing command, e.g. `list table ip ferry`; returns what nft printed. */
  list(cmd: string, opts?: NftListOptions): Promise<string>;
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

/** The addon when it loads, else the nft command (warning once per process why). */
export function defaultNft(opts: { preferExec?: boolean } = {}): NftRunner {
  if (opts.preferExec) return execNft();
  const addon = loadNative();
  if (addon) return addonNft(addon);
  if (!warnedFallback) {
    warnedFallback = true;
    log.warn('native addon not loaded; applying nft rules by running the nft command (one process per sync)', {
      path: defaultNativePath(),
      err: nativeLoadError(),
    });
  }
  return execNft();
}
