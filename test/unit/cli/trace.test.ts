/**
 * `ferry trace` and `ferry status` through the real CLI (bin/ferry) against a real metrics
 * server carrying the daemon's introspection: answers, JSON, and bad input or no daemon ending
 * in one clear line with a non-zero exit and no stack trace.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMetricsServer, ProxyMetrics } from '../../../src/servers/metrics.js';
import { boundPort } from '../../../src/servers/http.js';
import { DaemonIntrospection } from '../../../src/proxy/introspect.js';
import { compareKernel, parseDestination } from '../../../src/cli/trace.js';
import type { ProxyConfig } from '../../../src/config/types.js';
import type { Backend, ProxyTables } from '../../../src/plan/types.js';
import type { SyncResult } from '../../../src/sync/syncer.js';
import type { Trace } from '../../../src/plan/explain.js';
import { ep, fwd, svc, table, tables } from '../backends/ir-builders.js';

// Each case starts a node process; on a loaded machine that adds up past tap's 30 s default.
t.setTimeout(180_000);

const FERRY = join(fileURLToPath(new URL('../../../../', import.meta.url)), 'bin', 'ferry');

function ferry(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // tap re-injects its loaders through NODE_OPTIONS into children it sees; `env -u` drops them
    // (test/e2e/lib/child-env.ts).
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (k !== 'NODE_OPTIONS' && !k.startsWith('TAP') && !k.startsWith('_TAPJS')) env[k] = v;
    const c = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, FERRY, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const web = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', internal: fwd(ep('198.18.0.7', 8080, true), ep('198.18.1.7', 8080)), nodePort: 30080 });
const T: ProxyTables = tables(table(4, [web]));
const config = { nodeName: 'node-a', mode: 'nftables', localhostNodePorts: true } as unknown as ProxyConfig;
const backend: Backend = { name: 'nftables', sync: async () => undefined, cleanup: async () => undefined };

t.test('trace and status through bin/ferry against a live debug server', async (t) => {
  const intro = new DaemonIntrospection({
    config,
    mode: 'nftables',
    families: [4],
    backend,
    server: 'http://198.18.0.1:6443',
    informers: () => [],
    healthy: () => true,
    healthCheckPorts: () => [],
    consecutiveFailures: () => 0,
    nftablesVia: () => 'netlink',
    localAddresses: () => ['192.0.2.10'],
  });
  const srv = await startMetricsServer({ host: '127.0.0.1', port: 0 }, new ProxyMetrics('nftables'), () => null, {
    trace: (p) => intro.trace(p),
    status: () => intro.status(),
  });
  t.teardown(() => srv.close());
  const address = `127.0.0.1:${boundPort(srv.server)}`;

  const before = await ferry(['trace', '198.18.0.5', '198.19.0.10:80', '--address', address]);
  t.equal(before.code, 1, 'no plan yet: exit 1');
  t.match(before.stderr, /no successful sync yet/);

  const sync: SyncResult = { n: 1, ok: true, full: true, fullReason: 'first', startedAt: Date.now(), durationMs: 12.3, noop: false, tables: T, triggerTimes: [] };
  intro.onSync(sync);
  intro.onSync({ n: 2, ok: false, full: false, fullReason: undefined, startedAt: Date.now(), durationMs: 1, noop: false, triggerTimes: [], error: new Error('nft said no') });

  const text = await ferry(['trace', '198.18.0.5', '198.19.0.10:80', '--address', address]);
  t.equal(text.code, 0, text.stderr);
  t.match(text.stdout, /matched +ClusterIP 198\.19\.0\.10:80 of Service default\/web:http/);
  t.match(text.stdout, /verdict +DNAT to \{198\.18\.0\.7:8080, 198\.18\.1\.7:8080\}/);
  t.match(text.stdout, /masquerade +no/);
  // A forwarding ClusterIP without affinity is in the endpoint-count layout (docs/nftables.md).
  t.match(text.stdout, /ip ferry services-by-count +@n-tcp-2 \[198\.19\.0\.10 \. tcp \. 80\]/);

  const json = await ferry(['trace', '203.0.113.9', '192.0.2.10:30080/tcp', '--from', 'external', '-o', 'json', '--address', address]);
  t.equal(json.code, 0, json.stderr);
  const tr = JSON.parse(json.stdout) as Trace;
  t.equal(tr.match?.frontend, 'nodePort');
  t.equal(tr.masquerade.value, 'yes');

  const quiet = await ferry(['status', '--address', address]);
  t.match(quiet.stdout, /tamper repairs +0\n/, 'no repair yet: the count alone');
  intro.tamperRepaired({ changes: ['ip ferry: table deleted'], by: ['nft (pid 4242)'], transactions: 1, cause: 'notifications', heldBackMs: 4950 });

  const status = await ferry(['status', '--address', address]);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, /tamper repairs +1 \(last \d+s ago: ip ferry: table deleted — by nft \(pid 4242\); held back 5\.0 s: repairs keep coming, so they are spaced\)/);
  t.match(status.stdout, /mode +nftables \(applied via netlink\)/);
  t.match(status.stdout, /last full +.*12\.3 ms, 1 service ports \(first\)/);
  t.match(status.stdout, /counts +1 service ports, 2 endpoints/);
  t.match(status.stdout, /last errors +.*sync 2 \(partial\) failed: nft said no/);
  const sj = JSON.parse((await ferry(['status', '-o', 'json', '--address', address])).stdout) as { syncs: { total: number; failures: number }; tamperRepairs: number; lastTamper?: Record<string, unknown> };
  t.same(sj.syncs, { ...sj.syncs, total: 2, failures: 1 });
  t.equal(sj.tamperRepairs, 1);
  t.match(sj.lastTamper, { what: ['ip ferry: table deleted'], by: ['nft (pid 4242)'], cause: 'notifications', heldBackMs: 4950 });
  t.ok(Date.parse(String(sj.lastTamper?.['at'])) > 0, 'when, as an ISO time');
});

t.test('bad input and no daemon: one line, exit 1, no stack trace', async (t) => {
  const cases: [string[], RegExp][] = [
    [['trace', '10.0.0.1', '10.0.0.2:70000'], /port "70000" is out of range/],
    [['trace', '10.0.0.1', '10.0.0.2:0'], /out of range/],
    [['trace', 'not-an-ip', '10.0.0.2:80'], /source "not-an-ip" is not an IP address/],
    [['trace', '10.0.0.1', '10.0.0.999:80'], /destination "10.0.0.999" is not an IP address/],
    [['trace', '10.0.0.1', '10.0.0.2'], /not ADDRESS:PORT/],
    [['trace', '10.0.0.1', '10.0.0.2:80/icmp'], /protocol "icmp"/],
    [['trace', '10.0.0.1', '[2001:db8::1]:80'], /different IP families/],
    [['trace', '10.0.0.1', '10.0.0.2:80', '-o', 'yaml'], /output formats are text and json/],
    [['trace', '10.0.0.1', '10.0.0.2:80', '--address', '127.0.0.1:1'], /no ferry daemon answers at http:\/\/127\.0\.0\.1:1/],
    [['status', '--address', '127.0.0.1:1'], /no ferry daemon answers/],
    [['status', '--address', 'nonsense'], /is not HOST:PORT/],
  ];
  for (const [args, re] of cases) {
    const r = await ferry(args);
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`);
    t.match(r.stderr, re, `${args.join(' ')}: says why`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line (${r.stderr.trim()})`);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

t.test('parseDestination and compareKernel', async (t) => {
  t.same(parseDestination('10.0.0.2:80'), { dst: '10.0.0.2', port: '80', protocol: 'TCP' });
  t.same(parseDestination('[2001:db8::1]:53/udp'), { dst: '2001:db8::1', port: '53', protocol: 'udp' });
  const base = { verdict: { kind: 'dnat', reason: '' }, endpoints: [{ ip: '198.18.0.7', port: 8080, local: true, ready: true }], masquerade: { value: 'no', reason: '' }, src: '198.18.0.5' } as unknown as Trace;
  t.ok(compareKernel(base, { verdict: 'dnat', endpoint: { ip: '198.18.0.7', port: 8080 }, masqueraded: false, chains: [], lines: [] }).agrees);
  const other = compareKernel(base, { verdict: 'dnat', endpoint: { ip: '198.18.9.9', port: 8080 }, masqueraded: true, chains: [], lines: [] });
  t.notOk(other.agrees);
  t.equal(other.differences.length, 2, other.differences.join('; '));
  t.match(compareKernel(base, { verdict: 'drop', masqueraded: false, chains: [], lines: [] }).differences, [/predicted dnat, the kernel's was drop/]);
});
