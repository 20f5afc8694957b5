/**
 * Running the iptables tools: which variant (nft or legacy) the host uses, and the three calls the
 * backend makes — `*-restore -w --noflush` (input on stdin), `*-save -t TABLE`, and single
 * `iptables -w ...` commands for the jump rules and the canary check. Everything goes through
 * util/exec's run(), optionally inside a network namespace (tests).
 *
 * Variant detection follows kube-proxy's iptables-wrapper: kubelet's chains in iptables-nft,
 * then in iptables-legacy; where neither has them the wrapper takes nft, and ferry takes the
 * variant with more rules (nft on a tie), so a node whose kubelet made no chains but whose CNI
 * programs iptables-legacy is still read right.
 *
 * Never decides what to install; the compiler and backend do.
 */
import type { IPFamily } from '../../plan/types.js';
import { CommandError, runIn, type RunResult } from '../../util/exec.js';

export type IptablesVariant = 'nft' | 'legacy';

/** The failing input line iptables-restore reported (`line N failed`), when it did. */
export interface RestoreFailure {
  readonly line: number | undefined;
  readonly stderr: string;
}

export class IptablesRestoreError extends Error {
  readonly code = 'FERRY_ERR_IPTABLES_RESTORE';
  constructor(
    readonly family: IPFamily,
    readonly line: number | undefined,
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super(`${family === 6 ? 'ip6tables' : 'iptables'}-restore failed${line !== undefined ? ` at line ${line}` : ''} (exit ${exitCode}): ${stderr.trim()}`);
    this.name = 'IptablesRestoreError';
  }
}

export interface IptablesRunner {
  readonly variant: IptablesVariant;
  /**
   * `iptables-restore -w --noflush`, the input whole or in pieces (written one after the other);
   * throws IptablesRestoreError on failure.
   */
  restore(family: IPFamily, input: string | readonly string[]): Promise<void>;
  /** `iptables-save -t TABLE`. */
  save(family: IPFamily, table: string): Promise<string>;
  /** The chains TABLE declares, from `iptables-save -t TABLE` read line by line (not held whole). */
  chains(family: IPFamily, table: string): Promise<string[]>;
  /** `iptables-save -t TABLE`, each line to `onLine` (not held whole); false when the save failed. */
  saveLines(family: IPFamily, table: string, onLine: (line: string) => void): Promise<boolean>;
  /** One `iptables -w ARGS` call; never throws on a non-zero exit. */
  exec(family: IPFamily, args: readonly string[]): Promise<RunResult>;
}

function binary(family: IPFamily, variant: IptablesVariant, suffix: '' | '-save' | '-restore'): string {
  return `${family === 6 ? 'ip6tables' : 'iptables'}-${variant}${suffix}`;
}

/**
 * The input line iptables-restore blamed: `Error occurred at line: 7` (1.8.x, legacy and nft),
 * or `line 7 failed` (older releases). iptables-nft reports errors found at commit time against
 * the COMMIT line of the table.
 */
