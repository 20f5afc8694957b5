// The manifests in deploy/ against the code that runs under them:
// - the ClusterRole grants exactly the (apiGroup, resource, verb) set ferry's watch layer really
//   requests — recorded by running the daemon (with a fake backend) against the simulated API
//   server through a recording proxy, across a relist and a re-watch — plus "get" on the same
//   resources (the brief's get/list/watch role), nothing else;
// - the ConfigMap's KubeProxyConfiguration passes ferry's own config parser;
// - every DaemonSet argument passes ferry's own flag parser and resolves to a valid config;
// - the DaemonSet has what a kube-proxy replacement needs (host network, probes, mounts, ...).
// Loopback only; no root needed.
import t, { type Test } from 'tap';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Command } from 'commander';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import { parseConfigFile } from '../../../src/config/file.js';
import { explicitFlags, registerProxy } from '../../../src/cli/proxy.js';
import type { ExplicitFlags } from '../../../src/config/flags.js';
import { simDaemon } from '../proxy/sim-daemon.js';
import { at, baseObjects, find, kustomize, perm, permissionOf, rolePermissions, type ApiRequest, type K8sObject, type Permission } from './manifests.js';

/** An HTTP proxy in front of `upstream` that records every request line, streams included. */
async function recordingProxy(upstream: string): Promise<{ url: string; requests: ApiRequest[]; close(): Promise<void> }> {
  const up = new URL(upstream);
  const requests: ApiRequest[] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? 'GET', url: req.url ?? '/' });
    const fwd = request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    fwd.on('error', () => res.destroy());
    res.on('close', () => fwd.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function waitUntil(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The installed tables as text (their services are Maps). */
const dump = (x: unknown): string => JSON.stringify(x ?? null, (_k, v: unknown) => (v instanceof Map ? [...v.entries()] : v));

async function post(base: string, path: string, body: unknown): Promise<void> {
  const res = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status >= 300) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`);
}

/** The permissions ferry's daemon uses, observed end to end. */
async function observedPermissions(t: Test): Promise<{ perms: Set<Permission>; requests: ApiRequest[] }> {
  const backend = new FakeBackend();
  let proxy!: Awaited<ReturnType<typeof recordingProxy>>;
  const { api } = await simDaemon(t, {
    api: { serviceCIDRs: ['198.18.64.0/18'], bookmarkIntervalMs: 200 },
    // Registered before the daemon's teardown, so closed after it (teardowns run last first).
    server: async (api) => {
      proxy = await recordingProxy(api.url);
      t.teardown(() => proxy.close());
      return proxy.url;
    },
    deps: { backend, nodeWaitMs: 10_000, watchBackoff: { initialMs: 20, maxMs: 100 } },
  });

  await post(api.url, '/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node-a', labels: { 'kubernetes.io/hostname': 'node-a' } },
    status: { addresses: [{ type: 'InternalIP', address: '192.0.2.11' }] },
  });
  await post(api.url, '/api/v1/namespaces/default/services', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default' },
    spec: { type: 'NodePort', ports: [{ port: 80, protocol: 'TCP' }] },
  });
  await post(api.url, '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['198.18.128.5'], nodeName: 'node-a', conditions: { ready: true } }],
    ports: [{ name: '', port: 8080, protocol: 'TCP' }],
  });
  await waitUntil('a sync that installs the endpoint', () => dump(backend.installed).includes('198.18.128.5'));

  // Exercise the recovery paths too: a dropped watch (re-watch) and expired history (relist).
  const before = proxy.requests.length;
  api.compact();
  api.dropWatches();
  await waitUntil('ferry to list and watch again', () => proxy.requests.length >= before + 6);
  await post(api.url, '/api/v1/namespaces/default/services', {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web2', namespace: 'default' },
    spec: { ports: [{ port: 81, protocol: 'TCP' }] },
  });
  await waitUntil('the new Service after the re-watch', () => dump(backend.installed).includes('web2'));
  return { perms: new Set(proxy.requests.map(permissionOf)), requests: [...proxy.requests] };
}

const sorted = (s: Iterable<string>) => [...s].sort();

t.test('the ClusterRole grants exactly what the code requests (plus get)', async (t) => {
  const { perms, requests } = await observedPermissions(t);
  t.ok(requests.length > 0, 'the daemon made requests through the recording proxy');
  const nonResource = sorted([...perms].filter((p) => p.startsWith('nonResource:')));
  t.same(nonResource, [], `no non-resource requests (discovery etc.) that the role would need to grant; saw ${nonResource.join(', ')}`);

  // The brief's role is get/list/watch: "get" is granted on every resource ferry reads.
  const expected = new Set(perms);
  for (const p of perms) expected.add(p.replace(/:[a-z]+$/, ':get'));
  const role = rolePermissions(find(baseObjects(), 'ClusterRole', 'ferry'));
  const missing = sorted([...expected].filter((p) => !role.has(p)));
  const extra = sorted([...role].filter((p) => !expected.has(p)));
  t.same(missing, [], `the ClusterRole lacks permissions the code uses: ${missing.join(', ')}`);
  t.same(extra, [], `the ClusterRole grants permissions the code never uses: ${extra.join(', ')}`);

  // The observed set itself, so a change in the watch layer is noticed here, not in a cluster.
  t.same(
    sorted(perms),
    sorted([
      perm('', 'services', 'list'),
      perm('', 'services', 'watch'),
      perm('', 'nodes', 'list'),
      perm('', 'nodes', 'watch'),
      perm('discovery.k8s.io', 'endpointslices', 'list'),
      perm('discovery.k8s.io', 'endpointslices', 'watch'),
      perm('networking.k8s.io', 'servicecidrs', 'list'),
      perm('networking.k8s.io', 'servicecidrs', 'watch'),
    ]),
    `ferry's requests map to list+watch on services, nodes, endpointslices, servicecidrs; requests seen: ${[...new Set(requests.map((r) => `${r.method} ${r.url.split('?')[0]}`))].join(', ')}`,
  );
  t.notOk(
    [...perms].some((p) => p.includes('events')),
    'ferry emits no Events, so the role must not grant events create/patch',
  );
  const nodeWatches = requests.filter((r) => r.url.startsWith('/api/v1/nodes'));
  t.ok(
    nodeWatches.length > 0 && nodeWatches.every((r) => new URL(r.url, 'http://x').searchParams.get('fieldSelector') === 'metadata.name=node-a'),
    `every Node request selects this node only (fieldSelector metadata.name=node-a); saw ${nodeWatches.map((r) => r.url).join(', ')}`,
  );
});

