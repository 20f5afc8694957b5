/**
 * The daemon phase: the real `bin/ferry` process, as an operator runs it, against the simulated
 * API server preloaded with services × endpoints. Measures process start → the probe Service
 * answering (the first full sync is one transaction, so the probe answering means every rule is
 * in), the rules found in the kernel, RSS once steady, RSS after each of several forced full
 * resyncs (ferry's rules removed behind its back, repaired by its intact check), the peak (VmHWM),
 * and where the memory is (V8 heap, external/array buffers, native, mapped files).
 *
 * Everything runs in one namespace the phase creates (fyb<rand>): the API server, loadgen's
 * server on the node address, the probe client and ferry itself. Nothing touches the host's
 * interfaces or ruleset; the namespace is removed at the end, also after a failure.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { runIn } from '../util/exec.js';
import { KernelBpfMaps, removePins, resolveCgroupRoot } from '../backends/kernel/bpf.js';
import { makeCgroup, removeCgroup } from '../sim/cluster/cgroups.js';
import { createBenchNetns, deleteBenchNetns } from './netns.js';
import { NODE_IP, POD_CIDR } from './synthetic.js';
import { PROBE_ENDPOINT_IP } from './daemon-probe.js';
import { round } from './stats.js';
import { shebangFlags } from './launcher.js';
import type { DaemonFullSync, DaemonMode, DaemonRow, DaemonStartup, MemorySample, RepairChange, Size } from './types.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const FERRY_BIN = join(HERE, '..', '..', '..', 'bin', 'ferry');
const METRICS = '127.0.0.1:10249';
const MiB = 1024 * 1024;

export interface DaemonOptions {
  readonly mode: DaemonMode;
  readonly size: Size;
  readonly resyncs: number;
  /** Start (and each repair) must finish within this. */
  readonly timeoutMs: number;
  readonly progress: (msg: string) => void;
  /** The ferry launcher to run (default: this tree's bin/ferry); another tree's for an A/B run. */
  readonly ferryBin?: string;
  /**
   * Extra node flags for ferry only (e.g. `--cpu-prof --cpu-prof-dir=DIR`, which NODE_OPTIONS
   * refuses): ferry then runs as `node <its shebang's flags> <these> bin/ferry …`.
   */
  readonly nodeFlags?: string;
}

export class DaemonBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DaemonBenchError';
  }
}

/** One line in, one line out, over a child's stdin/stdout. */
class LineChild {
  private readonly waiting: ((line: string) => void)[] = [];
  private readonly early: string[] = [];
  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const w = this.waiting.shift();
      if (w) w(l);
      else this.early.push(l);
    });
  }
  next(timeoutMs: number, what: string): Promise<string> {
    const e = this.early.shift();
    if (e !== undefined) return Promise.resolve(e);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new DaemonBenchError(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.push((l) => {
        clearTimeout(timer);
        resolve(l);
      });
    });
  }
  ask(cmd: string, timeoutMs: number): Promise<string> {
    this.child.stdin!.write(cmd + '\n');
    return this.next(timeoutMs, cmd);
  }
  close(): void {
    this.child.stdin?.end();
  }
}

/** Spawns inside the namespace; stdout is a pipe for the line children, stderr's tail is kept for `logTail`. */
function spawnIn(ns: string, argv: string[], withStdout = true, env?: NodeJS.ProcessEnv, onLine?: (line: string) => void, hostMounts = false): ChildProcess {
  // `ip netns exec` remounts /sys, which hides /sys/fs/cgroup and /sys/fs/bpf from ebpf mode;
  // nsenter enters only the network namespace.
  const enter = hostMounts ? ['nsenter', `--net=/var/run/netns/${ns}`, '--'] : ['ip', 'netns', 'exec', ns];
  const child = spawn(enter[0]!, [...enter.slice(1), ...argv], { stdio: ['pipe', withStdout ? 'pipe' : 'ignore', 'pipe'], ...(env ? { env } : {}) });
  let tail = '';
  let partial = '';
  child.stderr!.on('data', (b: Buffer) => {
    const text = b.toString();
    tail = (tail + text).slice(-4096);
    if (!onLine) return;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) onLine(l);
  });
  tails.set(child, () => tail.trim().split('\n').slice(-6).join(' | '));
  return child;
}
const tails = new WeakMap<ChildProcess, () => string>();
function logTail(c: ChildProcess): string {
  return tails.get(c)?.() ?? '';
}

