/**
 * The end-to-end harness: a simulated cluster (network namespaces), the simulated API server on
 * the cluster's host address, and one REAL ferry process per node namespace in the requested
 * proxy mode. Tests get a ProxyEnv with kubectl, probes and polling waits, and never see how it
 * was built. One cluster per test file; subtests share it and isolate themselves by Service name.
 *
 * On failure it prints, per node, the tail of ferry's log and the kernel state (ruleset,
 * addresses, conntrack) so a red run explains itself. Teardown (ferry processes, namespaces, API
 * server) happens in t.teardown, so also after a failure or a throw.
 * It must never send traffic outside the namespaces the cluster built, and never sleep where
 * it can poll.
 */
import { SCRUB, childEnv } from './child-env.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import ipaddr from 'ipaddr.js';
import YAML from 'yaml';
import { createCluster, parseProbeLine, type Cluster, type ProbeOptions, type ProbeResult, type ProbeTarget, type SimNode, type SimPod, type Vantage } from '../../../src/sim/cluster/index.js';
import { run, CommandError } from '../../../src/util/exec.js';
import { eventually, GiveUp, NotYet } from './eventually.js';
import { diagnosticCommands, expectations, type ModeExpectations, type ProxyMode, type SourceSeen } from './modes.js';
import { summarize } from './results.js';

export * from './modes.js';
export * from './eventually.js';
export * from './results.js';
export * from './objects.js';
export * from './assert.js';
export * from './trace.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const FERRY_BIN = join(ROOT, 'bin', 'ferry');
const UDP_FLOW_SCRIPT = fileURLToPath(new URL('./udp-flow.js', import.meta.url));
export const HEALTHZ_PORT = 10256;
export const METRICS_PORT = 10249;

/** The part of tap's Test the harness uses; kept small so helpers stay testable. */
export interface TapLike {
  readonly name: string;
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
  passing(): boolean;
}

export interface ProxyClusterOptions {
  mode: ProxyMode;
  nodes?: number;
  dualStack?: boolean;
  zones?: string[];
  /** Extra ferry flags, appended to the standard ones; a function gives each node its own. */
  ferryArgs?: string[] | ((cluster: Cluster, node: SimNode) => string[]);
}

export class HarnessError extends Error {
  readonly code = 'FERRY_ERR_E2E_HARNESS';
  constructor(
    readonly step: string,
    detail: string,
  ) {
    super(`e2e harness: ${step}: ${detail}`);
    this.name = 'HarnessError';
  }
}

/** The contract of src/sim/apiserver (loaded dynamically so this file compiles before it exists). */
interface ApiServerHandle {
  url: string;
  writeKubeconfig(path: string, server?: string): unknown;
  close(): unknown;
}
type StartApiServer = (o: { host: string; port: number; serviceCIDRs: string[] }) => Promise<ApiServerHandle>;

async function loadStartApiServer(): Promise<StartApiServer> {
  const mod: unknown = await import(new URL('../../../src/sim/apiserver/index.js', import.meta.url).href);
  const fn = typeof mod === 'object' && mod !== null ? (mod as Record<string, unknown>).startApiServer : undefined;
  if (typeof fn !== 'function') throw new HarnessError('start API server', 'src/sim/apiserver/index.js does not export startApiServer');
  return fn as StartApiServer;
}

/** What the suite needs of a Service, read from `kubectl get svc -o json`. */
export interface ServiceInfo {
  name: string;
  clusterIPs: string[];
  ports: { name?: string; protocol: string; port: number; nodePort?: number }[];
  healthCheckNodePort?: number;
  ingressIPs: string[];
}

export interface FerryProcess {
  node: SimNode;
  child: ChildProcess;
  logFile: string;
  exit?: string;
}

/** A fixed-source-port UDP flow running in a namespace (see udp-flow.ts). */
export interface UdpFlow {
  readonly results: readonly ProbeResult[];
  /** Resolves with the first result (after `afterIndex`) that satisfies pred. */
  waitFor(pred: (r: ProbeResult) => boolean, opts: { what: string; timeoutMs: number; afterIndex?: number }): Promise<ProbeResult>;
  stop(): Promise<readonly ProbeResult[]>;
}