t.test('the ClusterRoleBinding binds the role to the DaemonSet\'s ServiceAccount', async (t) => {
  const objs = baseObjects();
  const binding = find(objs, 'ClusterRoleBinding', 'ferry');
  const ds = find(objs, 'DaemonSet', 'ferry');
  const sa = at(ds, 'spec.template.spec.serviceAccountName');
  t.equal(at(binding, 'roleRef.kind'), 'ClusterRole');
  t.equal(at(binding, 'roleRef.name'), 'ferry');
  t.same(at(binding, 'subjects'), [{ kind: 'ServiceAccount', name: sa, namespace: 'kube-system' }], `subjects name the DaemonSet's ServiceAccount ${String(sa)}`);
  const acct = find(objs, 'ServiceAccount', String(sa));
  t.equal(acct.metadata.namespace, 'kube-system');
});

/** Parses a container's args with ferry's real command line (as `ferry ARGS` would). */
async function parseArgs(args: string[]): Promise<ExplicitFlags> {
  const program = new Command('ferry').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerProxy(program);
  let got: ExplicitFlags | undefined;
  program.action((_o: unknown, cmd: Command) => {
    got = explicitFlags(cmd);
  });
  await program.parseAsync(args, { from: 'user' });
  if (!got) throw new Error(`ferry's parser did not accept ${args.join(' ')}`);
  return got;
}

/** Replaces $(VAR) like the kubelet does, from the container's env (fieldRefs get a sample value). */
function expandArgs(container: Record<string, unknown>): string[] {
  const env = new Map<string, string>();
  const envList = container.env;
  if (Array.isArray(envList)) {
    for (const e of envList as Record<string, unknown>[]) {
      const name = String(e.name);
      if (typeof e.value === 'string') env.set(name, e.value);
      else if (at(e, 'valueFrom.fieldRef.fieldPath') === 'spec.nodeName') env.set(name, 'worker-1');
    }
  }
  const args = container.args;
  if (!Array.isArray(args) || !args.every((a): a is string => typeof a === 'string')) throw new Error('the container has no string args');
  return args.map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env.get(v) ?? m));
}

