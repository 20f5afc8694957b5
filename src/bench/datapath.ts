/**
 * Phase 4, the data path, on its own simulated cluster: ONE NODE PER MODE, every mode loaded at
 * once, so rounds interleave (A B C … A B C …) without restarting anything and a noisy neighbour
 * on this shared machine lands on every mode alike instead of on whichever ran at that moment.
 *
 * Node k runs mode k's proxy (a ferry daemon, the reference kube-proxy layout applied with
 * iptables-restore, or nothing for `direct`) with a server pod `s<k>` and a client pod `c<k>`;
 * its target NodePort Service selects only `s<k>` and sorts among the filler Services at about
 * half way. Each measurement is open loop: the client pod (ClusterIP path) or the outside client
 * (NodePort path) starts R connections per second for S seconds, each one request and one
 * answer, whatever earlier ones are doing; it reports successes, timeouts and errors apart,
 * latency percentiles and its namespace's TCP counters (SYN retransmits). CPU is per process
 * from /proc/PID/stat (utime + stime) of the load generator, the server and the proxy: this
 * kernel has no CONFIG_IRQ_TIME_ACCOUNTING, so the softirq work of NAT and forwarding is charged
 * to the task it interrupts — the sender, i.e. these processes.
 *
 * After every readiness wait and before every round the node namespaces' conntrack tables are
 * flushed: the readiness probes sent SYNs before the rules existed, and the NAT-less conntrack
 * entries they left (SYN_SENT, 120 s) swallowed every later connection that reused one of their
 * source ports — the stall behind the tenfold swings this phase used to report (docs/bench.md).
 *
 * Traffic stays inside the cluster's namespaces; ClusterIPs come from 10.96.0.0/16 (44k
 * Services do not fit the simulator's /18) and are only ever dialled where a proxy translates them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { CoreV1Api, DiscoveryV1Api, KubeConfig, type V1Service } from '@kubernetes/client-node';
import { createCluster, type Cluster, type SimNode, type SimPod } from '../sim/cluster/index.js';
import { startApiServer, type ApiServer } from '../sim/apiserver/index.js';
import { runIn } from '../util/exec.js';
import { Agent, applyReferenceLayout, proxyArgv, waitReady } from './cluster.js';
import { summarize } from './stats.js';
import { readConntrackStat, type RateResult } from './tcpstat.js';
import type { IptablesVariant } from '../backends/iptables/runner.js';
import type { DatapathMode, DatapathPath, DatapathRound, DatapathRow, ProxyUnderTest } from './types.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const LOADGEN = join(HERE, 'loadgen.js');
const NS = 'default';
const CONN_PORT = 9000;
const SINK_PORT = 9001;
const SERVICE_CIDR = '10.96.0.0/16';

/**
 * The modes the phase knows. Adding one is one line; a ferry mode the binary does not have (yet)
 * is skipped with a note, not a failure. `maxServices`: above it the mode is not loaded (why).
 */
export interface DatapathModeSpec {
  readonly mode: DatapathMode;
  readonly kind: 'ferry' | 'reference' | 'direct' | 'kube-proxy';
  /** The ferry mode a `ferry` lane runs (default: `mode`). */
  readonly proxy?: ProxyUnderTest;
  /**
   * The iptables variant of the lane's node. `legacy`: kubelet's hint chain is in
   * iptables-legacy (ferry's iptables mode detects it as kube-proxy's wrapper does) and the
   * reference layout is restored with iptables-legacy-restore.
   */
  readonly iptables?: IptablesVariant;
  readonly maxServices?: number;
  readonly limit?: string;
}

const IPT_LIMIT =
  "iptables-nft 1.8.9's restore with --noflush (kube-proxy's and ferry's) is quadratic in chains: 17 s at 10k Services x 1 endpoint, an estimated 5+ minutes per load at 44k; the -legacy lanes measure the iptables layout at every size (docs/bench.md)";