export function failingLine(stderr: string): number | undefined {
  const m = /Error occurred at line: (\d+)/.exec(stderr) ?? /line (\d+) failed/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

/** How long to wait for the xtables lock (seconds), as kube-proxy's `-w`. */
const WAIT = ['-w', '5'];

export function execRunner(variant: IptablesVariant, opts: { netns?: string } = {}): IptablesRunner {
  const ns = opts.netns;
  const saveLines = (family: IPFamily, table: string, onLine: (line: string) => void, allowFailure: boolean): Promise<RunResult> =>
    runIn(ns, [binary(family, variant, '-save'), '-t', table], { onStdoutLine: onLine, allowFailure });
  return {
    variant,
    async restore(family, input) {
      const argv = [binary(family, variant, '-restore'), ...WAIT, '--noflush'];
      let r: RunResult;
      try {
        r = await runIn(ns, argv, { input, allowFailure: true });
      } catch (e) {
        throw new IptablesRestoreError(family, undefined, e instanceof CommandError ? e.stderr : String(e), null);
      }
      if (r.exitCode !== 0) throw new IptablesRestoreError(family, failingLine(r.stderr), r.stderr, r.exitCode);
    },
    async save(family, table) {
      return (await runIn(ns, [binary(family, variant, '-save'), '-t', table])).stdout;
    },
    async chains(family, table) {
      // At 10k Services × 10 endpoints the nat table saves as ~33 MB: held as one string (and
      // split into lines) it was the largest part of a full sync's peak after the input's own.
      const out: string[] = [];
      await saveLines(family, table, (line) => chainOfLine(line, out), false);
      return out;
    },
    async saveLines(family, table, onLine) {
      return (await saveLines(family, table, onLine, true)).exitCode === 0;
    },
    exec(family, args) {
      return runIn(ns, [binary(family, variant, ''), ...WAIT, ...args], { allowFailure: true });
    },
  };
}

/** Adds the chain a save line declares (`:NAME POLICY [p:b]`) to `out`. */
export function chainOfLine(line: string, out: string[]): void {
  if (line.charCodeAt(0) !== 58 /* : */) return;
  const sp = line.indexOf(' ');
  out.push(sp < 0 ? line.slice(1) : line.slice(1, sp));
}

/** Rule lines (`-A ...`) in save output. */
export function countRules(save: string): number {
  let n = 0;
  for (const line of save.split('\n')) if (line.startsWith('-')) n++;
  return n;
}

async function saveAll(variant: IptablesVariant, netns: string | undefined, table?: string): Promise<string | undefined> {
  let out = '';
  let any = false;
  for (const fam of [4, 6] as const) {
    const argv = [binary(fam, variant, '-save'), ...(table ? ['-t', table] : [])];
    try {
      const r = await runIn(netns, argv, { allowFailure: true, timeoutMs: 5000 });
      if (r.exitCode === 0) {
        any = true;
        out += r.stdout;
      }
    } catch {
      // not installed
    }
  }
  return any ? out : undefined;
}

/**
 * The tables iptables-legacy has in this network namespace (IPv4: /proc/net/ip_tables_names),
 * read without creating any: every `iptables-legacy -t TABLE` call creates the table it names.
 * Empty when the module is not loaded.
 */
export async function legacyTables(family: IPFamily, netns: string | undefined): Promise<ReadonlySet<string>> {
  const file = family === 6 ? '/proc/net/ip6_tables_names' : '/proc/net/ip_tables_names';
  let text = '';
  try {
    // Inside the namespace: /proc/net is the reading process's own.
    const r = await runIn(netns, ['cat', file], { allowFailure: true, timeoutMs: 5000 });
    if (r.exitCode === 0) text = r.stdout;
  } catch {
    // no cat, or no such namespace: nothing known, nothing touched
  }
  return new Set(text.split('\n').map((l) => l.trim()).filter((l) => l !== ''));
}

/** Why the variant's save tool does not run here (its version query), or undefined when it does. */
export async function variantUnusable(variant: IptablesVariant, netns: string | undefined): Promise<string | undefined> {
  try {
    const r = await runIn(netns, [binary(4, variant, '-save'), '-V'], { allowFailure: true, timeoutMs: 5000 });
    return r.exitCode === 0 ? undefined : `${binary(4, variant, '-save')} -V exited ${r.exitCode}: ${r.stderr.trim()}`;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

export interface VariantDecision {
  readonly variant: IptablesVariant;
  readonly reason: string;
}

/**
 * Which variant the host's other users (kubelet, the CNI) program, as kube-proxy's
 * iptables-wrapper (iptables-wrappers pkg/xtables DetectMode): kubelet's chains
 * (KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY) in iptables-nft, then in iptables-legacy; else, where
 * the wrapper takes nft, rule counts of `iptables-legacy-save` vs `iptables-nft-save` (both
 * families), nft on a tie. iptables-legacy is read without `-t`, which would create the table.
 */
export async function detectVariant(opts: { netns?: string } = {}): Promise<VariantDecision> {
  const nftMangle = await saveAll('nft', opts.netns, 'mangle');
  const legacyAll = await saveAll('legacy', opts.netns);
  if (nftMangle === undefined && legacyAll === undefined) return { variant: 'nft', reason: 'neither iptables-nft-save nor iptables-legacy-save runs' };
  if (legacyAll === undefined) return { variant: 'nft', reason: 'only iptables-nft is available' };
  if (nftMangle === undefined) return { variant: 'legacy', reason: 'only iptables-legacy is available' };
  const hints = ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY'];
  for (const hint of hints) if (nftMangle.includes(`:${hint} `)) return { variant: 'nft', reason: `kubelet's ${hint} chain is in iptables-nft` };
  for (const hint of hints) if (legacyAll.includes(`:${hint} `)) return { variant: 'legacy', reason: `kubelet's ${hint} chain is in iptables-legacy` };
  const legacy = countRules((await saveAll('legacy', opts.netns)) ?? '');
  const nft = countRules((await saveAll('nft', opts.netns)) ?? '');
  if (legacy > nft) return { variant: 'legacy', reason: `iptables-legacy has more rules (${legacy} vs ${nft})` };
  return { variant: 'nft', reason: nft > legacy ? `iptables-nft has more rules (${nft} vs ${legacy})` : `equal rule counts (${nft}); nft preferred` };
}