async function checkConfigAndFlags(t: Test, objs: K8sObject[], label: string): Promise<void> {
  const cm = find(objs, 'ConfigMap', 'ferry');
  const text = (cm.data as Record<string, unknown> | undefined)?.['config.conf'];
  if (typeof text !== 'string') throw new Error(`${label}: ConfigMap ferry has no data["config.conf"]`);
  const file = parseConfigFile(text, `${label} ConfigMap ferry config.conf`);
  t.equal(file.mode?.value, 'nftables', `${label}: the config selects nftables mode`);

  const ds = find(objs, 'DaemonSet', 'ferry');
  const container = at(ds, 'spec.template.spec.containers.0') as Record<string, unknown>;
  const args = expandArgs(container);
  const flags = await parseArgs(args);
  const configPath = flags.get('config');
  t.type(configPath, 'string', `${label}: --config is passed`);
  // The config volume is mounted where --config points.
  const mounts = (container.volumeMounts ?? []) as Record<string, unknown>[];
  const cfgMount = mounts.find((m) => typeof configPath === 'string' && configPath.startsWith(`${String(m.mountPath)}/`));
  t.ok(cfgMount, `${label}: --config ${String(configPath)} lies under a volume mount`);
  const vol = ((at(ds, 'spec.template.spec.volumes') ?? []) as Record<string, unknown>[]).find((v) => v.name === cfgMount?.name);
  t.equal(at(vol, 'configMap.name'), 'ferry', `${label}: that mount is the ferry ConfigMap`);
  t.equal(String(configPath).slice(String(cfgMount?.mountPath).length + 1), 'config.conf', `${label}: --config names the ConfigMap key`);

  // Resolving flags over the file is what the real process does at start.
  const withoutConfig = new Map(flags);
  withoutConfig.delete('config');
  const resolved = resolveConfig({ flags: withoutConfig, file, hostname: 'container-hostname' });
  t.equal(resolved.nodeName, 'worker-1', `${label}: --hostname-override comes from spec.nodeName`);
  t.equal(resolved.mode, 'nftables');
  t.same(resolved.healthzBindAddress, { host: '0.0.0.0', port: 10256 }, `${label}: health server on :10256 for the probes`);
  t.equal(resolved.cleanup, false);
  t.equal(resolved.dryRun, false);
}

t.test('ConfigMap and DaemonSet flags pass ferry\'s own parsers (base)', async (t) => {
  await checkConfigAndFlags(t, baseObjects(), 'deploy/base');
});

t.test('ConfigMap and DaemonSet flags pass ferry\'s own parsers (kind overlay, via kubectl kustomize)', async (t) => {
  const objs = await kustomize('deploy/kind');
  await checkConfigAndFlags(t, objs, 'deploy/kind');
  const ds = find(objs, 'DaemonSet', 'ferry');
  const args = expandArgs(at(ds, 'spec.template.spec.containers.0') as Record<string, unknown>);
  t.ok(args.includes('--cluster-cidr=10.244.0.0/16'), `the kind overlay passes kind's pod CIDR; args: ${args.join(' ')}`);
  t.same(at(find(objs, 'ConfigMap', 'ferry-apiserver'), 'data'), { host: 'ferry-control-plane', port: '6443' }, 'the kind overlay points ferry at the API server');
  const top = await kustomize('deploy');
  t.same(
    sorted(top.map((o) => `${o.kind}/${o.metadata.name}`)),
    sorted(baseObjects().map((o) => `${o.kind}/${o.metadata.name}`)),
    '`kubectl apply -k deploy/` applies exactly the base objects',
  );
});

t.test('the ebpf overlay: ebpf mode, the host\'s cgroup2 hierarchy named by --ebpf-cgroup-root, the host\'s bpffs for the pins', async (t) => {
  const objs = await kustomize('deploy/ebpf');
  const ds = find(objs, 'DaemonSet', 'ferry');
  const spec = at(ds, 'spec.template.spec') as Record<string, unknown>;
  const c = at(spec, 'containers.0') as Record<string, unknown>;
  const flags = await parseArgs(expandArgs(c));
  const cm = find(objs, 'ConfigMap', 'ferry');
  const file = parseConfigFile(String((cm.data as Record<string, unknown>)['config.conf']), 'deploy/ebpf ConfigMap');
  const withoutConfig = new Map(flags);
  withoutConfig.delete('config');
  const resolved = resolveConfig({ flags: withoutConfig, file, hostname: 'container-hostname' });
  t.equal(resolved.mode, 'ebpf', 'the flag selects ebpf mode over the file');
  const volumes = new Map(((spec.volumes ?? []) as Record<string, unknown>[]).map((v) => [String(v.name), v]));
  const mounts = (c.volumeMounts ?? []) as Record<string, unknown>[];
  const mountOf = (hostPath: string) => mounts.find((m) => at(volumes.get(String(m.name)), 'hostPath.path') === hostPath);
  const cg = mountOf('/sys/fs/cgroup');
  t.ok(cg, 'the host\'s /sys/fs/cgroup is mounted');
  t.equal(resolved.ebpfCgroupRoot, cg?.mountPath, '--ebpf-cgroup-root is where it is mounted (not the container\'s own cgroup namespace)');
  t.match(mountOf('/sys/fs/bpf'), { mountPath: resolved.ebpfBpffsDir.replace(/\/ferry$/, ''), mountPropagation: 'Bidirectional' }, 'the host\'s bpffs holds the pin directory, and a bpffs ferry mounts reaches the host');
  t.ok(resolved.ebpfBpffsDir.startsWith('/sys/fs/bpf/'), `pins under the host's bpffs (${resolved.ebpfBpffsDir})`);
  t.equal(at(c, 'securityContext.privileged'), true, 'privileged (BPF, Bidirectional propagation)');
  t.equal(spec.hostPID, true, "hostPID: the pods' processes in that cgroup tree, and their network namespaces, are visible (connected UDP sockets)");
});

