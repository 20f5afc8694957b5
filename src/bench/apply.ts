/**
 * Phase 2, apply: replays the scripts from the compile phase into fresh network namespaces
 * (`fyb<rand>`, deleted afterwards) and times the kernel side: a full ruleset into an empty
 * namespace, full re-applies, then the one-endpoint partial changes and the one-service add in
 * order. nftables through the native addon and through `nft -f`; ferry's iptables output and the
 * reference kube-proxy layout through iptables-restore --noflush. Timing happens in the child
 * that runs inside the namespace (apply-child.ts), so the cost of entering it is not counted.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../util/exec.js';
import type { ApplyScripts, ScriptSet } from './compile.js';
import { writeScriptSet } from './compile.js';
import type { ApplyStep, ApplyStepResult, ApplyVia } from './apply-child.js';
import { createBenchNetns, deleteBenchNetns } from './netns.js';
import { median, round } from './stats.js';
import type { ApplyMode, ApplyRow } from './types.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'apply-child.js');

export class ApplyChildError extends Error {
  constructor(
    readonly netns: string,
    readonly detail: string,
  ) {
    super(`apply child in ${netns} failed: ${detail}`);
    this.name = 'ApplyChildError';
  }
}

async function runSteps(netns: string, steps: ApplyStep[]): Promise<ApplyStepResult[]> {
  const r = await run(['ip', 'netns', 'exec', netns, process.execPath, CHILD], { input: JSON.stringify({ steps }), allowFailure: true });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: { results?: ApplyStepResult[]; fatal?: string };
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    throw new ApplyChildError(netns, `no JSON reply (exit ${r.exitCode}): ${r.stderr.slice(0, 300)}`);
  }
  if (parsed.fatal) throw new ApplyChildError(netns, parsed.fatal);
  return parsed.results ?? [];
}

function stepsFor(dir: string, name: string, via: ApplyVia, set: ScriptSet, fullRounds: number, jumps?: string): ApplyStep[] {
  const files = writeScriptSet(dir, name, set);
  const steps: ApplyStep[] = [];
  if (jumps !== undefined) {
    const j = writeScriptSet(dir, `${name}-jumps`, { full: jumps, partialEndpoint: [], partialAdd: '' });
    steps.push({ label: 'jumps', via, file: j.full });
  }
  for (let i = 0; i < fullRounds; i++) steps.push({ label: i === 0 ? 'full-cold' : 'full', via, file: files.full });
  for (const f of files.partialEndpoint) steps.push({ label: 'partial-endpoint', via, file: f });
  steps.push({ label: 'partial-add', via, file: files.partialAdd });
  return steps;
}

/** Encoded nf_tables batches of one apply run (encodeTransaction(tx).bytes), in apply order. */
export interface BatchSet {
  readonly full: Uint8Array;
  readonly partialEndpoint: readonly Uint8Array[];
  readonly partialAdd: Uint8Array;
}

/**
 * Steps replaying encoded batches through the addon's netlink path (`nft-netlink`), the same
 * sequence as stepsFor(): full cold, full re-applies, the one-endpoint partials, the added service.
 */
export function netlinkStepsFor(dir: string, name: string, set: BatchSet, fullRounds: number): ApplyStep[] {
  const file = (suffix: string, bytes: Uint8Array): string => {
    const p = join(dir, `${name}-${suffix}.nlb`);
    writeFileSync(p, bytes);
    return p;
  };
  const full = file('full', set.full);
  const steps: ApplyStep[] = [];
  for (let i = 0; i < fullRounds; i++) steps.push({ label: i === 0 ? 'full-cold' : 'full', via: 'nft-netlink', file: full });
  set.partialEndpoint.forEach((b, i) => steps.push({ label: 'partial-endpoint', via: 'nft-netlink', file: file(`ep-${i + 1}`, b) }));
  steps.push({ label: 'partial-add', via: 'nft-netlink', file: file('add', set.partialAdd) });
  return steps;
}

function summarize(s: ApplyScripts, mode: ApplyMode, results: ApplyStepResult[], expected: number): ApplyRow {
  const ms = (label: string) => results.filter((r) => r.ok && r.label === label).map((r) => r.ms);
  const failed = results.find((r) => !r.ok);
  const cold = ms('full-cold');
  return {
    services: s.services,
    endpoints: s.endpoints,
    mode,
    fullColdMs: round(cold[0] ?? 0),
    fullMs: round(median(ms('full'))),
    partialEndpointMs: round(median(ms('partial-endpoint'))),
    partialAddMs: round(ms('partial-add')[0] ?? 0),
    ...(failed ? { error: `${failed.label}: ${failed.error ?? 'failed'}` } : results.length < expected ? { error: 'incomplete' } : {}),
  };
}

export interface ApplyOptions {
  readonly fullRounds: number;
  readonly modes: readonly Exclude<ApplyMode, 'ebpf'>[];
  readonly progress: (msg: string) => void;
}

export async function runApply(s: ApplyScripts, opts: ApplyOptions): Promise<ApplyRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-apply-'));
  const rows: ApplyRow[] = [];
  try {
    for (const mode of opts.modes) {
      const steps =
        mode === 'nftables-netlink'
          ? netlinkStepsFor(dir, 'nlb', s.nftBatches, opts.fullRounds)
          : mode === 'nftables-addon'
          ? stepsFor(dir, 'nft', 'nft-addon', s.nft, opts.fullRounds)
          : mode === 'nftables-exec'
            ? stepsFor(dir, 'nft', 'nft-exec', s.nft, opts.fullRounds)
            : mode === 'iptables'
              ? stepsFor(dir, 'ipt', 'iptables-restore', s.iptables, opts.fullRounds)
              : stepsFor(dir, 'ref', 'iptables-restore', s.reference, opts.fullRounds, s.reference.jumps);
      opts.progress(`apply ${mode} ${s.services}x${s.endpoints}: ${steps.length} steps`);
      const ns = await createBenchNetns();
      try {
        const results = await runSteps(ns, steps);
        rows.push(summarize(s, mode, results, steps.length));
      } catch (e) {
        rows.push({ ...summarize(s, mode, [], 0), error: e instanceof Error ? e.message : String(e) });
      } finally {
        await deleteBenchNetns(ns);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}
