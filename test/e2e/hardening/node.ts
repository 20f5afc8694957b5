/**
 * A one-node simulated cluster whose API server the test owns: its store can be filled past
 * validation before ferry starts (writeUnvalidated), and the server can go down and come back on
 * the same port with its store intact. One real bin/ferry runs in the node namespace. Teardown
 * (ferry, namespaces, API server) runs in t.teardown, so also after a failure.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createApiCore, startApiServer, stopApiCore, type ApiCore, type ApiServer } from '../../../src/sim/apiserver/index.js';
import { createCluster, type Cluster, type ProbeResult } from '../../../src/sim/cluster/index.js';
import { run } from '../../../src/util/exec.js';
import { eventually, NotYet } from '../lib/eventually.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { childEnv, ferryArgv, HEALTHZ_PORT, METRICS_PORT, modeArgs, type ProxyMode, type TapLike } from '../lib/harness.js';

export interface OneNode {
  readonly cluster: Cluster;
  readonly core: ApiCore;
  readonly kubeconfig: string;
  readonly dir: string;
  readonly nodeName: string;
  readonly netns: string;
  api: ApiServer;
  /** Starts ferry (again) with the standard flags plus `extra`; resolves at once. */
  startFerry(extra?: string[]): void;
  stopFerry(): Promise<void>;
  /** ms from the ferry start until /healthz (on 127.0.0.1 in the node namespace) says 200. */
  waitHealthy(timeoutMs?: number): Promise<number>;
  /** HTTP status of http://127.0.0.1:port/path inside the node namespace (0 = no answer). */
  localHttp(port: number, path: string): Promise<{ code: number; body: string }>;
  metric(name: string, labels?: string): Promise<number | undefined>;
  log(): string;
  kubectl(args: string[], input?: string): Promise<string>;
  probe(addr: string, port: number, timeoutMs?: number): Promise<ProbeResult>;
  waitReachable(addr: string, port: number, what: string, timeoutMs?: number): Promise<ProbeResult>;
  /**
   * Probes addr:port from the node from now on (one process, an attempt every few ms) until an
   * answer `accept` takes; `answered` gives when it came (Date.now()) and what it was.
   */
  startProbing(addr: string, port: number, accept?: (r: ProbeResult) => boolean): Probing;
  /** Until a TCP answer from the node that `accept` takes (say, from a given pod). */
  waitAnswer(addr: string, port: number, what: string, accept: (r: ProbeResult) => boolean, timeoutMs?: number): Promise<ProbeResult>;
  /** The API server goes away (its port closes); the store stays. */
  apiDown(): Promise<void>;
  /** The API server is back on the same address and port, serving the same store. */
  apiUp(): Promise<void>;
  exec(argv: string[]): Promise<{ stdout: string; stderr: string; exitCode: number | null }>;
}

export interface Probing {
  /** Resolves once the first attempt has finished, whatever its outcome (the process is probing), or the probe has ended. */
  readonly probing: Promise<void>;
  answered(what: string, timeoutMs?: number): Promise<{ at: number; result: ProbeResult }>;
  stop(): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function withOneNode(
  t: TapLike,
  opts: { mode: ProxyMode; pods?: number; seed?: (core: ApiCore) => void },
  fn: (env: OneNode) => Promise<void>,
): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('this e2e test needs root (network namespaces)');
  const dir = mkdtempSync(join(tmpdir(), `ferry-e2e-hardening-${opts.mode}-`));
  const kubeconfig = join(dir, 'kubeconfig');
  const logFile = join(dir, 'ferry.log');
  let cluster: Cluster | undefined;
  let api: ApiServer | undefined;
  let core: ApiCore | undefined;
  let ferry: ChildProcess | undefined;
  let ferryExit: string | undefined;
  let startedAt = 0;

