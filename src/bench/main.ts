/**
 * `scripts/bench [--quick|--smoke] [--out DIR] [--kube-proxy PATH] [--only compile,apply,latency,datapath,daemon]`
 *
 * The benchmark harness: compile, kernel apply, programming latency and data path, for ferry's
 * modes and for a reference ruleset laid out as stock kube-proxy lays it out. Prints progress on
 * stderr and the ratios at the end; writes results.json, SVG charts and summary.md to
 * bench-results/<date>-<kernel>/ (and a copy in bench-results/latest/) or to --out.
 *
 * Timings live here and only here; tests never assert them. Everything it creates in the kernel
 * lives in namespaces it created (fyb<rand> for apply, the simulated cluster's fy<rand>-*), all
 * removed at the end and on SIGINT/SIGTERM.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../native/index.js';
import { run } from '../util/exec.js';
import { runApply } from './apply.js';
import { runEbpfApply } from './apply-ebpf.js';
import { findCgroup2Mount, probeBpf } from '../backends/kernel/bpf.js';
import { ClusterBench, makeWorkDir, removeWorkDir, variantLabel, type LatencyVariant } from './cluster.js';
import { proberNote } from './connprobe.js';
import { DatapathBench, type DatapathLoad } from './datapath.js';
import { runCompile } from './compile.js';
import { runDaemon } from './daemon.js';
import { deleteAllBenchNetns, deleteAllBenchNetnsSync } from './netns.js';
import { computeRatios, writeReport } from './report.js';
import { round, verdict } from './stats.js';
import { PHASES, type ApplyMode, type BenchResults, type DatapathMode, type MemoryRow, type Phase, type ProxyUnderTest, type Size } from './types.js';
import { scaledMs } from '../util/timescale.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The modes the daemon phase can run (`--daemon-modes`). */
const DAEMON_MODES = ['nftables', 'iptables', 'iptables-legacy', 'userspace', 'ebpf'] as const;

export interface Profile {
  readonly name: 'smoke' | 'quick' | 'full';
  readonly compileSizes: readonly Size[];
  readonly compileRounds: number;
  readonly compileChanges: number;
  readonly applySizes: readonly Size[];
  /**
   * Largest services x endpoints applied with iptables-restore (ferry's iptables mode and the
   * reference layout). iptables-nft 1.8.9's restore is quadratic in chains: 2k x 10 takes ~25 s
   * here, so 10k x 10 would take ~10 min per apply and the full profile hours.
   */
  readonly iptablesApplyLimit: number;
  readonly applyFullRounds: number;
  readonly applyChanges: number;
  /** Filler Service counts for the cluster phases, ascending. */
  readonly clusterSizes: readonly number[];
  readonly latencySizes: readonly number[];
  readonly latencyModes: readonly ProxyUnderTest[];
  /** How the changes arrive and which sync window, one measurement each (cluster.ts). */
  readonly latencyVariants: readonly LatencyVariant[];
  /**
   * Largest Service count each mode's latency is measured at: iptables-restore is quadratic in
   * chains and userspace needs a socket per service port (neither comes up at 44k; docs/bench.md).
   */
  readonly latencyModeLimits?: Partial<Record<ProxyUnderTest, number>>;
  /** The data-path phase (datapath.ts): its own cluster, one node per mode, interleaved rounds. */
  readonly datapathSizes: readonly number[];
  readonly datapathModes: readonly DatapathMode[];
  readonly datapathLoad: DatapathLoad;
  readonly readyTimeoutMs: number;
  /** The daemon phase: a real ferry process per mode and size, with forced full resyncs. */
  readonly daemonSizes: readonly Size[];
  readonly daemonModes: readonly (typeof DAEMON_MODES)[number][];
  readonly daemonResyncs: number;
  /** Largest services x endpoints the daemon phase runs in iptables mode (iptables-restore's limit, as iptablesApplyLimit). */
  readonly daemonIptablesLimit: number;
  /**
   * The same for iptables-legacy: its restore is not quadratic in chains (10k × 10 loads in
   * seconds), but 44k × 10 is ~480,000 chains and 145 MB of restore input per full sync.
   */
  readonly daemonIptablesLegacyLimit: number;
  /**
   * Largest services x endpoints the daemon phase runs in userspace mode: at 44k Services it did
   * not come up within 10 minutes (one listening socket per service port; docs/userspace.md).
   */
  readonly daemonUserspaceLimit: number;
}

