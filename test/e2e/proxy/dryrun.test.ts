// ferry as a real process in --dry-run mode against the simulated API server: Services and
// EndpointSlices changed with the real kubectl show up in the planned tables ferry prints; the
// health and metrics servers answer; an API server restart is survived. Loopback only.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer, type ApiServer } from '../../../src/sim/apiserver/index.js';
import { run } from '../../../src/util/exec.js';
import { FerryProc, entries, freePort, waitFor } from './proc.js';

const SERVICE_CIDRS = ['198.18.0.0/20'];

const NODE = `
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1}}
status: {addresses: [{type: InternalIP, address: 192.0.2.11}]}
`;

const WEB = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80, protocol: TCP}]}
`;

const slice = (name: string, service: string, eps: [string, string][]) => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}, namespace: default, labels: {kubernetes.io/service-name: ${service}}}
addressType: IPv4
endpoints:
${eps.map(([ip, node]) => `- {addresses: ["${ip}"], nodeName: ${node}, conditions: {ready: true}}`).join('\n')}
ports: [{name: "", port: 8080, protocol: TCP}]
`;

const LOCAL = `
apiVersion: v1
kind: Service
metadata: {name: loc, namespace: default}
spec: {type: NodePort, externalTrafficPolicy: Local, ports: [{port: 81, protocol: TCP}]}
`;