export interface ProxyEnv {
  readonly mode: ProxyMode;
  readonly expect: ModeExpectations;
  readonly cluster: Cluster;
  readonly kubeconfig: string;
  readonly dir: string;
  readonly ferries: readonly FerryProcess[];
  /** `kubectl --kubeconfig K ...args`; stdout, or a CommandError carrying stderr. */
  kubectl(args: string[], input?: string): Promise<string>;
  /** `kubectl apply -f -` of YAML text, one object or a list of objects. */
  apply(doc: string | object | object[]): Promise<void>;
  service(name: string): Promise<ServiceInfo>;
  /** Sets status.loadBalancer.ingress through the status subresource. */
  setLoadBalancerIngress(name: string, ips: string[]): Promise<void>;
  deleteService(name: string): Promise<void>;
  probe(from: Vantage, target: ProbeTarget, opts?: ProbeOptions): Promise<ProbeResult[]>;
  /** Polls (one probe per attempt) until a probe succeeds and, if given, accept() holds; returns that result. */
  waitReachable(from: Vantage, target: ProbeTarget, opts?: { timeoutMs?: number; accept?: (r: ProbeResult) => boolean; what?: string }): Promise<ProbeResult>;
  /** Polls until a probe fails with the given error kind. */
  /** `probeTimeoutMs`: how long one attempt may take to fail (default 1 s). */
  waitRefusal(from: Vantage, target: ProbeTarget, error: string, opts?: { timeoutMs?: number; probeTimeoutMs?: number; what?: string }): Promise<ProbeResult>;
  /**
   * Returns once every ferry has applied everything written to the API server before the call:
   * a throw-away Service is created after those writes and polled from every node until it
   * answers. Use before asserting that something is DROPPED, since an unprogrammed address
   * times out too.
   */
  barrier(): Promise<void>;
  /** Every address the node owns that a masqueraded packet may carry (node IPs, pod gateway). */
  nodeAddresses(node: string): string[];
  /** The address an endpoint is expected to see, per the mode's expectation; as a predicate. */
  sourceMatches(expected: SourceSeen, origin: string, viaNode: string): (seenIP: string | undefined) => boolean;
  /** HTTP status of GET http://addr:port/path from a namespace (0 if no HTTP answer). */
  httpStatus(from: Vantage, addr: string, port: number, path?: string): Promise<number>;
  udpFlow(from: Vantage, target: { addr: string; port: number }, opts: { srcPort: number; intervalMs?: number; timeoutMs?: number }): UdpFlow;
  /** Per-node log tails and kernel state, as text. */
  diagnostics(): Promise<string>;
  /**
   * Call first thing in a subtest: if it fails, the diagnostics are printed when it ends, while
   * the kernel state still shows what went wrong (not only after the whole file).
   */
  diagnoseOnFailure(t: TapLike): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
function rec(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export function parseService(json: string): ServiceInfo {
  const o = rec(JSON.parse(json) as unknown);
  const meta = rec(o.metadata);
  const spec = rec(o.spec);
  const status = rec(o.status);
  const clusterIPs = arr(spec.clusterIPs)
    .map(str)
    .filter((s): s is string => s !== undefined && s !== 'None');
  if (clusterIPs.length === 0 && str(spec.clusterIP) && spec.clusterIP !== 'None') clusterIPs.push(spec.clusterIP as string);
  const ports = arr(spec.ports).map((p) => {
    const r = rec(p);
    const out: ServiceInfo['ports'][number] = { protocol: str(r.protocol) ?? 'TCP', port: num(r.port) ?? 0 };
    const name = str(r.name);
    if (name) out.name = name;
    const np = num(r.nodePort);
    if (np) out.nodePort = np;
    return out;
  });
  const info: ServiceInfo = {
    name: str(meta.name) ?? '?',
    clusterIPs,
    ports,
    ingressIPs: arr(rec(status.loadBalancer).ingress)
      .map((i) => str(rec(i).ip))
      .filter((s): s is string => s !== undefined),
  };
  const hc = num(spec.healthCheckNodePort);
  if (hc) info.healthCheckNodePort = hc;
  return info;
}

function family(ip: string): 4 | 6 {
  return ipaddr.parse(ip).kind() === 'ipv6' ? 6 : 4;
}

/** ClusterIP of the given family, or a clear error. */
export function clusterIPOf(svc: ServiceInfo, fam: 4 | 6): string {
  const ip = svc.clusterIPs.find((a) => family(a) === fam);
  if (!ip) throw new HarnessError('service', `${svc.name} has no IPv${fam} ClusterIP (has ${svc.clusterIPs.join(', ') || 'none'})`);
  return ip;
}

export function portOf(svc: ServiceInfo, protocol: 'TCP' | 'UDP' = 'TCP'): { port: number; nodePort?: number } {
  const p = svc.ports.find((x) => x.protocol === protocol);
  if (!p) throw new HarnessError('service', `${svc.name} has no ${protocol} port`);
  return p;
}

export function nodePortOf(svc: ServiceInfo, protocol: 'TCP' | 'UDP' = 'TCP'): number {
  const p = portOf(svc, protocol);
  if (!p.nodePort) throw new HarnessError('service', `${svc.name} has no ${protocol} nodePort allocated`);
  return p.nodePort;
}

function tail(text: string, lines: number): string {
  const all = text.split('\n');
  return (all.length > lines ? [`... (${all.length - lines} earlier lines)`, ...all.slice(-lines)] : all).join('\n');
}

class Env implements ProxyEnv {
  readonly expect: ModeExpectations;
  readonly ferries: FerryProcess[] = [];
  private barrierSeq = 0;
  readonly barrierPod = 'e2e-barrier';

  constructor(
    readonly mode: ProxyMode,
    readonly cluster: Cluster,
    readonly kubeconfig: string,
    readonly dir: string,
  ) {
    this.expect = expectations(mode);
  }

  async kubectl(args: string[], input?: string): Promise<string> {
    const opts = input === undefined ? { timeoutMs: 30_000 } : { input, timeoutMs: 30_000 };
    const r = await run(['kubectl', '--kubeconfig', this.kubeconfig, ...args], opts);
    return r.stdout;
  }

  async apply(doc: string | object | object[]): Promise<void> {
    let text: string;
    if (typeof doc === 'string') text = doc;
    else if (Array.isArray(doc)) text = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: doc });
    else text = JSON.stringify(doc);
    await this.kubectl(['apply', '-f', '-'], text);
  }

