/**
 * The benchmark's traffic tool, run inside a namespace the harness created
 * (`ip netns exec NS node loadgen.js serve|agent`). Never dials anything it was not told to by
 * the harness, and the harness only names addresses inside its own simulated cluster.
 *
 *   serve --conn-port P --sink-port Q   on P: read one request, answer "ok\n", close (the
 *                                       connection-rate target); on Q: read and discard
 *                                       (throughput sink). Prints "ready".
 *   agent                               long-lived client driven by stdin, one reply line per command:
 *     wait ADDR PORT DEADLINE_MS        connect repeatedly (10 ms per attempt) until one gets "ok":
 *                                       "ok <epochMs> <attempts>" | "fail <reason>"
 *     conn ADDR PORT N C                N short connections, C at a time (closed loop; kept to
 *                                       show why it cannot be trusted, docs/bench.md):
 *                                       "conn <ok> <errors> <elapsedMs>"
 *     rate ADDR PORT R SECONDS TMO_MS   open loop: R new connections per second for SECONDS,
 *                                       each one request and one answer, whatever the earlier
 *                                       ones are doing; one JSON line (RateResult)
 *     bulk ADDR PORT SECONDS            one connection, send as fast as possible:
 *                                       "bulk <bytes> <elapsedMs>" | "fail <reason>"
 * Exits when stdin closes, so it never outlives the harness.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { scaledMs } from '../util/timescale.js';
import { CONNPROBE } from './connprobe.js';
import { readTcpCounters, type RateResult } from './tcpstat.js';

function nowEpochMs(): number {
  return performance.timeOrigin + performance.now();
}

function arg(argv: string[], name: string): number {
  const i = argv.indexOf(name);
  const v = i >= 0 ? Number(argv[i + 1]) : NaN;
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new Error(`loadgen: ${name} needs a port`);
  return v;
}

function serve(argv: string[]): void {
  const connPort = arg(argv, '--conn-port');
  const sinkPort = arg(argv, '--sink-port');
  let ready = 0;
  const up = () => {
    if (++ready === 2) process.stdout.write('ready\n');
  };
  const conn = createServer((s) => {
    s.on('error', () => s.destroy());
    s.once('data', () => s.end('ok\n'));
  });
  conn.listen({ port: connPort, host: '::', backlog: 4096 }, up);
  const sink = createServer((s) => {
    s.on('error', () => s.destroy());
    s.on('data', () => {});
    s.on('end', () => s.end());
  });
  sink.listen({ port: sinkPort, host: '::' }, up);
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

/** A connected attempt waits this long for the answer (a busy server may take longer than ATTEMPT_MS). */
const REPLY_MS = 2000;

/**
 * One connection that must see "ok": resolves true on success, false on any failure. Given up
 * after `timeoutMs` unless connected; once connected (`onConnect`), after REPLY_MS.
 */
function once(addr: string, port: number, timeoutMs: number, onConnect?: () => void): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const s: Socket = connect({ host: addr, port });
    s.on('connect', () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish(false), REPLY_MS);
      onConnect?.();
      s.write('q\n');
    });
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    let timer = setTimeout(() => finish(false), timeoutMs);
    s.setNoDelay(true);
    s.on('data', (b: Buffer) => finish(b.length > 0 && b[0] === 0x6f)); // "o"k
    s.on('error', () => finish(false));
    s.on('close', () => finish(false));
  });
}

/**
 * Per-attempt timeout of `wait`. A SYN sent before the rules exist is lost, and waiting for the
 * kernel's 1 s retransmit would quantize the measured latency; so attempts are short and overlap.
 */
const ATTEMPT_MS = 10;

/**
 * Connects to addr:port until one connection gets its answer: a new attempt starts every
 * `intervalMs` (overlapping the earlier ones, at most ATTEMPT_MS / intervalMs in flight), so
 * the measurement's resolution is the interval, not the attempt timeout.
 */
function waitFor(addr: string, port: number, deadlineMs: number, intervalMs = 1): Promise<string> {
  const end = Date.now() + deadlineMs;
  let attempts = 0;
  let inFlight = 0;
  // Attempts connected and waiting for the answer: no new ones meanwhile (connprobe.c says why).
  let connected = 0;
  return new Promise((resolve) => {
    let done = false;
    const tick = (): void => {
      if (done) return;
      if (Date.now() >= end) {
        if (inFlight === 0) {
          done = true;
          resolve(`fail deadline after ${attempts} attempts`);
        } else setTimeout(tick, intervalMs);
        return;
      }
      if (connected > 0) {
        setTimeout(tick, intervalMs);
        return;
      }
      attempts++;
      inFlight++;
      let wasConnected = false;
      void once(addr, port, ATTEMPT_MS, () => {
        wasConnected = true;
        connected++;
      }).then((ok) => {
        if (wasConnected) connected--;
        inFlight--;
        if (ok && !done) {
          done = true;
          resolve(`ok ${nowEpochMs().toFixed(3)} ${attempts}`);
        }
      });
      setTimeout(tick, intervalMs);
    };
    tick();
  });
}

