/**
 * The simulated cluster: Linux network namespaces standing in for Kubernetes nodes, pods and an
 * outside client, optionally registered with an API server. Used by `ferry demo`, the end-to-end
 * tests and the benchmarks.
 *
 *   host ──<p>h── [<p>-lan: br0] ──eth0── <p>-n1 (node-1, 198.18.0.11) ──veth── <p>-n1p1 (pod, 198.19.1.2)
 *                                 ├─eth0── <p>-n2 (node-2, 198.18.0.12) ──veth── ...
 *                                 └─eth0── <p>-client (198.18.0.100)
 *
 * Everything this module creates carries the run prefix; `down()` (also after a failure half-way
 * through createCluster, or on SIGINT/SIGTERM via installSignalCleanup) removes all of it.
 * It must never touch host interfaces, routes or sysctls other than the one `<p>h` veth, and
 * never send traffic outside the namespaces it built.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { runIn, type RunOptions, type RunResult } from '../../util/exec.js';
import { logger } from '../../util/log.js';
import * as A from './addressing.js';
import { cleanupPrefix, cleanupPrefixSync, deleteNetns, listNetns } from './cleanup.js';
import { bpffsDirOfNetns, cgroup2Root, cgroupOfNetns, inCgroup, makeCgroup, removeCgroup } from './cgroups.js';
import { acquireLan, releaseLan } from './lan-lock.js';
import { ECHO_SCRIPT, runProbe } from './probe-client.js';
import { ApiRegistrar, nodeObject, podObject } from './register.js';
import * as T from './topology.js';
import { scaledMs } from '../../util/timescale.js';
import type {
  AddPodOptions,
  Cluster,
  ClusterOptions,
  ProbeOptions,
  ProbeResult,
  ProbeTarget,
  SimNode,
  SimPod,
  SpawnOptions,
  Vantage,
} from './types.js';

export * from './types.js';
export {
  CLUSTER_CIDR,
  CLUSTER_CIDR6,
  SERVICE_CIDR,
  SERVICE_CIDR6,
  EXTERNAL_CIDR,
  EXTERNAL_CIDR6,
  HOST_IP,
  HOST_IP6,
  CLIENT_IP,
  CLIENT_IP6,
  LAN_CIDR,
  LAN_CIDR6,
  randomPrefix,
  InvalidPrefixError,
} from './addressing.js';
export { cleanupPrefix, listLeftovers } from './cleanup.js';
export { LanBusyError } from './lan-lock.js';
export { ProbeError, parseProbeLine, ECHO_SCRIPT as ECHO_SCRIPT_PATH, PROBE_SCRIPT as PROBE_SCRIPT_PATH } from './probe-client.js';
export { RegistrationError, loadKubeConfig, allowPlainHttpInKubeconfig } from './register.js';

const log = logger('sim-cluster');

/** Service CIDRs to hand to the API server, IPv4 first. */
export const SERVICE_CIDRS_V4 = [A.SERVICE_CIDR];
export const SERVICE_CIDRS_DUAL = [A.SERVICE_CIDR, A.SERVICE_CIDR6];

export class ClusterOptionError extends Error {
  readonly code = 'FERRY_ERR_SIM_OPTION';
  constructor(
    readonly option: string,
    detail: string,
  ) {
    super(`invalid cluster option ${option}: ${detail}`);
    this.name = 'ClusterOptionError';
  }
}

