/**
 * The node settings kube-proxy makes at start, made the same way: the conntrack sysctls
 * (--conntrack-* / conntrack.*) and this process's oom_score_adj. Every write goes through an
 * injectable file system so the decisions are unit-tested without root; a failed write is
 * reported, never thrown, because kube-proxy also runs where /proc/sys or /sys is read-only.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { ConntrackConfig } from '../config/types.js';

export interface ProcFs {
  read(path: string): Promise<string>;
  write(path: string, value: string): Promise<void>;
}

export const realProcFs: ProcFs = {
  read: (path) => readFile(path, 'utf8'),
  write: (path, value) => writeFile(path, value),
};

export const SYSCTL_DIR = '/proc/sys/net/netfilter';
/** The module parameter is global to the host, unlike most conntrack sysctls (per netns). */
export const HASHSIZE_PATH = '/sys/module/nf_conntrack/parameters/hashsize';
export const OOM_SCORE_ADJ_PATH = '/proc/self/oom_score_adj';

/** What happened to one setting; `error` is set exactly when it failed. */
export interface SettingOutcome {
  readonly path: string;
  readonly wanted: number;
  readonly before?: number;
  /** set: written; unchanged: already the wanted value (or, for the max, higher); failed. */
  readonly result: 'set' | 'unchanged' | 'failed';
  readonly error?: string;
}

/**
 * kube-proxy's nf_conntrack_max: maxPerCore × CPUs, at least min; 0 (leave alone) when
 * maxPerCore is 0.
 */
export function conntrackMax(maxPerCore: number, min: number, cpus: number): number {
  if (maxPerCore <= 0) return 0;
  return Math.max(maxPerCore * cpus, min);
}

function errorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const msg = e instanceof Error ? e.message : String(e);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

async function readInt(fs: ProcFs, path: string): Promise<number> {
  const text = (await fs.read(path)).trim();
  const n = Number(text);
  if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(n)) throw new Error(`${path} holds ${JSON.stringify(text)}, not an integer`);
  return n;
}

/** Writes `wanted` unless the current value already satisfies `enough`. */
async function setInt(fs: ProcFs, path: string, wanted: number, enough: (current: number) => boolean): Promise<SettingOutcome> {
  let before: number | undefined;
  try {
    before = await readInt(fs, path);
    if (enough(before)) return { path, wanted, before, result: 'unchanged' };
    await fs.write(path, `${wanted}\n`);
    return { path, wanted, before, result: 'set' };
  } catch (e) {
    return { path, wanted, before, result: 'failed', error: errorText(e) };
  }
}

export interface ConntrackDeps {
  readonly fs?: ProcFs;
  /** CPUs of the machine (kube-proxy counts them all, not the cgroup's share). */
  readonly cpus: number;
}

/**
 * Applies the conntrack settings as kube-proxy's setupConntrack does: nf_conntrack_max only
 * ever raised, and the hash table grown to max/4 buckets only after the max was written (the
 * hashsize parameter is host-global, so a namespace that may not set the max leaves it alone);
 * each timeout written when non-zero; tcp_be_liberal only switched on. Returns one outcome per
 * setting it touched or tried.
 */
export async function applyConntrack(c: ConntrackConfig, deps: ConntrackDeps): Promise<SettingOutcome[]> {
  const fs = deps.fs ?? realProcFs;
  const out: SettingOutcome[] = [];
  const max = conntrackMax(c.maxPerCore, c.min, deps.cpus);
  if (max > 0) {
    const r = await setInt(fs, `${SYSCTL_DIR}/nf_conntrack_max`, max, (cur) => cur >= max);
    out.push(r);
    if (r.result === 'set') {
      const buckets = Math.floor(max / 4);
      out.push(await setInt(fs, HASHSIZE_PATH, buckets, (cur) => cur >= buckets));
    }
  }
  const seconds = (ms: number) => Math.floor(ms / 1000);
  const timeouts: [string, number][] = [
    ['nf_conntrack_tcp_timeout_established', c.tcpEstablishedTimeoutMs],
    ['nf_conntrack_tcp_timeout_close_wait', c.tcpCloseWaitTimeoutMs],
    ['nf_conntrack_udp_timeout', c.udpTimeoutMs],
    ['nf_conntrack_udp_timeout_stream', c.udpStreamTimeoutMs],
  ];
  for (const [name, ms] of timeouts) {
    if (ms <= 0) continue;
    const want = seconds(ms);
    out.push(await setInt(fs, `${SYSCTL_DIR}/${name}`, want, (cur) => cur === want));
  }
  if (c.tcpBeLiberal) out.push(await setInt(fs, `${SYSCTL_DIR}/nf_conntrack_tcp_be_liberal`, 1, (cur) => cur === 1));
  return out;
}

/** Writes this process's oom_score_adj (kube-proxy's --oom-score-adj, default -999). */
export async function applyOomScoreAdj(value: number, fs: ProcFs = realProcFs): Promise<SettingOutcome> {
  return setInt(fs, OOM_SCORE_ADJ_PATH, value, (cur) => cur === value);
}