async function connRate(addr: string, port: number, n: number, c: number): Promise<string> {
  let next = 0;
  let ok = 0;
  let errors = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      // Not answered within 2 s (stretched on an emulated VM) counts as an error.
      if (await once(addr, port, scaledMs(2000))) ok++;
      else errors++;
    }
  };
  await Promise.all(Array.from({ length: c }, worker));
  return `conn ${ok} ${errors} ${(performance.now() - t0).toFixed(1)}`;
}

/** How one open-loop connection ended. */
type Outcome = 'ok' | 'timeout' | string;

/** One request/response connection; the outcome and how long it took from connect() to the answer. */
function attempt(addr: string, port: number, timeoutMs: number): Promise<{ outcome: Outcome; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let done = false;
    const s: Socket = connect({ host: addr, port });
    const finish = (outcome: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ outcome, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    s.setNoDelay(true);
    s.on('connect', () => s.write('q\n'));
    s.on('data', (b: Buffer) => finish(b.length > 0 && b[0] === 0x6f ? 'ok' : 'badreply'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? 'error'));
    s.on('close', () => finish('closed'));
  });
}

function counters(): Record<string, number> {
  return readTcpCounters(['/proc/net/snmp', '/proc/net/netstat'].map((f) => readFileSync(f, 'utf8')));
}

async function rate(addr: string, port: number, perSec: number, seconds: number, timeoutMs: number): Promise<string> {
  const total = Math.max(1, Math.round(perSec * seconds));
  const c0 = counters();
  const cpu0 = process.cpuUsage();
  const lat: number[] = [];
  const errors: Record<string, number> = {};
  let launched = 0;
  let timeouts = 0;
  let lagMs = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    const one = () => {
      void attempt(addr, port, timeoutMs).then(({ outcome, ms }) => {
        if (outcome === 'ok') lat.push(ms);
        else if (outcome === 'timeout') timeouts++;
        else errors[outcome] = (errors[outcome] ?? 0) + 1;
        if (++settled === total) resolve();
      });
    };
    // Launches follow the clock, not the answers: a stalled connection delays nothing else.
    const tick = () => {
      const now = performance.now() - t0;
      const due = Math.min(total, Math.floor((now / 1000) * perSec) + 1);
      if (due === total && launched < total) lagMs = Math.max(0, now - ((total - 1) / perSec) * 1000);
      while (launched < due) {
        launched++;
        one();
      }
      // 5 ms batches: a 1 ms timer would cost the generator more CPU than the connections do.
      if (launched < total) setTimeout(tick, 5);
    };
    tick();
  });
  const cpu = process.cpuUsage(cpu0);
  const c1 = counters();
  const tcp: Record<string, number> = {};
  for (const k of Object.keys(c1)) tcp[k] = c1[k]! - (c0[k] ?? 0);
  lat.sort((a, b) => a - b);
  const pct = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)]! : 0);
  const r: RateResult = {
    offered: perSec,
    seconds,
    launched,
    ok: lat.length,
    timeouts,
    errors,
    // Over the offered window, not until the slowest answer: one connection answered 1 s late
    // must show as a stall, not as a lower rate for all the others.
    okPerSec: Number((lat.length / Math.max(seconds, total / perSec)).toFixed(1)),
    p50Ms: Number(pct(50).toFixed(2)),
    p99Ms: Number(pct(99).toFixed(2)),
    maxMs: Number((lat.at(-1) ?? 0).toFixed(1)),
    stalls: lat.filter((x) => x >= 900).length + timeouts,
    lagMs: Number(lagMs.toFixed(1)),
    genCpuMs: Number(((cpu.user + cpu.system) / 1000).toFixed(1)),
    tcp,
  };
  return JSON.stringify(r);
}

function bulk(addr: string, port: number, seconds: number): Promise<string> {
  return new Promise((resolve) => {
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let bytes = 0;
    let t0 = 0;
    let stop = false;
    const s = connect({ host: addr, port });
    const timer = setTimeout(() => {
      stop = true;
    }, seconds * 1000);
    const pump = () => {
      while (!stop) {
        bytes += chunk.length;
        if (!s.write(chunk)) return;
      }
      s.end();
    };
    s.on('connect', () => {
      t0 = performance.now();
      pump();
    });
    s.on('drain', pump);
    s.on('error', (e) => {
      clearTimeout(timer);
      resolve(`fail ${e.message.replace(/\s+/g, '_')}`);
    });
    s.on('finish', () => {
      clearTimeout(timer);
      const ms = performance.now() - t0;
      s.destroy();
      resolve(`bulk ${bytes} ${ms.toFixed(1)}`);
    });
  });
}

