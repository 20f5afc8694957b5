/**
 * The probe: a client run inside a namespace to ask "who answered, and what source did it see?"
 *   ip netns exec <ns> node dist/src/sim/cluster/probe.js --proto tcp|udp --addr A --port P
 *     [--count N (0 = until killed)] [--timeout-ms T] [--interval-ms I] [--overlap 1]
 * With --overlap 1 an attempt starts every I ms whatever the earlier ones are doing (lines come
 * in the order attempts finish); otherwise each attempt waits for the one before. `--addr A,B,…`
 * asks every address in each attempt (64 at a time), one line each with its "addr": one process
 * for a thousand Services instead of a thousand processes.
 * Prints one JSON line per attempt, as soon as it is known:
 *   {"ok":true,"pod":"web-1","seen":"198.19.1.2:4567","ms":1.2}
 *   {"ok":false,"error":"refused|timeout|unreachable|reset|...","ms":3001.0}
 * TCP opens a fresh connection per attempt (HTTP GET, Connection: close) so every attempt is a
 * new flow through the proxy's rules; UDP uses a fresh socket (new source port) per attempt.
 * Never retries on its own: each line is exactly one attempt.
 */
import { request } from 'node:http';
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';

interface ProbeArgs {
  proto: 'tcp' | 'udp';
  addr: string;
  port: number;
  count: number;
  timeoutMs: number;
  intervalMs: number;
  overlap: boolean;
}

interface Attempt {
  ok: boolean;
  /** Only when several addresses are asked. */
  addr?: string;
  pod?: string;
  seen?: string;
  error?: string;
  ms: number;
}

function parseArgs(argv: string[]): ProbeArgs {
  const a: ProbeArgs = { proto: 'tcp', addr: '', port: 0, count: 1, timeoutMs: 2000, intervalMs: 0, overlap: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i] ?? '';
    switch (k) {
      case '--proto':
        if (v !== 'tcp' && v !== 'udp') throw new Error(`probe: --proto must be tcp or udp, got ${v}`);
        a.proto = v;
        break;
      case '--addr':
        a.addr = v;
        break;
      case '--port':
        a.port = Number(v);
        break;
      case '--count':
        a.count = Number(v);
        break;
      case '--timeout-ms':
        a.timeoutMs = Number(v);
        break;
      case '--interval-ms':
        a.intervalMs = Number(v);
        break;
      case '--overlap':
        a.overlap = v === '1';
        break;
      default:
        throw new Error(`probe: unknown argument ${k}`);
    }
  }
  if (!a.addr) throw new Error('probe: --addr is required');
  if (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535) throw new Error(`probe: bad --port ${a.port}`);
  return a;
}

/** Kernel error codes → the small vocabulary tests assert on. */
function classify(code: string | undefined): string {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'reset';
    default:
      return code ? code.toLowerCase() : 'error';
  }
}

function parseLine(body: string, start: number): Attempt {
  const ms = performance.now() - start;
  const line = body.trim();
  const sp = line.indexOf(' ');
  if (sp <= 0) return { ok: false, error: `bad reply: ${JSON.stringify(line.slice(0, 80))}`, ms };
  return { ok: true, pod: line.slice(0, sp), seen: line.slice(sp + 1), ms };
}

function tcpAttempt(a: ProbeArgs): Promise<Attempt> {
  const start = performance.now();
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: Attempt): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = request({
      host: a.addr,
      port: a.port,
      path: '/',
      method: 'GET',
      agent: false,
      headers: { Connection: 'close' },
    });
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout', ms: performance.now() - start }), a.timeoutMs);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) finish({ ok: false, error: `http ${res.statusCode}`, ms: performance.now() - start });
        else finish(parseLine(Buffer.concat(chunks).toString(), start));
      });
      res.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: classify(e.code), ms: performance.now() - start }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: classify(e.code), ms: performance.now() - start }));
    req.end();
  });
}

function udpAttempt(a: ProbeArgs): Promise<Attempt> {
  const start = performance.now();
  return new Promise((resolve) => {
    const sock = createSocket(isIPv6(a.addr) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (r: Attempt): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ ok: false, error: 'timeout', ms: performance.now() - start }), a.timeoutMs);
    sock.on('message', (msg) => finish(parseLine(msg.toString(), start)));
    // A connected UDP socket reports ICMP port/host unreachable as an error: that is "refused".
    sock.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: classify(e.code), ms: performance.now() - start }));
    // connect() itself can fail (a socket-level load balancer refuses it before any packet):
    // Node passes that error to this callback rather than emitting it.
    sock.connect(a.port, a.addr, (...args: unknown[]) => {
      const err = args[0] as NodeJS.ErrnoException | undefined;
      if (err) {
        finish({ ok: false, error: classify(err.code), ms: performance.now() - start });
        return;
      }
      sock.send('probe\n', (e) => {
        if (e) finish({ ok: false, error: classify((e as NodeJS.ErrnoException).code), ms: performance.now() - start });
      });
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One attempt: each of --addr's addresses asked once, at most 64 at a time. */
async function askAll(a: ProbeArgs, report: (r: Attempt) => void): Promise<void> {
  const addrs = a.addr.split(',');
  const one = (addr: string): Promise<Attempt> => (a.proto === 'tcp' ? tcpAttempt({ ...a, addr }) : udpAttempt({ ...a, addr }));
  if (addrs.length === 1) return report(await one(a.addr));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < addrs.length) {
      const addr = addrs[next++]!;
      report({ ...(await one(addr)), addr });
    }
  };
  await Promise.all(Array.from({ length: Math.min(64, addrs.length) }, worker));
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  process.on('SIGINT', () => (stop = true));
  const report = (r: Attempt): void => {
    r.ms = Math.round(r.ms * 1000) / 1000;
    process.stdout.write(JSON.stringify(r) + '\n');
  };
  const inFlight = new Set<Promise<void>>();
  for (let n = 0; !stop && (a.count === 0 || n < a.count); n++) {
    if (n > 0 && a.intervalMs > 0) await sleep(a.intervalMs);
    if (stop) break;
    const attempt = askAll(a, report);
    if (!a.overlap) {
      await attempt;
      continue;
    }
    const p = attempt.finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  // Stopped: attempts still waiting (up to their timeout) are not wanted any more. Lines already
  // written are out (stdout to a pipe is synchronous on Linux).
  if (stop) process.exit(0);
  await Promise.all(inFlight);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