t.test('dry-run ferry follows the API server', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-e2e-dryrun-'));
  const kubeconfig = join(dir, 'kubeconfig');
  let api: ApiServer = await startApiServer({ serviceCIDRs: SERVICE_CIDRS });
  api.writeKubeconfig(kubeconfig);
  const [healthz, metrics] = [await freePort(), await freePort()];
  let ferry: FerryProc | undefined;
  t.teardown(async () => {
    await ferry?.stop('SIGKILL');
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kubectl = (args: string[], input?: string) => run(['kubectl', '--kubeconfig', kubeconfig, ...args], { input, timeoutMs: 30_000 });
  const apply = (yaml: string) => kubectl(['apply', '-f', '-'], yaml);

  await apply(NODE);
  ferry = new FerryProc([
    '--kubeconfig', kubeconfig,
    '--hostname-override', 'node-1',
    '--dry-run',
    '--healthz-bind-address', `127.0.0.1:${healthz}`,
    '--metrics-bind-address', `127.0.0.1:${metrics}`,
    '--iptables-min-sync-period', '100ms',
    '-v', '2',
  ]);
  const f = ferry;
  const seen = () => `${f.lines.length} plans; last services: ${JSON.stringify([...entries(f.last()).keys()])}; exit=${f.exitCode}; stderr:\n${f.tail()}`;
  const planWith = (what: string, pred: (es: ReturnType<typeof entries>) => boolean) =>
    waitFor(what, () => f.lines.find((l) => pred(entries(l))), seen);

  await t.test('a Service and its endpoints appear in the plan', async (t) => {
    await apply(WEB);
    await apply(slice('web-1', 'web', [['198.18.100.5', 'node-1'], ['198.18.100.6', 'node-2']]));
    const clusterIP = (await kubectl(['get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).stdout.trim();
    const line = await planWith('web with both endpoints', (es) => es.get('default/web:/TCP@4')?.internal.endpoints.length === 2);
    const web = entries(line).get('default/web:/TCP@4')!;
    t.equal(web.clusterIP, clusterIP, 'the ClusterIP the API server allocated');
    t.same(web.internal.endpoints.map((e) => `${e.ip}:${e.port}:${e.isLocal}`), ['198.18.100.5:8080:true', '198.18.100.6:8080:false']);
    t.equal(web.internal.verdict, 'forward');
    t.equal(f.lines[0]?.full, true, 'the first sync is full');
    t.equal(f.lines[0]?.families['4'].nodeName, 'node-1');
  });

  await t.test('a removed endpoint disappears, in a partial sync', async (t) => {
    const before = f.lines.length;
    await apply(slice('web-1', 'web', [['198.18.100.5', 'node-1']]));
    const line = await waitFor(
      'web down to one endpoint',
      () => f.lines.slice(before).find((l) => entries(l).get('default/web:/TCP@4')?.internal.endpoints.length === 1),
      seen,
    );
    t.same(entries(line).get('default/web:/TCP@4')!.internal.endpoints.map((e) => e.ip), ['198.18.100.5']);
    t.equal(line.full, false, 'partial sync');
    t.same(line.changed, ['default/web:/TCP'], 'only the changed service port is reported');
  });

  await t.test('externalTrafficPolicy Local with only remote endpoints drops external traffic', async (t) => {
    await apply(LOCAL);
    await apply(slice('loc-1', 'loc', [['198.18.100.9', 'node-2']]));
    const line = await planWith('loc with its remote endpoint', (es) => es.get('default/loc:/TCP@4')?.cluster.endpoints.length === 1);
    const loc = entries(line).get('default/loc:/TCP@4')!;
    t.equal(loc.externalPolicyLocal, true);
    t.equal(loc.external.verdict, 'drop', 'no local endpoint: external traffic is dropped');
    t.equal(loc.internal.verdict, 'forward', 'in-cluster traffic still reaches the remote endpoint');
    t.ok(loc.nodePort > 0, `a NodePort was allocated (${loc.nodePort})`);
  });

  await t.test('a deleted Service disappears', async (t) => {
    const before = f.lines.length;
    await kubectl(['delete', 'svc', 'web']);
    const line = await waitFor('web gone', () => f.lines.slice(before).find((l) => !entries(l).has('default/web:/TCP@4')), seen);
    t.ok(entries(line).has('default/loc:/TCP@4'), 'the other service stays');
  });

  await t.test('/healthz turns 200 and /metrics has kube-proxy names', async (t) => {
    let status = 0;
    let body: Record<string, unknown> = {};
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const r = await fetch(`http://127.0.0.1:${healthz}/healthz`);
      status = r.status;
      body = (await r.json()) as Record<string, unknown>;
      if (status === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(status, 200, `/healthz answered ${status}: ${JSON.stringify(body)}`);
    t.equal(body.nodeEligible, true);
    t.equal((await fetch(`http://127.0.0.1:${healthz}/livez`)).status, 200);
    const text = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    for (const name of [
      'kubeproxy_sync_proxy_rules_duration_seconds_bucket',
      'kubeproxy_sync_full_proxy_rules_duration_seconds_count',
      'kubeproxy_sync_partial_proxy_rules_duration_seconds_count',
      'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      'kubeproxy_network_programming_duration_seconds_bucket',
      'kubeproxy_sync_proxy_rules_service_changes_total',
      'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      'ferry_sync_failures_total',
      'ferry_backend_info{mode="dry-run"} 1',
    ]) {
      t.ok(text.includes(name), `/metrics has ${name}`);
    }
    const count = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 'NaN');
    t.ok(count('kubeproxy_sync_proxy_rules_duration_seconds_count') >= 4, `syncs counted: ${count('kubeproxy_sync_proxy_rules_duration_seconds_count')}`);
    t.ok(count('kubeproxy_sync_partial_proxy_rules_duration_seconds_count') >= 1, 'partial syncs counted');
    // The changes made after the first sync (a Service deleted, slices changed) are timed from
    // their arrival; the initial lists are not.
    const programmed = count('ferry_sync_event_to_programmed_seconds_count');
    t.ok(programmed >= 1 && programmed < count('kubeproxy_sync_proxy_rules_duration_seconds_count'), `event → programmed counted per sync after the first: ${programmed}`);
    t.ok(count('kubeproxy_sync_proxy_rules_service_changes_total') >= 3, 'service changes counted');
    t.ok(count('kubeproxy_sync_proxy_rules_endpoint_changes_total') >= 3, 'endpoint changes counted');
    t.match(text, /^kubeproxy_sync_proxy_rules_no_local_endpoints_total\{traffic_policy="external"\} 1$/m, 'loc has no local endpoint');
    const plan = (await (await fetch(`http://127.0.0.1:${metrics}/debug/plan`)).json()) as { '4': { services: { key: string }[] } };
    t.same(plan['4'].services.map((s) => s.key), ['default/loc:/TCP'], '/debug/plan shows the current IR');
  });

  await t.test('an API server restart is survived', async (t) => {
    const port = api.port;
    await api.close();
    // While it is down, ferry keeps the last plan and keeps retrying.
    await new Promise((r) => setTimeout(r, 1500));
    api = await startApiServer({ port, serviceCIDRs: SERVICE_CIDRS });
    // The restarted simulator starts empty: the relist must also remove what vanished.
    await apply(NODE);
    await apply(WEB.replace(/name: web/, 'name: after'));
    const line = await planWith('the Service created after the restart', (es) => es.has('default/after:/TCP@4') && !es.has('default/loc:/TCP@4'));
    t.ok(entries(line).has('default/after:/TCP@4'), 'new service seen');
    t.notOk(entries(line).has('default/loc:/TCP@4'), 'service gone with the old server removed');
    t.match(f.stderr, /watch for \w+ failed: .*; retrying/, 'the failure was logged');
    // The recovery is logged once a watch is shown to work (an event, or open for a second), which
    // may come after the relist that brought the plan.
    const recovered = await waitFor('the recovery logged', () => /watch for \w+ recovered after \d+ attempt/.exec(f.stderr) ?? undefined, () => f.stderr.slice(-2000), 10_000);
    t.ok(recovered, `and the recovery: ${recovered[0]}`);
  });

  await t.test('SIGTERM stops ferry with exit code 0', async (t) => {
    const code = await f.stop('SIGTERM');
    t.equal(code, 0, code === 0 ? 'exit code 0' : `exit code ${code}; stderr:\n${f.tail()}`);
    t.match(f.stderr, /received SIGTERM; stopping \(installed rules stay in place\)/);
  });
});
