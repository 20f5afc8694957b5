// The echo server and the probe talking over loopback in the host namespace (no root needed).
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { ECHO_SCRIPT, runProbe } from '../../../../src/sim/cluster/probe-client.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function startEcho(name: string, ports: number[]): Promise<ChildProcess> {
  const argv = [ECHO_SCRIPT, '--name', name, '--host', '127.0.0.1'];
  for (const p of ports) argv.push('--port', String(p));
  const child = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout.on('data', (c: Buffer) => {
      if (c.toString().includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`echo exited ${code}: ${err}`)));
  });
}

t.test('TCP and UDP on every port answer with the pod name and the client address', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  const echo = await startEcho('web-1', [p1, p2]);
  t.teardown(() => {
    echo.kill('SIGKILL');
  });
  for (const port of [p1, p2]) {
    for (const proto of ['tcp', 'udp'] as const) {
      const rs = await runProbe(undefined, { proto, addr: '127.0.0.1', port }, { count: 2 });
      t.equal(rs.length, 2, `${proto}/${port}: two attempts, two lines`);
      for (const r of rs) {
        t.ok(r.ok, `${proto}/${port} answered: ${JSON.stringify(r)}`);
        t.equal(r.pod, 'web-1');
        t.equal(r.seenIP, '127.0.0.1');
      }
      if (proto === 'tcp') t.not(rs[0]?.seen, rs[1]?.seen, 'each TCP attempt is a new connection (new source port)');
    }
  }
});

t.test('curl gets the same line over HTTP/1.1', async (t) => {
  const port = await freePort();
  const echo = await startEcho('curl-pod', [port]);
  t.teardown(() => {
    echo.kill('SIGKILL');
  });
  const out = await new Promise<string>((resolve, reject) => {
    const c = spawn('curl', ['-sS', '-H', 'Connection: close', `http://127.0.0.1:${port}/`]);
    let s = '';
    c.stdout.on('data', (b: Buffer) => (s += b.toString()));
    c.once('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`curl exit ${code}`))));
  });
  t.match(out, /^curl-pod 127\.0\.0\.1:\d+\n$/);
});

t.test('a closed port is reported as refused, for TCP and for UDP', async (t) => {
  const port = await freePort();
  for (const proto of ['tcp', 'udp'] as const) {
    const [r] = await runProbe(undefined, { proto, addr: '127.0.0.1', port }, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `${proto}: ${JSON.stringify(r)}`);
    t.equal(r?.error, 'refused', `${proto}: ${JSON.stringify(r)}`);
  }
});

t.test('an aborted endless probe returns what it gathered', async (t) => {
  const port = await freePort();
  const echo = await startEcho('stream', [port]);
  t.teardown(() => {
    echo.kill('SIGKILL');
  });
  const ac = new AbortController();
  let seen = 0;
  const rs = await runProbe(
    undefined,
    { proto: 'tcp', addr: '127.0.0.1', port },
    {
      intervalMs: 5,
      signal: ac.signal,
      onResult: () => {
        if (++seen === 3) ac.abort();
      },
    },
    0,
  );
  t.ok(rs.length >= 3, `got ${rs.length} results`);
  t.ok(rs.every((r) => r.ok && r.pod === 'stream'));
});

t.test('the echo server exits when its stdin closes', async (t) => {
  const port = await freePort();
  const echo = await startEcho('orphan', [port]);
  const exited = new Promise<number | null>((r) => echo.once('exit', (code) => r(code)));
  echo.stdin?.end();
  t.equal(await exited, 0);
});

t.test('--overlap starts attempts on time while an earlier one still waits for its answer', async (t) => {
  // A server that answers its first connection only after 600 ms and every later one at once.
  let n = 0;
  const server = createServer((sock) => {
    const delay = n++ === 0 ? 600 : 0;
    const body = 'slow-pod 1.2.3.4:5\n';
    sock.once('data', () => setTimeout(() => sock.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`), delay));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const order: number[] = [];
  const rs = await runProbe(undefined, { proto: 'tcp', addr: '127.0.0.1', port }, { count: 3, intervalMs: 50, timeoutMs: 2000, overlap: true, onResult: (r) => order.push(r.ms) });
  t.equal(rs.length, 3, 'every attempt reports');
  t.ok(rs.every((r) => r.ok && r.pod === 'slow-pod'), 'all answered');
  t.ok(order[0]! < 300 && order[2]! >= 500, `the quick attempts answered before the slow first one (ms in arrival order: ${order.join(', ')})`);
  const serial = await runProbe(undefined, { proto: 'tcp', addr: '127.0.0.1', port }, { count: 2, intervalMs: 50, timeoutMs: 2000 });
  t.equal(serial.length, 2, 'without --overlap: one after another, as before');
});

t.test('--addr A,B,…: one attempt asks every address, each line naming its address', async (t) => {
  const [p] = [await freePort()];
  const echo = await startEcho('web-9', [p]);
  t.teardown(() => {
    echo.kill('SIGKILL');
  });
  // 127.0.0.1 answers; 127.0.0.2 has no listener on that port.
  const rs = await runProbe(undefined, { proto: 'tcp', addr: '127.0.0.1,127.0.0.2', port: p }, { timeoutMs: 2000 });
  t.equal(rs.length, 2, 'one line per address');
  t.same(
    rs.map((r) => `${r.addr} ${r.ok ? r.pod : r.error}`).sort(),
    ['127.0.0.1 web-9', '127.0.0.2 refused'],
  );
});
