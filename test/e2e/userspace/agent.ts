/**
 * A long-lived helper process for the userspace e2e tests and the benchmark, run inside a network
 * namespace (`ip netns exec NS node agent.js`). It reads one JSON request per line on stdin and
 * writes one JSON reply per line on stdout. Depending on the requests it is the ferry daemon
 * (the userspace backend fed with a hand-built IR), the echo endpoints, or a client. Not a test
 * file. Logs go to stderr.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { createUserspaceBackend, type UserspaceBackend } from '../../../src/backends/userspace/index.js';
import type { SerializedTables } from '../../../src/backends/dryrun/serialize.js';
import type { ProxyTable, ProxyTables, ServiceEntry } from '../../../src/plan/types.js';

export type AgentRequest =
  | { op: 'serve'; tcp?: { ip: string; port: number }[]; udp?: { ip: string; port: number }[] }
  | { op: 'unserve'; proto: 'TCP' | 'UDP'; ip: string; port: number }
  | { op: 'tcpHello'; ip: string; port: number }
  | { op: 'udpOpen'; id: string }
  | { op: 'udpAsk'; id: string; ip: string; port: number; text: string }
  | { op: 'hold'; id: string; ip: string; port: number }
  | { op: 'holdEcho'; id: string; text: string }
  | { op: 'holdClose'; id: string }
  | { op: 'loopStart'; ip: string; port: number }
  | { op: 'loopStop' }
  | { op: 'ferryStart'; localhostNodePorts?: boolean; udpIdleTimeoutMs?: number; connectTimeoutsMs?: number[] }
  | { op: 'ferrySync'; tables: SerializedTables; full: boolean; tableChanged: boolean }
  | { op: 'ferryFrontends' }
  | { op: 'ferryStats' }
  | { op: 'ferryIntact' }
  | { op: 'ferryCleanup' }
  /** Benchmark: one connection streaming `bytes` to a sink; returns elapsed ms. */
  | { op: 'benchStream'; ip: string; port: number; bytes: number }
  /** Benchmark: `count` sequential connect→hello→close; returns elapsed ms. */
  | { op: 'benchConnect'; ip: string; port: number; count: number; concurrency: number }
  /** CPU time this process used so far (user + system, ms). */
  | { op: 'cpu' };

/** What a TCP hello probe saw. */
export type HelloResult =
  | { kind: 'hello'; line: string }
  /** The connection closed without a byte. */
  | { kind: 'closed' }
  | { kind: 'error'; code: string };

const HANG_GUARD_MS = 5_000;

function errCode(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof e.code === 'string') return e.code;
  return e instanceof Error ? e.message : String(e);
}

// ---- endpoints ---------------------------------------------------------------------------

const tcpServers = new Map<string, net.Server>();
const udpServers = new Map<string, dgram.Socket>();

async function serveTcp(ip: string, port: number): Promise<void> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.write(`hello ${ip}:${port} from ${s.remoteAddress}\n`);
    s.pipe(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: ip, port, backlog: 4096 }, resolve);
  });
  tcpServers.set(`${ip}|${port}`, server);
}

async function serveUdp(ip: string, port: number): Promise<void> {
  const s = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (msg, r) => s.send(`${ip}:${port} from ${r.address}|${msg.toString()}`, r.port, r.address));
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, ip, () => resolve());
  });
  udpServers.set(`${ip}|${port}`, s);
}

// A sink for benchStream: reads and discards, answers nothing until the end.
async function serveSink(ip: string, port: number): Promise<void> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('end', () => s.end('done\n'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: ip, port: port + 1, backlog: 4096 }, resolve);
  });
  tcpServers.set(`${ip}|${port + 1}`, server);
}

// ---- clients -------------------------------------------------------------------------------

function tcpHello(ip: string, port: number): Promise<HelloResult> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const finish = (r: HelloResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const s = net.connect({ host: ip, port });
    const timer = setTimeout(() => finish({ kind: 'error', code: 'HANG' }), HANG_GUARD_MS);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish({ kind: 'hello', line: buf.slice(0, nl) });
    });
    s.on('error', (e) => finish({ kind: 'error', code: errCode(e) }));
    s.on('end', () => finish(buf === '' ? { kind: 'closed' } : { kind: 'hello', line: buf }));
    s.on('close', () => finish(buf === '' ? { kind: 'closed' } : { kind: 'hello', line: buf }));
  });
}

const udpClients = new Map<string, dgram.Socket>();

async function udpAsk(id: string, ip: string, port: number, text: string): Promise<unknown> {
  const s = udpClients.get(id);
  if (!s) throw new Error(`no UDP client ${id}`);
  return await new Promise((resolve) => {
    const timer = setTimeout(() => {
      s.off('message', onMsg);
      resolve({ kind: 'timeout' });
    }, HANG_GUARD_MS);
    const onMsg = (msg: Buffer, r: dgram.RemoteInfo): void => {
      clearTimeout(timer);
      s.off('message', onMsg);
      resolve({ kind: 'reply', text: msg.toString(), from: `${r.address}:${r.port}` });
    };
    s.on('message', onMsg);
    s.send(text, port, ip);
  });
}

interface Held {
  socket: net.Socket;
  lines: string[];
  waiters: ((line: string | null) => void)[];
  closed: boolean;
}
const held = new Map<string, Held>();

function nextLine(h: Held): Promise<string | null> {
  const l = h.lines.shift();
  if (l !== undefined) return Promise.resolve(l);
  if (h.closed) return Promise.resolve(null);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('HANG'), HANG_GUARD_MS);
    h.waiters.push((line) => {
      clearTimeout(timer);
      resolve(line);
    });
  });
}