export class PodError extends Error {
  readonly code = 'FERRY_ERR_SIM_POD';
  constructor(
    readonly pod: string,
    detail: string,
  ) {
    super(`pod ${pod}: ${detail}`);
    this.name = 'PodError';
  }
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

interface NodeState {
  node: SimNode;
  index: number;
  zone?: string;
  slots: Set<number>;
  nextSlot: number;
}

interface PodState {
  pod: SimPod;
  nodeIndex: number;
  slot: number;
  echo?: ChildProcess;
  ready: boolean;
  input: AddPodOptions;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function validateOptions(o: ClusterOptions): { n: number; names: string[] } {
  const n = o.nodes ?? 3;
  if (!Number.isInteger(n) || n < 1 || n > A.MAX_NODES) throw new ClusterOptionError('nodes', `want 1..${A.MAX_NODES}, got ${n}`);
  const ppn = o.podsPerNode ?? 0;
  if (!Number.isInteger(ppn) || ppn < 0 || ppn > A.MAX_PODS_PER_NODE) {
    throw new ClusterOptionError('podsPerNode', `want 0..${A.MAX_PODS_PER_NODE}, got ${ppn}`);
  }
  const names = o.nodeNames ?? Array.from({ length: n }, (_, i) => `node-${i + 1}`);
  if (names.length !== n) throw new ClusterOptionError('nodeNames', `${names.length} names for ${n} nodes`);
  for (const name of names) {
    if (!DNS1123_SUBDOMAIN.test(name)) throw new ClusterOptionError('nodeNames', `${JSON.stringify(name)} is not a valid node name`);
  }
  if (new Set(names).size !== names.length) throw new ClusterOptionError('nodeNames', 'names must be unique');
  if (o.zones && o.zones.length > n) throw new ClusterOptionError('zones', `${o.zones.length} zones for ${n} nodes`);
  if (o.prefix !== undefined) A.validatePrefix(o.prefix);
  return { n, names };
}

class SimCluster implements Cluster {
  readonly nodes: SimNode[] = [];
  readonly clientNetns: string;
  readonly hostIP = A.HOST_IP;
  readonly hostIP6?: string;
  readonly clientIP = A.CLIENT_IP;
  readonly clusterCIDRs: string[];
  readonly serviceCIDRs: string[];
  readonly pods = new Map<string, SimPod>();
  private readonly nodeStates = new Map<string, NodeState>();
  private readonly podStates = new Map<string, PodState>();
  private readonly children = new Set<ChildProcess>();
  private readonly inflight = new Set<Promise<unknown>>();
  private registrar?: ApiRegistrar;
  private downing?: Promise<void>;
  /** The host's cgroup2 mount; undefined = no cgroup placement (nothing needs it but ebpf mode). */
  readonly cgroupRoot = cgroup2Root();
  /** Last resort if the process ends without down(): remove everything synchronously. */
  private readonly onExit = (): void => {
    if (this.downing) return;
    cleanupPrefixSync(this.prefix);
    releaseLan(this.prefix);
  };

  constructor(
    readonly prefix: string,
    readonly dualStack: boolean,
  ) {
    this.clientNetns = A.clientNetns(prefix);
    this.clusterCIDRs = dualStack ? [A.CLUSTER_CIDR, A.CLUSTER_CIDR6] : [A.CLUSTER_CIDR];
    this.serviceCIDRs = dualStack ? [A.SERVICE_CIDR, A.SERVICE_CIDR6] : [A.SERVICE_CIDR];
    if (dualStack) this.hostIP6 = A.HOST_IP6;
    process.on('exit', this.onExit);
  }

  addNodeRecord(index: number, name: string, zone?: string): void {
    const node: SimNode = { name, netns: A.nodeNetns(this.prefix, index), ip: A.nodeIP(index), podCIDR: A.podCIDR(index) };
    if (this.dualStack) {
      node.ip6 = A.nodeIP6(index);
      node.podCIDR6 = A.podCIDR6(index);
    }
    this.nodes.push(node);
    const st: NodeState = { node, index, slots: new Set(), nextSlot: 1 };
    if (zone) st.zone = zone;
    this.nodeStates.set(name, st);
  }

  private assertUp(what: string): void {
    if (this.downing) throw new Error(`cluster ${this.prefix} is down; cannot ${what}`);
  }

  node(name: string): SimNode {
    const st = this.nodeStates.get(name);
    if (!st) throw new Error(`no node ${name} in cluster ${this.prefix} (have ${[...this.nodeStates.keys()].join(', ')})`);
    return st.node;
  }

  pod(name: string, namespace = 'default'): SimPod {
    const p = this.pods.get(`${namespace}/${name}`);
    if (!p) throw new PodError(`${namespace}/${name}`, 'no such pod');
    return p;
  }

