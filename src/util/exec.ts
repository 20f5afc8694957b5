/**
 * The one command runner. Every external program ferry or its simulator runs (ip, nft,
 * iptables-restore, conntrack, kubectl in tests) goes through here, so failures always carry
 * the command line, exit code and stderr.
 */
import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
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
  /**
   * Written to stdin, then closed. A list is written piece by piece, each when the pipe has taken
   * the one before: a large input (an iptables-restore of 30 MB) is never one string or buffer.
   */
  input?: string | Buffer | readonly string[];
  /**
   * Called with each line of stdout (without its newline) instead of collecting it; the result's
   * stdout is then ''. A large output (iptables-save at 10k Services) is read without holding it.
   */
  onStdoutLine?: (line: string) => void;
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
    const onLine = opts.onStdoutLine;
    // Lines split across reads: the decoder keeps a character split across them too.
    const decoder = onLine ? new StringDecoder('utf8') : undefined;
    let partial = '';
    // A callback that throws ends the read: the child is killed and the run rejects with that
    // error (thrown from a stream handler, it would end this process instead).
    let lineError: unknown;
    const lines = (text: string, last: boolean): void => {
      if (lineError !== undefined) return;
      try {
        let start = 0;
        for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
          onLine!(text.slice(start, nl));
          start = nl + 1;
        }
        partial = text.slice(start);
        if (last && partial !== '') onLine!(partial);
      } catch (e) {
        lineError = e;
        child.kill('SIGKILL');
      }
    };
    if (onLine && decoder) {
      child.stdout.on('data', (b: Buffer) => lines(partial + decoder.write(b), false));
    } else {
      child.stdout.on('data', (b: Buffer) => out.push(b));
    }
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      if (onLine && decoder) lines(partial + decoder.end(), true);
      if (lineError !== undefined) {
        reject(lineError);
        return;
      }
      const res = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), exitCode: code };
      if (code !== 0 && !opts.allowFailure) reject(new CommandError(argv, code, res.stderr, res.stdout));
      else resolve(res);
    });
    child.stdin.on('error', () => {
      /* the child may exit before reading its input; the exit code tells the story */
    });
    const input = opts.input;
    if (input === undefined) child.stdin.end();
    else if (typeof input === 'string' || Buffer.isBuffer(input)) child.stdin.end(input);
    else {
      const stdin = child.stdin;
      let i = 0;
      const pump = (): void => {
        while (i < input.length) {
          // false: the pipe is full; go on once it drained (a child that exits early ends it
          // with an error, handled above, and 'close' settles the result).
          if (!stdin.write(input[i++]!)) {
            stdin.once('drain', pump);
            return;
          }
        }
        stdin.end();
      };
      pump();
    }
  });
}

/** Run inside a network namespace (`ip netns exec NS ...`). */
export function runIn(netns: string | undefined, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv, opts);
}
