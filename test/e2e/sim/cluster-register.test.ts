// Registration with the simulated API server: Nodes and Pods look like a kubelet reported them,
// readiness flips reach the API, removed pods disappear, and kubectl sees the same thing.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, DiscoveryV1Api, ApiException } from '@kubernetes/client-node';
import { startApiServer } from '../../../src/sim/apiserver/index.js';
import { createCluster, loadKubeConfig, SERVICE_CIDRS_DUAL } from '../../../src/sim/cluster/index.js';
import { run } from '../../../src/util/exec.js';

t.test('nodes and pods registered with the simulated API server', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-reg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The host process registers through loopback; nodes would use 198.18.0.1.
  const api = await startApiServer({ host: '127.0.0.1', port: 0, serviceCIDRs: SERVICE_CIDRS_DUAL });
  t.teardown(() => api.close());
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const core = loadKubeConfig(kubeconfig).makeApiClient(CoreV1Api);

  const c = await createCluster({ nodes: 2, dualStack: true, kubeconfig, zones: ['zone-a', 'zone-b'] });
  t.teardown(() => c.down());

  const nodes = await core.listNode();
  t.same(nodes.items.map((n) => n.metadata?.name).sort(), ['node-1', 'node-2']);
  const n2 = await core.readNode({ name: 'node-2' });
  t.equal(n2.metadata?.labels?.['kubernetes.io/hostname'], 'node-2');
  t.equal(n2.metadata?.labels?.['topology.kubernetes.io/zone'], 'zone-b');
  t.same(
    n2.status?.addresses?.filter((a) => a.type === 'InternalIP').map((a) => a.address),
    ['198.18.0.12', '2001:db8:0:1::12'],
    'node-2 reports both InternalIPs',
  );
  t.same(n2.spec?.podCIDRs, ['198.19.2.0/24', '2001:db8:1:2::/64']);

  const web = await c.addPod({ name: 'web-1', node: 'node-2', labels: { app: 'web' }, ready: false,
    containerPorts: [{ name: 'http', containerPort: 8080 }] });
  await c.addPod({ name: 'other', node: 'node-1', namespace: 'shop' });
  const p = await core.readNamespacedPod({ name: 'web-1', namespace: 'default' });
  t.equal(p.spec?.nodeName, 'node-2');
  t.equal(p.status?.phase, 'Running');
  t.same(p.status?.podIPs?.map((x) => x.ip), [web.ip, web.ip6], 'podIPs are the addresses the pod really has');
  t.equal(p.status?.hostIP, '198.18.0.12');
  t.same(p.spec?.containers[0]?.ports?.map((x) => [x.name, x.containerPort, x.protocol]), [['http', 8080, 'TCP']]);
  const ready = (): Promise<string | undefined> =>
    core.readNamespacedPod({ name: 'web-1', namespace: 'default' }).then((x) => x.status?.conditions?.find((k) => k.type === 'Ready')?.status);
  t.equal(await ready(), 'False', 'created not ready as asked');
  await c.setPodReady('web-1', true);
  t.equal(await ready(), 'True', 'setPodReady(true) reached the API server');
  await c.setPodReady('web-1', false);
  t.equal(await ready(), 'False', 'setPodReady(false) reached the API server');
  const shop = await core.readNamespacedPod({ name: 'other', namespace: 'shop' });
  t.equal(shop.status?.podIP, c.pod('other', 'shop').ip, 'a pod in a namespace nobody created is registered too');

  const out = await run(['kubectl', '--kubeconfig', kubeconfig, 'get', 'pods', '-A', '-o', 'wide'], { allowFailure: true, timeoutMs: 20000 });
  t.equal(out.exitCode, 0, `kubectl get pods: ${out.stderr}`);
  t.match(out.stdout, /web-1/);
  t.match(out.stdout, new RegExp(web.ip.replace(/\./g, '\\.')));

  // The API server's EndpointSlice controller turns the registered pods into endpoints.
  await c.setPodReady('web-1', true);
  await core.createNamespacedService({
    namespace: 'default',
    body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
  });
  await api.settled();
  const disco = loadKubeConfig(kubeconfig).makeApiClient(DiscoveryV1Api);
  const slices = await disco.listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=web' });
  const eps = slices.items.flatMap((sl) => sl.endpoints.map((e) => ({ af: sl.addressType, addr: e.addresses[0], node: e.nodeName, ready: e.conditions?.ready })));
  t.same(
    eps.sort((x, y) => x.af.localeCompare(y.af)),
    [{ af: 'IPv4', addr: web.ip, node: 'node-2', ready: true }],
    'the single-stack Service gets one IPv4 endpoint on node-2, ready',
  );
  t.same(slices.items.flatMap((sl) => sl.ports?.map((p) => p.port)), [8080], 'named targetPort resolved through the pod container port');

  await c.removePod('web-1');
  const gone = await core.readNamespacedPod({ name: 'web-1', namespace: 'default' }).then(
    () => 200,
    (e: unknown) => (e instanceof ApiException ? e.code : -1),
  );
  t.equal(gone, 404, 'removePod deleted the Pod from the API server');

  await c.down();
  const left = await core.listNode();
  t.same(left.items.map((n) => n.metadata?.name), [], 'down() deleted the Nodes');
});

t.test('attachApiServer registers what already exists; the API server on 198.18.0.1 is reachable from nodes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-reg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const c = await createCluster({ nodes: 2 });
  t.teardown(() => c.down());
  await c.addPod({ name: 'early', node: 'node-1' });
  const api = await startApiServer({ host: c.hostIP, port: 0, serviceCIDRs: c.serviceCIDRs });
  t.teardown(() => api.close());
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  await c.attachApiServer(kubeconfig);
  await c.addPod({ name: 'late', node: 'node-2' });
  const core = loadKubeConfig(kubeconfig).makeApiClient(CoreV1Api);
  const pods = await core.listPodForAllNamespaces();
  t.same(pods.items.map((p) => p.metadata?.name).sort(), ['early', 'late']);
  t.equal((await core.listNode()).items.length, 2);
  // A node reaches the API server at 198.18.0.1 (as ferry will, from inside the node namespace).
  const out = await c.exec(c.nodes[0]?.netns, ['kubectl', '--kubeconfig', kubeconfig, 'get', 'nodes', '-o', 'name'], {
    allowFailure: true,
    timeoutMs: 20000,
  });
  t.equal(out.exitCode, 0, `kubectl from node-1: ${out.stderr}`);
  t.match(out.stdout, /node\/node-1/);
});