const cross = (ns: number[], ks: number[]): Size[] => ns.flatMap((services) => ks.map((endpoints) => ({ services, endpoints })));

export const PROFILES: Record<Profile['name'], Profile> = {
  smoke: {
    name: 'smoke',
    compileSizes: [{ services: 10, endpoints: 1 }],
    compileRounds: 2,
    compileChanges: 2,
    applySizes: [{ services: 10, endpoints: 1 }],
    iptablesApplyLimit: Infinity,
    applyFullRounds: 2,
    applyChanges: 2,
    clusterSizes: [10],
    latencySizes: [10],
    latencyModes: ['nftables'],
    latencyVariants: [{ window: 'default', burst: 1, changes: 2 }],
    datapathSizes: [10],
    datapathModes: ['direct', 'nftables'],
    datapathLoad: { offered: 200, seconds: 1, rounds: 2, timeoutMs: 3000 },
    readyTimeoutMs: 30_000,
    daemonSizes: [{ services: 10, endpoints: 1 }],
    // iptables-legacy too: the one run that keeps the mode's plumbing (hint chain, legacy
    // counting and sabotage, the check that the rules landed there) from rotting unseen.
    daemonModes: ['nftables', 'iptables-legacy'],
    daemonResyncs: 1,
    daemonIptablesLimit: Infinity,
    daemonIptablesLegacyLimit: Infinity,
    daemonUserspaceLimit: Infinity,
  },
  quick: {
    name: 'quick',
    compileSizes: cross([100, 1000], [1, 10]),
    compileRounds: 3,
    compileChanges: 10,
    applySizes: [...cross([100], [1, 10]), { services: 1000, endpoints: 1 }],
    iptablesApplyLimit: Infinity,
    applyFullRounds: 2,
    applyChanges: 5,
    clusterSizes: [0, 300],
    latencySizes: [300],
    latencyModes: ['nftables', 'iptables', 'userspace', 'ebpf'],
    latencyVariants: [
      { window: 'default', burst: 1, changes: 20 },
      { window: 'default', burst: 10, changes: 20 },
      { window: '1s', burst: 1, changes: 10, modes: ['nftables'] },
    ],
    datapathSizes: [0, 1000],
    datapathModes: ['direct', 'nftables', 'iptables', 'userspace', 'reference', 'ebpf'],
    datapathLoad: { offered: 500, seconds: 2, rounds: 5, timeoutMs: 3000 },
    readyTimeoutMs: 60_000,
    daemonSizes: [{ services: 1000, endpoints: 10 }],
    daemonModes: ['nftables', 'iptables', 'iptables-legacy', 'userspace', 'ebpf'],
    daemonResyncs: 2,
    daemonIptablesLimit: Infinity,
    daemonIptablesLegacyLimit: Infinity,
    daemonUserspaceLimit: Infinity,
  },
  full: {
    name: 'full',
    compileSizes: cross([100, 1000, 10000, 44000], [1, 10]),
    compileRounds: 3,
    compileChanges: 20,
    applySizes: cross([100, 1000, 10000, 44000], [1, 10]),
    iptablesApplyLimit: 10_000,
    applyFullRounds: 2,
    applyChanges: 10,
    clusterSizes: [0, 1000, 10000, 44000],
    latencySizes: [1000, 10000, 44000],
    latencyModes: ['nftables', 'iptables', 'userspace', 'ebpf'],
    latencyVariants: [
      { window: 'default', burst: 1, changes: 200 },
      { window: 'default', burst: 50, changes: 200 },
      // kube-proxy's fixed window, for comparison (issue #14 asks for it in nftables mode).
      { window: '1s', burst: 1, changes: 50, modes: ['nftables'] },
      { window: '1s', burst: 50, changes: 100, modes: ['nftables'] },
    ],
    latencyModeLimits: { iptables: 10_000, userspace: 10_000 },
    datapathSizes: [0, 1000, 10000, 44000],
    datapathModes: ['direct', 'nftables', 'iptables', 'userspace', 'reference', 'ebpf', 'iptables-legacy', 'reference-legacy'],
    datapathLoad: { offered: 1000, seconds: 3, rounds: 5, timeoutMs: 3000 },
    readyTimeoutMs: 600_000,
    daemonSizes: cross([1000, 10000, 44000], [10]),
    daemonModes: ['nftables', 'iptables', 'iptables-legacy', 'userspace', 'ebpf'],
    daemonResyncs: 4,
    daemonIptablesLimit: 10_000,
    daemonIptablesLegacyLimit: 100_000,
    daemonUserspaceLimit: 100_000,
  },
};

