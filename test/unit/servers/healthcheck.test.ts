import { Agent, get, type IncomingMessage } from 'node:http';
import { createServer } from 'node:net';
import t from 'tap';
import type { ProxyTables } from '../../../src/plan/types.js';
import { existsSync } from 'node:fs';
import type { NodePortAddresses } from '../../../src/plan/types.js';
import { ServiceHealthServers, healthCheckHosts, healthCheckTargets } from '../../../src/servers/healthcheck.js';
import type { LogFields, Logger } from '../../../src/util/log.js';
import { entry, freePort, tables } from './fixtures.js';

t.test('targets: one per healthCheckNodePort, counting ready local endpoints', async (t) => {
  const got = healthCheckTargets(
    tables(
      [
        entry({ namespace: 'ns', name: 'web', key: 'ns/web:http/TCP', healthCheckNodePort: 30500, localReadyEndpoints: 2 }),
        entry({ namespace: 'ns', name: 'web', key: 'ns/web:https/TCP', healthCheckNodePort: 30500, localReadyEndpoints: 2 }),
        entry({ namespace: 'ns', name: 'plain' }),
      ],
      [entry({ namespace: 'ns', name: 'web', key: 'ns/web:http/TCP', family: 6, healthCheckNodePort: 30500, localReadyEndpoints: 3 })],
    ),
  );
  t.same([...got], [[30500, { namespace: 'ns', name: 'web', localEndpoints: 3 }]]);
});

t.test('servers open, answer, update and close with the IR', async (t) => {
  const [p1, p2] = [await freePort(), await freePort()];
  let proxyHealthy = true;
  const hcs = new ServiceHealthServers(() => proxyHealthy);
  t.teardown(() => hcs.closeAll());
  const get = async (port: number) => {
    const res = await fetch(`http://127.0.0.1:${port}/`);
    return {
      status: res.status,
      type: res.headers.get('content-type'),
      nosniff: res.headers.get('x-content-type-options'),
      weight: res.headers.get('x-load-balancing-endpoint-weight'),
      body: (await res.json()) as unknown,
    };
  };

  await hcs.reconcile(
    tables([
      entry({ namespace: 'ns', name: 'local', healthCheckNodePort: p1, localReadyEndpoints: 1 }),
      entry({ namespace: 'ns', name: 'empty', healthCheckNodePort: p2, localReadyEndpoints: 0 }),
    ]),
  );
  t.same(hcs.openPorts(), [p1, p2].sort((a, b) => a - b));
  const a = await get(p1);
  t.same(a, {
    status: 200,
    type: 'application/json',
    nosniff: 'nosniff',
    weight: '1',
    body: { service: { namespace: 'ns', name: 'local' }, localEndpoints: 1, serviceProxyHealthy: true },
  });
  const b = await get(p2);
  t.equal(b.status, 503, 'no local endpoints → 503');
  t.equal(b.weight, '0', 'the weight header on a 503 too, as kube-proxy');
  t.same(b.body, { service: { namespace: 'ns', name: 'empty' }, localEndpoints: 0, serviceProxyHealthy: true });

  proxyHealthy = false;
  const c = await get(p1);
  t.equal(c.status, 503, 'unhealthy proxy → 503 even with local endpoints');
  t.same((c.body as { serviceProxyHealthy: boolean }).serviceProxyHealthy, false);
  proxyHealthy = true;

  await hcs.reconcile(tables([entry({ namespace: 'ns', name: 'empty', healthCheckNodePort: p2, localReadyEndpoints: 4 })]));
  t.same(hcs.openPorts(), [p2], 'removed service port closed');
  const d = await get(p2);
  t.equal(d.status, 200, 'count updated in place');
  t.equal((d.body as { localEndpoints: number }).localEndpoints, 4);
  t.equal(d.weight, '4', 'the weight follows the count');
  await t.rejects(fetch(`http://127.0.0.1:${p1}/`), 'closed port refuses connections');
});

/** A Logger that keeps its lines (`E message k=v ...`) for assertions. */
function recorder(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (msg: string, fields?: LogFields) =>
    lines.push(`${level} ${msg}${Object.entries(fields ?? {}).map(([k, v]) => ` ${k}=${String(v)}`).join('')}`);
  return { lines, log: { info: put('I'), v: () => undefined, warn: put('W'), error: put('E') } };
}

/** Holds host:port the way another program would; resolves to its closer. */
async function squat(host: string, port: number): Promise<() => Promise<void>> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen({ host, port, exclusive: true }, resolve);
  });
  return () => new Promise<void>((resolve) => s.close(() => resolve()));
}

