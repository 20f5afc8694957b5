/**
 * Phase 3 on a simulated cluster (network namespaces + the simulated API server): programming
 * latency end to end (API write → first connection through the Service from a pod), for each
 * proxy under test, at several Service counts. (The data path has its own cluster: datapath.ts.)
 *
 * One node (node-1) runs the proxy under test; on it live the server pod `srv` (label app=web,
 * running loadgen's servers) and the client pod `cli` (running a loadgen agent); the cluster's
 * outside client runs another agent. Filler Services select app=web too, so every one of them
 * has an endpoint. The target Service sorts in the middle of the filler Services, so linear
 * rule chains pay an average, not a best or worst, cost.
 *
 * All traffic stays inside the cluster's namespaces; the cluster library's down() removes them.
 */
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { CoreV1Api, DiscoveryV1Api, KubeConfig, type V1Service } from '@kubernetes/client-node';
import { createCluster, type Cluster, type SimNode } from '../sim/cluster/index.js';
import { startApiServer, type ApiServer } from '../sim/apiserver/index.js';
import { SERVICE_NAME_LABEL } from '../sim/apiserver/endpointslice-controller.js';
import { ChangeTracker } from '../model/tracker.js';
import { planTables } from '../plan/planner.js';
import { runIn } from '../util/exec.js';
import type { IptablesVariant } from '../backends/iptables/runner.js';
import { referenceFull, referenceJumps } from './reference-kube-proxy.js';
import { shebangFlags } from './launcher.js';
import { histogramPercentiles, percentiles, round } from './stats.js';
import type { LatencyMetric, LatencyRow, LatencyWindow, ProxyUnderTest } from './types.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const LOADGEN = join(HERE, 'loadgen.js');
const FERRY_BIN = join(HERE, '..', '..', '..', 'bin', 'ferry');
const NS = 'default';
const CONN_PORT = 9000;
const SINK_PORT = 9001;
const METRIC = 'kubeproxy_network_programming_duration_seconds';
/** ferry's own share: watch event received → programmed (docs/cli.md). */
const EVENT_METRIC = 'ferry_sync_event_to_programmed_seconds';
/** The store's key for EndpointSlices (StoreEvent.resource). */
const SLICES = 'endpointslices.discovery.k8s.io';

interface Bucket {
  readonly le: number;
  readonly count: number;
}

/** p50/p90/p99 in ms of what a cumulative histogram gained between two scrapes. */
function histogramDiff(before: Bucket[] | undefined, after: Bucket[] | undefined): LatencyMetric | undefined {
  if (!after) return undefined;
  const diff = after.map((b) => ({ le: b.le, count: b.count - (before?.find((x) => x.le === b.le)?.count ?? 0) }));
  const count = diff.length ? Math.max(...diff.map((d) => d.count)) : 0;
  if (count === 0) return undefined;
  const [p50, p90, p99] = histogramPercentiles(diff, [50, 90, 99]).map(round);
  return { count, p50: p50!, p90: p90!, p99: p99! };
}

const BENCH_SERVICE_CIDR = '10.96.0.0/16';

/**
 * The command line of the proxy under test in `node`. ebpf attaches to the node's own cgroup and
 * pins under the cluster's bpffs directory — never the host's cgroup root (its default); it must
 * see the host's /sys, so it enters only the netns (`hostMounts`).
 */
export function proxyArgv(
  cluster: Cluster,
  node: SimNode,
  mode: ProxyUnderTest,
  kubeconfig: string,
  kubeProxy?: string | null,
): { argv: string[]; hostMounts: boolean } {
  const common = ['--kubeconfig', kubeconfig, '--hostname-override', node.name, '--cluster-cidr', cluster.clusterCIDRs.join(',')];
  if (mode === 'kube-proxy') {
    return { argv: [kubeProxy ?? 'kube-proxy', ...common, '--proxy-mode', 'iptables', '--metrics-bind-address', '127.0.0.1:10249'], hostMounts: false };
  }
  const argv = [process.execPath, ...shebangFlags(FERRY_BIN), FERRY_BIN, ...common, '--proxy-mode', mode, '--metrics-bind-address', '127.0.0.1:10249', '--healthz-bind-address', '127.0.0.1:10256'];
  if (mode !== 'ebpf') return { argv, hostMounts: false };
  const cg = cluster.cgroupOf({ kind: 'node', node: node.name });
  if (!cg) throw new ClusterBenchError('ebpf mode needs a cgroup v2 mount for the node cgroups (none in /proc/self/mounts)');
  argv.push('--ebpf-cgroup-root', cg, '--ebpf-bpffs-dir', cluster.bpffsDirOf(node.name));
  return { argv, hostMounts: true };
}