export interface BenchArgs {
  profile: Profile;
  out: string | null;
  kubeProxy: string | null;
  only: Phase[];
  /** --no-conntrack-flush: keep the stale conntrack entries (to show the stall; docs/bench.md). */
  noConntrackFlush: boolean;
  /** --daemon-ferry A,B: ferry launchers to compare (each size runs them in turn, interleaved); default this tree's. */
  daemonFerry: string[];
  /** --daemon-repeat N: each daemon measurement N times (interleaved with the other launchers). */
  daemonRepeat: number;
  /** --daemon-node-flags STR: node flags for the ferry process only (e.g. --cpu-prof --cpu-prof-dir=DIR). */
  daemonNodeFlags: string | undefined;
}

export class BenchUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchUsageError';
  }
}

const LATENCY_MODES = ['nftables', 'iptables', 'userspace', 'ebpf'] as const;

/** A flag's comma-separated Service counts (--latency-sizes, --datapath-sizes). */
function serviceCounts(flag: string, v: string): number[] {
  return v.split(',').map((x) => {
    if (!/^\d+$/.test(x.trim())) throw new BenchUsageError(`${flag}: expected SERVICES[,...], got ${x}`);
    return Number(x);
  });
}

/** A flag's comma-separated SERVICESxENDPOINTS sizes (--apply-sizes, --daemon-sizes). */
function sizeList(flag: string, v: string): Size[] {
  return v.split(',').map((x) => {
    const m = /^(\d+)x(\d+)$/.exec(x.trim());
    if (!m) throw new BenchUsageError(`${flag}: expected SERVICESxENDPOINTS[,...], got ${x}`);
    return { services: Number(m[1]), endpoints: Number(m[2]) };
  });
}

/** A flag's comma-separated modes, each one of `known`. */
function modeList<M extends string>(flag: string, v: string, known: readonly M[]): M[] {
  return v.split(',').map((x) => {
    const m = known.find((k) => k === x.trim());
    if (!m) throw new BenchUsageError(`${flag}: unknown mode ${x} (known: ${known.join(',')})`);
    return m;
  });
}

