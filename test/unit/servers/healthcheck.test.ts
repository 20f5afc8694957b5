import t from 'tap';
import { ServiceHealthServers, healthCheckTargets } from '../../../src/servers/healthcheck.js';
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
    return { status: res.status, type: res.headers.get('content-type'), nosniff: res.headers.get('x-content-type-options'), body: (await res.json()) as unknown };
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
    body: { service: { namespace: 'ns', name: 'local' }, localEndpoints: 1, serviceProxyHealthy: true },
  });
  const b = await get(p2);
  t.equal(b.status, 503, 'no local endpoints → 503');
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
  await t.rejects(fetch(`http://127.0.0.1:${p1}/`), 'closed port refuses connections');
});