function onAddresses(t: ProxyTables, addresses: string[]): ProxyTables {
  const nodePortAddresses = { kind: 'list' as const, addresses };
  return { 4: { ...t[4], nodePortAddresses }, 6: { ...t[6], nodePortAddresses } };
}

t.test('a port bound on one address but not another retries the missing address on later syncs', async (t) => {
  const port = await freePort();
  const release = await squat('127.0.0.2', port);
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  t.teardown(() => hcs.closeAll());
  const ir = onAddresses(tables([entry({ namespace: 'ns', name: 'web', healthCheckNodePort: port, localReadyEndpoints: 1 })]), ['127.0.0.1', '127.0.0.2']);

  await hcs.reconcile(ir);
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 200, 'the free address serves at once');
  await hcs.reconcile(ir);
  t.equal(lines.filter((l) => l.startsWith('E failed to start healthcheck') && l.includes('host=127.0.0.2')).length, 1, `the taken address is logged once over two syncs:\n${lines.join('\n')}`);

  await release();
  await hcs.reconcile(ir);
  const res = await fetch(`http://127.0.0.2:${port}/`).catch((e: Error) => e);
  t.equal(res instanceof Error ? String(res.cause ?? res) : res.status, 200, 'once freed, the missing address is bound by the next sync');
  t.ok(lines.some((l) => l.startsWith('I healthcheck now serving') && l.includes('host=127.0.0.2')), `its recovery is logged:\n${lines.join('\n')}`);
});

t.test('two Services on one healthCheckNodePort: the second is logged once, with the port and both Services', async (t) => {
  const port = await freePort();
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  t.teardown(() => hcs.closeAll());
  const a = entry({ namespace: 'ns', name: 'a', key: 'ns/a:/TCP', healthCheckNodePort: port, localReadyEndpoints: 1 });
  const b = entry({ namespace: 'ns', name: 'b', key: 'ns/b:/TCP', healthCheckNodePort: port, localReadyEndpoints: 0 });
  const b2 = entry({ namespace: 'ns', name: 'b', key: 'ns/b:dns/UDP', healthCheckNodePort: port, localReadyEndpoints: 0 });
  const conflictLines = () => lines.filter((l) => l.startsWith('E failed to start healthcheck'));

  await hcs.reconcile(tables([a, b, b2]));
  await hcs.reconcile(tables([a, b, b2]));
  t.equal(conflictLines().length, 1, `one line over two syncs and two service ports:\n${lines.join('\n')}`);
  t.match(conflictLines()[0], new RegExp(`port=${port}\\b.*service=ns/b.*servedFor=ns/a`));
  const body = (await (await fetch(`http://127.0.0.1:${port}/`)).json()) as { service: { name: string } };
  t.equal(body.service.name, 'a', 'the first Service keeps the port');

  await hcs.reconcile(tables([a]));
  await hcs.reconcile(tables([a, b]));
  t.equal(conflictLines().length, 2, 'a conflict that ends and comes back is logged again');
});

t.test('a port another program holds is logged once, retried on every sync, and its success logged', async (t) => {
  const port = await freePort();
  const release = await squat('::', port);
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  t.teardown(() => hcs.closeAll());
  const ir = tables([entry({ namespace: 'ns', name: 'web', healthCheckNodePort: port, localReadyEndpoints: 1 })]);
  for (let i = 0; i < 5; i++) await hcs.reconcile(ir);
  t.same(hcs.openPorts(), []);
  t.equal(lines.filter((l) => l.startsWith('E ')).length, 1, `one error over five syncs:\n${lines.join('\n')}`);
  await release();
  await hcs.reconcile(ir);
  t.same(hcs.openPorts(), [port], 'retried and bound once free');
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 200);
  t.ok(lines.some((l) => l.startsWith('I healthcheck now serving') && l.includes(`port=${port}`)), `a line says it is serving now:\n${lines.join('\n')}`);
});

/** `t` with each family's nodePortAddresses replaced. */
function withNodePorts(t: ProxyTables, v4: NodePortAddresses, v6: NodePortAddresses): ProxyTables {
  return { 4: { ...t[4], nodePortAddresses: v4 }, 6: { ...t[6], nodePortAddresses: v6 } };
}
const ALL: NodePortAddresses = { kind: 'all' };
const list = (...addresses: string[]): NodePortAddresses => ({ kind: 'list', addresses });