export function parseArgs(argv: readonly string[]): BenchArgs {
  let profile: Profile = PROFILES.full;
  let out: string | null = null;
  let kubeProxy: string | null = null;
  let only: Phase[] = [...PHASES];
  let noConntrackFlush = false;
  let daemonSizes: Size[] | undefined;
  let applySizes: Size[] | undefined;
  let daemonModes: Profile['daemonModes'] | undefined;
  let latencySizes: number[] | undefined;
  let latencyModes: ProxyUnderTest[] | undefined;
  let datapathSizes: number[] | undefined;
  let datapathModes: DatapathMode[] | undefined;
  let daemonResyncs: number | undefined;
  let daemonFerry: string[] = [];
  let daemonRepeat = 1;
  let daemonNodeFlags: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new BenchUsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') profile = PROFILES.quick;
    else if (a === '--smoke') profile = PROFILES.smoke;
    else if (a === '--full') profile = PROFILES.full;
    else if (a === '--out') out = resolve(val());
    else if (a === '--kube-proxy') kubeProxy = resolve(val());
    else if (a === '--no-conntrack-flush') noConntrackFlush = true;
    else if (a === '--only') {
      only = val().split(',').map((s) => s.trim()).filter(Boolean) as Phase[];
      for (const p of only) if (!PHASES.includes(p)) throw new BenchUsageError(`--only: unknown phase ${p} (known: ${PHASES.join(',')})`);
    } else if (a === '--daemon-sizes') {
      daemonSizes = sizeList(a, val());
    } else if (a === '--apply-sizes') {
      applySizes = sizeList(a, val());
    } else if (a === '--daemon-modes') {
      daemonModes = modeList(a, val(), DAEMON_MODES);
    } else if (a === '--daemon-resyncs') {
      const v = val();
      if (!/^\d+$/.test(v)) throw new BenchUsageError(`--daemon-resyncs: expected a count, got ${v}`);
      daemonResyncs = Number(v);
    } else if (a === '--daemon-repeat') {
      const v = val();
      if (!/^[1-9]\d*$/.test(v)) throw new BenchUsageError(`--daemon-repeat: expected a positive count, got ${v}`);
      daemonRepeat = Number(v);
    } else if (a === '--daemon-ferry') {
      daemonFerry = val().split(',').map((x) => resolve(x.trim()));
    } else if (a === '--daemon-node-flags') {
      daemonNodeFlags = val();
    } else if (a === '--latency-sizes') {
      latencySizes = serviceCounts(a, val());
    } else if (a === '--latency-modes') {
      latencyModes = modeList(a, val(), LATENCY_MODES);
    } else if (a === '--datapath-sizes') {
      datapathSizes = serviceCounts(a, val());
    } else if (a === '--datapath-modes') {
      datapathModes = modeList(a, val(), PROFILES.full.datapathModes);
    } else if (a === '-h' || a === '--help') {
      throw new BenchUsageError('usage: scripts/bench [--quick|--smoke|--full] [--out DIR] [--kube-proxy PATH] [--only compile,apply,latency,datapath,daemon] [--apply-sizes 44000x10,...] [--daemon-sizes 10000x10,...] [--daemon-modes nftables,...] [--daemon-resyncs N] [--daemon-repeat N] [--daemon-ferry BIN,BIN] [--daemon-node-flags OPTS] [--latency-sizes 1000,10000] [--latency-modes nftables,...] [--datapath-sizes 0,1000] [--datapath-modes direct,ebpf,...] [--no-conntrack-flush]');
    } else throw new BenchUsageError(`unknown argument ${a}`);
  }
  // The compile phase runs at the apply sizes only when those are given.
  if (applySizes) profile = { ...profile, applySizes, compileSizes: applySizes };
  if (daemonSizes || daemonModes) profile = { ...profile, daemonSizes: daemonSizes ?? profile.daemonSizes, daemonModes: daemonModes ?? profile.daemonModes };
  if (daemonResyncs !== undefined) profile = { ...profile, daemonResyncs };
  // The cluster phases run at the latency sizes only when those are given.
  if (latencySizes) profile = { ...profile, latencySizes, clusterSizes: latencySizes };
  if (latencyModes) profile = { ...profile, latencyModes };
  if (datapathSizes) profile = { ...profile, datapathSizes };
  if (datapathModes) profile = { ...profile, datapathModes };
  return { profile, out, kubeProxy, only, noConntrackFlush, daemonFerry, daemonRepeat, daemonNodeFlags };
}