function statusKB(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function sample(ns: string, pid: number): Promise<MemorySample> {
  const st = statusKB(pid);
  const r = await runIn(ns, ['curl', '-s', '--max-time', '10', `http://${METRICS}/debug/memory`], { allowFailure: true });
  let mu = { heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0 };
  try {
    mu = JSON.parse(r.stdout) as typeof mu;
  } catch {
    /* the daemon was busy or gone; the kernel's figures still stand */
  }
  const anon = (st.RssAnon ?? 0) * 1024;
  return {
    rssMB: round((st.VmRSS ?? 0) / 1024),
    anonMB: round(anon / MiB),
    fileMB: round((st.RssFile ?? 0) / 1024),
    heapUsedMB: round(mu.heapUsed / MiB),
    heapTotalMB: round(mu.heapTotal / MiB),
    externalMB: round(mu.external / MiB),
    arrayBuffersMB: round(mu.arrayBuffers / MiB),
    nativeMB: round(Math.max(0, anon - mu.heapTotal - mu.external) / MiB),
  };
}

/** CPU time (user + system, all threads) the process has used, in ms: a figure that holds on a loaded machine. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat(5) (utime, stime), counted from field 3 here, in clock ticks (100 Hz).
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Epoch ms of a ferry log line's stamp (`I1204 19:45:12.345 …`, UTC, this year), or undefined. */
function logStamp(line: string): number | undefined {
  const m = /^[IWE](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d\d\d) /.exec(line);
  if (!m) return undefined;
  const [mo, d, h, mi, se, ms] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return Date.UTC(new Date().getUTCFullYear(), mo - 1, d, h, mi, se, ms);
}

/** `key=value` numbers (and booleans as 0/1) of a log line. */
function logFields(line: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/ (\w+)=(-?\d+(?:\.\d+)?|true|false)(?= |$)/g)) out[m[1]!] = m[2] === 'true' ? 1 : m[2] === 'false' ? 0 : Number(m[2]);
  return out;
}

/**
 * The phases of ferry's start and of each full sync, from its log at -v 2 (its own clocks, so
 * they hold on a loaded machine): lists done, and per full sync plan, then compile, encode and
 * kernel (nftables) or attach, dump and maps (ebpf).
 */
