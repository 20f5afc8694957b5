/**
 * Userspace mode's splice(2) data path end to end: ferry's userspace backend (agent.ts, in a fresh
 * "node" namespace) forwards NodePorts to servers in a "pods" namespace for a client in a third
 * namespace, with the native addon's spliceBidirectional doing the byte moving. Proves integrity
 * of large transfers both ways, half-close, reset propagation both ways, no fd leak over many
 * short connections, and that removing a frontend ends its spliced connections.
 *
 * The client and the servers need behaviour agent.ts does not have, so this file is also its own
 * peer process: run with FERRY_SPLICE_PEER=1 inside a namespace it serves JSON-line requests
 * (see Peer / peerMain below) instead of running tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

type ServeMode = 'echo' | 'replyAfterEnd' | 'resetOnData';

type PeerRequest =
  | { op: 'serve'; ip: string; port: number; mode: ServeMode }
  /** Sends `bytes` random bytes then FIN; returns hashes of what was sent and what came back. */
  | { op: 'transfer'; ip: string; port: number; bytes: number }
  /** Sends `text`, shuts its write side, then reads the reply until EOF. */
  | { op: 'halfClose'; ip: string; port: number; text: string }
  /** Sends a byte and reports how the connection ended. */
  | { op: 'probe'; ip: string; port: number }
  /** `count` connect → line → echo → FIN (even) or close at once (odd), `concurrency` at a time. */
  | { op: 'many'; ip: string; port: number; count: number; concurrency: number }
  | { op: 'hold'; id: string; ip: string; port: number }
  /** Waits for a held connection to end (or HANG after the guard). */
  | { op: 'waitEnd'; id: string }
  | { op: 'reset'; id: string }
  /** How the echo servers' connections ended so far, oldest first. */
  | { op: 'serverEnds' };

interface TransferResult {
  sent: number;
  sentSha: string;
  got: number;
  gotSha: string;
  error: string | null;
}

const PEER_ENV = 'FERRY_SPLICE_PEER';
const HANG_GUARD_MS = 20_000;

function errCode(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof e.code === 'string') return e.code;
  return e instanceof Error ? e.message : String(e);
}

// ---- the peer process ------------------------------------------------------------------------

