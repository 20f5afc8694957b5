/**
 * A UDP client that keeps ONE socket (one fixed source port) for its whole life, so every
 * datagram it sends belongs to the same conntrack flow. The cluster's probe opens a fresh socket
 * per attempt; this one exists to prove that a flow pinned to a removed endpoint is cleared by
 * the proxy instead of living on until the conntrack timeout.
 *   ip netns exec <ns> node dist/test/e2e/lib/udp-flow.js --addr A --port P --src-port S
 *     [--count N (0 = until SIGTERM)] [--interval-ms I] [--timeout-ms T]
 * Stop-and-wait: send, wait up to T for a reply, print one JSON line in the probe's format
 * ({"ok":true,"pod":..,"seen":..,"ms":..} or {"ok":false,"error":"timeout",..}), pause I, repeat.
 * The socket is not connected, so ICMP errors (a REJECT while the Service has no endpoints) do not
 * end it; they simply show as a timeout. Never sends anywhere but the one target.
 */
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';

interface FlowArgs {
  addr: string;
  port: number;
  srcPort: number;
  count: number;
  intervalMs: number;
  timeoutMs: number;
}

function parseArgs(argv: string[]): FlowArgs {
  const a: FlowArgs = { addr: '', port: 0, srcPort: 0, count: 0, intervalMs: 200, timeoutMs: 1000 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1] ?? '';
    switch (k) {
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
  for (const [name, p] of [
    ['--port', a.port],
    ['--src-port', a.srcPort],
  ] as const) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`udp-flow: bad ${name} ${p}`);
  }
  return a;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const sock = createSocket(isIPv6(a.addr) ? 'udp6' : 'udp4');
  sock.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ port: a.srcPort }, () => resolve());
  });
  let stop = false;
  process.on('SIGTERM', () => (stop = true));
  process.on('SIGINT', () => (stop = true));
  // Replies are matched to the attempt in flight; one that arrives after its attempt timed out is
  // dropped rather than credited to the next attempt.
  let pending: ((line: string) => void) | undefined;
  sock.on('message', (msg) => {
    const p = pending;
    pending = undefined;
    p?.(msg.toString());
  });
  for (let n = 0; !stop && (a.count === 0 || n < a.count); n++) {
    if (n > 0) await sleep(a.intervalMs);
    if (stop) break;
    const start = performance.now();
    const line = await new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => {
        pending = undefined;
        resolve(undefined);
      }, a.timeoutMs);
      pending = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
      sock.send(`flow ${n}\n`, a.port, a.addr);
    });
    const ms = Math.round((performance.now() - start) * 1000) / 1000;
    let out: Record<string, unknown>;
    if (line === undefined) out = { ok: false, error: 'timeout', ms };
    else {
      const t = line.trim();
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