export class PhaseLog {
  startedMs: number | undefined;
  servicesListedMs: number | undefined;
  slicesListedMs: number | undefined;
  listedMs: number | undefined;
  readonly fullSyncs: DaemonFullSync[] = [];
  /** Epoch ms of each partial sync's end. */
  readonly partialEnds: number[] = [];
  private pending: Partial<DaemonFullSync> = {};
  constructor(private readonly t0: number) {}
  line(l: string): void {
    const at = logStamp(l);
    if (at === undefined) return;
    const since = Math.round(at - this.t0);
    if (l.includes('] starting ferry')) this.startedMs ??= since;
    else if (l.includes('] initial list of services done')) this.servicesListedMs ??= since;
    else if (l.includes('] initial list of endpointslices done')) this.slicesListedMs ??= since;
    else if (l.includes('] initial lists received')) this.listedMs ??= since;
    else if (l.includes('] nf_tables batch sent')) {
      const f = logFields(l);
      this.pending = { ...this.pending, encodeMs: f.encodeMs, kernelMs: f.kernelMs, batchMB: round((f.bytes ?? 0) / MiB), messages: f.messages };
    } else if (l.includes('] nftables sync applied')) {
      const f = logFields(l);
      if (f.full === 1) this.pending = { ...this.pending, listMs: f.listMs, compileMs: f.compileMs, applyMs: f.applyMs, indexMs: f.indexMs };
    } else if (l.includes('ebpf] synced full=true')) {
      const f = logFields(l);
      this.pending = { ...this.pending, attachMs: f.attachMs, dumpMs: f.dumpMs, mapsMs: f.mapsMs };
    } else if (l.includes('] full sync done')) {
      const f = logFields(l);
      this.fullSyncs.push({ endMs: since, durationMs: f.durationMs ?? 0, planMs: f.planMs ?? 0, ...this.pending } as DaemonFullSync);
      this.pending = {};
    } else if (l.includes('] partial sync done')) {
      this.partialEnds.push(at);
      this.pending = {};
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 100 ms until it holds or `ms` pass. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(100);
}

/** Samples VmRSS every 500 ms until four samples in a row lie within 2% (or 30 s pass). */
async function steadyRss(pid: number): Promise<void> {
  const recent: number[] = [];
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    recent.push(statusKB(pid).VmRSS ?? 0);
    if (recent.length > 4) recent.shift();
    if (recent.length === 4 && Math.max(...recent) - Math.min(...recent) <= 0.02 * Math.max(...recent)) return;
    await sleep(500);
  }
}

/** KUBE-SERVICES' jumps to a service chain, as one variant of iptables-save lists them. */
async function serviceJumps(ns: string, save: 'iptables-save' | 'iptables-nft-save' | 'iptables-legacy-save'): Promise<number> {
  const r = await runIn(ns, [save, '-t', 'nat'], { allowFailure: true });
  return r.stdout.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ') && l.includes('-j KUBE-SVC-')).length;
}

async function countRules(ns: string, mode: DaemonOptions['mode'], bpf?: EbpfPlace): Promise<number> {
  if (mode === 'nftables') {
    // Frontends with a chain are in service-ips; ClusterIP-only ones in the endpoint-count sets
    // (`n-tcp-3`, docs/nftables.md), whose names a terse listing gives without their elements.
    const elementsOf = async (what: 'map' | 'set', name: string): Promise<number> => {
      const r = await runIn(ns, ['nft', '-j', 'list', what, 'ip', 'ferry', name], { allowFailure: true });
      try {
        const j = JSON.parse(r.stdout) as { nftables: { map?: { elem?: unknown[] }; set?: { elem?: unknown[] } }[] };
        return j.nftables.reduce((n, o) => n + ((o.map ?? o.set)?.elem?.length ?? 0), 0);
      } catch {
        return 0;
      }
    };
    let n = await elementsOf('map', 'service-ips');
    const r = await runIn(ns, ['nft', '-t', '-j', 'list', 'sets', 'ip'], { allowFailure: true });
    let names: string[] = [];
    try {
      const j = JSON.parse(r.stdout) as { nftables: { set?: { table?: string; name?: string } }[] };
      names = j.nftables.flatMap((o) => (o.set?.table === 'ferry' && /^n-(tcp|udp|sctp)-\d+$/.test(o.set.name ?? '') ? [o.set.name!] : []));
    } catch {
      names = [];
    }
    for (const name of names) n += await elementsOf('set', name);
    return n;
  }
  if (mode === 'ebpf') {
    // Socket-level frontends in the pinned map (a ClusterIP:port each, and NodePorts per address).
    if (!bpf) return 0;
    const contents = await new KernelBpfMaps({ pinDir: bpf.pinDir, cgroupRoot: bpf.cgroup, interfaces: [] }).dump().catch(() => undefined);
    return contents?.ferry_svc.count ?? 0;
  }
  if (mode === 'iptables' || mode === 'iptables-legacy') {
    return serviceJumps(ns, mode === 'iptables' ? 'iptables-save' : 'iptables-legacy-save');
  }
  const r = await runIn(ns, ['ip', '-o', 'addr', 'show', 'dev', 'ferry0'], { allowFailure: true });
  return r.stdout.split('\n').filter((l) => l.includes(' inet ')).length;
}

/** Removes the mode's rules behind ferry's back, as another program or an operator might. */
async function sabotage(ns: string, mode: DaemonOptions['mode'], bpf?: EbpfPlace): Promise<void> {
  if (mode === 'ebpf') {
    // The connect4 program's link pin: with it gone the link is released and connects to
    // Services are no longer load-balanced until ferry notices (intact()) and syncs in full.
    if (bpf) rmSync(join(bpf.pinDir, 'link_ferry_connect4'), { force: true });
    return;
  }
  if (mode === 'nftables') {
    // ferry's tables (ip, and ip6 when it serves IPv6) go in one transaction, as one program's
    // one change: two `nft` runs arrive ~0.4 s apart at 10k Services, each a repair of its own,
    // and three resyncs then made five repairs within 10 s — ferry's guard against a repair
    // loop spaced the next one by 5 s (docs/bench.md, "Daemon").
    // Not `nft list tables` first to see which exist: with that listing each resync's repair
    // measured ~2 s longer at 10k Services.
    const both = await runIn(ns, ['nft', '-f', '-'], { input: 'delete table ip ferry\ndelete table ip6 ferry\n', allowFailure: true });
    if (both.exitCode !== 0) await runIn(ns, ['nft', 'delete', 'table', 'ip', 'ferry']);
  } else if (mode === 'iptables' || mode === 'iptables-legacy') {
    const iptables = mode === 'iptables' ? 'iptables' : 'iptables-legacy';
    await runIn(ns, [iptables, '-w', '-t', 'nat', '-F', 'KUBE-SERVICES']);
    await runIn(ns, [iptables, '-w', '-t', 'nat', '-X', 'KUBE-PROXY-CANARY']);
  } else {
    await runIn(ns, ['ip', 'addr', 'flush', 'dev', 'ferry0']);
  }
}

/**
 * When ferry synced the change stored at `changedAt` (epoch ms) during the repair that ended at
 * `repairEnd`: the first partial sync ending after the change (after the repair, unless the
 * repair began later than the change: then negative), or, when none comes within 3 s after the
 * repair, the repair itself (the change arrived before its snapshot).
 */
async function changeDuringRepair(phases: PhaseLog, repairEnd: number, changedAt: number): Promise<RepairChange> {
  const after = () => phases.partialEnds.find((t) => t >= changedAt);
  const end = Date.now() + 3000;
  while (after() === undefined && Date.now() < end) await sleep(20);
  const t = after();
  if (t === undefined) return { changeMs: Math.round(repairEnd - changedAt), afterRepairMs: null };
  return { changeMs: Math.round(t - changedAt), afterRepairMs: Math.round(t - repairEnd) };
}

/** A full sync's parts as ferry logged them (compile, encode and kernel: nftables mode only). */
function describeSync(f: DaemonFullSync): string {
  const parts = [`plan ${f.planMs}`];
  if (f.compileMs !== undefined) parts.push(`compile ${f.compileMs}`);
  if (f.encodeMs !== undefined) parts.push(`encode ${f.encodeMs}`, `kernel ${f.kernelMs}; ${f.batchMB} MiB, ${f.messages} messages`);
  if (f.indexMs !== undefined) parts.push(`then index ${f.indexMs}`);
  return `${f.durationMs} ms (${parts.join(', ')})`;
}

/**
 * Where ebpf mode attaches in this phase: a cgroup and a pin directory of the run's own (prefix
 * "fydm"), never the host's cgroup root; both are removed at the end, also after a failure.
 */
interface EbpfPlace {
  readonly cgroup: string;
  readonly pinDir: string;
}

async function ebpfPlace(): Promise<EbpfPlace> {
  const tag = `fydm${Math.random().toString(36).slice(2, 6)}`;
  const place = { cgroup: join(await resolveCgroupRoot(undefined), tag), pinDir: `/sys/fs/bpf/${tag}` };
  await makeCgroup(place.cgroup);
  return place;
}

/** Called once every child has exited: the probe agent was the cgroup's only process. */
async function removeEbpfPlace(place: EbpfPlace): Promise<void> {
  await removePins(place.pinDir).catch(() => undefined);
  await removeCgroup(place.cgroup).catch(() => undefined);
}

export async function runDaemon(opts: DaemonOptions): Promise<DaemonRow> {
  const { mode, size } = opts;
  const work = mkdtempSync(join(tmpdir(), 'ferry-daemon-'));
  const kubeconfig = join(work, 'kubeconfig');
  const ns = await createBenchNetns();
  const children: ChildProcess[] = [];
  const label = `${mode} ${size.services}x${size.endpoints}`;
  let bpf: EbpfPlace | undefined;
  try {
    if (mode === 'ebpf') bpf = await ebpfPlace();
    // The node: its address on an interface, and a default route so a SYN to a Service IP
    // has somewhere to go before ferry's rules exist (it is lost there, and retried).
    // (A veth pair with both ends here: this kernel has no dummy module.)
    await runIn(ns, ['ip', 'link', 'add', 'node0', 'type', 'veth', 'peer', 'name', 'node0p']);
    await runIn(ns, ['ip', 'addr', 'add', `${NODE_IP}/32`, 'dev', 'node0']);
    await runIn(ns, ['ip', 'addr', 'add', `${PROBE_ENDPOINT_IP}/32`, 'dev', 'node0']);
    await runIn(ns, ['ip', 'link', 'set', 'node0', 'up']);
    await runIn(ns, ['ip', 'link', 'set', 'node0p', 'up']);
    await runIn(ns, ['ip', 'route', 'add', 'default', 'dev', 'node0']);

    if (mode === 'iptables-legacy') {
      // What kubelet leaves on a node that uses iptables-legacy: ferry's iptables mode (like
      // kube-proxy's iptables wrapper) then writes with iptables-legacy-restore.
      const r = await runIn(ns, ['iptables-legacy', '-w', '5', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT'], { allowFailure: true });
      if (r.exitCode !== 0) throw new DaemonBenchError(`${label}: cannot create kubelet's hint chain with iptables-legacy: ${r.stderr.trim()}`);
    }

    const api = new LineChild(spawnIn(ns, [process.execPath, join(HERE, 'daemon-apiserver.js'), String(size.services), String(size.endpoints), kubeconfig]));
    children.push(api.child);
    const first = await api.next(opts.timeoutMs, 'API server start').catch((e: unknown) => {
      throw new DaemonBenchError(`${e instanceof Error ? e.message : String(e)}: ${logTail(api.child)}`);
    });
    const info = JSON.parse(first) as { url: string; probeIP: string; probePort: number; seedMs: number };
    opts.progress(`  ${label}: API server seeded in ${info.seedMs} ms`);
    const server = new LineChild(spawnIn(ns, [process.execPath, join(HERE, 'loadgen.js'), 'serve', '--conn-port', '9000', '--sink-port', '9001']));
    children.push(server.child);
    await server.next(10_000, 'loadgen serve');
    const agent = new LineChild(spawnIn(ns, [process.execPath, join(HERE, 'loadgen.js'), 'agent']));
    children.push(agent.child);
    // ebpf balances connects at the socket level for processes in its cgroup: the probe's there.
    if (bpf) writeFileSync(join(bpf.cgroup, 'cgroup.procs'), String(agent.child.pid));

    // bin/ferry itself, as an operator runs it: its shebang carries the node flags ferry wants.
    const argv = [
      opts.ferryBin ?? FERRY_BIN, '-v', '2', '--kubeconfig', kubeconfig, '--hostname-override', 'node-1', '--proxy-mode', mode === 'iptables-legacy' ? 'iptables' : mode,
      '--cluster-cidr', POD_CIDR, '--metrics-bind-address', METRICS, '--healthz-bind-address', '127.0.0.1:10256',
      ...(bpf ? ['--ebpf-cgroup-root', bpf.cgroup, '--ebpf-bpffs-dir', bpf.pinDir] : []),
    ];
    const t0 = performance.timeOrigin + performance.now();
    const phases = new PhaseLog(t0);
    if (opts.nodeFlags) argv.unshift(process.execPath, ...shebangFlags(argv[0]!), ...opts.nodeFlags.split(/\s+/).filter(Boolean));
    const ferry = spawnIn(ns, argv, false, undefined, (l) => phases.line(l), bpf !== undefined);
    const exited = new Promise<never>((_, reject) =>
      ferry.once('exit', (code, sig) => reject(new DaemonBenchError(`${label}: ferry exited (${code ?? sig}): ${logTail(ferry)}`))),
    );
    exited.catch(() => undefined);
    children.push(ferry);
    const pid = ferry.pid;
    if (pid === undefined) throw new DaemonBenchError('ferry did not start');
    const waitProbe = async (what: string): Promise<number> => {
      // A ferry that exits fails the measurement at once, not after the probe's timeout.
      const r = await Promise.race([agent.ask(`wait ${info.probeIP} ${info.probePort} ${opts.timeoutMs}`, opts.timeoutMs + 5000), exited]);
      if (!r.startsWith('ok ')) throw new DaemonBenchError(`${label}: ${what}: probe Service never answered (${r}); ferry${ferry.exitCode !== null ? ` exited ${ferry.exitCode}` : ''}: ${logTail(ferry)}`);
      return Number(r.split(' ')[1]);
    };
    const readyMs = Math.round((await waitProbe('start')) - t0);
    const readyCpuMs = cpuMs(pid);
    const rulesFound = await countRules(ns, mode, bpf);
    if (mode === 'iptables-legacy') {
      // A run whose rules went to nf_tables instead would measure the iptables-nft path.
      const nft = await serviceJumps(ns, 'iptables-nft-save');
      if (rulesFound === 0 || nft > 0) throw new DaemonBenchError(`${label}: ferry's rules are not in iptables-legacy (${rulesFound} service jumps there, ${nft} in iptables-nft)`);
    }
    opts.progress(`  ${label}: ready in ${readyMs} ms, ${rulesFound} service rules in the kernel`);
    // The first sync's log line comes after its conntrack cleanup, later than the probe's answer.
    await until(() => phases.fullSyncs.length >= 1, opts.timeoutMs);
    await steadyRss(pid);
    const firstSync = phases.fullSyncs[0];
    const startup: DaemonStartup = {
      readyCpuMs,
      hwmAfterStartMB: round((statusKB(pid).VmHWM ?? 0) / 1024),
      startedMs: phases.startedMs ?? -1,
      servicesListedMs: phases.servicesListedMs ?? -1,
      slicesListedMs: phases.slicesListedMs ?? -1,
      listedMs: phases.listedMs ?? -1,
      ...(firstSync ? { firstSync } : {}),
    };
    opts.progress(
      `  ${label}: CPU to live ${readyCpuMs} ms, VmHWM after start ${startup.hwmAfterStartMB} MiB; process start → ferry logging ${startup.startedMs} ms, lists done ${startup.listedMs} ms (services ${startup.servicesListedMs}, slices ${startup.slicesListedMs})` +
        (firstSync ? `, first full sync ${describeSync(firstSync)}` : ''),
    );
    const steady = await sample(ns, pid);
    opts.progress(`  ${label}: steady RSS ${steady.rssMB} MiB (heap ${steady.heapUsedMB}/${steady.heapTotalMB}, external ${steady.externalMB}, native ~${steady.nativeMB}, files ${steady.fileMB})`);
    const resyncs: DaemonRow['resyncs'][number][] = [];
    for (let i = 0; i < opts.resyncs; i++) {
      const s0 = performance.timeOrigin + performance.now();
      await sabotage(ns, mode, bpf);
      // A change while the repair runs (docs/bench.md, "Daemon"): Service 7i+1's slice. nftables
      // only, where the tamper watch starts the repair at once; the other modes repair at their
      // next intact check, seconds later, and would sync the change before it.
      let changedAt: number | undefined;
      if (mode === 'nftables') {
        await sleep(Math.max(20, Math.round((firstSync?.durationMs ?? 60) / 3)));
        const answer = await api.ask(`change ${(7 * i + 1) % size.services}`, 10_000);
        if (answer.startsWith('changed ')) changedAt = Number(answer.split(' ')[1]);
        else opts.progress(`  ${label}: resync ${i + 1}: no change during the repair (${answer})`);
      }
      const repairMs = Math.round((await waitProbe(`resync ${i + 1}`)) - s0);
      await until(() => phases.fullSyncs.length >= i + 2, opts.timeoutMs);
      const sync = phases.fullSyncs.length > i + 1 ? phases.fullSyncs[phases.fullSyncs.length - 1] : undefined;
      const change = sync && changedAt !== undefined ? await changeDuringRepair(phases, t0 + sync.endMs, changedAt) : undefined;
      await steadyRss(pid);
      const memory = await sample(ns, pid);
      resyncs.push({ repairMs, memory, ...(sync ? { sync } : {}), ...(change ? { change } : {}) });
      opts.progress(
        `  ${label}: resync ${i + 1}: repaired in ${repairMs} ms, RSS ${memory.rssMB} MiB` +
          (sync ? ` (full sync ${describeSync(sync)})` : '') +
          (change ? `; a change during it synced ${change.afterRepairMs === null ? `in the repair, ${change.changeMs} ms after it was stored` : `${change.afterRepairMs} ms after the repair`}` : ''),
      );
    }
    const hwmMB = round((statusKB(pid).VmHWM ?? 0) / 1024);
    opts.progress(`  ${label}: peak (VmHWM) ${hwmMB} MiB`);
    return { mode, ...size, readyMs, startup, rulesFound, steady, resyncs, hwmMB };
  } finally {
    for (const c of children.reverse()) {
      c.stdin?.end();
      if (c.exitCode === null && c.signalCode === null) {
        const exited = new Promise<void>((r) => c.once('exit', () => r()));
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    }
    if (bpf) await removeEbpfPlace(bpf);
    await deleteBenchNetns(ns);
    if (existsSync(work)) rmSync(work, { recursive: true, force: true });
  }
}