async function hold(id: string, ip: string, port: number): Promise<unknown> {
  const socket = net.connect({ host: ip, port });
  const h: Held = { socket, lines: [], waiters: [], closed: false };
  held.set(id, h);
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const w = h.waiters.shift();
      if (w) w(line);
      else h.lines.push(line);
    }
  });
  const end = (): void => {
    h.closed = true;
    for (const w of h.waiters.splice(0)) w(null);
  };
  socket.on('error', end);
  socket.on('close', end);
  return { line: await nextLine(h) };
}

let loop: { stop: boolean; ok: number; failed: number; errors: string[]; answered: Record<string, number>; done: Promise<void> } | undefined;

function startLoop(ip: string, port: number): void {
  const state = { stop: false, ok: 0, failed: 0, errors: [] as string[], answered: {} as Record<string, number>, done: Promise.resolve() };
  state.done = (async () => {
    while (!state.stop) {
      const r = await tcpHello(ip, port);
      if (r.kind === 'hello') {
        state.ok++;
        const who = r.line.split(' ')[1] ?? r.line;
        state.answered[who] = (state.answered[who] ?? 0) + 1;
      } else {
        state.failed++;
        if (state.errors.length < 10) state.errors.push(r.kind === 'error' ? r.code : r.kind);
      }
    }
  })();
  loop = state;
}

// ---- benchmark clients ----------------------------------------------------------------------

async function benchStream(ip: string, port: number, bytes: number): Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 7);
  const start = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    s.on('error', reject);
    s.on('data', () => undefined);
    s.on('end', () => resolve());
    s.on('connect', () => {
      let sent = 0;
      const pump = (): void => {
        while (sent < bytes) {
          sent += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
  });
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function benchConnect(ip: string, port: number, count: number, concurrency: number): Promise<{ ms: number; failed: number }> {
  let next = 0;
  let failed = 0;
  const start = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const r = await tcpHello(ip, port);
      if (r.kind !== 'hello') failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, failed };
}

// ---- ferry ----------------------------------------------------------------------------------

let ferry: UserspaceBackend | undefined;

function deserializeTable(t: SerializedTables['4']): ProxyTable {
  return { ...t, services: new Map(t.services.map((s: ServiceEntry) => [s.key, s])) };
}

function deserialize(t: SerializedTables): ProxyTables {
  return { 4: deserializeTable(t['4']), 6: deserializeTable(t['6']) };
}

let prevTables: ProxyTables | null = null;

async function handle(req: AgentRequest): Promise<unknown> {
  switch (req.op) {
    case 'serve':
      for (const e of req.tcp ?? []) {
        await serveTcp(e.ip, e.port);
        await serveSink(e.ip, e.port);
      }
      for (const e of req.udp ?? []) await serveUdp(e.ip, e.port);
      return null;
    case 'unserve': {
      const key = `${req.ip}|${req.port}`;
      if (req.proto === 'TCP') tcpServers.get(key)?.close();
      else udpServers.get(key)?.close();
      return null;
    }
    case 'tcpHello':
      return await tcpHello(req.ip, req.port);
    case 'udpOpen': {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => s.bind(0, () => resolve()));
      udpClients.set(req.id, s);
      return { port: s.address().port };
    }
    case 'udpAsk':
      return await udpAsk(req.id, req.ip, req.port, req.text);
    case 'hold':
      return await hold(req.id, req.ip, req.port);
    case 'holdEcho': {
      const h = held.get(req.id);
      if (!h) throw new Error(`no held connection ${req.id}`);
      if (h.closed) return { line: null };
      h.socket.write(`${req.text}\n`);
      return { line: await nextLine(h) };
    }
    case 'holdClose':
      held.get(req.id)?.socket.destroy();
      held.delete(req.id);
      return null;
    case 'loopStart':
      startLoop(req.ip, req.port);
      return null;
    case 'loopStop': {
      if (!loop) throw new Error('no loop running');
      loop.stop = true;
      await loop.done;
      const { ok, failed, errors, answered } = loop;
      loop = undefined;
      return { ok, failed, errors, answered };
    }
    case 'ferryStart':
      ferry = createUserspaceBackend(
        { localhostNodePorts: req.localhostNodePorts, udpIdleTimeoutMs: req.udpIdleTimeoutMs },
        { connectTimeoutsMs: req.connectTimeoutsMs },
      );
      return null;
    case 'ferrySync': {
      if (!ferry) throw new Error('ferry not started');
      const next = deserialize(req.tables);
      await ferry.sync(prevTables, next, { full: req.full, changed: new Set(), tableChanged: req.tableChanged });
      prevTables = next;
      return null;
    }
    case 'ferryFrontends':
      if (!ferry) throw new Error('ferry not started');
      return ferry.frontends();
    case 'ferryStats':
      if (!ferry) throw new Error('ferry not started');
      return ferry.stats();
    case 'ferryIntact':
      if (!ferry) throw new Error('ferry not started');
      return await ferry.intact();
    case 'ferryCleanup':
      if (!ferry) throw new Error('ferry not started');
      await ferry.cleanup();
      return null;
    case 'benchStream':
      return await benchStream(req.ip, req.port, req.bytes);
    case 'benchConnect':
      return await benchConnect(req.ip, req.port, req.count, req.concurrency);
    case 'cpu': {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    }
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const { id, req } = JSON.parse(line) as { id: number; req: AgentRequest };
  handle(req).then(
    (result) => process.stdout.write(JSON.stringify({ id, ok: true, result: result ?? null }) + '\n'),
    (e: unknown) => process.stdout.write(JSON.stringify({ id, ok: false, error: e instanceof Error ? e.message : String(e) }) + '\n'),
  );
});
rl.on('close', () => process.exit(0));
