/**
 * The latency phase's prober (native/tools/connprobe.c, built by scripts/setup), on loopback
 * only: an attempt counts when the server answers "o…", not when it merely accepts; a refused
 * address is tried every interval until the deadline; a slow answer is waited for, without new
 * connections meanwhile; and the loadgen agent's probe / collect commands go through it and
 * report the first answer's time.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CONNPROBE } from '../../../src/bench/connprobe.js';

const LOADGEN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'src', 'bench', 'loadgen.js');

function server(reply: string, delayMs = 0): Promise<{ srv: Server; port: number }> {
  const srv = createServer((s) => {
    s.on('error', () => s.destroy());
    s.once('data', () => (delayMs > 0 ? setTimeout(() => s.end(reply), delayMs) : s.end(reply)));
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, port: (srv.address() as AddressInfo).port })));
}

/** A port nothing listens on (taken, then released). */
async function closedPort(): Promise<number> {
  const { srv, port } = await server('');
  await new Promise((r) => srv.close(r));
  return port;
}

/** One long-lived line-protocol child: write a line, read the lines it answers. */
function lines(argv: string[]) {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const got: string[] = [];
  const waiting: (() => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    got.push(l);
    for (const w of waiting.splice(0)) w();
  });
  return {
    child,
    send: (l: string) => child.stdin.write(`${l}\n`),
    async next(): Promise<string> {
      while (got.length === 0) await new Promise<void>((r) => waiting.push(r));
      return got.shift()!;
    },
    close: () => child.stdin.end(),
  };
}

t.test('connprobe is built (scripts/setup; by hand: make -C native/tools)', async (t) => {
  t.ok(existsSync(CONNPROBE), CONNPROBE);
});

t.test('connprobe: answered, refused, and accepted without the answer', { skip: !existsSync(CONNPROBE) && 'connprobe not built' }, async (t) => {
  const ok = await server('ok\n');
  const wrong = await server('no\n');
  const closed = await closedPort();
  t.teardown(() => {
    ok.srv.close();
    wrong.srv.close();
  });
  const p = lines([CONNPROBE]);
  t.teardown(p.close);
  const before = Date.now();
  p.send(`probe good 127.0.0.1 ${ok.port} 2000 1 10`);
  const good = (await p.next()).split(' ');
  t.equal(good[0], 'good');
  t.equal(good[1], 'ok', good.join(' '));
  const when = Number(good[2]);
  t.ok(when >= before - 5 && when <= Date.now() + 5, `the answer's epoch time (${when}) lies within the probe (${before}..${Date.now()})`);
  t.ok(Number(good[3]) >= 1, 'attempts counted');

  p.send(`probe refused 127.0.0.1 ${closed} 200 20 10`);
  p.send(`probe mute 127.0.0.1 ${wrong.port} 200 20 10`);
  const ends = new Map<string, string[]>();
  for (let i = 0; i < 2; i++) {
    const l = (await p.next()).split(' ');
    ends.set(l[0]!, l);
  }
  for (const id of ['refused', 'mute']) {
    const l = ends.get(id)!;
    t.equal(l[1], 'fail', `${id}: ${l.join(' ')}`);
    t.equal(l[2], 'deadline');
    // 200 ms every 20 ms: about ten attempts, each a new connection.
    t.ok(Number(l[3]) >= 5 && Number(l[3]) <= 12, `${id}: tried every interval until the deadline (${l[3]} attempts)`);
  }
  // A server slower to answer than an attempt may take to connect (a busy one): the connected
  // attempt waits for it, and its probe makes no new connections meanwhile.
  const slow = await server('ok\n', 120);
  t.teardown(() => slow.srv.close());
  p.send(`probe slow 127.0.0.1 ${slow.port} 2000 1 10`);
  const late = (await p.next()).split(' ');
  t.equal(late[1], 'ok', `a server answering after 120 ms is seen to answer (${late.join(' ')})`);
  t.ok(Number(late[3]) <= 5, `no new attempts while one waits for the answer (${late[3]} attempts at one per ms)`);

  p.send('probe broken 127.0.0.1 notaport 100 1 10');
  t.match(await p.next(), /^\? fail bad_command/, 'a malformed command is refused, not guessed');
});

t.test('the loadgen agent probes through connprobe', { skip: !existsSync(CONNPROBE) && 'connprobe not built' }, async (t) => {
  const ok = await server('ok\n');
  const closed = await closedPort();
  t.teardown(() => ok.srv.close());
  const agent = lines([process.execPath, LOADGEN, 'agent']);
  t.teardown(agent.close);
  agent.send(`probe a 127.0.0.1 ${ok.port} 2000 1`);
  t.equal(await agent.next(), 'ok');
  agent.send(`probe b 127.0.0.1 ${closed} 150 5`);
  t.equal(await agent.next(), 'ok');
  agent.send('collect a,b');
  const r = await agent.next();
  t.match(r, /^ok \d+\.\d{3},x$/, `a answered (its epoch time), b never did: ${r}`);
  // `wait` probes in the agent's own JavaScript: a slow answer is waited for there too.
  const slow = await server('ok\n', 120);
  t.teardown(() => slow.srv.close());
  agent.send(`wait 127.0.0.1 ${slow.port} 2000`);
  const w = await agent.next();
  t.match(w, /^ok \d+\.\d{3} [1-5]$/, `the agent's own probing waits for a server answering after 120 ms, without new attempts (${w})`);
  const pids = await new Promise<string>((resolve) => {
    const ps = spawn('ps', ['-o', 'args=', '--ppid', String(agent.child.pid)], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    ps.stdout.on('data', (d: Buffer) => (out += d.toString()));
    ps.on('close', () => resolve(out));
  });
  t.match(pids, /connprobe/, 'the agent runs connprobe as its child');
});
