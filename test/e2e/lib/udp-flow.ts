/**
 * A UDP client that keeps ONE socket (one fixed source port) for its whole life, so every
 * datagram it sends belongs to the same conntrack flow. The cluster's probe opens a fresh socket
 * per attempt; this one exists to prove that a flow pinned to a removed endpoint is cleared by
 * the proxy instead of living on until the conntrack timeout.
 *   ip netns exec <ns> node dist/test/e2e/lib/udp-flow.js --addr A --port P --src-port S
 *     [--count N (0 = until SIGTERM)] [--interval-ms I] [--timeout-ms T] [--connect] [--v4-mapped]
 * Stop-and-wait: send, wait up to T for a reply, print one JSON line in the probe's format
 * ({"ok":true,"pod":..,"seen":..,"ms":..} or {"ok":false,"error":"timeout",..}), pause I, repeat.
 * The socket is not connected, so ICMP errors (a REJECT while the Service has no endpoints) do not
 * end it; they simply show as a timeout. With --connect it is (connect(2), then send without an
 * address), as statsd clients and some resolvers keep one: an error on it (the proxy destroyed it,
 * an ICMP error) prints {"ok":false,"error":"<code>"} and the client connects a new socket from
 * the same port, as such a client would. --v4-mapped: an IPv6 socket reaching the IPv4 target as
 * ::ffff:a.b.c.d, as a dual-stack socket does. Never sends anywhere but the one target.
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';

interface FlowArgs {
  addr: string;
  port: number;
  srcPort: number;
  count: number;
  intervalMs: number;
  timeoutMs: number;
  connect: boolean;
  /** An IPv6 socket sending to the IPv4 address as ::ffff:a.b.c.d (a dual-stack socket, as Java's). */
  v4Mapped: boolean;
}

function parseArgs(argv: string[]): FlowArgs {
  const a: FlowArgs = { addr: '', port: 0, srcPort: 0, count: 0, intervalMs: 200, timeoutMs: 1000, connect: false, v4Mapped: false };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1] ?? '';
    switch (k) {
      case '--connect':
        a.connect = true;
        i--; // a flag: no value
        break;
      case '--v4-mapped':
        a.v4Mapped = true;
        i--;
        break;
      case '--addr':
        a.addr = v;
        break;
      case '--port':
        a.port = Number(v);
        break;
      case '--src-port':
        a.srcPort = Number(v);
        break;
      case '--count':
        a.count = Number(v);
        break;
      case '--interval-ms':
        a.intervalMs = Number(v);
        break;
      case '--timeout-ms':
        a.timeoutMs = Number(v);
        break;
      default:
        throw new Error(`udp-flow: unknown argument ${k}`);
    }
  }
  if (!a.addr) throw new Error('udp-flow: --addr is required');
  if (a.v4Mapped) {
    if (isIPv6(a.addr)) throw new Error('udp-flow: --v4-mapped needs an IPv4 --addr');
    a.addr = `::ffff:${a.addr}`;
  }
  for (const [name, p] of [
    ['--port', a.port],
    ['--src-port', a.srcPort],
  ] as const) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`udp-flow: bad ${name} ${p}`);
  }
  return a;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A socket bound to the flow's source port (and connected to the target with --connect). */
async function open(a: FlowArgs): Promise<Socket> {
  const sock = createSocket(isIPv6(a.addr) ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ port: a.srcPort }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  if (a.connect) {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(a.port, a.addr, () => {
        sock.off('error', reject);
        resolve();
      });
    });
  }
  return sock;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  process.on('SIGINT', () => (stop = true));
  // Replies are matched to the attempt in flight; one that arrives after its attempt timed out is
  // dropped rather than credited to the next attempt. An error on a connected socket ends the
  // attempt in flight with its code.
  let pending: ((r: { line?: string; error?: string }) => void) | undefined;
  let failed: string | undefined;
  /** Whether an attempt's line carried `failed`. */
  let reported = false;
  const settle = (r: { line?: string; error?: string }): void => {
    const p = pending;
    pending = undefined;
    p?.(r);
  };
  /** An error on the connected socket (an event, or a send's callback) ends the attempt in flight. */
  const fail = (e: NodeJS.ErrnoException | null): void => {
    if (!e || !a.connect) return;
    failed ??= e.code ?? e.message;
    settle({ error: failed });
  };
  const attach = (sock: Socket): Socket => {
    sock.on('message', (msg) => settle({ line: msg.toString() }));
    sock.on('error', fail);
    return sock;
  };
  let sock = attach(await open(a));
  for (let n = 0; !stop && (a.count === 0 || n < a.count); n++) {
    if (n > 0) await sleep(a.intervalMs);
    if (stop) break;
    if (failed !== undefined) {
      // An error between two attempts (no attempt reported it) still shows in the output.
      if (!reported) process.stdout.write(JSON.stringify({ ok: false, error: failed, ms: 0 }) + '\n');
      // Connect again, as a client whose socket failed would.
      sock.removeAllListeners('message');
      sock.close();
      failed = undefined;
      reported = false;
      sock = attach(await open(a));
    }
    const start = performance.now();
    const got = await new Promise<{ line?: string; error?: string }>((resolve) => {
      const timer = setTimeout(() => {
        pending = undefined;
        resolve({ error: 'timeout' });
      }, a.timeoutMs);
      pending = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      if (a.connect) sock.send(`flow ${n}\n`, fail);
      else sock.send(`flow ${n}\n`, a.port, a.addr);
    });
    const ms = Math.round((performance.now() - start) * 1000) / 1000;
    let out: Record<string, unknown>;
    if (got.line === undefined) {
      out = { ok: false, error: got.error ?? 'timeout', ms };
      if (failed !== undefined && got.error === failed) reported = true;
    }
    else {
      const t = got.line.trim();
      const sp = t.indexOf(' ');
      out = sp > 0 ? { ok: true, pod: t.slice(0, sp), seen: t.slice(sp + 1), ms } : { ok: false, error: `bad reply: ${JSON.stringify(t.slice(0, 80))}`, ms };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
  sock.close();
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