  async service(name: string): Promise<ServiceInfo> {
    return parseService(await this.kubectl(['get', 'service', name, '-o', 'json']));
  }

  async setLoadBalancerIngress(name: string, ips: string[]): Promise<void> {
    const patch = JSON.stringify({ status: { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } } });
    await this.kubectl(['patch', 'service', name, '--subresource=status', '--type=merge', '-p', patch]);
  }

  async deleteService(name: string): Promise<void> {
    await this.kubectl(['delete', 'service', name, '--ignore-not-found', '--wait=false']);
  }

  probe(from: Vantage, target: ProbeTarget, opts: ProbeOptions = {}): Promise<ProbeResult[]> {
    return this.cluster.probe(from, target, { timeoutMs: 2000, ...opts });
  }

  private describe(from: Vantage, target: ProbeTarget): string {
    const v = from.kind === 'pod' ? `pod ${from.pod}` : from.kind === 'node' ? `node ${from.node}` : from.kind;
    return `${target.proto} ${target.addr.includes(':') ? `[${target.addr}]` : target.addr}:${target.port} from ${v}`;
  }

  async waitReachable(
    from: Vantage,
    target: ProbeTarget,
    opts: { timeoutMs?: number; accept?: (r: ProbeResult) => boolean; what?: string } = {},
  ): Promise<ProbeResult> {
    return eventually(
      async () => {
        this.assertFerriesAlive();
        const [r] = await this.probe(from, target, { timeoutMs: 1000 });
        if (!r) throw new NotYet('probe printed nothing');
        if (!r.ok || (opts.accept && !opts.accept(r))) throw new NotYet(summarize([r]));
        return r;
      },
      { what: opts.what ?? `${this.describe(from, target)} answers`, timeoutMs: opts.timeoutMs ?? 30_000 },
    );
  }

  async waitRefusal(from: Vantage, target: ProbeTarget, error: string, opts: { timeoutMs?: number; probeTimeoutMs?: number; what?: string } = {}): Promise<ProbeResult> {
    return eventually(
      async () => {
        this.assertFerriesAlive();
        const [r] = await this.probe(from, target, { timeoutMs: opts.probeTimeoutMs ?? 1000 });
        if (!r) throw new NotYet('probe printed nothing');
        if (r.ok || r.error !== error) throw new NotYet(summarize([r]));
        return r;
      },
      { what: opts.what ?? `${this.describe(from, target)} fails with ${error}`, timeoutMs: opts.timeoutMs ?? 30_000 },
    );
  }

  async barrier(): Promise<void> {
    const name = `e2e-barrier-${++this.barrierSeq}`;
    await this.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name },
      spec: { selector: { 'ferry-e2e': 'barrier' }, ports: [{ name: 'tcp', port: 80, targetPort: 8080, protocol: 'TCP' }] },
    });
    const svc = await this.service(name);
    const ip = clusterIPOf(svc, 4);
    await Promise.all(
      this.cluster.nodes.map((n) =>
        this.waitReachable({ kind: 'node', node: n.name }, { proto: 'tcp', addr: ip, port: 80 }, { what: `barrier Service ${name} answers from ${n.name} (ferry there is in sync)` }),
      ),
    );
    await this.deleteService(name);
  }

  nodeAddresses(node: string): string[] {
    const n = this.cluster.node(node);
    const out = [n.ip];
    if (n.ip6) out.push(n.ip6);
    // The pod gateway lives on the node's lo (podCIDR .1); masquerade towards a local pod picks it.
    const [net] = ipaddr.parseCIDR(n.podCIDR);
    const b = net.toByteArray();
    b[3] = 1;
    out.push(ipaddr.fromByteArray(b).toString());
    return out;
  }

  sourceMatches(expected: SourceSeen, origin: string, viaNode: string): (seenIP: string | undefined) => boolean {
    if (expected === 'origin') {
      const want = ipaddr.parse(origin).toNormalizedString();
      return (seen) => seen !== undefined && ipaddr.parse(seen).toNormalizedString() === want;
    }
    const owned = new Set(this.nodeAddresses(viaNode).map((a) => ipaddr.parse(a).toNormalizedString()));
    return (seen) => seen !== undefined && owned.has(ipaddr.parse(seen).toNormalizedString());
  }

  async httpStatus(from: Vantage, addr: string, port: number, path = '/'): Promise<number> {
    const host = addr.includes(':') ? `[${addr}]` : addr;
    const r = await this.cluster.exec(this.cluster.netnsOf(from), ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${host}:${port}${path}`], {
      allowFailure: true,
    });
    const code = Number(r.stdout.trim());
    return Number.isInteger(code) ? code : 0;
  }

  udpFlow(from: Vantage, target: { addr: string; port: number }, opts: UdpFlowOptions): UdpFlow {
    return startUdpFlow(this.cluster, this.cluster.netnsOf(from), target, opts);
  }

  assertFerriesAlive(): void {
    const dead = this.ferries.filter((f) => f.exit !== undefined);
    if (dead.length > 0) {
      throw new GiveUp(dead.map((f) => `ferry on ${f.node.name} exited (${f.exit}); log tail:\n${tail(readLog(f.logFile), 15)}`).join('\n'));
    }
  }

  /** Set once diagnostics were printed for a failing subtest, so the file-level dump is not repeated. */
  dumped = false;

  diagnoseOnFailure(t: TapLike): void {
    const what = t.name;
    t.teardown(async () => {
      if (t.passing()) return;
      this.dumped = true;
      t.comment(`e2e diagnostics after "${what}" failed (mode ${this.mode}, cluster ${this.cluster.prefix}):\n${await this.diagnostics()}`);
    });
  }

  async diagnostics(): Promise<string> {
    const out: string[] = [];
    for (const f of this.ferries) {
      out.push(`===== ${f.node.name} (${f.node.netns}) ferry ${f.exit ? `EXITED: ${f.exit}` : 'running'} =====`);
      out.push(`--- ferry log tail (${f.logFile}) ---`, tail(readLog(f.logFile), 40));
      for (const argv of diagnosticCommands(this.mode)) {
        const r = await this.cluster.exec(f.node.netns, argv, { allowFailure: true, timeoutMs: 10_000 }).catch((e: unknown) => ({
          stdout: '',
          stderr: e instanceof Error ? e.message : String(e),
          exitCode: null,
        }));
        const text = (r.stdout + (r.stderr ? `\n[stderr] ${r.stderr}` : '')).trim();
        writeFileSync(join(this.dir, `${f.node.name}.${argv[0]}.txt`), text + '\n', { flag: 'a' });
        out.push(`--- ${argv.join(' ')} ---`, tail(text, argv[0] === 'conntrack' ? 30 : 150));
      }
    }
    return out.join('\n');
  }
}

function readLog(path: string): string {
  try {
    return existsSync(path) ? readFileSync(path, 'utf8') : '(no log file)';
  } catch (e) {
    return `(cannot read log: ${e instanceof Error ? e.message : String(e)})`;
  }
}

/**
 * @kubernetes/client-node (1.x) refuses an http:// server unless the cluster entry says
 * insecure-skip-tls-verify, and the simulator serves plain HTTP; kubectl accepts the flag too.
 * Harmless if the writer already sets it.
 */
function allowPlainHttp(path: string): void {
  const doc: unknown = YAML.parse(readFileSync(path, 'utf8'));
  const clusters = Array.isArray((doc as { clusters?: unknown }).clusters) ? ((doc as { clusters: unknown[] }).clusters) : [];
  let changed = false;
  for (const entry of clusters) {
    const cl = (entry as { cluster?: Record<string, unknown> }).cluster;
    if (cl && typeof cl.server === 'string' && cl.server.startsWith('http://') && cl['insecure-skip-tls-verify'] !== true) {
      cl['insecure-skip-tls-verify'] = true;
      changed = true;
    }
  }
  if (changed) writeFileSync(path, YAML.stringify(doc));
}

/** SIGTERM, then SIGKILL after a grace period. */
async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
}

/**
 * Prepended to argv of node processes we start: tap's process-info hook re-injects NODE_OPTIONS
 * (its --import loaders) into every child it sees spawned, whatever env we pass, and those loaders
 * break bin/ferry (an extension-less ES module). `env -u` drops it after the hook has run.
 */
const SCRUB_ENV = ['env', ...SCRUB];

export { childEnv };

/** The standard kube-proxy-style flags the suite runs every ferry with. */
export function ferryArgv(mode: ProxyMode, kubeconfig: string, node: SimNode, clusterCIDRs: string[], extra: string[] = []): string[] {
  return [
    ...SCRUB_ENV,
    process.execPath,
    FERRY_BIN,
    '--kubeconfig',
    kubeconfig,
    '--hostname-override',
    node.name,
    '--proxy-mode',
    mode,
    '--cluster-cidr',
    clusterCIDRs.join(','),
    '--healthz-bind-address',
    `0.0.0.0:${HEALTHZ_PORT}`,
    '--metrics-bind-address',
    `127.0.0.1:${METRICS_PORT}`,
    '-v',
    '2',
    ...extra,
  ];
}

/**
 * Flags a mode needs per simulated node: ebpf attaches to the node's own cgroup (never the
 * host's root) and pins under a bpffs directory of the run, both removed with the cluster.
 */
export function modeArgs(mode: ProxyMode, c: Cluster, node: SimNode): string[] {
  if (mode !== 'ebpf') return [];
  const cg = c.cgroupOf({ kind: 'node', node: node.name });
  if (!cg) throw new HarnessError('prerequisites', 'ebpf mode needs a cgroup v2 mount for the per-node cgroups (none in /proc/self/mounts)');
  return ['--ebpf-cgroup-root', cg, '--ebpf-bpffs-dir', c.bpffsDirOf(node.name)];
}

async function checkPrerequisites(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new HarnessError('prerequisites', 'the end-to-end suite needs root (network namespaces, nft)');
  }
  for (const argv of [['ip', '-V'], ['nft', '--version'], ['conntrack', '--version'], ['curl', '--version'], ['kubectl', 'version', '--client']]) {
    try {
      await run(argv, { timeoutMs: 10_000 });
    } catch (e) {
      throw new HarnessError('prerequisites', `${argv[0]} is not usable: ${e instanceof CommandError ? e.message : String(e)}`);
    }
  }
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'))) throw new HarnessError('prerequisites', 'dist/ is missing: build first (npx tsc -p tsconfig.json)');
}

/**
 * Builds the cluster, API server and ferries; runs fn; tears everything down (also on failure).
 * On failure, prints diagnostics as TAP comments and keeps the temp dir with full dumps.
 */
export async function withProxyCluster(t: TapLike, opts: ProxyClusterOptions, fn: (env: ProxyEnv) => Promise<void>): Promise<void> {
  await checkPrerequisites();
  const dir = mkdtempSync(join(tmpdir(), `ferry-e2e-${opts.mode}-`));
  const kubeconfig = join(dir, 'kubeconfig');
  let cluster: Cluster | undefined;
  let api: ApiServerHandle | undefined;
  let env: Env | undefined;
  let failed = false;
  let tornDown: Promise<void> | undefined;

  const teardown = (): Promise<void> =>
    (tornDown ??= (async () => {
      if (env) await Promise.all(env.ferries.map((f) => stopChild(f.child)));
      if (cluster) await cluster.down().catch((e: unknown) => t.comment(`cluster teardown failed: ${String(e)}`));
      if (api) await Promise.resolve(api.close()).catch((e: unknown) => t.comment(`API server close failed: ${String(e)}`));
      if (failed || !t.passing()) t.comment(`e2e: kept logs and dumps in ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    })());
  t.teardown(teardown);

  try {
    const clusterOpts: Parameters<typeof createCluster>[0] = { nodes: opts.nodes ?? 3, dualStack: opts.dualStack ?? true };
    if (opts.zones) clusterOpts.zones = opts.zones;
    cluster = await createCluster(clusterOpts);
    const c = cluster;
    const start = await loadStartApiServer();
    api = await start({ host: c.hostIP, port: 0, serviceCIDRs: c.serviceCIDRs });
    await api.writeKubeconfig(kubeconfig);
    allowPlainHttp(kubeconfig);
    await c.attachApiServer(kubeconfig);
    env = new Env(opts.mode, c, kubeconfig, dir);
    const e = env;

    for (const node of c.nodes) {
      const logFile = join(dir, `ferry-${node.name}.log`);
      const extra = typeof opts.ferryArgs === 'function' ? opts.ferryArgs(c, node) : (opts.ferryArgs ?? []);
      const child = c.spawnIn(node.netns, ferryArgv(opts.mode, kubeconfig, node, c.clusterCIDRs, [...modeArgs(opts.mode, c, node), ...extra]), {
        logFile,
        env: childEnv(),
        hostMounts: opts.mode === 'ebpf',
      });
      const f: FerryProcess = { node, child, logFile };
      child.once('exit', (code, sig) => (f.exit = `${code ?? sig}`));
      e.ferries.push(f);
    }
    // A pod for barrier Services; nothing else selects it.
    await c.addPod({ name: e.barrierPod, node: c.nodes[0]?.name ?? 'node-1', labels: { 'ferry-e2e': 'barrier' } });
    await Promise.all(
      e.ferries.map((f) =>
        eventually(
          async () => {
            e.assertFerriesAlive();
            const code = await e.httpStatus({ kind: 'node', node: f.node.name }, '127.0.0.1', HEALTHZ_PORT, '/healthz');
            if (code !== 200) throw new NotYet(`HTTP ${code || 'no answer'}; log tail:\n${tail(readLog(f.logFile), 8)}`);
          },
          { what: `ferry on ${f.node.name} reports /healthz 200`, timeoutMs: 60_000, intervalMs: 300 },
        ),
      ),
    );
    await fn(e);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    if ((failed || !t.passing()) && env && !(env.dumped && !failed)) {
      try {
        t.comment(`e2e diagnostics (mode ${opts.mode}, cluster ${cluster?.prefix ?? '?'}):\n${await env.diagnostics()}`);
      } catch (e) {
        t.comment(`collecting diagnostics failed: ${String(e)}`);
      }
    }
    await teardown();
  }
}

