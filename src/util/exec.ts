/**
 * The one command runner. Every external program ferry or its simulator runs (ip, nft,
 * iptables-restore, conntrack, kubectl in tests) goes through here, so failures always carry
 * the command line, exit code and stderr.
 */
import { spawn } from 'node:child_process';
import { scaledMs } from './timescale.js';

export class CommandError extends Error {
  readonly code = 'FERRY_ERR_COMMAND';
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`command failed (exit ${exitCode}): ${argv.join(' ')}${stderr ? `: ${stderr.trim()}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  input?: string | Buffer;
  /** Resolve with the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
}

export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) {
      reject(new Error('run: empty argv'));
      return;
    }
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    // First, before touching the pipes: when the process is out of file descriptors the spawn
    // fails (EMFILE) with no pipes at all, and an 'error' nobody listens to ends the process.
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new CommandError(argv, null, String(e.message), ''));
    });
    if (!child.stdout || !child.stderr || !child.stdin) return;
    if (opts.timeoutMs) {
      // A hang guard: stretched on slow (emulated) machines, see timescale.ts.
      timer = setTimeout(() => child.kill('SIGKILL'), scaledMs(opts.timeoutMs));
    }
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      const res = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), exitCode: code };
      if (code !== 0 && !opts.allowFailure) reject(new CommandError(argv, code, res.stderr, res.stdout));
      else resolve(res);
    });
    child.stdin.on('error', () => {
      /* the child may exit before reading its input; the exit code tells the story */
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Run inside a network namespace (`ip netns exec NS ...`). */
export function runIn(netns: string | undefined, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv, opts);
}