export const DATAPATH_MODES: readonly DatapathModeSpec[] = [
  { mode: 'direct', kind: 'direct' },
  { mode: 'nftables', kind: 'ferry' },
  { mode: 'iptables', kind: 'ferry', maxServices: 10_000, limit: IPT_LIMIT },
  {
    mode: 'userspace',
    kind: 'ferry',
    maxServices: 10_000,
    limit: "one listening socket per frontend: 44k Services need more than this sandbox's hard open-files limit of 20,000, which cannot be raised here (docs/userspace.md, \"Limits at scale\")",
  },
  { mode: 'reference', kind: 'reference', maxServices: 10_000, limit: IPT_LIMIT },
  { mode: 'ebpf', kind: 'ferry' },
  // iptables-legacy-restore loads the reference at 10k x 1 in 0.4 s (iptables-nft: 17 s).
  { mode: 'iptables-legacy', kind: 'ferry', proxy: 'iptables', iptables: 'legacy' },
  { mode: 'reference-legacy', kind: 'reference', iptables: 'legacy' },
];

export interface DatapathLoad {
  /** New connections per second offered, and for how long each measurement lasts. */
  readonly offered: number;
  readonly seconds: number;
  readonly rounds: number;
  /** A connection not answered within this is a timeout. */
  readonly timeoutMs: number;
}

export class DatapathBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatapathBenchError';
  }
}

interface Lane {
  readonly spec: DatapathModeSpec;
  readonly node: SimNode;
  srv?: SimPod;
  server?: ChildProcess;
  podAgent?: Agent;
  proxy?: ChildProcess;
  logFile: string;
  /** Why the lane is not measured (not available, over its limit, failed). */
  off?: string;
  loaded: boolean;
  target?: { name: string; clusterIP: string; nodePort: number };
}

/** Empties the iptables-legacy tables of a node (what `nft flush ruleset` does for nftables). */
async function flushLegacy(netns: string): Promise<void> {
  for (const table of ['nat', 'filter', 'mangle']) {
    await runIn(netns, ['iptables-legacy', '-w', '5', '-t', table, '-F'], { allowFailure: true });
    await runIn(netns, ['iptables-legacy', '-w', '5', '-t', table, '-X'], { allowFailure: true });
  }
}

function fillerName(i: number): string {
  return `f-${String(i).padStart(5, '0')}`;
}

function svc(name: string, spec: V1Service['spec']): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec };
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** utime + stime of a process in ms (clock ticks are 100 Hz on Linux), 0 when it is gone. */
export function procCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14-17 of proc(5), counted from after the command name: utime stime cutime cstime.
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
  } catch {
    return 0;
  }
}

/** Machine-wide busy fraction between two /proc/stat samples, and the 1-minute load average. */
export function machineBusy(a: readonly number[], b: readonly number[]): number {
  const d = b.map((x, i) => x - (a[i] ?? 0));
  const total = d.reduce((x, y) => x + y, 0);
  const idle = (d[3] ?? 0) + (d[4] ?? 0);
  return total > 0 ? (total - idle) / total : 0;
}

function cpuLine(): number[] {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  return line.trim().split(/\s+/).slice(1).map(Number);
}

export interface DatapathOptions {
  readonly work: string;
  readonly progress: (msg: string) => void;
  readonly kubeProxy: string | null;
  readonly modes: readonly DatapathMode[];
  readonly readyTimeoutMs: number;
  /** false: leave conntrack alone (only to show the stall the flush prevents; docs/bench.md). */
  readonly flushConntrack?: boolean;
}

export class DatapathBench {
  private cluster!: Cluster;
  private api!: ApiServer;
  private core!: CoreV1Api;
  private discovery!: DiscoveryV1Api;
  private kubeconfig = '';
  private clientAgent!: Agent;
  private lanes: Lane[] = [];
  private fillers = 0;

  constructor(private readonly opts: DatapathOptions) {}