const started = Date.now();
/** Set while the simulated cluster is up: what a signal must tear down. */
let teardownOnSignal: (() => Promise<void>) | null = null;
function progress(msg: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

async function text(argv: string[]): Promise<string> {
  const r = await run(argv, { allowFailure: true }).catch(() => ({ stdout: '', stderr: '', exitCode: 1 }));
  return (r.stdout || r.stderr).trim().split('\n')[0] ?? '';
}

function memoryChild(size: Size): Promise<MemoryRow> {
  const child = join(dirname(fileURLToPath(import.meta.url)), 'memory-child.js');
  return run([process.execPath, '--expose-gc', child, String(size.services), String(size.endpoints)]).then((r) => {
    const j = JSON.parse(r.stdout.trim()) as { rssMB: number; heapMB: number };
    return { ...size, rssMB: round(j.rssMB), heapMB: round(j.heapMB) };
  });
}

export async function runBench(args: BenchArgs): Promise<{ results: BenchResults; dir: string }> {
  const p = args.profile;
  const kernel = (await text(['uname', '-r'])) || 'unknown';
  const date = new Date().toISOString();
  const results: BenchResults = {
    meta: {
      date,
      kernel,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      memoryMB: Math.round(totalmem() / 1048576),
      node: process.version,
      profile: p.name,
      phases: args.only,
      durationS: 0,
      iptables: await text(['iptables', '--version']),
      nft: await text(['nft', '--version']),
      nativeAddon: loadNative() !== null,
      kubeProxy: args.kubeProxy,
      loadavgStart: readFileSync('/proc/loadavg', 'utf8').trim(),
    },
    plan: [],
    compile: [],
    memory: [],
    apply: [],
    latency: [],
    startup: [],
    datapath: [],
    datapathRounds: [],
    datapathSkips: [],
    datapathLoads: [],
    daemon: [],
    ratios: [],
    notes: [],
  };
  const want = (ph: Phase) => args.only.includes(ph);
  if (args.kubeProxy === null) {
    progress('kube-proxy binary not given: skipping');
    results.notes.push('kube-proxy binary not given: skipping the real kube-proxy; the reference ruleset stands in for its data path.');
  } else if (!existsSync(args.kubeProxy)) {
    throw new BenchUsageError(`--kube-proxy ${args.kubeProxy}: no such file`);
  }

  // 1 + 2: compile, memory, apply.
  if (want('compile') || want('apply')) {
    const sizes = [...p.compileSizes];
    if (want('apply')) for (const s of p.applySizes) if (!sizes.some((x) => x.services === s.services && x.endpoints === s.endpoints)) sizes.push(s);
    // Whether ebpf's apply can run here (the addon's BPF support, a cgroup v2 mount): why not, or undefined.
    let ebpfUnavailable: string | undefined | null;
    for (const size of sizes) {
      const doApply = want('apply') && p.applySizes.some((s) => s.services === size.services && s.endpoints === size.endpoints);
      const doCompile = want('compile') && p.compileSizes.some((s) => s.services === size.services && s.endpoints === size.endpoints);
      progress(`compile ${size.services}x${size.endpoints}${doApply ? ' (+ scripts for apply)' : ''}`);
      const c = runCompile(size, doCompile ? p.compileRounds : 1, doApply ? p.applyChanges : p.compileChanges, doApply);
      if (doCompile) {
        results.plan.push(c.plan);
        results.compile.push(...c.rows);
        const nft = c.rows.find((r) => r.mode === 'nftables')!;
        const ref = c.rows.find((r) => r.mode === 'reference')!;
        progress(`  nftables full ${nft.fullMs} ms ${nft.fullBytes} B; partial ${nft.partialEndpointMs} ms / ${nft.partialEndpointLines} lines (reference layout ${ref.fullBytes} B, partial ${ref.partialEndpointLines} lines)`);
        results.memory.push(await memoryChild(size));
      }
      if (doApply && c.scripts) {
        const withIptables = size.services * size.endpoints <= p.iptablesApplyLimit;
        const modes: Exclude<ApplyMode, 'ebpf'>[] = withIptables ? ['nftables-netlink', 'nftables-addon', 'nftables-exec', 'iptables', 'reference'] : ['nftables-netlink', 'nftables-addon', 'nftables-exec'];
        const rows = await runApply(c.scripts, { fullRounds: p.applyFullRounds, modes, progress });
        if (!withIptables) {
          const note = `not run: above the profile's iptables-restore limit (${p.iptablesApplyLimit} service endpoints; see docs/bench.md)`;
          for (const mode of ['iptables', 'reference'] as const) {
            rows.push({ mode, services: size.services, endpoints: size.endpoints, fullColdMs: 0, fullMs: 0, partialEndpointMs: 0, partialAddMs: 0, error: note });
          }
        }
        if (c.ebpf) {
          if (ebpfUnavailable === undefined) ebpfUnavailable = await ebpfProbe();
          // null: probed, available.
          if (ebpfUnavailable) rows.push({ mode: 'ebpf', services: size.services, endpoints: size.endpoints, fullColdMs: 0, fullMs: 0, partialEndpointMs: 0, partialAddMs: 0, error: `not run: ${ebpfUnavailable}` });
          else {
            progress(`apply ebpf ${size.services}x${size.endpoints}`);
            try {
              rows.push(await runEbpfApply(c.ebpf, p.applyFullRounds));
            } catch (e) {
              rows.push({ mode: 'ebpf', services: size.services, endpoints: size.endpoints, fullColdMs: 0, fullMs: 0, partialEndpointMs: 0, partialAddMs: 0, error: e instanceof Error ? e.message : String(e) });
            }
          }
        }
        for (const r of rows) {
          progress(`  apply ${r.mode}: full ${r.fullColdMs} ms, 1-endpoint ${r.partialEndpointMs} ms${r.error ? ` ERROR ${r.error}` : ''}`);
        }
        results.apply.push(...rows);
      }
    }
  }

  // 3: programming latency on the simulated cluster.
  if (want('latency')) {
    const work = makeWorkDir();
    const bench = new ClusterBench({ work, progress, kubeProxy: args.kubeProxy });
    teardownOnSignal = async () => {
      await bench.down();
      removeWorkDir(work);
    };
    try {
      await bench.up();
      results.notes.push(proberNote());
      const proxies: ProxyUnderTest[] = [...p.latencyModes];
      if (args.kubeProxy) proxies.push('kube-proxy');
      for (const n of p.clusterSizes) {
        await bench.setServices(n);
        for (const mode of proxies) {
          const limit = p.latencyModeLimits?.[mode];
          if (limit !== undefined && n > limit) {
            results.notes.push(`${mode} @${n}: not run, above its latency limit of ${limit} Services (docs/bench.md)`);
            continue;
          }
          // One proxy start per window; the variants of that window run on it in turn.
          const windows = [...new Set(p.latencyVariants.map((v) => v.window))];
          for (const window of windows) {
            const variants = p.latencySizes.includes(n) ? p.latencyVariants.filter((v) => v.window === window && (!v.modes || v.modes.includes(mode))) : [];
            if (window !== 'default' && variants.length === 0) continue;
            progress(`${mode} @${n} services, window ${window}: starting`);
            try {
              const readyMs = await bench.startProxy(mode, scaledMs(p.readyTimeoutMs), window);
              if (window === 'default') results.startup.push({ services: n, mode, readyMs });
              progress(`${mode} @${n}: ready in ${readyMs} ms`);
              for (const v of variants) {
                // Singly, each change meets an idle proxy: past the 1 s window, or well past the
                // cost-aware one (which follows recent sync costs, tens of ms).
                const gapMs = v.window === '1s' ? 1100 : 200;
                const l = await bench.latency(mode, v, v.changes, 30_000, gapMs);
                results.latency.push(l);
                progress(`  latency ${variantLabel(v)}: p50 ${l.e2eMs.p50} p90 ${l.e2eMs.p90} p99 ${l.e2eMs.p99} ms (metric p50 ${l.metric?.p50 ?? '-'} p99 ${l.metric?.p99 ?? '-'})`);
              }
            } catch (e) {
              const msg = e instanceof Error ? e.message : String(e);
              progress(`  ${mode} @${n} window ${window} FAILED: ${msg}`);
              results.notes.push(`${mode} @${n} services (window ${window}) failed: ${msg}`);
            } finally {
              await bench.stopProxy();
            }
          }
        }
      }
    } finally {
      teardownOnSignal = null;
      await bench.down();
      removeWorkDir(work);
    }
  }

  // 4: the data path, interleaved rounds on a cluster with one node per mode.
  if (want('datapath')) {
    const t0 = Date.now();
    const work = makeWorkDir();
    const dp = new DatapathBench({ work, progress, kubeProxy: args.kubeProxy, modes: p.datapathModes, readyTimeoutMs: scaledMs(p.readyTimeoutMs), flushConntrack: !args.noConntrackFlush });
    teardownOnSignal = async () => {
      await dp.down();
      removeWorkDir(work);
    };
    try {
      await dp.up();
      for (const n of p.datapathSizes) {
        const { createMs } = await dp.setServices(n);
        const { took, stale } = await dp.load();
        for (const s of dp.status()) if (s.off) results.datapathSkips.push({ services: n, mode: s.mode, why: s.off });
        const { rows, rounds, staleBetweenRounds } = await dp.measure(p.datapathLoad);
        results.datapathLoads.push({ services: n, createMs, loadMs: Object.fromEntries(took), staleConntrack: stale, staleBetweenRounds });
        results.datapath.push(...rows);
        results.datapathRounds.push(...rounds);
        for (const r of rows) {
          progress(`  ${r.mode} ${r.path} @${n}: ${r.connPerSec.median} conn/s (${r.connPerSec.min}–${r.connPerSec.max}), ${r.cpuMsPerKConn.median} CPU ms/1k conn, ${r.connErrors} errors, ${r.timeouts} timeouts, ${r.synRetransmits} SYN retransmits`);
        }
      }
      for (const s of results.datapathSkips) if (s.why.startsWith('failed')) results.notes.push(`datapath ${s.mode} @${s.services} failed: ${s.why}`);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      progress(`datapath FAILED: ${msg}`);
      results.notes.push(`datapath failed: ${msg}`);
    } finally {
      teardownOnSignal = null;
      await dp.down();
      removeWorkDir(work);
    }
    results.meta = { ...results.meta, datapathLoad: p.datapathLoad, datapathS: Math.round((Date.now() - t0) / 1000), ...(args.noConntrackFlush ? { conntrackFlush: false } : {}) };
    if (args.noConntrackFlush) results.notes.push('--no-conntrack-flush: node conntrack tables were NOT flushed after readiness waits and between rounds (the stale-entry demonstration; docs/bench.md).');
  }

  // 5: the real daemon against a preloaded API server.
  if (want('daemon')) {
    for (const size of p.daemonSizes) {
      for (const mode of p.daemonModes) {
        if (mode === 'iptables' && size.services * size.endpoints > p.daemonIptablesLimit) {
          results.notes.push(`daemon ${mode} ${size.services}x${size.endpoints}: not run, above the profile's iptables-restore limit (${p.daemonIptablesLimit} service endpoints; see docs/bench.md)`);
          continue;
        }
        if (mode === 'iptables-legacy' && size.services * size.endpoints > p.daemonIptablesLegacyLimit) {
          results.notes.push(`daemon ${mode} ${size.services}x${size.endpoints}: not run, above the profile's iptables-legacy limit (${p.daemonIptablesLegacyLimit} service endpoints; see docs/bench.md)`);
          continue;
        }
        if (mode === 'userspace' && size.services * size.endpoints > p.daemonUserspaceLimit) {
          results.notes.push(`daemon ${mode} ${size.services}x${size.endpoints}: not run, above the profile's userspace limit (${p.daemonUserspaceLimit} service endpoints: 44k Services need more listening sockets than this sandbox's 20,000 open files; see docs/userspace.md, "Limits at scale")`);
          continue;
        }
        // A/B launchers and repeats interleave: A B A B ..., so drift in the machine's load hits both.
        const bins: (string | undefined)[] = args.daemonFerry.length ? args.daemonFerry : [undefined];
        for (let rep = 0; rep < args.daemonRepeat; rep++) {
          for (const ferryBin of bins) {
            const which = `${ferryBin ? ` [${ferryBin}]` : ''}${args.daemonRepeat > 1 ? ` (run ${rep + 1}/${args.daemonRepeat})` : ''}`;
            progress(`daemon ${mode} ${size.services}x${size.endpoints}${which}`);
            try {
              const row = await runDaemon({ mode, size, resyncs: p.daemonResyncs, timeoutMs: scaledMs(p.readyTimeoutMs), progress, ferryBin, nodeFlags: args.daemonNodeFlags });
              results.daemon.push(ferryBin ? { ...row, ferry: ferryBin } : row);
            } catch (e) {
              const msg = e instanceof Error ? e.message : String(e);
              progress(`  FAILED: ${msg}`);
              results.notes.push(`daemon ${mode} ${size.services}x${size.endpoints}${which} failed: ${msg}`);
            }
          }
        }
      }
    }
  }

  results.ratios = computeRatios(results);
  results.meta = { ...results.meta, durationS: Math.round((Date.now() - started) / 1000), loadavgEnd: readFileSync('/proc/loadavg', 'utf8').trim() };
  const day = date.slice(0, 10);
  // A run of some phases only gets its own directory and leaves latest/ alone: it must never
  // overwrite a complete run's results (an --only datapath run once replaced a daemon run's).
  const all = PHASES.every((ph) => args.only.includes(ph));
  const suffix = `${p.name === 'full' ? '' : `-${p.name}`}${all ? '' : `-${args.only.join('+')}`}`;
  const dir = args.out ?? join(ROOT, 'bench-results', `${day}-${kernel}${suffix}`);
  writeReport(dir, results);
  if (args.out === null && all) {
    const latest = join(ROOT, 'bench-results', 'latest');
    rmSync(latest, { recursive: true, force: true });
    mkdirSync(latest, { recursive: true });
    cpSync(dir, latest, { recursive: true });
  }
  return { results, dir };
}

function printRatios(r: BenchResults): void {
  if (!r.ratios.length) return;
  process.stdout.write('\nferry / reference kube-proxy layout (ratio; see "better"):\n');
  for (const x of r.ratios) {
    const r = x.low !== undefined && x.high !== undefined ? verdict({ ratio: x.ratio, low: x.low, high: x.high, differs: x.differs !== false }) : String(x.ratio);
    process.stdout.write(`  ${x.what.padEnd(44)} ${x.size.padEnd(22)} ${String(x.ferry).padStart(10)} / ${String(x.reference).padEnd(10)} = ${r.padStart(6)}  (${x.better} is better)\n`);
  }
}

async function main(): Promise<void> {
  let args: BenchArgs;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  }
  if (process.getuid && process.getuid() !== 0) {
    process.stderr.write('scripts/bench creates network namespaces and must run as root\n');
    process.exit(1);
  }
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    progress(`${sig}: cleaning up`);
    deleteAllBenchNetnsSync();
    const code = sig === 'SIGINT' ? 130 : 143;
    const t = teardownOnSignal;
    if (!t) process.exit(code);
    void t().finally(() => process.exit(code));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    progress(`profile ${args.profile.name}; phases ${args.only.join(',')}`);
    const { results, dir } = await runBench(args);
    printRatios(results);
    process.stdout.write(`\nresults: ${dir}/summary.md (${results.meta.durationS} s)\n`);
    const failed = results.notes.filter((n) => / failed: /.test(n));
    if (failed.length) {
      process.stderr.write(`bench: ${failed.length} measurement(s) failed:\n${failed.map((f) => `  ${f}`).join('\n')}\n`);
      process.exitCode = 3;
    }
  } finally {
    await deleteAllBenchNetns();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  });
}

/** Why the ebpf apply cannot run on this machine, or null when it can. */
async function ebpfProbe(): Promise<string | null> {
  try {
    await probeBpf();
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  return (await findCgroup2Mount()) ? null : 'no cgroup v2 mount';
}