t.test('the DaemonSet is shaped like kube-proxy\'s', async (t) => {
  const objs = baseObjects();
  const ds = find(objs, 'DaemonSet', 'ferry');
  const spec = at(ds, 'spec.template.spec') as Record<string, unknown>;
  t.equal(ds.metadata.namespace, 'kube-system');
  t.equal(spec.hostNetwork, true, 'hostNetwork');
  // kube-proxy's sets none: the node's resolver. ClusterFirstWithHostNet would ask the cluster
  // DNS, reachable only once ferry has programmed the node, for the API server's name.
  t.equal(spec.dnsPolicy, undefined, 'no dnsPolicy (the node\'s resolver, as kube-proxy)');
  t.equal(spec.priorityClassName, 'system-node-critical');
  t.same(spec.tolerations, [{ operator: 'Exists' }], 'tolerates every taint, like kube-proxy');
  const c = at(spec, 'containers.0') as Record<string, unknown>;
  const sc = c.securityContext as Record<string, unknown> | undefined;
  const caps = at(sc, 'capabilities.add');
  t.ok(
    sc?.privileged === true || JSON.stringify([...((caps as string[] | undefined) ?? [])].sort()) === JSON.stringify(['NET_ADMIN', 'NET_RAW', 'SYS_MODULE']),
    `privileged, or exactly NET_ADMIN/NET_RAW/SYS_MODULE; got ${JSON.stringify(sc)}`,
  );
  t.same(at(c, 'livenessProbe.httpGet'), { path: '/livez', port: 10256 }, 'liveness on /livez:10256');
  t.same(at(c, 'readinessProbe.httpGet'), { path: '/healthz', port: 10256 }, 'readiness on /healthz:10256');
  const volumes = new Map(((spec.volumes ?? []) as Record<string, unknown>[]).map((v) => [String(v.name), v]));
  const mounts = (c.volumeMounts ?? []) as Record<string, unknown>[];
  const mountOf = (hostPath: string) => mounts.find((m) => at(volumes.get(String(m.name)), 'hostPath.path') === hostPath);
  t.match(mountOf('/lib/modules'), { mountPath: '/lib/modules', readOnly: true }, '/lib/modules mounted read-only');
  t.match(mountOf('/run/xtables.lock'), { mountPath: '/run/xtables.lock' }, '/run/xtables.lock mounted');
  t.equal(at(volumes.get(String(mountOf('/run/xtables.lock')?.name)), 'hostPath.type'), 'FileOrCreate');
  // A start in another mode removes what ebpf mode pinned (src/proxy/backends.ts removeForeign):
  // it must see the host's bpffs, at the path the default --ebpf-bpffs-dir lies under.
  t.match(mountOf('/sys/fs/bpf'), { mountPath: '/sys/fs/bpf', mountPropagation: 'HostToContainer' }, "the host's bpffs, where ebpf mode's leftovers are found");
  const env = (c.env ?? []) as Record<string, unknown>[];
  t.ok(
    env.some((e) => e.name === 'NODE_NAME' && at(e, 'valueFrom.fieldRef.fieldPath') === 'spec.nodeName'),
    'NODE_NAME from the downward API',
  );
  for (const e of env) {
    const ref = at(e, 'valueFrom.configMapKeyRef.name');
    if (ref !== undefined) t.ok(objs.some((o) => o.kind === 'ConfigMap' && o.metadata.name === ref), `env ${String(e.name)} refers to ConfigMap ${String(ref)}, which deploy/ defines`);
  }
  t.equal(at(ds, 'spec.selector.matchLabels.k8s-app'), at(ds, 'spec.template.metadata.labels.k8s-app'), 'the selector matches the Pod labels');
});