/**
 * The reference kube-proxy layout (reference-kube-proxy.ts) for what the API server holds now,
 * planned for `node` and applied in its namespace with iptables-restore.
 */
export async function applyReferenceLayout(core: CoreV1Api, discovery: DiscoveryV1Api, cluster: Cluster, node: SimNode, variant?: IptablesVariant): Promise<void> {
  const tracker = new ChangeTracker({ nodeName: node.name, families: [4] });
  tracker.setNode(await core.readNode({ name: node.name }));
  for (const s of (await core.listServiceForAllNamespaces()).items) tracker.upsertService(s);
  for (const s of (await discovery.listEndpointSliceForAllNamespaces()).items) tracker.upsertEndpointSlice(s);
  const { snapshots, changes } = tracker.takeSnapshot();
  const tables = planTables(
    snapshots,
    { masqueradeAll: false, clusterCIDRs: cluster.clusterCIDRs, nodePortAddresses: { kind: 'all' }, localAddresses: [node.ip] },
    null,
    changes,
  );
  for (const text of [referenceJumps(), referenceFull(tables[4])]) {
    await runIn(node.netns, [variant ? `iptables-${variant}-restore` : 'iptables-restore', '-w', '5', '--noflush'], { input: text });
  }
}

export class ClusterBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClusterBenchError';
  }
}

/** A long-lived loadgen agent in one namespace: one command line in, one reply line out. */
export class Agent {
  private readonly waiting: ((line: string) => void)[] = [];
  constructor(readonly child: ChildProcess) {
    if (!child.stdout) throw new ClusterBenchError('agent has no stdout pipe');
    createInterface({ input: child.stdout }).on('line', (l) => this.waiting.shift()?.(l));
  }
  ask(cmd: string): Promise<string> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.child.stdin?.write(cmd + '\n');
    });
  }
  close(): void {
    this.child.stdin?.end();
  }
}

/** Resolves when a loadgen server prints its `ready` line; rejects with `makeError` after `timeoutMs`. */
export function waitReady(child: ChildProcess, timeoutMs: number, makeError: (msg: string) => Error): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (!child.stdout) return reject(makeError('loadgen server has no stdout pipe'));
    const lines = createInterface({ input: child.stdout });
    const t = setTimeout(() => {
      lines.close();
      reject(makeError('loadgen server did not start'));
    }, timeoutMs);
    lines.on('line', (l) => {
      if (l === 'ready') {
        clearTimeout(t);
        resolve();
      }
    });
  });
}

export interface ClusterBenchOptions {
  readonly work: string;
  readonly progress: (msg: string) => void;
  readonly kubeProxy: string | null;
}

interface Target {
  clusterIP: string;
  nodePortConn: number;
  nodePortSink: number;
}

function fillerName(i: number): string {
  return `f-${String(i).padStart(5, '0')}`;
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function svc(name: string, spec: V1Service['spec']): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: NS }, spec };
}

export class ClusterBench {
  private cluster!: Cluster;
  private api!: ApiServer;
  private core!: CoreV1Api;
  private discovery!: DiscoveryV1Api;
  private kubeconfig = '';
  private node!: SimNode;
  private podAgent!: Agent;
  private clientAgent!: Agent;
  private proxy: ChildProcess | undefined;
  private fillers = 0;
  private target: Target | undefined;
  private latencySeq = 0;
  private targetName: string | undefined;
  private logFile = '';

  constructor(private readonly opts: ClusterBenchOptions) {}

