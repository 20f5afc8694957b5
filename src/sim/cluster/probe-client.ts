/**
 * Library side of the probe: runs probe.js in a namespace and turns its JSON lines into
 * ProbeResults as they arrive. Aborting stops the probe after its current attempt and returns
 * what was gathered. Parsing is separate and pure so it can be tested without root.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { splitHostPort } from './addressing.js';
import { inCgroup } from './cgroups.js';
import type { ProbeOptions, ProbeResult, ProbeTarget } from './types.js';

export const PROBE_SCRIPT = fileURLToPath(new URL('./probe.js', import.meta.url));
export const ECHO_SCRIPT = fileURLToPath(new URL('./echo.js', import.meta.url));

export class ProbeError extends Error {
  readonly code = 'FERRY_ERR_SIM_PROBE';
  constructor(
    readonly netns: string | undefined,
    readonly target: ProbeTarget,
    readonly detail: string,
  ) {
    super(`probe ${target.proto} ${target.addr}:${target.port} from ${netns ?? 'host'} failed: ${detail}`);
    this.name = 'ProbeError';
  }
}

/** One line of probe.js output → ProbeResult; undefined if it is not one. */
export function parseProbeLine(line: string): ProbeResult | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.ok !== 'boolean' || typeof o.ms !== 'number') return undefined;
  const r: ProbeResult = { ok: o.ok, ms: o.ms };
  if (typeof o.addr === 'string') r.addr = o.addr;
  if (typeof o.pod === 'string') r.pod = o.pod;
  if (typeof o.error === 'string') r.error = o.error;
  if (typeof o.seen === 'string') {
    r.seen = o.seen;
    const hp = splitHostPort(o.seen);
    if (hp) r.seenIP = hp.ip;
  }
  return r;
}

export function probeArgv(netns: string | undefined, target: ProbeTarget, opts: ProbeOptions, defaultCount: number, cgroup?: string): string[] {
  const argv = [
    process.execPath,
    PROBE_SCRIPT,
    '--proto',
    target.proto,
    '--addr',
    target.addr,
    '--port',
    String(target.port),
    '--count',
    String(opts.count ?? defaultCount),
    '--timeout-ms',
    String(opts.timeoutMs ?? 2000),
    '--interval-ms',
    String(opts.intervalMs ?? 0),
    ...(opts.overlap ? ['--overlap', '1'] : []),
  ];
  // The cgroup is joined before `ip netns exec`, which remounts /sys (hiding /sys/fs/cgroup).
  return inCgroup(cgroup, netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv);
}

/** `cgroup`: the probe runs in it (the vantage's node or pod cgroup, for socket-level LB). */
export function runProbe(netns: string | undefined, target: ProbeTarget, opts: ProbeOptions = {}, defaultCount = 1, cgroup?: string): Promise<ProbeResult[]> {
  const argv = probeArgv(netns, target, opts, defaultCount, cgroup);
  return new Promise((resolve, reject) => {
    const results: ProbeResult[] = [];
    if (opts.signal?.aborted) {
      resolve(results);
      return;
    }
    const [cmd, ...args] = argv;
    const child = spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let stderr = '';
    const onAbort = (): void => {
      child.kill('SIGTERM');
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const r = parseProbeLine(line);
        if (!r) continue;
        results.push(r);
        opts.onResult?.(r);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => {
      if (stderr.length < 4000) stderr += c;
    });
    child.on('error', (e) => {
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new ProbeError(netns, target, e.message));
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (code !== 0 && !(opts.signal?.aborted && (sig === 'SIGTERM' || code === null))) {
        reject(new ProbeError(netns, target, `exit ${code ?? sig}: ${stderr.trim()}`));
        return;
      }
      resolve(results);
    });
  });
}
