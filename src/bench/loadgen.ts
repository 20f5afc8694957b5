/**
 * The benchmark's traffic tool, run inside a namespace the harness created
 * (`ip netns exec NS node loadgen.js serve|agent`). Never dials anything it was not told to by
 * the harness, and the harness only names addresses inside its own simulated cluster.
 *
 *   serve --conn-port P --sink-port Q   "ok\n" then close on P (connection-rate target);
 *                                       read and discard on Q (throughput sink). Prints "ready".
 *   agent                               long-lived client driven by stdin, one reply line per command:
 *     wait ADDR PORT DEADLINE_MS        connect repeatedly (10 ms per attempt) until one gets "ok":
 *                                       "ok <epochMs> <attempts>" | "fail <reason>"
 *     conn ADDR PORT N C                N short connections, C at a time:
 *                                       "conn <ok> <errors> <elapsedMs>"
 *     bulk ADDR PORT SECONDS            one connection, send as fast as possible:
 *                                       "bulk <bytes> <elapsedMs>" | "fail <reason>"
 * Exits when stdin closes, so it never outlives the harness.
 */
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { scaledMs } from '../util/timescale.js';

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
    s.end('ok\n');
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

/** One connection that must see "ok": resolves true on success, false on any failure. */
function once(addr: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const s: Socket = connect({ host: addr, port });
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.setNoDelay(true);
    s.on('data', (b: Buffer) => finish(b.length > 0 && b[0] === 0x6f)); // "o"k
    s.on('error', () => finish(false));
    s.on('close', () => finish(false));
  });
}

/** Per-attempt timeout of `wait`: the latency measurement's resolution. */
const ATTEMPT_MS = 10;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(addr: string, port: number, deadlineMs: number): Promise<string> {
  const end = Date.now() + deadlineMs;
  let attempts = 0;
  while (Date.now() < end) {
    attempts++;
    // Short attempts: a SYN sent before the rules exist is lost, and waiting for the kernel's
    // 1 s retransmit would quantize the measured latency.
    if (await once(addr, port, ATTEMPT_MS)) return `ok ${nowEpochMs().toFixed(3)} ${attempts}`;
    await sleep(1);
  }
  return `fail deadline after ${attempts} attempts`;
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

function agent(): void {
  const rl = createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      const [cmd, addr = '', p = '0', a = '0', b = '0'] = line.trim().split(/\s+/);
      const port = Number(p);
      let reply: string;
      try {
        if (cmd === 'wait') reply = await waitFor(addr, port, Number(a));
        else if (cmd === 'conn') reply = await connRate(addr, port, Number(a), Number(b));
        else if (cmd === 'bulk') reply = await bulk(addr, port, Number(a));
        else reply = `fail unknown command ${cmd ?? ''}`;
      } catch (e) {
        reply = `fail ${e instanceof Error ? e.message : String(e)}`;
      }
      process.stdout.write(reply + '\n');
    });
  });
  rl.on('close', () => {
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
