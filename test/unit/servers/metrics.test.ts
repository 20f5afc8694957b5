import t from 'tap';
import { connect, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ProxyMetrics, startMetricsServer } from '../../../src/servers/metrics.js';
import type { SyncResult } from '../../../src/sync/syncer.js';
import { entry, tables } from './fixtures.js';
import { newStats } from '../../../src/backends/userspace/stats.js';
import type { LogFields, Logger } from '../../../src/util/log.js';
import type { PlannedEndpoint } from '../../../src/plan/types.js';

t.test('sync results become kube-proxy metrics', async (t) => {
  const m = new ProxyMetrics('nftables', { processMetrics: false });
  const now = Date.parse('2030-01-01T00:00:10Z');
  const tb = tables([
    entry({ namespace: 'a', name: 'ext', externalPolicyLocal: true, external: { verdict: 'drop', endpoints: [] } }),
    entry({ namespace: 'a', name: 'int', internalPolicyLocal: true, internal: { verdict: 'drop', endpoints: [] } }),
    entry({ namespace: 'a', name: 'fine', externalPolicyLocal: true, external: { verdict: 'forward', endpoints: [{ ip: '198.18.1.1', port: 80, isLocal: true, ready: true }] } }),
  ]);
  const base: SyncResult = { n: 1, ok: true, full: true, fullReason: 'first', startedAt: now, durationMs: 20, noop: false, tables: tb, triggerTimes: [new Date(now - 2500)] };
  m.observeSync(base, now);
  m.observeSync({ ...base, n: 2, full: false, fullReason: undefined, triggerTimes: [] }, now);
  m.observeSync({ ...base, n: 3, ok: false, error: new Error('x') }, now);
  m.serviceChanges.inc();
  m.endpointChanges.inc(2);
  m.queued(now);
  const text = await m.registry.metrics();
  const has = (re: RegExp, what: string) => t.match(text, re, what);
  has(/^kubeproxy_sync_proxy_rules_duration_seconds_count 3$/m, 'every attempt, the failed one too (kube-proxy observes in a defer)');
  has(/^kubeproxy_sync_full_proxy_rules_duration_seconds_count 2$/m, 'two full, one of them failed');
  has(/^kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1$/m, 'one partial');
  has(/^kubeproxy_sync_proxy_rules_last_timestamp_seconds 1893456010$/m, 'last sync timestamp');
  has(/^kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds 1893456010$/m, 'last queued timestamp');
  has(/^kubeproxy_network_programming_duration_seconds_count 1$/m, 'one trigger time observed');
  has(/^kubeproxy_network_programming_duration_seconds_bucket\{le="2"\} 0$/m, '2.5s is above the 2s bucket');
  has(/^kubeproxy_network_programming_duration_seconds_bucket\{le="3"\} 1$/m, 'and within 3s');
  has(/^kubeproxy_sync_proxy_rules_service_changes_total 1$/m, 'service changes');
  has(/^kubeproxy_sync_proxy_rules_endpoint_changes_total 2$/m, 'endpoint changes');
  has(/^kubeproxy_sync_proxy_rules_no_local_endpoints_total\{traffic_policy="external"\} 1$/m, 'external no-local');
  has(/^kubeproxy_sync_proxy_rules_no_local_endpoints_total\{traffic_policy="internal"\} 1$/m, 'internal no-local');
  has(/^ferry_sync_failures_total\{full="true"\} 1$/m, 'one failure');
  has(/^ferry_backend_info\{mode="nftables"\} 1$/m, 'backend info');
});

t.test('docs/cli.md says where network_programming_duration_seconds buckets start, as /metrics has them', async (t) => {
  const text = await new ProxyMetrics('nftables', { processMetrics: false }).registry.metrics();
  const first = /^kubeproxy_network_programming_duration_seconds_bucket\{le="([^"]+)"\}/m.exec(text)?.[1];
  t.equal(first, '0.005', 'the first bucket is 5 ms');
  const doc = readFileSync(fileURLToPath(new URL('../../../../docs/cli.md', import.meta.url)), 'utf8');
  const stated = /`network_programming_duration_seconds` buckets \(ferry's start at ([\d.]+) ms/.exec(doc)?.[1];
  t.equal(Number(stated) / 1000, Number(first), `docs/cli.md states ${stated ?? 'nothing'} ms`);
});

t.test('the metrics server serves /metrics and /debug/plan', async (t) => {
  const m = new ProxyMetrics('dry-run', { processMetrics: false });
  let plan: ReturnType<typeof tables> | null = null;
  const srv = await startMetricsServer({ host: '127.0.0.1', port: 0 }, m, () => plan);
  t.teardown(() => srv.close());
  const port = (srv.server.address() as AddressInfo).port;
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.equal(res.status, 200);
  t.match(await res.text(), /ferry_backend_info\{mode="dry-run"\} 1/);
  t.equal((await fetch(`http://127.0.0.1:${port}/debug/plan`)).status, 503, 'no plan before the first sync');
  plan = tables([entry({ namespace: 'ns', name: 'web' })]);
  const dbg = await fetch(`http://127.0.0.1:${port}/debug/plan`);
  t.equal(dbg.status, 200);
  const body = (await dbg.json()) as { '4': { services: { key: string }[] }; '6': { services: unknown[] } };
  t.same(body['4'].services.map((s) => s.key), ['ns/web:/TCP']);
  t.same(body['6'].services, []);
  // As kube-proxy's metrics server: /healthz says the process serves, /proxyMode the mode.
  const hz = await fetch(`http://127.0.0.1:${port}/healthz`);
  t.same([hz.status, await hz.text()], [200, 'ok']);
  const pm = await fetch(`http://127.0.0.1:${port}/proxyMode`);
  t.same([pm.status, await pm.text()], [200, 'dry-run']);
  t.equal((await fetch(`http://127.0.0.1:${port}/configz`)).status, 404, 'not /configz (docs/cli.md)');
});

