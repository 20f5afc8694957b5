// Finding 3 of issue #15 against a real ferry process: three hostile Services with 5,000 ports
// each and ClientIP affinity arrive, each with endpoints for every port (selector-less, with
// EndpointSlices written by their owner: 50 slices of 100 ports, the API's limit per slice); a
// normal Service created right after them, and an endpoint change of a Service that already
// works, must not wait behind them. Every hostile port must
// still be programmed in the end (a sample answers). How long each took is printed (the figure
// for the issue), never asserted: the deadlines are generous.
import t from 'tap';
import type { ApiCore } from '../../../src/sim/apiserver/index.js';
import { HEALTHZ_PORT, modes } from '../lib/harness.js';
import { eventually, NotYet } from '../lib/eventually.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { withOneNode } from './node.js';

const HOSTILE = Number(process.env['FERRY_E2E_HOSTILE_SERVICES'] ?? 3);
const PORTS = Number(process.env['FERRY_E2E_HOSTILE_PORTS'] ?? 5000);

function create(core: ApiCore, name: string, app: string, ports: { name?: string; port: number; targetPort: number; protocol: string }[], extra: Record<string, unknown> = {}): string {
  const o = core.registry.create(core.services.def, 'default', {
    metadata: { name },
    spec: { selector: { app }, ports, ...extra },
  }) as { spec?: { clusterIP?: string } };
  return o.spec!.clusterIP!;
}

const one = [{ port: 80, targetPort: 8080, protocol: 'TCP' }];

/** A selector-less Service with `ports` ports, and slices giving each of them the endpoint `ip`:8080. */
function createHostile(core: ApiCore, name: string, ports: number, ip: string): string {
  const list = Array.from({ length: ports }, (_, i) => ({ name: `p${i}`, port: 10000 + i, targetPort: 8080, protocol: 'TCP' }));
  const clusterIP = create(core, name, '', list, { selector: undefined, sessionAffinity: 'ClientIP' });
  const def = core.registry.find('discovery.k8s.io', 'endpointslices');
  if (!def) throw new Error('the simulator serves no EndpointSlices');
  for (let s = 0; s * 100 < ports; s++) {
    core.registry.create(def, 'default', {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-${s}`, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'hostile.example' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [ip], conditions: { ready: true } }],
      ports: list.slice(s * 100, s * 100 + 100).map((p) => ({ name: p.name, port: 8080, protocol: 'TCP' })),
    });
  }
  return clusterIP;
}

/** The address `offset` into an IPv4 CIDR (a.b.c.d/n). */
function staticClusterIP(cidr: string, offset: number): string {
  const [ip] = cidr.split('/');
  const n = ip!.split('.').reduce((a, x) => a * 256 + Number(x), 0) + offset;
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

t.setTimeout(scaledMs(modes().length * 15 * 60_000));

for (const mode of modes()) {
  t.test(`${mode}: ${HOSTILE} Services × ${PORTS} ports with affinity do not delay a normal Service`, async (t) => {
    await withOneNode(t, { mode, pods: 3 }, async (env) => {
      env.startFerry();
      await env.waitHealthy();
      const steady = create(env.core, 'steady', 'echo-1', one);
      await env.waitReachable(steady, 80, 'a Service created before the hostile ones answers');

      // Both measurements probe from before anything is written (a probe process takes a few
      // hundred milliseconds to start): the normal Service gets a ClusterIP chosen here, from the
      // low part of the range that dynamic allocation leaves to static addresses.
      const normalIP = staticClusterIP(env.cluster.serviceCIDRs[0]!, 77);
      const normalUp = env.startProbing(normalIP, 80);
      const onEcho3 = env.startProbing(steady, 80, (r) => r.pod === 'echo-3');
      t.teardown(() => {
        normalUp.stop();
        onEcho3.stop();
      });
      await Promise.all([normalUp.probing, onEcho3.probing]);

      const hostileIPs: string[] = [];
      const at = Date.now();
      const echo1 = env.cluster.pod('echo-1').ip;
      for (let h = 0; h < HOSTILE; h++) hostileIPs.push(createHostile(env.core, `hostile-${h}`, PORTS, echo1));
      // The normal Service and the endpoint change follow right behind, as a user's would, both
      // through the store in this process as the hostile objects (kubectl would add its own
      // few hundred milliseconds).
      create(env.core, 'normal', 'echo-2', one, { clusterIP: normalIP });
      const normalAt = Date.now();
      const pods = env.core.registry.find('', 'pods');
      if (!pods) throw new Error('the simulator serves no Pods');
      env.core.registry.patch(pods, 'default', 'echo-3', 'merge', { metadata: { labels: { app: 'echo-1' } } });
      const labelled = Date.now();
      const createdMs = Date.now() - at;
      const normalMs = (await normalUp.answered('the normal Service created after the hostile ones answers', scaledMs(120_000))).at - at;
      const normalOwnMs = normalMs - (normalAt - at);
      // steady now also selects echo-3: until some answer comes from there.
      const endpointMs = (await onEcho3.answered('the endpoint added to an existing Service is used', scaledMs(120_000))).at - labelled;

      // The hostile Services are not dropped: their last ports answer once they are in.
      for (const ip of hostileIPs) await env.waitReachable(ip, 10000 + PORTS - 1, `hostile ${ip}:${10000 + PORTS - 1} answers in the end`, scaledMs(300_000));
      const hostileMs = Date.now() - at;
      t.pass('the normal Service, the endpoint change and every hostile Service are live');
      const deferred = await env.metric('ferry_sync_deferred_service_ports');
      t.match(env.log(), /oversized Services are applied in pieces so they delay no other change .*hostile-0/, 'the oversized Services were trickled in, and logged');
      await eventually(
        async () => {
          const d = await env.metric('ferry_sync_deferred_service_ports');
          if (d !== 0) throw new NotYet(`ferry_sync_deferred_service_ports ${d}`);
        },
        { what: 'nothing left deferred', timeoutMs: 30_000 },
      );
      t.comment(
        `FIGURE (${mode}): objects written in ${createdMs} ms; normal Service answering ${normalMs} ms (${normalOwnMs} ms after its own creation), new endpoint used ${endpointMs} ms after its change, ` +
          `every hostile Service answering ${hostileMs} ms after the hostile Services were created; service ports still deferred when the last hostile one answered: ${deferred ?? 'n/a'}`,
      );
      t.equal((await env.localHttp(HEALTHZ_PORT, '/healthz')).code, 200, 'ferry is healthy at the end');
    });
  });
}