t.test('healthcheck hosts per family, as kube-proxy\'s per-family servers', async (t) => {
  const ir = tables([]);
  t.same(
    healthCheckHosts(withNodePorts(ir, list('10.0.0.5'), ALL)),
    [
      { address: '10.0.0.5', familyOnly: true },
      { address: '::', familyOnly: true },
    ],
    'primary on a node without an IPv6 node IP: IPv4 on the primary address only, IPv6 on its own wildcard (was the dual-stack ::, answering on every IPv4 address)',
  );
  t.same(
    healthCheckHosts(withNodePorts(ir, ALL, list('fd00::5'))),
    [
      { address: '0.0.0.0', familyOnly: true },
      { address: 'fd00::5', familyOnly: true },
    ],
    'IPv4 everywhere, IPv6 on its addresses',
  );
  t.same(healthCheckHosts(withNodePorts(ir, ALL, ALL)), [{ address: '::', familyOnly: false }], 'both everywhere: one dual-stack socket');
  t.same(healthCheckHosts(withNodePorts(ir, list(), list())), [], 'CIDRs that match no address: nowhere (was everywhere)');
  t.same(healthCheckHosts(withNodePorts(ir, ALL, ALL), [4]), [{ address: '0.0.0.0', familyOnly: true }], 'a family the node does not serve is left out');
  t.same(
    healthCheckHosts(withNodePorts(ir, list('10.0.0.7', '10.0.0.5'), list('fd00::5'))),
    ['10.0.0.5', '10.0.0.7', 'fd00::5'].map((address) => ({ address, familyOnly: true })),
  );
});

t.test('a port whose IPv4 NodePorts are one address answers there, not on another IPv4 address', async (t) => {
  const port = await freePort();
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  t.teardown(() => hcs.closeAll());
  const v6 = existsSync('/proc/net/if_inet6');
  await hcs.reconcile(withNodePorts(tables([entry({ namespace: 'ns', name: 'web', healthCheckNodePort: port, localReadyEndpoints: 1 })]), list('127.0.0.1'), ALL));
  t.same(hcs.openPorts(), [port]);
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 200, 'the IPv4 NodePort address serves');
  const other = await fetch(`http://127.0.0.2:${port}/`).catch((e: Error) => e);
  t.ok(other instanceof Error, `another IPv4 address is refused (got ${other instanceof Error ? 'an error' : other.status})`);
  if (v6) t.equal((await fetch(`http://[::1]:${port}/`)).status, 200, 'IPv6, everywhere for its family, serves');
  t.same(lines.filter((l) => l.startsWith('E ')), [], 'the IPv6-only wildcard does not collide with the IPv4 address');
});

t.test('CIDRs that match no address: the port listens nowhere, quietly', async (t) => {
  const port = await freePort();
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  t.teardown(() => hcs.closeAll());
  await hcs.reconcile(withNodePorts(tables([entry({ namespace: 'ns', name: 'web', healthCheckNodePort: port, localReadyEndpoints: 1 })]), list(), list()));
  t.same(hcs.openPorts(), []);
  t.ok((await fetch(`http://127.0.0.1:${port}/`).catch((e: Error) => e)) instanceof Error, 'refused');
  t.same(lines, []);
});

t.test('a change of NodePort addresses keeps the servers of the addresses that stay', async (t) => {
  const port = await freePort();
  const { log, lines } = recorder();
  const hcs = new ServiceHealthServers(() => true, { log });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await hcs.closeAll();
  });
  const ask = (host: string) =>
    new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
      const req = get({ host, port, path: '/', agent }, (res: IncomingMessage) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
      });
      req.on('error', reject);
    });
  const ir = tables([entry({ namespace: 'ns', name: 'web', healthCheckNodePort: port, localReadyEndpoints: 1 })]);

  await hcs.reconcile(withNodePorts(ir, list('127.0.0.1'), list()));
  t.same(await ask('127.0.0.1'), { status: 200, reused: false });
  await hcs.reconcile(withNodePorts(ir, list('127.0.0.1', '127.0.0.2'), list()));
  const again = await ask('127.0.0.1').catch((e: Error) => e);
  t.same(again, { status: 200, reused: true }, 'the kept-alive connection to the address that stayed still answers (was reset: every server closed and reopened)');
  t.equal((await fetch(`http://127.0.0.2:${port}/`)).status, 200, 'the new address serves');

  await hcs.reconcile(withNodePorts(ir, list('127.0.0.2'), list()));
  t.ok((await fetch(`http://127.0.0.1:${port}/`).catch((e: Error) => e)) instanceof Error, 'the address that went is closed');
  t.equal((await fetch(`http://127.0.0.2:${port}/`)).status, 200);
  t.same(lines, []);
});