t.test('userspace counters are exported as they stand at each scrape', async (t) => {
  const m = new ProxyMetrics('userspace', { processMetrics: false });
  const s = newStats();
  m.watchUserspace(() => s);
  s.tcpAccepted = 5;
  s.tcpForwarded = 4;
  s.tcpRejected = 1;
  s.tcpActive = 2;
  s.udpSessionsCreated = 3;
  s.udpSessionsActive = 1;
  let text = await m.registry.metrics();
  t.match(text, /^ferry_userspace_tcp_connections_total\{outcome="accepted"\} 5$/m, 'accepted');
  t.match(text, /^ferry_userspace_tcp_connections_total\{outcome="forwarded"\} 4$/m, 'forwarded');
  t.match(text, /^ferry_userspace_tcp_connections_total\{outcome="rejected"\} 1$/m, 'rejected');
  t.match(text, /^ferry_userspace_tcp_connections_active 2$/m, 'active TCP');
  t.match(text, /^ferry_userspace_udp_sessions_total\{event="created"\} 3$/m, 'UDP sessions created');
  t.match(text, /^ferry_userspace_udp_sessions_active 1$/m, 'active UDP sessions');
  s.tcpAccepted = 9;
  s.tcpActive = 0;
  text = await m.registry.metrics();
  t.match(text, /^ferry_userspace_tcp_connections_total\{outcome="accepted"\} 9$/m, 'the next scrape shows the new count, not a sum');
  t.match(text, /^ferry_userspace_tcp_connections_active 0$/m, 'gauge follows');
});

t.test('a /debug answer that throws is a 500 with the error, logged, and the server keeps serving', async (t) => {
  const m = new ProxyMetrics('dry-run', { processMetrics: false });
  const lines: string[] = [];
  const put = (level: string) => (msg: string, fields?: LogFields) => lines.push(`${level} ${msg} ${JSON.stringify(fields)}`);
  const log: Logger = { info: put('I'), v: () => undefined, warn: put('W'), error: put('E') };
  const broken = (): never => {
    throw new Error('informer gone');
  };
  const srv = await startMetricsServer({ host: '127.0.0.1', port: 0 }, m, broken, { status: broken, trace: broken }, { log });
  t.teardown(() => srv.close());
  const base = `http://127.0.0.1:${(srv.server.address() as AddressInfo).port}`;
  for (const path of ['/debug/status', '/debug/plan', '/debug/trace']) {
    const res = await fetch(`${base}${path}`);
    t.same([res.status, await res.json()], [500, { error: `${path} failed: informer gone` }], `${path} (the daemon died of it)`);
  }
  t.equal(lines.length, 3, `each logged:\n${lines.join('\n')}`);
  t.match(lines[0], /^E debug request failed .*"path":"\/debug\/status".*informer gone/);
  t.equal((await fetch(`${base}/metrics`)).status, 200, '/metrics still served');
});

t.test('/debug/plan is written to one client at a time: 429 while one is being written', async (t) => {
  const m = new ProxyMetrics('dry-run', { processMetrics: false });
  // About 16 MB of JSON: more than a client that reads nothing lets the kernel take on loopback
  // (its receive buffer grows only as it reads; the send buffer is capped by tcp_wmem, 4 MB).
  const endpoints: PlannedEndpoint[] = Array.from({ length: 1000 }, (_, i) => ({ ip: `198.18.${i >> 8}.${i & 255}`, port: 8080, isLocal: false, ready: true }));
  const plan = tables(Array.from({ length: 300 }, (_, i) => entry({ namespace: 'ns', name: `s${i}`, cluster: { verdict: 'forward', endpoints } })));
  const srv = await startMetricsServer({ host: '127.0.0.1', port: 0 }, m, () => plan);
  t.teardown(() => srv.close());
  const port = (srv.server.address() as AddressInfo).port;

  const slow = connect(port, '127.0.0.1');
  t.teardown(() => slow.destroy());
  slow.write('GET /debug/plan HTTP/1.1\r\nHost: x\r\n\r\n');
  const [first] = (await once(slow, 'data')) as [Buffer];
  slow.pause();
  t.match(first.toString('latin1'), /^HTTP\/1\.1 200 /, 'the first client is being answered');

  const busy = await fetch(`http://127.0.0.1:${port}/debug/plan`);
  t.same([busy.status, busy.headers.get('retry-after')], [429, '1'], 'a second request meanwhile is turned away (each made another copy of the IR)');
  await busy.body?.cancel();

  slow.destroy();
  await once(slow, 'close');
  let after = await fetch(`http://127.0.0.1:${port}/debug/plan`);
  // The server may see the first client go a moment after this side closed.
  for (let i = 0; i < 50 && after.status === 429; i++) {
    await after.body?.cancel();
    await new Promise((r) => setTimeout(r, 20));
    after = await fetch(`http://127.0.0.1:${port}/debug/plan`);
  }
  t.equal(after.status, 200, 'served again once that client is gone');
  t.equal(((await after.json()) as { '4': { services: unknown[] } })['4'].services.length, 300);
});