  /** The cluster, for signal handlers. */
  get live(): Cluster | undefined {
    return this.cluster;
  }

  async up(): Promise<void> {
    const p = this.opts.progress;
    p('cluster: creating namespaces (1 node, 2 pods) and the simulated API server');
    // The LAN addresses are shared with every other simulated cluster on the machine: wait our turn.
    this.cluster = await createCluster({ nodes: 1, lanWaitMs: 20 * 60_000 });
    this.node = this.cluster.nodes[0]!;
    // A /16: 44k Services do not fit the simulator's default /18.
    this.api = await startApiServer({ host: this.cluster.hostIP, port: 0, serviceCIDRs: [BENCH_SERVICE_CIDR], watchHistory: 400_000 });
    this.kubeconfig = join(this.opts.work, 'kubeconfig');
    this.api.writeKubeconfig(this.kubeconfig);
    await this.cluster.attachApiServer(this.kubeconfig);
    const kc = new KubeConfig();
    kc.loadFromFile(this.kubeconfig);
    this.core = kc.makeApiClient(CoreV1Api);
    this.discovery = kc.makeApiClient(DiscoveryV1Api);
    const srv = await this.cluster.addPod({ name: 'srv', node: this.node.name, labels: { app: 'web' } });
    const cli = await this.cluster.addPod({ name: 'cli', node: this.node.name, labels: { app: 'client' } });
    const server = this.cluster.spawnIn(srv.netns, [process.execPath, LOADGEN, 'serve', '--conn-port', String(CONN_PORT), '--sink-port', String(SINK_PORT)], { pipe: true });
    await waitReady(server, 20_000, (m) => new ClusterBenchError(m));
    this.podAgent = new Agent(this.cluster.spawnIn(cli.netns, [process.execPath, LOADGEN, 'agent'], { pipe: true }));
    this.clientAgent = new Agent(this.cluster.spawnIn(this.cluster.clientNetns, [process.execPath, LOADGEN, 'agent'], { pipe: true }));
  }

  async down(): Promise<void> {
    await this.stopProxy();
    this.podAgent?.close();
    this.clientAgent?.close();
    await this.cluster?.down();
    await this.api?.close();
  }

