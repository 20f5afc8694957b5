/**
 * --detect-local-mode by interface, in the kernel, through a real ferry per node: node-1 runs
 * InterfaceNamePrefix with the prefix of the simulator's pod veths (`<run>i`), node-2 runs
 * BridgeInterface naming a bridge that does not exist, so on node-2 no pod counts as local.
 * ferry still gets --cluster-cidr (the suite's standard flags): a pass proves the interface
 * detector, not the CIDR one, decided. In userspace mode (which re-originates every connection)
 * only the externalTrafficPolicy Local case can tell. Runs for every mode in modes().
 */
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { INTERFACE_DETECT_LOCAL_MODES } from '../../../src/proxy/startup.js';
import {
  allAnswered,
  answeredBy,
  clusterIPOf,
  failedWith,
  fromClient,
  fromNode,
  fromPod,
  modes,
  nodePortOf,
  serviceDoc,
  sourceIs,
  tcp,
  withProxyCluster,
} from '../lib/harness.js';

const run = modes().filter((m) => INTERFACE_DETECT_LOCAL_MODES.has(m));
t.setTimeout(scaledMs(Math.max(1, run.length) * 10 * 60_000));
if (run.length === 0) t.comment(`none of the modes ${modes().join(', ')} matches local traffic by interface`);

for (const mode of run) {
  t.test(`detect-local by interface [${mode}]`, async (t) => {
    const ferryArgs = (c: { prefix: string }, node: { name: string }): string[] =>
      node.name === 'node-1'
        ? ['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', `${c.prefix}i`]
        : ['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'fynobridge0'];
    await withProxyCluster(t, { mode, nodes: 2, dualStack: true, ferryArgs }, async (env) => {
      const c = env.cluster;
      await Promise.all([
        c.addPod({ name: 'web-2', node: 'node-2', labels: { app: 'web' } }),
        c.addPod({ name: 'cli-1', node: 'node-1', labels: { role: 'client' } }),
        c.addPod({ name: 'cli-2', node: 'node-2', labels: { role: 'client' } }),
      ]);
      await env.apply([
        serviceDoc('web', { selector: { app: 'web' }, dualStack: true }),
        serviceDoc('loc', { type: 'NodePort', selector: { app: 'web' }, spec: { externalTrafficPolicy: 'Local' } }),
      ]);
      const web = await env.service('web');
      const loc = nodePortOf(await env.service('loc'), 'TCP');
      const n1 = c.node('node-1');
    
      // Userspace re-originates every connection: sources say nothing about the detector there.
      const sourcesTell = env.expect.podToClusterIP.value === 'origin';
      await t.test('a pod behind a matching interface is local: ClusterIP traffic keeps its source (IPv4 and IPv6)', { skip: !sourcesTell && `${mode} mode: ${env.expect.podToClusterIP.reason}` }, async (t) => {
        env.diagnoseOnFailure(t);
        const pod = c.pod('cli-1');
        for (const [ip, src] of [
          [clusterIPOf(web, 4), pod.ip],
          [clusterIPOf(web, 6), pod.ip6],
        ] as const) {
          await env.waitReachable(fromPod('cli-1'), tcp(ip, 80));
          const rs = await env.probe(fromPod('cli-1'), tcp(ip, 80), { count: 5 });
          allAnswered(t, rs, `cli-1 → ${ip}`);
          answeredBy(t, rs, ['web-2'], `cli-1 → ${ip}`);
          t.same([...new Set(rs.map((r) => r.seenIP))], [src], `web-2 sees cli-1's own address ${src} (iifname matches, no masquerade)`);
        }
      });

      await t.test("the node's own traffic matches no interface: masqueraded", { skip: !sourcesTell && `${mode} mode: ${env.expect.podToClusterIP.reason}` }, async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(web, 4);
        const rs = await env.probe(fromNode('node-1'), tcp(ip, 80), { count: 5 });
        allAnswered(t, rs, `node-1 → ${ip}`);
        t.same([...new Set(rs.map((r) => r.seenIP))], [n1.ip], `web-2 sees node-1's address ${n1.ip}`);
      });

      await t.test('BridgeInterface naming another interface: the pod is not local, so it is masqueraded', { skip: !sourcesTell && `${mode} mode: ${env.expect.podToClusterIP.reason}` }, async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(web, 4);
        await env.waitReachable(fromPod('cli-2'), tcp(ip, 80));
        const rs = await env.probe(fromPod('cli-2'), tcp(ip, 80), { count: 5 });
        allAnswered(t, rs, `cli-2 → ${ip}`);
        sourceIs(t, env, rs, { value: 'node', reason: 'no interface matches: every source is non-local' }, c.pod('cli-2').ip, 'node-2', `cli-2 → ${ip}`);
      });

      await t.test('externalTrafficPolicy Local on a node without a local endpoint: a local pod is served, the outside client is dropped', async (t) => {
        env.diagnoseOnFailure(t);
        await env.waitReachable(fromPod('cli-1'), tcp(n1.ip, loc));
        const rs = await env.probe(fromPod('cli-1'), tcp(n1.ip, loc), { count: 5 });
        allAnswered(t, rs, `cli-1 → node-1 ${n1.ip}:${loc}`);
        answeredBy(t, rs, ['web-2'], 'the cluster-wide endpoint, as kube-proxy does for local pods');
        await env.barrier();
        failedWith(t, await env.probe(fromClient, tcp(n1.ip, loc), { count: 3, timeoutMs: 1500 }), env.expect.outsidePolicyDrop, `client → node-1 ${n1.ip}:${loc}`);
      });
    });
  });
}