/**
 * Probes started by `probe` and read by `collect`: a burst's Services are each probed from the
 * moment their own API write returned, not once the whole burst was written (with 50 writes the
 * last returns tens of milliseconds after the first, which was counted into every change).
 */
const probes = new Map<string, Promise<string>>();

/**
 * native/tools/out/connprobe (built by scripts/setup; src/bench/connprobe.ts), one per agent:
 * the same probing without JavaScript per attempt. A burst's ten attempts per millisecond cost
 * about half a core through node:net, taken from the proxy and the API server on a two-core
 * machine; connprobe's are the kernel's work only (~18 µs each, against ~55). Where it is not
 * built, `probe` falls back to waitFor.
 */
interface Prober {
  readonly child: ChildProcess;
  readonly waiting: Map<string, (reply: string) => void>;
}

/** undefined: not started yet; null: not built or exited (waitFor from then on). */
let prober: Prober | null | undefined;

function startProber(): Prober | null {
  if (!existsSync(CONNPROBE)) return null;
  const child = spawn(CONNPROBE, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const p: Prober = { child, waiting: new Map() };
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const sp = l.indexOf(' ');
    const id = l.slice(0, sp);
    p.waiting.get(id)?.(l.slice(sp + 1));
    p.waiting.delete(id);
  });
  const gone = (why: string) => {
    if (prober === p) prober = null;
    for (const done of p.waiting.values()) done(`fail connprobe ${why}`);
    p.waiting.clear();
  };
  child.on('exit', (code, sig) => gone(`exited (${code ?? sig})`));
  child.on('error', (e) => gone(e.message.replace(/\s+/g, '_')));
  return p;
}

/** Probes addr:port as waitFor does, through connprobe; undefined where connprobe is not there. */
function probeNative(id: string, addr: string, port: number, deadlineMs: number, intervalMs: number): Promise<string> | undefined {
  if (prober === undefined) prober = startProber();
  const valid = /^[\x21-\x7e]{1,63}$/.test(id) && Number.isInteger(port) && port >= 1 && port <= 65535 && Number.isInteger(deadlineMs) && Number.isInteger(intervalMs);
  if (!prober || !valid) return undefined;
  const p = prober;
  return new Promise((resolve) => {
    p.waiting.set(id, resolve);
    p.child.stdin?.write(`probe ${id} ${addr} ${port} ${deadlineMs} ${intervalMs} ${ATTEMPT_MS}\n`);
  });
}

function agent(): void {
  const rl = createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      const [cmd, addr = '', p = '0', a = '0', b = '0', ...rest] = line.trim().split(/\s+/);
      const port = Number(p);
      let reply: string;
      try {
        // Readiness waits probe every 10 ms (ferry may be starting on the same two cores).
        if (cmd === 'wait') reply = await waitFor(addr, port, Number(a), Number(b) || 10);
        // probe ID ADDR PORT DEADLINE INTERVAL: starts waiting, answers at once.
        else if (cmd === 'probe') {
          const [id, target, tport, deadline, interval] = [addr, p, a, b, rest[0] ?? '1'];
          const [tp, dl, iv] = [Number(tport), Number(deadline), Math.max(1, Number(interval))];
          probes.set(id, probeNative(id, target, tp, dl, iv) ?? waitFor(target, tp, dl, iv));
          reply = 'ok';
        }
        // collect ID,ID,...: when each probe first answered (epoch ms), or x; forgets them.
        else if (cmd === 'collect') {
          const ids = addr.split(',');
          const rs = await Promise.all(ids.map((id) => probes.get(id) ?? Promise.resolve('fail no such probe')));
          for (const id of ids) probes.delete(id);
          reply = `ok ${rs.map((r) => (r.startsWith('ok ') ? r.split(' ')[1]! : 'x')).join(',')}`;
        }
        else if (cmd === 'conn') reply = await connRate(addr, port, Number(a), Number(b));
        else if (cmd === 'rate') reply = await rate(addr, port, Number(a), Number(b), Number(rest[0] ?? 2000));
        else if (cmd === 'bulk') reply = await bulk(addr, port, Number(a));
        else reply = `fail unknown command ${cmd ?? ''}`;
      } catch (e) {
        reply = `fail ${e instanceof Error ? e.message : String(e)}`;
      }
      process.stdout.write(reply + '\n');
    });
  });
  rl.on('close', () => {
    prober?.child.stdin?.end();
    void chain.then(() => process.exit(0));
  });
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'serve') serve(rest);
else if (mode === 'agent') agent();
else {
  process.stderr.write('usage: loadgen.js serve --conn-port P --sink-port Q | agent\n');
  process.exit(2);
}