  /** The cgroup processes of this namespace run in (node or pod), if any. */
  cgroupOfNetns(netns: string | undefined): string | undefined {
    if (!netns || !this.cgroupRoot) return undefined;
    return cgroupOfNetns(this.cgroupRoot, this.prefix, netns);
  }

  cgroupOf(v: Vantage): string | undefined {
    if (v.kind === 'pod' && v.outsideCgroup) return undefined;
    return this.cgroupOfNetns(this.netnsOf(v));
  }

  bpffsDirOf(node: string): string {
    return bpffsDirOfNetns(this.node(node).netns);
  }

  /** Creates the run's and every node's cgroup. */
  async buildCgroups(): Promise<void> {
    for (const n of this.nodes) {
      const cg = this.cgroupOfNetns(n.netns);
      if (cg) await makeCgroup(cg);
    }
  }

  netnsOf(v: Vantage): string | undefined {
    switch (v.kind) {
      case 'client':
        return this.clientNetns;
      case 'node':
        return this.node(v.node).netns;
      case 'pod':
        return this.pod(v.pod, v.namespace).netns;
      case 'host':
        return undefined;
    }
  }

  private allocateSlot(st: NodeState, podName: string): number {
    let k = st.nextSlot;
    if (k > A.MAX_PODS_PER_NODE || st.slots.has(k)) {
      k = 0;
      for (let c = 1; c <= A.MAX_PODS_PER_NODE; c++) {
        if (!st.slots.has(c)) {
          k = c;
          break;
        }
      }
      if (k === 0) throw new PodError(podName, `node ${st.node.name} has no free pod address (max ${A.MAX_PODS_PER_NODE})`);
    }
    st.slots.add(k);
    st.nextSlot = k + 1;
    return k;
  }

  addPod(p: AddPodOptions): Promise<SimPod> {
    // down() waits for pods being built, so none is created behind its back.
    const work = this.buildPodAndEcho(p);
    this.inflight.add(work);
    const forget = (): void => {
      this.inflight.delete(work);
    };
    work.then(forget, forget);
    return work;
  }

  private async buildPodAndEcho(p: AddPodOptions): Promise<SimPod> {
    this.assertUp('add a pod');
    const namespace = p.namespace ?? 'default';
    const key = `${namespace}/${p.name}`;
    if (!DNS1123_SUBDOMAIN.test(p.name)) throw new PodError(key, 'name is not a valid DNS-1123 subdomain');
    if (!DNS1123_LABEL.test(namespace)) throw new PodError(key, 'namespace is not a valid DNS-1123 label');
    if (this.podStates.has(key)) throw new PodError(key, 'already exists');
    const st = this.nodeStates.get(p.node);
    if (!st) throw new PodError(key, `no node ${p.node}`);
    const ports = p.ports ?? [8080];
    for (const port of ports) if (!Number.isInteger(port) || port < 1 || port > 65535) throw new PodError(key, `bad port ${port}`);

    // A hostNetwork pod takes no slot (slot 0): no namespace, veth or cgroup of its own.
    const host = p.hostNetwork === true;
    const k = host ? 0 : this.allocateSlot(st, key);
    const pod: SimPod = host
      ? { name: p.name, namespace, node: p.node, netns: st.node.netns, ip: st.node.ip, labels: { ...(p.labels ?? {}) }, hostNetwork: true }
      : {
          name: p.name,
          namespace,
          node: p.node,
          netns: A.podNetns(this.prefix, st.index, k),
          ip: A.podIP(st.index, k),
          labels: { ...(p.labels ?? {}) },
        };
    if (this.dualStack) {
      const ip6 = host ? st.node.ip6 : A.podIP6(st.index, k);
      if (ip6) pod.ip6 = ip6;
    }
    const ps: PodState = { pod, nodeIndex: st.index, slot: k, ready: p.ready ?? true, input: { ...p, ports } };
    this.podStates.set(key, ps);
    try {
      if (!host) {
        await T.buildPod(this.prefix, st.index, k, this.dualStack);
        const cg = this.cgroupOfNetns(pod.netns);
        if (cg) await makeCgroup(cg);
      }
      ps.echo = await this.startEcho(pod, ports);
      this.pods.set(key, pod);
      if (this.registrar) await this.registerPod(ps);
      log.v(2, 'pod added', { pod: key, node: p.node, ip: pod.ip, ip6: pod.ip6 });
      return pod;
    } catch (e) {
      this.pods.delete(key);
      this.podStates.delete(key);
      await this.teardownPod(ps);
      if (!host) st.slots.delete(k);
      throw e;
    }
  }