  async up(): Promise<void> {
    const specs = DATAPATH_MODES.filter((m) => this.opts.modes.includes(m.mode));
    if (this.opts.kubeProxy) specs.push({ mode: 'kube-proxy', kind: 'kube-proxy', maxServices: 10_000, limit: IPT_LIMIT });
    this.opts.progress(`datapath: creating a cluster with one node per mode (${specs.map((s) => s.mode).join(', ')})`);
    // The LAN addresses are shared with every other simulated cluster on the machine: wait our turn.
    this.cluster = await createCluster({ nodes: specs.length, lanWaitMs: 20 * 60_000 });
    this.api = await startApiServer({ host: this.cluster.hostIP, port: 0, serviceCIDRs: [SERVICE_CIDR], watchHistory: 400_000 });
    this.kubeconfig = join(this.opts.work, 'dp-kubeconfig');
    this.api.writeKubeconfig(this.kubeconfig);
    await this.cluster.attachApiServer(this.kubeconfig);
    const kc = new KubeConfig();
    kc.loadFromFile(this.kubeconfig);
    this.core = kc.makeApiClient(CoreV1Api);
    this.discovery = kc.makeApiClient(DiscoveryV1Api);
    this.lanes = specs.map((spec, i) => ({ spec, node: this.cluster.nodes[i]!, logFile: join(this.opts.work, `dp-${spec.mode}.log`), loaded: false }));
    for (const [i, lane] of this.lanes.entries()) {
      // The first server also backs every filler Service, so each filler has one endpoint.
      const labels: Record<string, string> = { dp: lane.spec.mode, ...(i === 0 ? { filler: 'yes' } : {}) };
      lane.srv = await this.cluster.addPod({ name: `s${i + 1}`, node: lane.node.name, labels });
      const cli = await this.cluster.addPod({ name: `c${i + 1}`, node: lane.node.name, labels: { app: 'client' } });
      lane.server = this.cluster.spawnIn(lane.srv.netns, [process.execPath, LOADGEN, 'serve', '--conn-port', String(CONN_PORT), '--sink-port', String(SINK_PORT)], { pipe: true });
      await waitReady(lane.server, 20_000, (m) => new DatapathBenchError(m));
      lane.podAgent = new Agent(this.cluster.spawnIn(cli.netns, [process.execPath, LOADGEN, 'agent'], { pipe: true }));
    }
    this.clientAgent = new Agent(this.cluster.spawnIn(this.cluster.clientNetns, [process.execPath, LOADGEN, 'agent'], { pipe: true }));
  }

  async down(): Promise<void> {
    for (const lane of this.lanes) await this.stopLane(lane);
    for (const lane of this.lanes) lane.podAgent?.close();
    this.clientAgent?.close();
    await this.cluster?.down();
    await this.api?.close();
  }

