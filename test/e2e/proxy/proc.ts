/**
 * Running ferry as a real process for the proxy e2e tests: spawn bin/ferry, collect its stdout
 * JSON lines (dry-run plans) and stderr, wait for a plan matching a predicate, stop it.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DryRunLine } from '../../../src/backends/dryrun/index.js';
import type { ServiceEntry } from '../../../src/plan/types.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
export const FERRY_BIN = join(ROOT, 'bin', 'ferry');

export { SCRUB, childEnv } from '../lib/child-env.js';
import { SCRUB, childEnv } from '../lib/child-env.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startApiServer, type ApiServer } from '../../../src/sim/apiserver/index.js';
import { run, type RunResult } from '../../../src/util/exec.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export class FerryProc {
  readonly lines: DryRunLine[] = [];
  stderr = '';
  exitCode: number | null | undefined;
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly exited: Promise<number | null>;
  private partial = '';

  constructor(args: readonly string[]) {
    this.child = spawn('env', [...SCRUB, process.execPath, FERRY_BIN, ...args], { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (b: Buffer) => {
      this.partial += b.toString();
      let nl: number;
      while ((nl = this.partial.indexOf('\n')) >= 0) {
        const line = this.partial.slice(0, nl);
        this.partial = this.partial.slice(nl + 1);
        if (line.trim() !== '') this.lines.push(JSON.parse(line) as DryRunLine);
      }
    });
    this.child.stderr.on('data', (b: Buffer) => (this.stderr += b.toString()));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code) => {
        this.exitCode = code;
        resolve(code);
      }),
    );
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  last(): DryRunLine | undefined {
    return this.lines.at(-1);
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.exitCode === undefined) this.child.kill(signal);
    return this.exited;
  }

  /** The last stderr lines, for failure messages. */
  tail(n = 15): string {
    return this.stderr.trim().split('\n').slice(-n).join('\n');
  }
}

/** Every service entry of both families in a plan line, by key and family ("ns/web:/TCP@4"). */
export function entries(line: DryRunLine | undefined): Map<string, ServiceEntry> {
  const out = new Map<string, ServiceEntry>();
  if (!line) return out;
  for (const fam of ['4', '6'] as const) for (const e of line.families[fam].services) out.set(`${e.key}@${fam}`, e);
  return out;
}

/** Polls until `fn` returns a value (not undefined); the error carries `seen()` on timeout. */
export async function waitFor<T>(what: string, fn: () => T | undefined, seen: () => string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + scaledMs(timeoutMs);
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; instead: ${seen()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** What dryRunCluster() gives a test: the simulated API server, kubectl on it, and dry-run ferry processes. */
export interface DryRunCluster {
  readonly api: ApiServer;
  readonly dir: string;
  readonly kubeconfig: string;
  /** kubectl against the simulated API server; `input` goes to its stdin. */
  kubectl(args: readonly string[], input?: string): Promise<RunResult>;
  /** A dry-run ferry as node-1 (no healthz, metrics on a free port) with `args` added; stopped at the end. */
  ferry(args?: readonly string[]): Promise<FerryProc>;
}

/**
 * A simulated API server, its kubeconfig in a fresh directory and the ferry processes a test
 * starts, all removed when the test ends (also after a failure).
 */
export async function dryRunCluster(t: { teardown(fn: () => Promise<void>): void }, name: string, serviceCIDRs: string[]): Promise<DryRunCluster> {
  const dir = mkdtempSync(join(tmpdir(), `ferry-e2e-${name}-`));
  const api = await startApiServer({ serviceCIDRs });
  const procs: FerryProc[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop('SIGKILL');
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kubeconfig = join(dir, 'kubeconfig');
  api.writeKubeconfig(kubeconfig);
  return {
    api,
    dir,
    kubeconfig,
    kubectl: (args, input) => run(['kubectl', '--kubeconfig', kubeconfig, ...args], input === undefined ? { timeoutMs: 30_000 } : { input, timeoutMs: 30_000 }),
    async ferry(args = []) {
      const p = new FerryProc(['--kubeconfig', kubeconfig, '--hostname-override', 'node-1', '--dry-run', '--healthz-bind-address', '', '--metrics-bind-address', `127.0.0.1:${await freePort()}`, ...args]);
      procs.push(p);
      return p;
    },
  };
}