  private async registerPod(ps: PodState): Promise<void> {
    if (!this.registrar) return;
    const st = this.nodeStates.get(ps.pod.node);
    if (!st) return;
    const ports = ps.input.ports ?? [8080];
    const containerPorts =
      ps.input.containerPorts ??
      ports.flatMap((port) => [
        { containerPort: port, protocol: 'TCP' },
        { containerPort: port, protocol: 'UDP' },
      ]);
    await this.registrar.registerPod(podObject(ps.pod, st.node.ip, st.node.ip6, { containerPorts, ready: ps.ready }));
  }

  private startEcho(pod: SimPod, ports: number[]): Promise<ChildProcess> {
    const argv = [process.execPath, ECHO_SCRIPT, '--name', pod.name];
    for (const port of ports) argv.push('--port', String(port));
    // The cgroup is joined before `ip netns exec`, which remounts /sys (and so hides /sys/fs/cgroup).
    const [cmd, ...args] = inCgroup(this.cgroupOfNetns(pod.netns), ['ip', 'netns', 'exec', pod.netns, ...argv]);
    const child = spawn(cmd as string, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.track(child);
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      const limitMs = scaledMs(15_000);
      const timer = setTimeout(() => fail(`echo server not ready after ${limitMs / 1000} s (FERRY_TIME_SCALE stretches this); stderr: ${err.trim()}`), limitMs);
      const fail = (msg: string): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new PodError(`${pod.namespace}/${pod.name}`, msg));
      };
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (c: string) => {
        if (err.length < 4000) err += c;
      });
      child.stdout.setEncoding('utf8');
      const onData = (c: string): void => {
        out += c;
        if (out.includes('ready\n')) {
          clearTimeout(timer);
          child.stdout.off('data', onData);
          child.stdout.resume();
          child.removeListener('exit', onExit);
          resolve(child);
        }
      };
      const onExit = (code: number | null, sig: NodeJS.Signals | null): void => fail(`echo server exited (${code ?? sig}): ${err.trim()}`);
      child.stdout.on('data', onData);
      child.once('exit', onExit);
      child.once('error', (e) => fail(`cannot start echo server: ${e.message}`));
    });
  }

  private track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    // An unobserved spawn error must not crash the process that owns the cluster.
    child.on('error', (e) => log.warn('spawned process failed', { pid: child.pid, err: e }));
    child.stdin?.on('error', () => undefined);
  }

  private async teardownPod(ps: PodState): Promise<void> {
    if (ps.echo) await stopProcesses([ps.echo]);
    // The node's namespace and cgroup are the node's to remove.
    if (ps.pod.hostNetwork) return;
    await T.removePodLinks(this.prefix, ps.nodeIndex, ps.slot);
    await deleteNetns(ps.pod.netns);
    const cg = this.cgroupOfNetns(ps.pod.netns);
    if (cg) await removeCgroup(cg);
  }

  async removePod(name: string, namespace = 'default'): Promise<void> {
    const key = `${namespace}/${name}`;
    const ps = this.podStates.get(key);
    if (!ps) throw new PodError(key, 'no such pod');
    this.podStates.delete(key);
    this.pods.delete(key);
    // The API object goes first, as in a real cluster: endpoints are withdrawn while the pod still answers.
    if (this.registrar) await this.registrar.deletePod(name, namespace);
    await this.teardownPod(ps);
    if (!ps.pod.hostNetwork) this.nodeStates.get(ps.pod.node)?.slots.delete(ps.slot);
  }

  async setPodReady(name: string, ready: boolean, namespace = 'default'): Promise<void> {
    const key = `${namespace}/${name}`;
    const ps = this.podStates.get(key);
    if (!ps) throw new PodError(key, 'no such pod');
    ps.ready = ready;
    if (this.registrar) await this.registrar.setPodReady(name, namespace, ready);
  }

  async addNodeAddress(node: string, cidr: string): Promise<void> {
    this.assertUp('add a node address');
    const n = this.node(node);
    let family: 'ipv4' | 'ipv6';
    try {
      family = ipaddr.parseCIDR(cidr)[0].kind();
    } catch {
      throw new ClusterOptionError('nodeAddress', `${JSON.stringify(cidr)} is not an address in CIDR notation`);
    }
    await T.ipBatch(n.netns, [`addr add ${cidr} dev eth0${family === 'ipv6' ? ' nodad' : ''}`]);
  }

  async addClientRoute(cidr: string, viaNode: string): Promise<void> {
    this.assertUp('add a client route');
    const n = this.node(viaNode);
    let family: 'ipv4' | 'ipv6';
    try {
      family = ipaddr.parseCIDR(cidr)[0].kind();
    } catch {
      throw new ClusterOptionError('clientRoute', `${JSON.stringify(cidr)} is not a CIDR`);
    }
    const via = family === 'ipv6' ? n.ip6 : n.ip;
    if (!via) throw new ClusterOptionError('clientRoute', `${cidr} is IPv6 but the cluster is single-stack`);
    await T.ipBatch(this.clientNetns, [`route replace ${cidr} via ${via} dev eth0`]);
  }

  async attachApiServer(kubeconfig: string): Promise<void> {
    this.assertUp('attach an API server');
    const reg = new ApiRegistrar(kubeconfig);
    await Promise.all([...this.nodeStates.values()].map((st) => reg.registerNode(nodeObject(st.node, st.zone))));
    this.registrar = reg;
    await Promise.all([...this.podStates.values()].filter((ps) => this.pods.has(`${ps.pod.namespace}/${ps.pod.name}`)).map((ps) => this.registerPod(ps)));
  }

  exec(ns: string | undefined, argv: string[], opts?: RunOptions): Promise<RunResult> {
    return runIn(ns, argv, opts);
  }

  spawnIn(ns: string | undefined, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertUp('spawn a process');
    // `ip netns exec` remounts /sys, hiding /sys/fs/cgroup and /sys/fs/bpf; hostMounts enters
    // only the network namespace. Either way the cgroup is joined first, in the host's view.
    const enter = opts.hostMounts ? ['nsenter', `--net=/var/run/netns/${ns ?? ''}`, '--'] : ['ip', 'netns', 'exec', ns ?? ''];
    const full = ns ? inCgroup(this.cgroupOfNetns(ns), [...enter, ...argv]) : argv;
    const [cmd, ...args] = full;
    if (!cmd) throw new Error('spawnIn: empty argv');
    let fd: number | undefined;
    if (opts.logFile) fd = openSync(opts.logFile, 'a');
    const out = fd !== undefined ? fd : opts.pipe ? 'pipe' : 'ignore';
    try {
      // stdin stays a pipe: processes that watch it (echo servers) end when we do.
      const child = spawn(cmd, args, { stdio: ['pipe', out, out], env: opts.env ?? process.env });
      this.track(child);
      return child;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  probe(from: Vantage, target: ProbeTarget, opts: ProbeOptions = {}): Promise<ProbeResult[]> {
    return runProbe(this.netnsOf(from), target, opts, 1, this.cgroupOf(from));
  }

  probeStream(from: Vantage, target: ProbeTarget, opts: ProbeOptions & { signal: AbortSignal }): Promise<ProbeResult[]> {
    return runProbe(this.netnsOf(from), target, opts, 0, this.cgroupOf(from));
  }

  down(): Promise<void> {
    if (!this.downing) this.downing = this.doDown();
    return this.downing;
  }

  private async doDown(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
    if (this.registrar) {
      // Best effort and bounded: the API server may already be gone.
      const reg = this.registrar;
      const work = Promise.allSettled([
        ...[...this.pods.values()].map((p) => reg.deletePod(p.name, p.namespace)),
        ...this.nodes.map((n) => reg.deleteNode(n.name)),
      ]);
      await Promise.race([work, sleep(3000)]);
    }
    await stopProcesses([...this.children]);
    await cleanupPrefix(this.prefix);
    releaseLan(this.prefix);
    process.off('exit', this.onExit);
    log.v(1, 'cluster down', { prefix: this.prefix });
  }
}

/** SIGTERM, then SIGKILL whatever has not exited after a grace period. */
async function stopProcesses(children: ChildProcess[], graceMs = 2000): Promise<void> {
  const live = children.filter((c) => c.exitCode === null && c.signalCode === null);
  if (live.length === 0) return;
  const exited = live.map((c) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r()))));
  for (const c of live) {
    c.stdin?.destroy();
    c.kill('SIGTERM');
  }
  const all = Promise.all(exited);
  const timedOut = await Promise.race([all.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) {
    for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.race([all, sleep(1000)]);
  }
}