async function peerMain(): Promise<void> {
  const serverEnds: string[] = [];
  const held = new Map<string, { socket: net.Socket; ended: Promise<string> }>();

  function serve(ip: string, port: number, mode: ServeMode): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      let outcome = 'open';
      s.on('error', (e) => (outcome = `error ${errCode(e)}`));
      s.on('end', () => (outcome = outcome === 'open' ? 'end' : outcome));
      s.on('close', () => serverEnds.push(outcome));
      if (mode === 'echo') {
        s.pipe(s);
      } else if (mode === 'replyAfterEnd') {
        const h = createHash('sha256');
        let n = 0;
        s.on('data', (d: Buffer) => {
          h.update(d);
          n += d.length;
        });
        // Only after the client's FIN: proves the reply direction outlives the half-close.
        s.on('end', () => s.end(`after your FIN: ${n} bytes ${h.digest('hex')}\n`));
      } else {
        s.once('data', () => s.resetAndDestroy());
      }
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: ip, port, backlog: 1024 }, () => resolve());
    });
  }

  function transfer(ip: string, port: number, bytes: number): Promise<TransferResult> {
    return new Promise((resolve) => {
      const data = randomBytes(bytes);
      const sentSha = createHash('sha256').update(data).digest('hex');
      const got = createHash('sha256');
      let gotBytes = 0;
      let done = false;
      const finish = (error: string | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        s.destroy();
        resolve({ sent: bytes, sentSha, got: gotBytes, gotSha: got.digest('hex'), error });
      };
      const timer = setTimeout(() => finish('HANG'), 120_000);
      const s = net.connect({ host: ip, port, allowHalfOpen: true });
      s.on('data', (d: Buffer) => {
        got.update(d);
        gotBytes += d.length;
      });
      s.on('end', () => finish(null));
      s.on('error', (e) => finish(errCode(e)));
      s.on('connect', () => s.end(data));
    });
  }

  function halfClose(ip: string, port: number, text: string): Promise<{ reply: string; finSentFirst: boolean; error: string | null }> {
    return new Promise((resolve) => {
      let reply = '';
      let finSent = false;
      let finSentFirst = false;
      const s = net.connect({ host: ip, port, allowHalfOpen: true });
      const finish = (error: string | null): void => {
        clearTimeout(timer);
        s.destroy();
        resolve({ reply, finSentFirst, error });
      };
      const timer = setTimeout(() => finish('HANG'), HANG_GUARD_MS);
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        if (reply === '') finSentFirst = finSent;
        reply += d;
      });
      s.on('end', () => finish(null));
      s.on('error', (e) => finish(errCode(e)));
      s.on('connect', () => s.end(text, () => (finSent = true)));
    });
  }

  function probe(ip: string, port: number): Promise<string> {
    return new Promise((resolve) => {
      let data = '';
      const s = net.connect({ host: ip, port });
      const finish = (how: string): void => {
        clearTimeout(timer);
        s.destroy();
        resolve(how);
      };
      const timer = setTimeout(() => finish('HANG'), HANG_GUARD_MS);
      s.setEncoding('utf8');
      s.on('data', (d: string) => (data += d));
      s.on('error', (e) => finish(`error ${errCode(e)}`));
      s.on('end', () => finish(data === '' ? 'closed' : `data ${data}`));
      s.on('connect', () => s.write('x'));
    });
  }

  function oneShort(ip: string, port: number, i: number): Promise<string | null> {
    return new Promise((resolve) => {
      const line = `short ${i}\n`;
      let buf = '';
      const s = net.connect({ host: ip, port });
      const finish = (err: string | null): void => {
        clearTimeout(timer);
        s.destroy();
        resolve(err);
      };
      const timer = setTimeout(() => finish('HANG'), HANG_GUARD_MS);
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        if (buf !== line) return;
        // Every other one hangs up abruptly instead of exchanging FINs.
        if (i % 2 === 1) finish(null);
        else s.end();
      });
      s.on('end', () => finish(buf === line ? null : `got ${JSON.stringify(buf)}`));
      s.on('error', (e) => finish(errCode(e)));
      s.on('connect', () => s.write(line));
    });
  }

  async function many(ip: string, port: number, count: number, concurrency: number): Promise<{ ok: number; errors: string[] }> {
    let next = 0;
    let ok = 0;
    const errors: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < count) {
        const err = await oneShort(ip, port, next++);
        if (err === null) ok++;
        else errors.push(err);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { ok, errors };
  }

  function hold(id: string, ip: string, port: number): Promise<{ echo: string }> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: ip, port });
      let first = '';
      const ended = new Promise<string>((res) => {
        socket.on('error', (e) => res(`error ${errCode(e)}`));
        socket.on('close', () => res('closed'));
      });
      held.set(id, { socket, ended });
      socket.setEncoding('utf8');
      const onData = (d: string): void => {
        first += d;
        if (first.endsWith('\n')) {
          socket.off('data', onData);
          resolve({ echo: first });
        }
      };
      socket.on('data', onData);
      socket.once('error', reject);
      socket.on('connect', () => socket.write('ping\n'));
    });
  }

  async function handle(req: PeerRequest): Promise<unknown> {
    switch (req.op) {
      case 'serve':
        await serve(req.ip, req.port, req.mode);
        return null;
      case 'transfer':
        return await transfer(req.ip, req.port, req.bytes);
      case 'halfClose':
        return await halfClose(req.ip, req.port, req.text);
      case 'probe':
        return await probe(req.ip, req.port);
      case 'many':
        return await many(req.ip, req.port, req.count, req.concurrency);
      case 'hold':
        return await hold(req.id, req.ip, req.port);
      case 'waitEnd': {
        const h = held.get(req.id);
        if (!h) throw new Error(`no held connection ${req.id}`);
        let timer: NodeJS.Timeout | undefined;
        const hang = new Promise<string>((res) => (timer = setTimeout(() => res('HANG'), HANG_GUARD_MS)));
        const how = await Promise.race([h.ended, hang]);
        clearTimeout(timer);
        return how;
      }
      case 'reset':
        held.get(req.id)?.socket.resetAndDestroy();
        return null;
      case 'serverEnds':
        return [...serverEnds];
    }
  }

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const { id, req } = JSON.parse(line) as { id: number; req: PeerRequest };
    handle(req).then(
      (result) => process.stdout.write(JSON.stringify({ id, ok: true, result: result ?? null }) + '\n'),
      (e: unknown) => process.stdout.write(JSON.stringify({ id, ok: false, error: e instanceof Error ? e.message : String(e) }) + '\n'),
    );
  });
  rl.on('close', () => process.exit(0));
}

/** This file run as a peer inside `ns`. */
class Peer {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private stderr = '';

  constructor(readonly ns: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, [PEER_ENV]: '1' },
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: string };
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.ok) p?.resolve(msg.result);
      else p?.reject(new Error(`peer in ${ns}: ${msg.error ?? 'failed'}`));
    });
    this.child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    this.child.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`peer in ${ns} exited (${code}): ${this.stderr.slice(-2000)}`));
      this.pending.clear();
    });
  }

  call<T>(req: PeerRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: (v) => resolve(v as T), reject });
      this.child.stdin!.write(JSON.stringify({ id, req }) + '\n');
    });
  }

  stop(): Promise<void> {
    if (this.child.exitCode !== null) return Promise.resolve();
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    return gone.finally(() => clearTimeout(timer));
  }
}

