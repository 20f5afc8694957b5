// The real kubectl against the simulated API server: apply, get (-o wide, tables), watch,
// label/patch, re-apply (three-way strategic merge patch), error messages, delete.
// Loopback only, no root needed.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type RunResult } from '../../../src/util/exec.js';
import { startApiServer } from '../../../src/sim/apiserver/index.js';
import { scaledMs } from '../../../src/util/timescale.js';

const MANIFEST = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/zone: zone-a
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.11
  conditions:
  - type: Ready
    status: "True"
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - name: echo
    image: ferry/echo
    ports:
    - {name: http, containerPort: 8080}
status:
  phase: Running
  podIP: 198.18.128.11
  conditions:
  - {type: Ready, status: "True"}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - name: echo
    image: ferry/echo
    ports:
    - {name: http, containerPort: 8080}
status:
  phase: Running
  podIP: 198.18.128.12
  conditions:
  - {type: Ready, status: "True"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
`;

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, describe: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + scaledMs(timeoutMs);
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; instead: ${describe()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The rows of kubectl's table output as objects keyed by column header. */
function table(out: string): Record<string, string>[] {
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return [];
  const header = lines[0]!;
  const cols: { name: string; start: number }[] = [];
  const re = /\S+(?: \S+)*/g;
  for (let m = re.exec(header); m; m = re.exec(header)) cols.push({ name: m[0], start: m.index });
  return lines.slice(1).map((l) => {
    const row: Record<string, string> = {};
    cols.forEach((c, i) => {
      const end = i + 1 < cols.length ? cols[i + 1]!.start : undefined;
      row[c.name] = l.slice(c.start, end).trim();
    });
    return row;
  });
}

t.test('kubectl drives the simulated API server', async (t) => {
  const server = await startApiServer();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-kubectl-'));
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kubeconfig = join(dir, 'kubeconfig');
  server.writeKubeconfig(kubeconfig);
  const base = ['kubectl', '--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache')];
  const kubectl = (...args: string[]): Promise<RunResult> => run([...base, ...args], { allowFailure: true, timeoutMs: 30_000 });
  const ok = async (...args: string[]): Promise<string> => {
    const r = await kubectl(...args);
    if (r.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
    return r.stdout;
  };
  const manifest = join(dir, 'app.yaml');
  writeFileSync(manifest, MANIFEST);

  const applied = await ok('apply', '-f', manifest);
  t.match(applied, /node\/node-a created/, 'apply creates the node');
  t.match(applied, /pod\/web-1 created[\s\S]*pod\/web-2 created/, 'apply creates both pods');
  t.match(applied, /service\/web created/, 'apply creates the service');

  const clusterIP = await ok('get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}');
  const nodePort = await ok('get', 'svc', 'web', '-o', 'jsonpath={.spec.ports[0].nodePort}');
  t.match(clusterIP, /^10\.96\.\d+\.\d+$/, 'a ClusterIP from the default service CIDR');
  const wide = table(await ok('get', 'svc', 'web', '-o', 'wide'));
  t.same(
    wide,
    [{ NAME: 'web', TYPE: 'NodePort', 'CLUSTER-IP': clusterIP, 'EXTERNAL-IP': '<none>', 'PORT(S)': `80:${nodePort}/TCP`, AGE: wide[0]?.['AGE'] ?? '', SELECTOR: 'app=web' }],
    'get svc -o wide shows type, ClusterIP, port and selector',
  );
  t.match(nodePort, /^3\d{4}$/, 'a nodePort from the default range');

  let slices: Record<string, string>[] = [];
  await waitFor(
    async () => {
      slices = table(await ok('get', 'endpointslices', '-l', 'kubernetes.io/service-name=web'));
      return slices.length === 1 && slices[0]!['ENDPOINTS'] === '198.18.128.11,198.18.128.12';
    },
    'the EndpointSlice with both pods',
    () => JSON.stringify(slices),
  );
  t.equal(slices[0]!['PORTS'], '8080', 'the named targetPort resolves to the container port');
  t.equal(slices[0]!['ADDRESSTYPE'], 'IPv4');

  // A background watch sees later label and patch changes.
  const watcher = spawn(base[0]!, [...base.slice(1), 'get', 'svc', 'web', '-w', '--output-watch-events', '-L', 'color'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(watcher);
  let watched = '';
  watcher.stdout!.on('data', (b: Buffer) => (watched += b.toString()));
  watcher.stderr!.on('data', (b: Buffer) => (watched += b.toString()));
  await waitFor(() => /ADDED\s+web/.test(watched), 'the watch to list the service', () => watched);
  t.match(await ok('label', 'svc', 'web', 'color=blue'), /service\/web labeled/);
  t.match(await ok('patch', 'svc', 'web', '-p', '{"spec":{"externalIPs":["203.0.113.7"]}}'), /service\/web patched/);
  await waitFor(() => /MODIFIED\s+web.*203\.0\.113\.7.*blue/.test(watched), 'the watch to show the patched service', () => watched);
  const events = table(watched);
  t.same(
    events.map((e) => [e['EVENT'], e['EXTERNAL-IP'], e['COLOR']]),
    [
      ['ADDED', '<none>', ''],
      ['MODIFIED', '<none>', 'blue'],
      ['MODIFIED', '203.0.113.7', 'blue'],
    ],
    'watch events in order: listed, labeled, patched',
  );
  server.dropWatches();

  // Apply again: nothing changes; then apply a change through the three-way patch.
  const again = await ok('apply', '-f', manifest);
  t.match(again, /service\/web unchanged/, 're-applying the same manifest changes nothing');
  writeFileSync(manifest, MANIFEST.replace('labels: {tier: front}', 'labels: {tier: back}').replace('port: 80,', 'port: 8080,'));
  t.match(await ok('apply', '-f', manifest), /service\/web configured/, 'apply with a change patches');
  const after = JSON.parse(await ok('get', 'svc', 'web', '-o', 'json')) as {
    metadata: { labels: Record<string, string> };
    spec: { clusterIP: string; ports: { port: number; nodePort: number }[]; externalIPs?: string[] };
  };
  t.same(after.metadata.labels, { tier: 'back', color: 'blue' }, 'labels merged: applied change kept, kubectl label kept');
  t.same(after.spec.ports.map((p) => p.port), [8080], 'the port was replaced');
  t.equal(String(after.spec.ports[0]!.nodePort), nodePort, 'the nodePort is kept across the port change');
  t.equal(after.spec.clusterIP, clusterIP, 'the ClusterIP is kept');
  t.same(after.spec.externalIPs, ['203.0.113.7'], 'fields set outside apply are kept');

  // Errors read like the real server's.
  writeFileSync(
    join(dir, 'dup.yaml'),
    `apiVersion: v1\nkind: Service\nmetadata: {name: dup}\nspec:\n  type: NodePort\n  ports:\n  - {port: 81, nodePort: ${nodePort}}\n`,
  );
  const dup = await kubectl('apply', '-f', join(dir, 'dup.yaml'));
  t.equal(dup.exitCode, 1, 'a duplicate nodePort fails');
  t.match(dup.stderr, `The Service "dup" is invalid: spec.ports[0].nodePort: Invalid value: ${nodePort}: provided port is already allocated`);
  writeFileSync(join(dir, 'bad.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports:\n  - {port: 70000}\n');
  const bad = await kubectl('create', '-f', join(dir, 'bad.yaml'));
  t.equal(bad.exitCode, 1, 'an invalid port fails');
  t.match(bad.stderr, 'spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive');
  const missing = await kubectl('get', 'svc', 'nope');
  t.equal(missing.exitCode, 1);
  t.match(missing.stderr, 'Error from server (NotFound): services "nope" not found');

  // Typed kubectl commands send protobuf bodies.
  t.match(await ok('create', 'service', 'clusterip', 'typed', '--tcp=53:5353'), /service\/typed created/, 'kubectl create service works');
  t.match(await ok('create', 'namespace', 'extra'), /namespace\/extra created/, 'kubectl create namespace works');

  t.match(await ok('delete', 'svc', 'web'), /service "web" deleted/);
  const gone = await ok('get', 'endpointslices', '-l', 'kubernetes.io/service-name=web');
  t.equal(gone, '', `the service's slices are deleted with it (got ${JSON.stringify(gone)})`);
  t.match(await ok('get', 'svc'), /typed/, 'other services remain');
});
