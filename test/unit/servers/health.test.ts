import t from 'tap';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import type { V1Node } from '@kubernetes/client-node';
import { ProxyHealth, startHealthzServer } from '../../../src/servers/health.js';
import { FakeClock } from '../../../src/sync/clock.js';

const node = (over: Partial<V1Node> = {}): V1Node => ({ metadata: { name: 'node-1' }, ...over });

t.test('healthy until a queued change waits longer than the timeout', async (t) => {
  const clock = new FakeClock();
  const h = new ProxyHealth(60_000, [4, 6], clock);
  t.equal(h.health().healthy, true, 'healthy right after start');
  await clock.advance(10 * 60_000);
  t.equal(h.health().healthy, true, 'nothing queued yet (an API server not reached): healthy, as kube-proxy');
  h.queuedUpdate();
  await clock.advance(60_000);
  t.equal(h.health().healthy, false, 'the first objects queued and no first sync within the timeout → unhealthy');
  h.updated();
  t.equal(h.health().healthy, true, 'a sync makes it healthy');
  await clock.advance(10 * 60_000);
  t.equal(h.health().healthy, true, 'nothing queued: healthy however old the last sync');
  h.queuedUpdate();
  await clock.advance(59_999);
  t.equal(h.health().healthy, true, 'queued change not late yet');
  h.queuedUpdate();
  await clock.advance(1);
  t.equal(h.health().healthy, false, 'the OLDEST queued change counts');
  h.updated();
  t.equal(h.health().healthy, true);
});

t.test('/healthz needs an eligible node; /livez does not', async (t) => {
  const clock = new FakeClock();
  const h = new ProxyHealth(60_000, [4], clock);
  h.updated();
  t.equal(h.response(true).status, 503, 'node unknown → /healthz 503');
  t.equal(h.response(false).status, 200, '/livez ignores the node');
  h.setNode(node());
  const ok = h.response(true);
  t.equal(ok.status, 200);
  const body = JSON.parse(ok.body) as Record<string, unknown>;
  t.equal(body.nodeEligible, true);
  t.equal(body.lastUpdated, new Date(clock.now()).toISOString(), 'healthy: lastUpdated is now, as kube-proxy reports');
  t.equal(body.currentTime, new Date(clock.now()).toISOString());
  t.equal('nodeEligible' in (JSON.parse(h.response(false).body) as object), false, '/livez has no nodeEligible');
  h.setNode(node({ metadata: { name: 'node-1', deletionTimestamp: new Date() } }));
  t.equal(h.response(true).status, 503, 'node being deleted → 503');
  t.equal((JSON.parse(h.response(true).body) as Record<string, unknown>).nodeEligible, false);
  t.equal(h.response(false).status, 200, '/livez still 200');
  h.setNode(node({ spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] } }));
  t.equal(h.response(true).status, 503, 'autoscaler deletion taint → 503');
});

t.test('the HTTP server answers with kube-proxy headers', async (t) => {
  const h = new ProxyHealth(60_000, [4]);
  h.updated();
  h.setNode(node());
  const seen: string[] = [];
  const srv = await startHealthzServer({ host: '127.0.0.1', port: 0 }, h, (p, c) => seen.push(`${p}:${c}`));
  t.teardown(() => srv.close());
  const port = (srv.server.address() as AddressInfo).port;
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'application/json');
  t.equal(res.headers.get('x-content-type-options'), 'nosniff');
  const body = (await res.json()) as Record<string, unknown>;
  t.equal(body.nodeEligible, true);
  t.equal((await fetch(`http://127.0.0.1:${port}/livez`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 404, 'metrics are not served here (as kube-proxy)');
  t.same(seen, ['/healthz:200', '/livez:200']);
});

t.test('0.0.0.0 answers over both families, as kube-proxy\'s Go listener (a dual-stack socket)', async (t) => {
  const h = new ProxyHealth(60_000, [4, 6], new FakeClock());
  const srv = await startHealthzServer({ host: '0.0.0.0', port: 0 }, h);
  t.teardown(() => srv.close());
  const port = (srv.server.address() as AddressInfo).port;
  t.equal((await fetch(`http://127.0.0.1:${port}/livez`)).status, 200, 'over IPv4');
  if (!existsSync('/proc/net/if_inet6')) {
    t.comment('no IPv6 on this machine: IPv6 not checked');
    return;
  }
  t.equal((await fetch(`http://[::1]:${port}/livez`)).status, 200, 'over IPv6 (was refused: Node binds 0.0.0.0 to IPv4 only)');
});
