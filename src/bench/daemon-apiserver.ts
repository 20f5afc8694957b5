/**
 * The daemon phase's API server, run inside the phase's network namespace
 * (`ip netns exec NS node daemon-apiserver.js SERVICES ENDPOINTS KUBECONFIG`): the simulated API
 * server preloaded, without HTTP, with SERVICES synthetic Services (every 10th a NodePort) and
 * one EndpointSlice of ENDPOINTS endpoints each, the Node `node-1`, and one probe Service whose
 * only endpoint is an address of the node (where the harness runs loadgen's server). Prints one
 * JSON line `{"url":…,"probeIP":…,"probePort":…,"seedMs":…}` when listening; exits when stdin
 * closes, so it never outlives the harness.
 *
 * Services have no selector, so the simulator's EndpointSlice controller leaves the seeded
 * slices alone, as a real controller leaves slices it does not manage.
 */
import { createInterface } from 'node:readline';
import { startApiServer, type ApiCore } from '../sim/apiserver/index.js';
import type { KObject } from '../sim/apiserver/objects.js';
import { BENCH_NAMESPACE, nodeObject, serviceObject, sliceObject } from './synthetic.js';
import { PROBE_ENDPOINT_IP, PROBE_IP, PROBE_PORT, PROBE_TARGET_PORT } from './daemon-probe.js';

function def(core: ApiCore, group: string, plural: string) {
  const d = core.registry.find(group, plural);
  if (!d) throw new Error(`simulator has no ${group}/${plural}`);
  return d;
}

function seed(core: ApiCore, services: number, endpoints: number): void {
  const ns = def(core, '', 'namespaces');
  const svcDef = def(core, '', 'services');
  const sliceDef = def(core, 'discovery.k8s.io', 'endpointslices');
  core.registry.create(ns, undefined, { metadata: { name: BENCH_NAMESPACE } });
  core.registry.create(def(core, '', 'nodes'), undefined, nodeObject() as unknown as KObject);
  for (let i = 0; i < services; i++) {
    const s = serviceObject(i);
    delete s.spec!.selector;
    delete s.metadata!.resourceVersion;
    core.registry.create(svcDef, BENCH_NAMESPACE, s as unknown as KObject);
    const sl = sliceObject(i, endpoints);
    delete sl.metadata!.resourceVersion;
    core.registry.create(sliceDef, BENCH_NAMESPACE, sl as unknown as KObject);
  }
  core.registry.create(svcDef, BENCH_NAMESPACE, {
    metadata: { name: 'zz-probe' },
    spec: { type: 'ClusterIP', clusterIP: PROBE_IP, clusterIPs: [PROBE_IP], ports: [{ name: 'http', port: PROBE_PORT, targetPort: PROBE_TARGET_PORT, protocol: 'TCP' }] },
  });
  core.registry.create(sliceDef, BENCH_NAMESPACE, {
    metadata: { name: 'zz-probe-1', labels: { 'kubernetes.io/service-name': 'zz-probe' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [PROBE_ENDPOINT_IP], conditions: { ready: true }, nodeName: 'node-1' }],
    ports: [{ name: 'http', port: PROBE_TARGET_PORT, protocol: 'TCP' }],
  });
}

async function main(): Promise<void> {
  const [services, endpoints] = process.argv.slice(2, 4).map(Number);
  const kubeconfig = process.argv[4];
  if (!Number.isInteger(services) || !Number.isInteger(endpoints) || !kubeconfig) {
    process.stderr.write('usage: daemon-apiserver.js SERVICES ENDPOINTS KUBECONFIG\n');
    process.exit(2);
  }
  let seedMs = 0;
  let coreRef: ApiCore | undefined;
  const server = await startApiServer({
    serviceCIDRs: ['198.18.0.0/15'],
    // Watch history only matters for resumption; the seed would fill it with 2 × SERVICES events.
    watchHistory: 1000,
    seed: (core) => {
      coreRef = core;
      const t0 = performance.now();
      seed(core, services!, endpoints!);
      seedMs = Math.round(performance.now() - t0);
    },
  });
  server.writeKubeconfig(kubeconfig);
  process.stdout.write(JSON.stringify({ url: server.url, probeIP: PROBE_IP, probePort: PROBE_PORT, seedMs }) + '\n');
  // `change I`: Service I's EndpointSlice gets its first endpoint replaced, as the harness's
  // change during a repair; answered `changed <epoch ms>` once stored.
  let generation = 0;
  createInterface({ input: process.stdin }).on('line', (line) => {
    const m = /^change (\d+)$/.exec(line.trim());
    if (!m) return;
    try {
      const sl = sliceObject(Number(m[1]), endpoints!, ++generation);
      delete sl.metadata!.resourceVersion;
      coreRef!.registry.update(def(coreRef!, 'discovery.k8s.io', 'endpointslices'), BENCH_NAMESPACE, sl.metadata!.name!, sl as unknown as KObject);
      process.stdout.write(`changed ${performance.timeOrigin + performance.now()}\n`);
    } catch (e) {
      process.stdout.write(`error ${e instanceof Error ? e.message : String(e)}\n`.replace(/\n(?!$)/g, ' '));
    }
  });
  process.stdin.on('end', () => {
    void server.close().finally(() => process.exit(0));
  });
  process.stdin.resume();
}

void main().catch((e: unknown) => {
  process.stderr.write(`daemon-apiserver: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