async function freshPrefix(requested?: string): Promise<string> {
  if (requested) {
    if ((await listNetns(requested + '-')).length > 0) {
      throw new ClusterOptionError('prefix', `namespaces with prefix ${requested} already exist; run "ferry sim cluster down --prefix ${requested}"`);
    }
    return requested;
  }
  for (;;) {
    const p = A.randomPrefix();
    if ((await listNetns(p)).length === 0) return p;
  }
}

export async function createCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const { n, names } = validateOptions(opts);
  const dualStack = opts.dualStack ?? false;
  const prefix = await freshPrefix(opts.prefix);
  await acquireLan(prefix, opts.lanWaitMs ?? 120_000);
  const c = new SimCluster(prefix, dualStack);
  names.forEach((name, i) => c.addNodeRecord(i + 1, name, opts.zones?.[i]));
  try {
    await T.buildLan(prefix, dualStack);
    await Promise.all(names.map((_, i) => T.buildNode(prefix, i + 1, n, dualStack)));
    await c.buildCgroups();
    await T.buildClient(prefix, dualStack);
    for (const [node, cidrs] of Object.entries(opts.nodeAddresses ?? {})) {
      for (const cidr of cidrs) await c.addNodeAddress(node, cidr);
    }
    if (opts.kubeconfig) await c.attachApiServer(opts.kubeconfig);
    const ppn = opts.podsPerNode ?? 0;
    const pending: Promise<SimPod>[] = [];
    for (const name of names) {
      for (let k = 1; k <= ppn; k++) pending.push(c.addPod({ name: `${name}-pod-${k}`, node: name, labels: { app: 'echo' } }));
    }
    const settled = await Promise.allSettled(pending);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    log.v(1, 'cluster up', { prefix, nodes: n, dualStack, pods: pending.length });
    return c;
  } catch (e) {
    log.warn('cluster creation failed; removing what was built', { prefix, err: e });
    await c.down();
    throw e;
  }
}

/**
 * Tear the cluster down on SIGINT/SIGTERM/SIGHUP, then exit with 128+signal. A second signal
 * during teardown exits at once (leftovers can then be removed with `ferry sim cluster down`).
 * Returns a function that removes the handlers.
 */
export function installSignalCleanup(cluster: Pick<Cluster, 'down' | 'prefix'>, extra?: () => Promise<void>): () => void {
  const codes: Record<string, number> = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 };
  let cleaning = false;
  const handler = (sig: NodeJS.Signals): void => {
    const code = 128 + (codes[sig] ?? 0);
    if (cleaning) process.exit(code);
    cleaning = true;
    log.info('signal received; tearing down the simulated cluster', { signal: sig, prefix: cluster.prefix });
    void (async () => {
      try {
        if (extra) await extra();
      } catch (e) {
        log.warn('cleanup step failed', { err: e });
      }
      try {
        await cluster.down();
      } catch (e) {
        log.error('teardown failed', { prefix: cluster.prefix, err: e });
      }
      process.exit(code);
    })();
  };
  for (const s of Object.keys(codes)) process.on(s, handler);
  return () => {
    for (const s of Object.keys(codes)) process.off(s, handler);
  };
}