// ---- the tests -------------------------------------------------------------------------------

async function testMain(): Promise<void> {
  const { default: t } = await import('tap');
  const { serializeTables } = await import('../../../src/backends/dryrun/serialize.js');
  const { run } = await import('../../../src/util/exec.js');
  const { eventually } = await import('../lib/eventually.js');
  const { ep, fwd, svc, tables } = await import('../../unit/backends/userspace/fixtures.js');
  const { Agent, buildTopology } = await import('./harness.js');
  type ServiceEntry = ReturnType<typeof svc>;

  // This file tests the splice path whatever the caller's environment says.
  delete process.env['FERRY_USERSPACE_SPLICE'];

  const topo = await buildTopology(t, 1);
  const P1 = topo.podIPs[0] as string;
  const ferry = Agent.start(t, topo.node, 'ferry');
  const servers = new Peer(topo.pods);
  t.teardown(() => servers.stop());
  const client = new Peer(topo.client);
  t.teardown(() => client.stop());

  await servers.call({ op: 'serve', ip: P1, port: 9000, mode: 'echo' });
  await servers.call({ op: 'serve', ip: P1, port: 9001, mode: 'replyAfterEnd' });
  await servers.call({ op: 'serve', ip: P1, port: 9002, mode: 'resetOnData' });

  const echo = svc({ name: 'echo', clusterIP: '198.19.0.10', port: 80, nodePort: 30080, internal: fwd(ep(P1, 9000)) });
  const after = svc({ name: 'after', clusterIP: '198.19.0.11', port: 80, nodePort: 30081, internal: fwd(ep(P1, 9001)) });
  const resetter = svc({ name: 'resetter', clusterIP: '198.19.0.12', port: 80, nodePort: 30082, internal: fwd(ep(P1, 9002)) });
  const doomed = svc({ name: 'doomed', clusterIP: '198.19.0.13', port: 80, nodePort: 30083, internal: fwd(ep(P1, 9000)) });

  async function sync(services: ServiceEntry[]): Promise<void> {
    const ir = tables(services, [], { nodeIPs: [topo.nodeIP], nodePortAddresses: { kind: 'list', addresses: [topo.nodeIP] } });
    await ferry.call({ op: 'ferrySync', tables: serializeTables(ir), full: true, tableChanged: true });
  }

  // Generous connect timeouts: on a loaded machine the default first attempt (250 ms) can lapse,
  // and ferry would then reset the client for a reason that has nothing to do with splice.
  await ferry.call({ op: 'ferryStart', connectTimeoutsMs: [5000, 5000] });
  await sync([echo, after, resetter, doomed]);

  // The agent is the only long-lived process in the node namespace.
  async function ferryPid(): Promise<number> {
    const r = await run(['ip', 'netns', 'pids', topo.node]);
    const pids = r.stdout.split('\n').filter(Boolean).map(Number);
    const pid = pids.find((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('agent.js');
      } catch {
        return false;
      }
    });
    if (pid === undefined) throw new Error(`no ferry agent among pids ${pids.join(' ')} in ${topo.node}`);
    return pid;
  }
  const pid = await ferryPid();

  function fds(): { total: number; pipes: number } {
    let total = 0;
    let pipes = 0;
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        total++;
        if (target.startsWith('pipe:')) pipes++;
      } catch {
        /* closed while listing */
      }
    }
    return { total, pipes };
  }

  async function fdsSettleTo(want: { total: number; pipes: number }, what: string): Promise<void> {
    await eventually(
      async () => {
        const now = fds();
        if (now.total !== want.total || now.pipes !== want.pipes) {
          throw new Error(`ferry has ${now.total} fds (${now.pipes} pipes), wanted ${want.total} (${want.pipes})`);
        }
      },
      { what, timeoutMs: 10_000, intervalMs: 100 },
    );
  }

  const nodeIP = topo.nodeIP;
  // Warm-up: the addon's poller (epoll fd, eventfd, thread) starts with the first spliced connection.
  const warm = await client.call<{ ok: number; errors: string[] }>({ op: 'many', ip: nodeIP, port: 30080, count: 4, concurrency: 1 });
  t.equal(warm.ok, 4, `warm-up connections failed: ${warm.errors.join(', ')}`);

  t.test('the splice data path is the one in use', async (t) => {
    t.match(ferry.log(), /userspace TCP data path via=splice/, `ferry's log: ${ferry.log().slice(-500)}`);
    const before = fds();
    const h = await client.call<{ echo: string }>({ op: 'hold', id: 'probe', ip: nodeIP, port: 30080 });
    t.equal(h.echo, 'ping\n');
    const during = fds();
    // Two pipes (4 fds) per spliced connection, plus the two sockets and the addon's dups of them.
    t.equal(during.pipes - before.pipes, 4, `pipes in ferry: ${before.pipes} before, ${during.pipes} with one connection`);
    await client.call({ op: 'reset', id: 'probe' });
    await fdsSettleTo(before, 'ferry back to its fds after the connection ends');
  });

  t.test('50 MB each way: both directions arrive intact', async (t) => {
    const bytes = 50 * 1024 * 1024;
    const r = await client.call<TransferResult>({ op: 'transfer', ip: nodeIP, port: 30080, bytes });
    t.equal(r.error, null, 'no error on the client');
    t.equal(r.got, bytes, `bytes echoed back: ${r.got} of ${bytes}`);
    t.equal(r.gotSha, r.sentSha, 'the echo is byte for byte what was sent');
    const s = await ferry.call<{ tcpForwarded: number }>({ op: 'ferryStats' });
    t.ok(s.tcpForwarded >= 1);
  });

  t.test('half-close: the client shuts its write side and still receives the reply', async (t) => {
    const text = 'x'.repeat(100_000);
    const r = await client.call<{ reply: string; finSentFirst: boolean; error: string | null }>({ op: 'halfClose', ip: nodeIP, port: 30081, text });
    t.equal(r.error, null, `client saw ${r.error}`);
    const sha = createHash('sha256').update(text).digest('hex');
    t.equal(r.reply, `after your FIN: ${text.length} bytes ${sha}\n`, 'the server got all bytes and the FIN, and its reply came back');
    t.ok(r.finSentFirst, 'the reply arrived after the client had shut its write side');
  });

  t.test('a reset from the server resets the client', async (t) => {
    const how = await client.call<string>({ op: 'probe', ip: nodeIP, port: 30082 });
    t.equal(how, 'error ECONNRESET', `the client saw: ${how}`);
  });

  t.test('a reset from the client resets the server side', async (t) => {
    const endsBefore = (await servers.call<string[]>({ op: 'serverEnds' })).length;
    const h = await client.call<{ echo: string }>({ op: 'hold', id: 'rst', ip: nodeIP, port: 30080 });
    t.equal(h.echo, 'ping\n');
    await client.call({ op: 'reset', id: 'rst' });
    const ends = await eventually(
      async () => {
        const all = await servers.call<string[]>({ op: 'serverEnds' });
        if (all.length <= endsBefore) throw new Error('the server connection is still open');
        return all.slice(endsBefore);
      },
      { what: 'the server connection ends', timeoutMs: 10_000, intervalMs: 100 },
    );
    t.same(ends, ['error ECONNRESET'], `the server connection ended with: ${ends.join(', ')}`);
  });

  t.test('500 short connections, 32 at a time, half of them hung up abruptly: all answered, no fd left behind', async (t) => {
    const before = fds();
    const r = await client.call<{ ok: number; errors: string[] }>({ op: 'many', ip: nodeIP, port: 30080, count: 500, concurrency: 32 });
    const stats = await ferry.call<Record<string, unknown>>({ op: 'ferryStats' });
    t.equal(r.ok, 500, `failures: ${r.errors.slice(0, 10).join(', ')}; ferry stats ${JSON.stringify(stats)}`);
    await fdsSettleTo(before, 'ferry back to its fds after 500 connections');
  });

  t.test('removing a frontend ends its spliced connections; the others keep going', async (t) => {
    const before = fds();
    const frontendsBefore = (await ferry.call<string[]>({ op: 'ferryFrontends' })).length;
    const d = await client.call<{ echo: string }>({ op: 'hold', id: 'doomed', ip: nodeIP, port: 30083 });
    t.equal(d.echo, 'ping\n');
    const k = await client.call<{ echo: string }>({ op: 'hold', id: 'kept', ip: nodeIP, port: 30080 });
    t.equal(k.echo, 'ping\n');
    await sync([echo, after, resetter]);
    const how = await client.call<string>({ op: 'waitEnd', id: 'doomed' });
    t.equal(how, 'closed', `the removed frontend's connection ended: ${how}`);
    const more = await client.call<{ ok: number; errors: string[] }>({ op: 'many', ip: nodeIP, port: 30080, count: 1, concurrency: 1 });
    t.equal(more.ok, 1, `the kept frontend still forwards new connections: ${more.errors.join(', ')}`);
    await client.call({ op: 'reset', id: 'kept' });
    // Its listening sockets (ClusterIP and NodePort) are gone too.
    const closedListeners = frontendsBefore - (await ferry.call<string[]>({ op: 'ferryFrontends' })).length;
    t.equal(closedListeners, 2, 'the ClusterIP and NodePort listeners of the removed Service closed');
    await fdsSettleTo({ total: before.total - closedListeners, pipes: before.pipes }, 'ferry released the aborted connection and the listeners');
  });
}

if (process.env[PEER_ENV] === '1') await peerMain();
else await testMain();
