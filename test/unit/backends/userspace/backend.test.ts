/**
 * The userspace backend over loopback (no root, no namespaces): an in-memory AddressHolder stands
 * in for ferry0, service addresses come from 127.0.0.0/8 (local without being added anywhere), and
 * real sockets carry the traffic. Proves the data-path details the e2e test does not: half-close,
 * reset propagation, failed-bind retry, failed address update, UDP session bound and idle expiry.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { createUserspaceBackend, type AddressHolder, type UserspaceBackend } from '../../../../src/backends/userspace/index.js';
import type { ServiceEntry } from '../../../../src/plan/types.js';
import { setLogSink } from '../../../../src/util/log.js';
import { FULL, ep, fwd, partial, svc, tables } from './fixtures.js';

const logLines: string[] = [];
setLogSink((l) => logLines.push(l));

// A random /24 inside 127/8 so parallel runs do not collide.
const NET = `127.${50 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 250)}`;
const VIP = `${NET}.10`;
const EP1 = `${NET}.21`;
const EP2 = `${NET}.22`;
const BASE = 20000 + Math.floor(Math.random() * 20000);

interface FakeHolder extends AddressHolder {
  held: Set<string>;
  failApply: boolean;
}

function fakeHolder(): FakeHolder {
  const h: FakeHolder = {
    name: 'fake0',
    held: new Set(),
    failApply: false,
    async ensure() {
      return 'existing';
    },
    async exists() {
      return true;
    },
    async addresses() {
      return new Set(h.held);
    },
    async apply(add, remove) {
      if (h.failApply) throw new Error('apply refused by the fake');
      for (const a of add) h.held.add(a);
      for (const a of remove) h.held.delete(a);
    },
    async remove() {
      h.held.clear();
    },
    async localAddresses() {
      return { 4: ['127.0.0.1'], 6: [] };
    },
  };
  return h;
}

function backend(t: Test, opts: Parameters<typeof createUserspaceBackend>[0] = {}): { b: UserspaceBackend; h: FakeHolder } {
  const h = fakeHolder();
  const b = createUserspaceBackend({ families: [4], ...opts }, { holder: h, connectTimeoutsMs: [500, 500, 500] });
  t.teardown(() => b.cleanup());
  return { b, h };
}

async function server(t: Test, ip: string, port: number, onConn: (s: net.Socket) => void, allowHalfOpen = true): Promise<net.Server> {
  const s = net.createServer({ allowHalfOpen }, (c) => {
    c.on('error', () => undefined);
    onConn(c);
  });
  s.listen(port, ip);
  await once(s, 'listening');
  t.teardown(() => s.close());
  return s;
}

function ir(services: ServiceEntry[]) {
  return tables(services, [], { nodePortAddresses: { kind: 'list', addresses: [] } });
}

async function readAll(s: net.Socket): Promise<{ data: string; error?: string }> {
  let data = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (data += d));
  return await new Promise((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ data, error: e.code ?? e.message }));
    s.on('close', () => resolve({ data }));
  });
}

async function eventually(what: string, fn: () => boolean): Promise<void> {
  // A hang guard, not a timing assertion.
  for (let i = 0; i < 200; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`never happened: ${what}`);
}

t.test('half-close: the client ends its side, the endpoint still answers after reading everything', async (t) => {
  await server(t, EP1, BASE + 1, (c) => {
    let got = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => (got += d));
    c.on('end', () => c.end(`got ${got}`));
  });
  const { b, h } = backend(t);
  await b.sync(null, ir([svc({ name: 'web', clusterIP: VIP, port: BASE + 1, internal: fwd(ep(EP1, BASE + 1)) })]), FULL);
  t.same([...h.held], [VIP], 'the ClusterIP is held on the interface');
  const c = net.connect({ host: VIP, port: BASE + 1, allowHalfOpen: true });
  await once(c, 'connect');
  c.end('abc');
  const r = await readAll(c);
  t.same(r, { data: 'got abc' });
});

t.test('an endpoint reset is passed on to the client as a reset', async (t) => {
  await server(t, EP1, BASE + 2, (c) => c.once('data', () => c.resetAndDestroy()));
  const { b } = backend(t);
  await b.sync(null, ir([svc({ name: 'web', clusterIP: VIP, port: BASE + 2, internal: fwd(ep(EP1, BASE + 2)) })]), FULL);
  const c = net.connect({ host: VIP, port: BASE + 2 });
  await once(c, 'connect');
  c.write('x');
  const r = await readAll(c);
  t.equal(r.error, 'ECONNRESET', `client saw ${r.error ?? 'a clean close'}`);
});

t.test('all endpoints refuse: the client is reset after the bounded retries', async (t) => {
  const { b } = backend(t);
  await b.sync(null, ir([svc({ name: 'web', clusterIP: VIP, port: BASE + 3, internal: fwd(ep(EP1, BASE + 4), ep(EP2, BASE + 4)) })]), FULL);
  const c = net.connect({ host: VIP, port: BASE + 3 });
  const r = await readAll(c);
  t.equal(r.error, 'ECONNRESET', `client saw ${r.error ?? 'a clean close'}`);
  t.equal(b.stats().tcpConnectFailures, 2, 'each endpoint tried once');
});

// At 44k Services userspace mode ran out of descriptors: a line per frontend (tens of
// thousands), then the process died on its next `ip` spawn (util/exec.ts). Now: one line.
t.test('out of file descriptors: one error line for all frontends not opened, the sync goes on, and a line when they fit again', async (t) => {
  const child = join(dirname(fileURLToPath(import.meta.url)), 'descriptors-child.js');
  const p = spawnSync('prlimit', ['--nofile=128:128', process.execPath, child, NET, String(BASE + 100), '300'], { encoding: 'utf8', timeout: 60_000 });
  t.equal(p.status, 0, `the child survives (stderr: ${p.stderr.slice(-2000)})`);
  const r = JSON.parse(p.stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
  t.ok(r.failedFirst! > 100 && r.failedFirst! < 300, `most frontends could not open with 128 descriptors (${r.failedFirst} of 300)`);
  t.equal(r.summaryFirst, 1, 'one line says so');
  t.equal(r.limitNamed, 1, 'and names the open-files limit (soft/hard)');
  t.equal(r.perFrontend, 0, 'no line per frontend');
  t.equal(r.summaryAgain, 1, 'not logged again while the number stays the same');
  t.equal(r.failedAfter, 0, 'with 10 Services everything opens');
  t.equal(r.openAgain, 1, 'and a line says so');
});

t.test('a frontend whose port is taken is logged once, does not fail the sync, and opens on a later sync', async (t) => {
  const squatter = net.createServer();
  squatter.listen(BASE + 5, VIP);
  await once(squatter, 'listening');
  const { b } = backend(t);
  const entries = [svc({ name: 'web', clusterIP: VIP, port: BASE + 5, internal: fwd(ep(EP1, BASE + 6)) })];
  await b.sync(null, ir(entries), FULL);
  t.same(b.stats().failedFrontends, [`TCP ${VIP}:${BASE + 5}`]);
  t.ok(logLines.some((l) => l.includes('cannot open frontend')), 'logged');
  const more = [...entries, svc({ name: 'other', clusterIP: VIP, port: BASE + 9, internal: fwd(ep(EP1, BASE + 6)) })];
  await b.sync(ir(entries), ir(more), partial());
  t.same(b.stats().failedFrontends, [`TCP ${VIP}:${BASE + 5}`], 'retried on the next sync, still taken');
  t.equal(logLines.filter((l) => l.includes('cannot open frontend')).length, 1, 'and not logged again');
  squatter.close();
  await once(squatter, 'close');
  await b.sync(ir(more), ir(more), partial());
  t.same(b.stats().failedFrontends, []);
  t.same(b.frontends(), [`TCP ${VIP}:${BASE + 5}`, `TCP ${VIP}:${BASE + 9}`]);
  t.ok(logLines.some((l) => l.includes('frontend open after earlier failures') && l.includes(`${VIP}:${BASE + 5}`)), 'its recovery is logged');
});

t.test('a failed address update fails the sync before any socket is opened', async (t) => {
  const { b, h } = backend(t);
  h.failApply = true;
  await t.rejects(b.sync(null, ir([svc({ name: 'web', clusterIP: VIP, port: BASE + 7, internal: fwd(ep(EP1, 1)) })]), FULL), /apply refused/);
  t.same(b.frontends(), []);
});

t.test('UDP: the session table is bounded (oldest evicted) and idle sessions expire', async (t) => {
  const echo = dgram.createSocket('udp4');
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  echo.bind(BASE + 8, EP1);
  await once(echo, 'listening');
  t.teardown(() => echo.close());
  const { b } = backend(t, { maxUdpSessions: 2, udpIdleTimeoutMs: 300 });
  await b.sync(null, ir([svc({ name: 'dns', protocol: 'UDP', clusterIP: VIP, port: BASE + 8, internal: fwd(ep(EP1, BASE + 8)) })]), FULL);
  const clients: dgram.Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const c = dgram.createSocket('udp4');
    c.bind(0, '127.0.0.1');
    await once(c, 'listening');
    t.teardown(() => c.close());
    const reply = once(c, 'message');
    c.send(`m${i}`, BASE + 8, VIP);
    const [msg, rinfo] = (await reply) as [Buffer, dgram.RemoteInfo];
    t.equal(msg.toString(), `m${i}`);
    t.equal(`${rinfo.address}:${rinfo.port}`, `${VIP}:${BASE + 8}`, 'reply from the service address');
    clients.push(c);
  }
  t.equal(b.stats().udpEvictions, 1, 'third client evicted the oldest session');
  t.equal(b.stats().udpSessionsActive, 2);
  await eventually('idle sessions expire', () => b.stats().udpSessionsActive === 0);
  t.equal(b.stats().udpExpirations, 2);
});