  const stopFerry = async (): Promise<void> => {
    const child = ferry;
    ferry = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const late = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 5000))]);
    if (late) {
      child.kill('SIGKILL');
      await exited;
    }
  };
  t.teardown(async () => {
    await stopFerry();
    if (cluster) await cluster.down().catch((e: unknown) => t.comment(`cluster teardown failed: ${String(e)}`));
    if (api) await api.close();
    if (core) stopApiCore(core);
    if (t.passing() && process.env['FERRY_E2E_KEEP'] !== '1') rmSync(dir, { recursive: true, force: true });
    else t.comment(`kept ferry's log in ${logFile}`);
  });

  cluster = await createCluster({ nodes: 1, dualStack: false });
  const c = cluster;
  core = createApiCore({ serviceCIDRs: c.serviceCIDRs });
  opts.seed?.(core);
  const theCore = core;
  api = await startApiServer({ host: c.hostIP, port: 0, core });
  const port = api.port;
  api.writeKubeconfig(kubeconfig);
  await c.attachApiServer(kubeconfig);
  const node = c.nodes[0]!;
  for (let k = 1; k <= (opts.pods ?? 0); k++) await c.addPod({ name: `echo-${k}`, node: node.name, labels: { app: `echo-${k}` } });

  const readLog = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const exec = async (argv: string[]) => c.exec(node.netns, argv, { allowFailure: true, timeoutMs: 15_000 });
  const localHttp = async (p: number, path: string) => {
    const r = await exec(['curl', '-s', '-w', '\n%{http_code}', '--max-time', '2', `http://127.0.0.1:${p}${path}`]);
    const nl = r.stdout.lastIndexOf('\n');
    return { code: Number(r.stdout.slice(nl + 1)) || 0, body: r.stdout.slice(0, Math.max(nl, 0)) };
  };
  const alive = (): void => {
    if (ferryExit !== undefined) throw new Error(`ferry exited (${ferryExit}); log tail:\n${readLog().split('\n').slice(-20).join('\n')}`);
  };
  const env: OneNode = {
    cluster: c,
    core: theCore,
    kubeconfig,
    dir,
    nodeName: node.name,
    netns: node.netns,
    api,
    startFerry(extra = []) {
      ferryExit = undefined;
      startedAt = Date.now();
      const child = c.spawnIn(node.netns, ferryArgv(opts.mode, kubeconfig, node, c.clusterCIDRs, [...modeArgs(opts.mode, c, node), ...extra]), {
        logFile,
        env: childEnv(),
        hostMounts: opts.mode === 'ebpf',
      });
      child.once('exit', (code, sig) => {
        if (ferry === child) ferryExit = `${code ?? sig}`;
      });
      ferry = child;
    },
    stopFerry,
    async waitHealthy(timeoutMs = 120_000) {
      await eventually(
        async () => {
          alive();
          const r = await localHttp(HEALTHZ_PORT, '/healthz');
          if (r.code !== 200) throw new NotYet(`HTTP ${r.code || 'no answer'}`);
        },
        { what: 'ferry reports /healthz 200', timeoutMs, intervalMs: 100 },
      );
      return Date.now() - startedAt;
    },
    localHttp,
    async metric(name, labels = '') {
      const r = await localHttp(METRICS_PORT, '/metrics');
      const want = labels ? `${name}{${labels}}` : name;
      for (const line of r.body.split('\n')) {
        const sp = line.lastIndexOf(' ');
        if (sp > 0 && line.slice(0, sp) === want) return Number(line.slice(sp + 1));
      }
      return undefined;
    },
    log: readLog,
    async kubectl(args, input) {
      const r = await run(['kubectl', '--kubeconfig', kubeconfig, ...args], input === undefined ? { timeoutMs: 30_000 } : { input, timeoutMs: 30_000 });
      return r.stdout;
    },
    async probe(addr, p, timeoutMs = 1000) {
      const [r] = await c.probe({ kind: 'node', node: node.name }, { proto: 'tcp', addr, port: p }, { timeoutMs });
      return r ?? { ok: false, error: 'no result', ms: 0 };
    },
    waitReachable(addr, p, what, timeoutMs = 60_000) {
      return env.waitAnswer(addr, p, what, () => true, timeoutMs);
    },
    async waitAnswer(addr, p, what, accept, timeoutMs = 60_000) {
      const probing = env.startProbing(addr, p, accept);
      try {
        return (await probing.answered(what, timeoutMs)).result;
      } finally {
        probing.stop();
      }
    },
    startProbing(addr, p, accept = () => true) {
      // One probe process starts an attempt every 20 ms from now on, each with 2 s to answer,
      // overlapping: a process per attempt costs the two cores more than the ferry being timed
      // and starts a few hundred milliseconds late; one attempt after another would either wait
      // out TCP's 1 s SYN retransmission (an attempt sent before the rules were in) or give up
      // on an answer that is merely slow (userspace, whose proxying waits while a sync runs).
      const stop = new AbortController();
      let last = 'no attempt finished';
      let ended = false;
      let settle: ((a: { at: number; result: ProbeResult }) => void) | undefined;
      const first = new Promise<{ at: number; result: ProbeResult }>((resolve) => (settle = resolve));
      let began: (() => void) | undefined;
      const probing = new Promise<void>((resolve) => (began = resolve));
      const streaming = c
        .probeStream(
          { kind: 'node', node: node.name },
          { proto: 'tcp', addr, port: p },
          {
            timeoutMs: 2000,
            intervalMs: 20,
            overlap: true,
            signal: stop.signal,
            onResult: (r) => {
              began?.();
              if (r.ok && accept(r)) {
                settle?.({ at: Date.now(), result: r });
                stop.abort();
              } else last = r.ok ? `answered by ${r.pod ?? '?'}` : (r.error ?? 'failed');
            },
          },
        )
        .catch((e: unknown) => {
          last = `probe failed: ${e instanceof Error ? e.message : String(e)}`;
        })
        .then(() => {
          ended = true;
          // A probe that could not start at all still ends the wait for it.
          began?.();
          return undefined;
        });
      return {
        probing,
        async answered(what, timeoutMs = 60_000) {
          const deadline = Date.now() + scaledMs(timeoutMs);
          for (;;) {
            alive();
            const got = await Promise.race([first, streaming, sleep(Math.min(1000, Math.max(0, deadline - Date.now())))]);
            if (got) return got;
            // The probe process ended without an answer (stopped, or it failed), or time is up.
            if (ended || Date.now() >= deadline) throw new Error(`${what}: no answer within ${timeoutMs} ms (last: ${last})`);
          }
        },
        stop: () => stop.abort(),
      };
    },
    async apiDown() {
      await env.api.close();
    },
    async apiUp() {
      env.api = api = await startApiServer({ host: c.hostIP, port, core: theCore });
    },
    exec,
  };
  await fn(env);
}
