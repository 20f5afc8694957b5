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