  /** Grows the filler Services to `n`, stopping first the modes that cannot be loaded at n. */
  async setServices(n: number): Promise<{ createMs: number }> {
    for (const lane of this.lanes) {
      if (lane.spec.maxServices !== undefined && n > lane.spec.maxServices && !lane.off?.startsWith('not loaded')) {
        await this.stopLane(lane);
        lane.off = `not loaded above ${lane.spec.maxServices} Services: ${lane.spec.limit ?? ''}`;
      }
    }
    const t0 = Date.now();
    if (n > this.fillers) {
      const todo = Array.from({ length: n - this.fillers }, (_, i) => this.fillers + i);
      this.opts.progress(`datapath: creating ${todo.length} Services (to ${n})`);
      let done = 0;
      await pool(todo, 48, async (i) => {
        await this.core.createNamespacedService({
          namespace: NS,
          body: svc(fillerName(i), { selector: { filler: 'yes' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] }),
        });
        if (++done % 5000 === 0) this.opts.progress(`datapath: ${done}/${todo.length} Services created (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      });
      this.fillers = n;
    }
    // Each lane's target sorts among the fillers at about half way; it moves when they grow.
    const mid = fillerName(Math.floor(this.fillers / 2));
    for (const [i, lane] of this.lanes.entries()) {
      if (lane.spec.kind === 'direct') continue;
      const name = `${mid}-t${i + 1}`;
      if (lane.target?.name === name) continue;
      if (lane.target) await this.core.deleteNamespacedService({ name: lane.target.name, namespace: NS });
      const s = await this.core.createNamespacedService({
        namespace: NS,
        body: svc(name, { type: 'NodePort', selector: { dp: lane.spec.mode }, ports: [{ name: 'conn', port: 80, targetPort: CONN_PORT, protocol: 'TCP' }] }),
      });
      lane.target = { name, clusterIP: s.spec?.clusterIP ?? '', nodePort: s.spec?.ports?.[0]?.nodePort ?? 0 };
    }
    await this.api.settled();
    return { createMs: Date.now() - t0 };
  }

  /**
   * Brings every lane's proxy up to date at the current size: starts daemons not yet running,
   * (re)applies the reference layout, waits until each target answers on both paths. Returns
   * the time each took (start → both paths answer), by mode.
   */
  async load(): Promise<{ took: Map<DatapathMode, number>; stale: number }> {
    const took = new Map<DatapathMode, number>();
    for (const lane of this.lanes) {
      if (lane.off || lane.spec.kind === 'direct') continue;
      const t0 = Date.now();
      try {
        if (lane.spec.kind === 'reference') await this.applyReference(lane);
        else if (!lane.proxy) await this.startProxy(lane);
        await this.waitTarget(lane);
        if (lane.spec.iptables === 'legacy') await this.checkLegacy(lane);
        lane.loaded = true;
        took.set(lane.spec.mode, Date.now() - t0);
        this.opts.progress(`datapath: ${lane.spec.mode} @${this.fillers}: ready in ${Date.now() - t0} ms`);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        const exitedAtStart = lane.proxy !== undefined && lane.proxy.exitCode !== null && !lane.loaded;
        await this.stopLane(lane);
        // A ferry mode the binary (or this kernel) does not have is "not available"; a lane that
        // worked at a smaller size and broke is a failure.
        lane.off = exitedAtStart && lane.spec.kind === 'ferry' ? `not available: ferry exited at start (${this.tail(lane)})` : `failed: ${msg}`;
        this.opts.progress(`datapath: ${lane.spec.mode} @${this.fillers}: ${lane.off}`);
      }
    }
    return { took, stale: await this.flushConntrack() };
  }

  /** Lanes and why each is not measured (undefined: measured). */
  status(): { mode: DatapathMode; off?: string }[] {
    return this.lanes.map((l) => ({ mode: l.spec.mode, ...(l.off ? { off: l.off } : {}) }));
  }

  private async startProxy(lane: Lane): Promise<void> {
    const mode = lane.spec.kind === 'kube-proxy' ? 'kube-proxy' : (lane.spec.proxy ?? (lane.spec.mode as ProxyUnderTest));
    if (lane.spec.iptables === 'legacy') {
      // What kubelet leaves on a node that uses iptables-legacy; ferry's iptables mode (like
      // kube-proxy's iptables-wrapper) takes the variant from it.
      const r = await runIn(lane.node.netns, ['iptables-legacy', '-w', '5', '-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT'], { allowFailure: true });
      if (r.exitCode !== 0 && !/exists/i.test(r.stderr)) throw new DatapathBenchError(`${lane.spec.mode}: cannot create kubelet's hint chain with iptables-legacy: ${r.stderr.trim()}`);
    }
    const { argv, hostMounts } = proxyArgv(this.cluster, lane.node, mode, this.kubeconfig, this.opts.kubeProxy);
    lane.proxy = this.cluster.spawnIn(lane.node.netns, argv, { logFile: lane.logFile, hostMounts });
  }

  private async applyReference(lane: Lane): Promise<void> {
    await runIn(lane.node.netns, ['nft', 'flush', 'ruleset'], { allowFailure: true });
    if (lane.spec.iptables === 'legacy') await flushLegacy(lane.node.netns);
    await applyReferenceLayout(this.core, this.discovery, this.cluster, lane.node, lane.spec.iptables);
  }

  /** A legacy lane whose rules went to nf_tables instead would measure the wrong thing. */
  private async checkLegacy(lane: Lane): Promise<void> {
    const legacy = await runIn(lane.node.netns, ['iptables-legacy-save', '-t', 'nat'], { allowFailure: true });
    const nft = await runIn(lane.node.netns, ['nft', 'list', 'tables'], { allowFailure: true });
    if (!legacy.stdout.includes(':KUBE-SERVICES ') || nft.stdout.trim() !== '') {
      throw new DatapathBenchError(`${lane.spec.mode}: the rules are not (only) in iptables-legacy: nf_tables holds "${nft.stdout.trim().replace(/\s+/g, ' ')}"`);
    }
  }

  private async waitTarget(lane: Lane): Promise<void> {
    const t = lane.target!;
    const r = await this.waitFor(lane, lane.podAgent!, t.clusterIP, 80);
    if (!r.startsWith('ok')) throw new DatapathBenchError(`${lane.spec.mode}: ClusterIP ${t.clusterIP}:80 never answered from its pod (${r}); log: ${this.tail(lane)}`);
    const r2 = await this.waitFor(lane, this.clientAgent, lane.node.ip, t.nodePort);
    if (!r2.startsWith('ok')) throw new DatapathBenchError(`${lane.spec.mode}: NodePort ${lane.node.ip}:${t.nodePort} never answered from the client (${r2}); log: ${this.tail(lane)}`);
  }

  /**
   * The agent's `wait` in 2 s slices, checking between slices that the proxy still runs: an
   * agent answers one command at a time, so a long wait for a dead proxy would hold it (and every
   * measurement queued behind it) for the whole start-up timeout.
   */
  private async waitFor(lane: Lane, agent: Agent, addr: string, port: number): Promise<string> {
    const end = Date.now() + this.opts.readyTimeoutMs;
    let last = 'fail never tried';
    while (Date.now() < end) {
      const p = lane.proxy;
      if (p && (p.exitCode !== null || p.signalCode !== null)) return `fail the proxy exited (${p.exitCode ?? p.signalCode})`;
      last = await agent.ask(`wait ${addr} ${port} ${Math.min(2000, Math.max(1, end - Date.now()))}`);
      if (last.startsWith('ok')) return last;
    }
    return last;
  }

  /**
   * Empties each node's conntrack table. The readiness probes above sent SYNs before the rules
   * were in; each left a conntrack entry without a NAT binding that lives 120 s (SYN_SENT), and
   * a later SYN reusing its source port follows that entry — untranslated, to the ClusterIP
   * itself — and is lost, retransmit after retransmit. Returns how many entries towards a
   * target ClusterIP it found untranslated (reply source = the ClusterIP).
   */
  async flushConntrack(): Promise<number> {
    let stale = 0;
    for (const lane of this.lanes) {
      const cip = lane.target?.clusterIP;
      if (cip) {
        // Untranslated: the reply would come from the ClusterIP itself (no DNAT binding).
        const l = await runIn(lane.node.netns, ['conntrack', '-L', '-p', 'tcp', '--orig-dst', cip], { allowFailure: true });
        stale += l.stdout.split('\n').filter((x) => x.includes(` src=${cip} `) && x.indexOf(` src=${cip} `) > x.indexOf(` dst=${cip} `)).length;
      }
      if (this.opts.flushConntrack !== false) await runIn(lane.node.netns, ['conntrack', '-F'], { allowFailure: true });
    }
    return stale;
  }

  private async conntrackStat(lane: Lane): Promise<Record<string, number>> {
    const r = await runIn(lane.node.netns, ['cat', '/proc/net/stat/nf_conntrack'], { allowFailure: true });
    return readConntrackStat(r.stdout);
  }

  private tail(lane: Lane): string {
    if (!existsSync(lane.logFile)) return '(no log)';
    return readFileSync(lane.logFile, 'utf8').trim().split('\n').slice(-3).join(' | ').slice(0, 400);
  }

  private async stopLane(lane: Lane): Promise<void> {
    const child = lane.proxy;
    lane.proxy = undefined;
    lane.loaded = false;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (this.cluster) {
      await runIn(lane.node.netns, ['nft', 'flush', 'ruleset'], { allowFailure: true });
      if (lane.spec.iptables === 'legacy') await flushLegacy(lane.node.netns);
      await runIn(lane.node.netns, ['ip', 'link', 'del', 'ferry0'], { allowFailure: true });
    }
  }

  /**
   * `load.rounds` interleaved rounds over every measured lane and both paths; the lane order
   * rotates each round so no mode always follows the same one. Returns one row per lane and path.
   */
  async measure(load: DatapathLoad): Promise<{ rows: DatapathRow[]; rounds: DatapathRound[]; staleBetweenRounds: number }> {
    const live = this.lanes.filter((l) => !l.off);
    const rounds: DatapathRound[] = [];
    const jobs = live.flatMap((lane) =>
      (lane.spec.kind === 'direct' ? (['clusterip'] as DatapathPath[]) : (['clusterip', 'nodeport'] as DatapathPath[])).map((path) => ({ lane, path })),
    );
    let staleBetweenRounds = 0;
    for (let r = 0; r < load.rounds; r++) {
      // Every round starts from empty conntrack tables, whatever the last one left (TIME_WAIT
      // entries, timeouts): the same starting point for every mode.
      staleBetweenRounds += await this.flushConntrack();
      const rot = jobs.map((_, i) => jobs[(i + r * 2) % jobs.length]!);
      for (const { lane, path } of rot) rounds.push(await this.once(lane, path, load, r));
      const done = rounds.filter((x) => x.round === r);
      this.opts.progress(`datapath @${this.fillers} round ${r + 1}/${load.rounds}: ${done.map((x) => `${x.mode}/${x.path} ${x.okPerSec}/s cpu ${x.cpuMsPerKConn}`).join(', ')}`);
    }
    const rows: DatapathRow[] = jobs.map(({ lane, path }) => {
      const mine = rounds.filter((x) => x.mode === lane.spec.mode && x.path === path);
      const sum = (f: (x: DatapathRound) => number) => mine.reduce((a, x) => a + f(x), 0);
      return {
        services: this.fillers,
        mode: lane.spec.mode,
        path,
        offered: load.offered,
        rounds: mine.length,
        connPerSec: summarize(mine.map((x) => x.okPerSec)),
        cpuMsPerKConn: summarize(mine.map((x) => x.cpuMsPerKConn)),
        proxyCpuMsPerKConn: summarize(mine.map((x) => x.proxyCpuMsPerKConn)),
        p99Ms: summarize(mine.map((x) => x.p99Ms)),
        ok: sum((x) => x.ok),
        connErrors: sum((x) => x.errors),
        timeouts: sum((x) => x.timeouts),
        synRetransmits: sum((x) => x.synRetransmits),
        stalls: sum((x) => x.stalls),
        ctInsertFailed: sum((x) => x.ctInsertFailed),
        machineBusy: summarize(mine.map((x) => x.machineBusy)),
      };
    });
    return { rows, rounds, staleBetweenRounds };
  }

  private async once(lane: Lane, path: DatapathPath, load: DatapathLoad, round: number): Promise<DatapathRound> {
    const agent = path === 'nodeport' ? this.clientAgent : lane.podAgent!;
    const [addr, port] =
      lane.spec.kind === 'direct' ? [lane.srv!.ip, CONN_PORT] : path === 'nodeport' ? [lane.node.ip, lane.target!.nodePort] : [lane.target!.clusterIP, 80];
    const pids = [lane.server?.pid, lane.proxy?.pid];
    const ct0 = await this.conntrackStat(lane);
    const cpu0 = pids.map(procCpuMs);
    const stat0 = cpuLine();
    const reply = await agent.ask(`rate ${addr} ${port} ${load.offered} ${load.seconds} ${load.timeoutMs}`);
    const cpu1 = pids.map(procCpuMs);
    const busy = machineBusy(stat0, cpuLine());
    const ct1 = await this.conntrackStat(lane);
    let r: RateResult;
    try {
      r = JSON.parse(reply) as RateResult;
    } catch {
      throw new DatapathBenchError(`${lane.spec.mode} ${path}: the load generator answered ${reply}`);
    }
    const serverMs = cpu1[0]! - cpu0[0]!;
    const proxyMs = cpu1[1]! - cpu0[1]!;
    const perK = (ms: number) => (r.ok > 0 ? (ms / r.ok) * 1000 : 0);
    return {
      services: this.fillers,
      mode: lane.spec.mode,
      path,
      round,
      okPerSec: r.okPerSec,
      ok: r.ok,
      errors: Object.values(r.errors).reduce((a, b) => a + b, 0),
      errorKinds: r.errors,
      timeouts: r.timeouts,
      p50Ms: r.p50Ms,
      p99Ms: r.p99Ms,
      synRetransmits: r.tcp['TCPSynRetrans'] ?? 0,
      stalls: r.stalls,
      ctInsertFailed: (ct1['insert_failed'] ?? 0) - (ct0['insert_failed'] ?? 0),
      ctDrop: (ct1['drop'] ?? 0) - (ct0['drop'] ?? 0),
      lagMs: r.lagMs,
      cpuMsPerKConn: Number(perK(r.genCpuMs + serverMs + proxyMs).toFixed(1)),
      proxyCpuMsPerKConn: Number(perK(proxyMs).toFixed(1)),
      genCpuMsPerKConn: Number(perK(r.genCpuMs).toFixed(1)),
      serverCpuMsPerKConn: Number(perK(serverMs).toFixed(1)),
      machineBusy: Number(busy.toFixed(3)),
    };
  }
}