export type { Cluster, ProbeResult, ProbeTarget, SimNode, SimPod, Vantage };

export interface UdpFlowOptions {
  readonly srcPort: number;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  /** A connected socket (connect(2)), connected again from the same port after an error. */
  readonly connect?: boolean;
  /** An IPv6 socket reaching the IPv4 target as ::ffff:a.b.c.d. */
  readonly v4Mapped?: boolean;
}

/**
 * A UDP client in `netns` that keeps one socket (one source port) for its whole life
 * (udp-flow.ts): every datagram belongs to one conntrack flow.
 */
export function startUdpFlow(cluster: Cluster, netns: string | undefined, target: { addr: string; port: number }, opts: UdpFlowOptions): UdpFlow {
  const argv = [
    ...SCRUB_ENV,
    process.execPath,
    UDP_FLOW_SCRIPT,
    '--addr',
    target.addr,
    '--port',
    String(target.port),
    '--src-port',
    String(opts.srcPort),
    '--interval-ms',
    String(opts.intervalMs ?? 200),
    '--timeout-ms',
    String(opts.timeoutMs ?? 1000),
    ...(opts.connect ? ['--connect'] : []),
    ...(opts.v4Mapped ? ['--v4-mapped'] : []),
  ];
  const child = cluster.spawnIn(netns, argv, { pipe: true, env: childEnv() });
  const results: ProbeResult[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let buf = '';
  let exited: string | undefined;
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (c: string) => {
    buf += c;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const r = parseProbeLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (r) results.push(r);
    }
    for (const w of waiters) w();
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (c: string) => {
    if (stderr.length < 4000) stderr += c;
  });
  const done = new Promise<void>((resolve) =>
    child.once('exit', (code, sig) => {
      exited = `exit ${code ?? sig}${stderr ? `: ${stderr.trim()}` : ''}`;
      for (const w of waiters) w();
      resolve();
    }),
  );
  return {
    results,
    waitFor: (pred, w) =>
      new Promise<ProbeResult>((resolve, reject) => {
        let from = w.afterIndex ?? 0;
        const check = (): void => {
          for (; from < results.length; from++) {
            const r = results[from];
            if (r && pred(r)) {
              finish();
              resolve(r);
              return;
            }
          }
          if (exited !== undefined) {
            finish();
            reject(new HarnessError('udp flow', `${w.what}: the flow client ended (${exited}); saw ${summarize(results)}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          const recent = results.slice(w.afterIndex ?? 0);
          reject(new HarnessError('udp flow', `${w.what}: not within ${w.timeoutMs} ms; since then the flow saw ${summarize(recent)}`));
        }, w.timeoutMs);
        const finish = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
    stop: async () => {
      if (exited === undefined) child.kill('SIGTERM');
      await Promise.race([done, sleep(3000)]);
      if (exited === undefined) child.kill('SIGKILL');
      return results;
    },
  };
}