  /** Grows the filler Services to `n` (it never shrinks), and creates the target Service once. */
  async setServices(n: number): Promise<void> {
    if (n > this.fillers) {
      const todo = Array.from({ length: n - this.fillers }, (_, i) => this.fillers + i);
      this.opts.progress(`cluster: creating ${todo.length} Services (to ${n})`);
      let done = 0;
      const t0 = Date.now();
      await pool(todo, 48, async (i) => {
        await this.core.createNamespacedService({
          namespace: NS,
          body: svc(fillerName(i), { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] }),
        });
        if (++done % 2000 === 0) this.opts.progress(`cluster: ${done}/${todo.length} Services created (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      });
      this.fillers = n;
    }
    // The target sorts among the fillers' keys at about half way; it moves when the fillers grow.
    const name = `${fillerName(Math.floor(this.fillers / 2))}-target`;
    if (this.targetName !== name) {
      if (this.targetName) await this.core.deleteNamespacedService({ name: this.targetName, namespace: NS });
      const s = await this.core.createNamespacedService({
        namespace: NS,
        body: svc(name, {
          type: 'NodePort',
          selector: { app: 'web' },
          ports: [
            { name: 'conn', port: 80, targetPort: CONN_PORT, protocol: 'TCP' },
            { name: 'bulk', port: 81, targetPort: SINK_PORT, protocol: 'TCP' },
          ],
        }),
      });
      this.targetName = name;
      this.target = {
        clusterIP: s.spec?.clusterIP ?? '',
        nodePortConn: s.spec?.ports?.find((p) => p.name === 'conn')?.nodePort ?? 0,
        nodePortSink: s.spec?.ports?.find((p) => p.name === 'bulk')?.nodePort ?? 0,
      };
    }
    await this.api.settled();
  }

  /**
   * Starts ferry (or kube-proxy) in node-1 and waits until the target Service answers from the pod.
   * `window` '1s' passes an explicit `--iptables-min-sync-period 1s` (kube-proxy's fixed window).
   */
  async startProxy(mode: ProxyUnderTest, readyTimeoutMs: number, window: LatencyWindow = 'default'): Promise<number> {
    this.logFile = join(this.opts.work, `${mode}-${this.fillers}-${window}.log`);
    const { argv, hostMounts } = proxyArgv(this.cluster, this.node, mode, this.kubeconfig, this.opts.kubeProxy);
    if (window === '1s') argv.push('--iptables-min-sync-period', '1s');
    const t0 = Date.now();
    this.proxy = this.cluster.spawnIn(this.node.netns, argv, { logFile: this.logFile, hostMounts });
    await this.waitTarget(readyTimeoutMs, mode);
    return Date.now() - t0;
  }

  private async waitTarget(timeoutMs: number, what: string): Promise<void> {
    const t = this.target!;
    const r = await this.podAgent.ask(`wait ${t.clusterIP} 80 ${timeoutMs}`);
    if (!r.startsWith('ok')) throw new ClusterBenchError(`${what}: target Service ${t.clusterIP}:80 never answered from pod cli (${r}); log: ${this.tail()}`);
    const r2 = await this.clientAgent.ask(`wait ${this.node.ip} ${t.nodePortConn} ${timeoutMs}`);
    if (!r2.startsWith('ok')) throw new ClusterBenchError(`${what}: NodePort ${this.node.ip}:${t.nodePortConn} never answered from the client (${r2}); log: ${this.tail()}`);
  }

  private tail(): string {
    if (!this.logFile || !existsSync(this.logFile)) return '(no log)';
    return readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
  }

  /** Stops the proxy and removes whatever it left in node-1 (rules, ferry0). */
  async stopProxy(): Promise<void> {
    const child = this.proxy;
    this.proxy = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    if (this.cluster && this.node) {
      await runIn(this.node.netns, ['nft', 'flush', 'ruleset'], { allowFailure: true });
      await runIn(this.node.netns, ['ip', 'link', 'del', 'ferry0'], { allowFailure: true });
    }
  }

  /** The reference kube-proxy layout, generated from what the API server holds, applied to node-1. */
  async applyReference(readyTimeoutMs: number): Promise<void> {
    await applyReferenceLayout(this.core, this.discovery, this.cluster, this.node);
    await this.waitTarget(readyTimeoutMs, 'reference');
  }

  async clearReference(): Promise<void> {
    await runIn(this.node.netns, ['nft', 'flush', 'ruleset'], { allowFailure: true });
  }

  /** Both latency histograms from the proxy's /metrics (kube-proxy has only the first). */
  private async histograms(): Promise<Record<string, Bucket[]>> {
    const r = await runIn(this.node.netns, ['curl', '-s', '--max-time', '3', 'http://127.0.0.1:10249/metrics'], { allowFailure: true });
    const out: Record<string, Bucket[]> = {};
    if (r.exitCode !== 0) return out;
    const re = /^([a-z_]+)_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)/;
    for (const line of r.stdout.split('\n')) {
      const m = re.exec(line);
      if (m && (m[1] === METRIC || m[1] === EVENT_METRIC)) (out[m[1]] ??= []).push({ le: m[2] === '+Inf' ? Infinity : Number(m[2]), count: Number(m[3]) });
    }
    return out;
  }

  /**
   * `changes` Service creations, each timed from its own API write until the pod connects through
   * it. `burst` 1: one at a time, each made `gapMs` after the previous one became reachable (an
   * idle proxy, past any min sync period). `burst` > 1: that many created at once (concurrent API
   * writes), `gapMs` after the previous burst was reachable; each probed as soon as its own write
   * returned.
   */
  async latency(mode: ProxyUnderTest, v: LatencyVariant, changes: number, perChangeTimeoutMs: number, gapMs: number): Promise<LatencyRow> {
    const before = await this.histograms();
    const samples: number[] = [];
    const acceptedSamples: number[] = [];
    const sliceSamples: number[] = [];
    // When each Service's first slice with an endpoint was stored (store time, before any watch).
    const sliceStored = new Map<string, number>();
    const unsubscribe = this.api.onStored((e) => {
      if (e.type === 'DELETED' || e.resource !== SLICES) return;
      const o = e.object as { metadata: { labels?: Record<string, string> }; endpoints?: unknown[] };
      const svcName = o.metadata.labels?.[SERVICE_NAME_LABEL];
      if (svcName?.startsWith('lat-') && (o.endpoints?.length ?? 0) > 0 && !sliceStored.has(svcName)) sliceStored.set(svcName, performance.timeOrigin + performance.now());
    });
    let failures = 0;
    const created: string[] = [];
    for (let done = 0; done < changes; ) {
      await new Promise((r) => setTimeout(r, gapMs));
      const n = Math.min(v.burst, changes - done);
      // Each Service is probed from the moment its own write returned (its ClusterIP is known
      // only then); about ten attempts per millisecond in all, whatever the burst, so probing
      // does not starve the proxy it measures of the machine's two cores.
      const intervalMs = Math.max(1, Math.ceil(n / 10));
      const batch = await Promise.all(
        Array.from({ length: n }, async () => {
          const name = `lat-${++this.latencySeq}`;
          const t0 = performance.timeOrigin + performance.now();
          const s = await this.core.createNamespacedService({
            namespace: NS,
            body: svc(name, { selector: { app: 'web' }, ports: [{ name: 'conn', port: 80, targetPort: CONN_PORT, protocol: 'TCP' }] }),
          });
          const accepted = performance.timeOrigin + performance.now();
          created.push(name);
          const r = await this.podAgent.ask(`probe ${name} ${s.spec?.clusterIP ?? ''} 80 ${perChangeTimeoutMs} ${intervalMs}`);
          if (r !== 'ok') throw new ClusterBenchError(`probe ${name}: ${r}`);
          return { t0, accepted, name };
        }),
      );
      const r = await this.podAgent.ask(`collect ${batch.map((b) => b.name).join(',')}`);
      const times = r.startsWith('ok ') ? r.slice(3).split(',') : [];
      batch.forEach((b, k) => {
        const t = times[k];
        if (t !== undefined && t !== 'x') {
          samples.push(Number(t) - b.t0);
          acceptedSamples.push(Number(t) - b.accepted);
          const stored = sliceStored.get(b.name);
          if (stored !== undefined) sliceSamples.push(Number(t) - stored);
        }
        else failures++;
      });
      const before10 = Math.floor(done / 10);
      done += n;
      if (Math.floor(done / 10) !== before10) this.opts.progress(`latency ${mode} ${variantLabel(v)} @${this.fillers}: ${done}/${changes}`);
    }
    unsubscribe();
    const after = await this.histograms();
    const metric = histogramDiff(before[METRIC], after[METRIC]);
    const programmed = histogramDiff(before[EVENT_METRIC], after[EVENT_METRIC]);
    await pool(created, 16, async (name) => {
      await this.core.deleteNamespacedService({ name, namespace: NS }).catch(() => undefined);
    });
    await this.api.settled();
    return { services: this.fillers, mode, window: v.window, burst: v.burst, e2eMs: percentiles(samples), acceptedMs: percentiles(acceptedSamples), sliceMs: percentiles(sliceSamples), ...(metric ? { metric } : {}), ...(programmed ? { programmed } : {}), failures };
  }
}

/** How the changes of one latency measurement arrive, and the proxy's sync window. */
export interface LatencyVariant {
  readonly window: LatencyWindow;
  /** 1 = singly; more = that many Services created at once. */
  readonly burst: number;
  readonly changes: number;
  /** Only these modes (default: every latency mode). */
  readonly modes?: readonly ProxyUnderTest[];
}

export function variantLabel(v: LatencyVariant): string {
  return `${v.burst === 1 ? 'single' : `bursts of ${v.burst}`}, window ${v.window}`;
}

export function makeWorkDir(): string {
  return mkdtempSync(join(tmpdir(), 'ferry-bench-'));
}

export function removeWorkDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
