/**
 * Cluster-internal paths through a real ferry per node: ClusterIP from pods on the same and on
 * other nodes and from the node itself, load spread, IPv4/IPv6, UDP, session affinity, Services
 * without endpoints, hairpin, internalTrafficPolicy Local; from a pod process outside the node's
 * cgroup (which ebpf mode's socket LB does not see) and from outside the cluster through a route
 * to the Service CIDR. Runs once per mode in modes().
 */
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { SERVICE_CIDR, type AddPodOptions } from '../../../src/sim/cluster/index.js';
import { runIn } from '../../../src/util/exec.js';
import {
  allAnswered,
  answeredBy,
  clusterIPOf,
  failedWith,
  ferryCli,
  fromClient,
  fromNode,
  fromPod,
  fromPodOutsideCgroup,
  METRICS_PORT,
  modes,
  podsSeen,
  serviceDoc,
  sourceIs,
  summarize,
  tcp,
  traceAgrees,
  udp,
  withProxyCluster,
} from '../lib/harness.js';

// A cluster per mode takes a minute or so; tap's default of 30 s per file would cut it short.
t.setTimeout(scaledMs(modes().length * 10 * 60_000));

for (const mode of modes()) {
  t.test(`ClusterIP paths [${mode}]`, async (t) => {
    await withProxyCluster(t, { mode, nodes: 3, dualStack: true }, async (env) => {
      const c = env.cluster;
      const pods: AddPodOptions[] = [
        { name: 'web-1', node: 'node-1', labels: { app: 'web' } },
        { name: 'web-2', node: 'node-2', labels: { app: 'web' } },
        { name: 'web-3', node: 'node-3', labels: { app: 'web' } },
        { name: 'cli-1', node: 'node-1', labels: { role: 'client' } },
        { name: 'cli-2', node: 'node-2', labels: { role: 'client' } },
        { name: 'lonely-1', node: 'node-1', labels: { app: 'lonely' } },
        { name: 'lonely-3', node: 'node-3', labels: { app: 'lonely' } },
        { name: 'hp-2', node: 'node-2', labels: { app: 'hairpin' } },
      ];
      await Promise.all(pods.map((p) => c.addPod(p)));
      await env.apply([
        serviceDoc('web', { selector: { app: 'web' }, protocols: ['TCP', 'UDP'], dualStack: true }),
        serviceDoc('sticky', { selector: { app: 'web' }, spec: { sessionAffinity: 'ClientIP' } }),
        serviceDoc('nowhere', { selector: { app: 'nothing-matches-this' }, protocols: ['TCP', 'UDP'] }),
        serviceDoc('self', { selector: { app: 'hairpin' } }),
        serviceDoc('itl', { selector: { app: 'lonely' }, spec: { internalTrafficPolicy: 'Local' } }),
      ]);
      const web = await env.service('web');
      const web4 = clusterIPOf(web, 4);
      const web6 = clusterIPOf(web, 6);

      for (const cli of ['cli-1', 'cli-2']) {
        await t.test(`ClusterIP from a pod (${cli}): every endpoint, on this node and others, answers and sees the pod IP`, async (t) => {
          env.diagnoseOnFailure(t);
          const pod = c.pod(cli);
          await env.waitReachable(fromPod(cli), tcp(web4));
          const rs = await env.probe(fromPod(cli), tcp(web4), { count: 60 });
          allAnswered(t, rs, `60 TCP probes ${cli} → ${web4}`);
          answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'load spread over all 3 endpoints (1 on the same node, 2 on others)');
          sourceIs(t, env, rs, env.expect.podToClusterIP, pod.ip, pod.node, `pod ${cli} → ClusterIP`);
          await traceAgrees(t, env, rs, { from: fromPod(cli), src: pod.ip, target: tcp(web4) }, `trace ${cli} → ClusterIP`);
        });
      }

      await t.test('UDP ClusterIP from a pod', async (t) => {
        env.diagnoseOnFailure(t);
        const pod = c.pod('cli-1');
        await env.waitReachable(fromPod('cli-1'), udp(web4));
        const rs = await env.probe(fromPod('cli-1'), udp(web4), { count: 30 });
        allAnswered(t, rs, `30 UDP probes cli-1 → ${web4}`);
        answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'UDP load spread over all 3 endpoints');
        sourceIs(t, env, rs, env.expect.podToClusterIP, pod.ip, pod.node, 'pod cli-1 → UDP ClusterIP');
        await traceAgrees(t, env, rs, { from: fromPod('cli-1'), src: pod.ip, target: udp(web4) }, 'trace cli-1 → UDP ClusterIP');
      });

      await t.test('IPv6 ClusterIP from a pod (RequireDualStack Service)', async (t) => {
        env.diagnoseOnFailure(t);
        const pod = c.pod('cli-1');
        if (!pod.ip6) throw new Error('cli-1 has no IPv6 address although the cluster is dual-stack');
        await env.waitReachable(fromPod('cli-1'), tcp(web6));
        const rs = await env.probe(fromPod('cli-1'), tcp(web6), { count: 45 });
        allAnswered(t, rs, `45 TCP probes cli-1 → [${web6}]`);
        answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'IPv6 load spread over all 3 endpoints');
        sourceIs(t, env, rs, env.expect.podToClusterIP, pod.ip6, pod.node, 'pod cli-1 → IPv6 ClusterIP');
        await traceAgrees(t, env, rs, { from: fromPod('cli-1'), src: pod.ip6, target: tcp(web6) }, 'trace cli-1 → IPv6 ClusterIP');
      });

      await t.test('ClusterIP from the node itself', async (t) => {
        env.diagnoseOnFailure(t);
        await env.waitReachable(fromNode('node-1'), tcp(web4));
        const rs = await env.probe(fromNode('node-1'), tcp(web4), { count: 30 });
        allAnswered(t, rs, `30 TCP probes node-1 → ${web4}`);
        answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'node-originated traffic spreads too');
        sourceIs(t, env, rs, env.expect.nodeToClusterIP, c.node('node-1').ip, 'node-1', 'node-1 → ClusterIP');
        await traceAgrees(t, env, rs, { from: fromNode('node-1'), src: c.node('node-1').ip, target: tcp(web4) }, 'trace node-1 → ClusterIP');
      });

      await t.test('sessionAffinity ClientIP: 20 probes from one client hit one pod', async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(await env.service('sticky'), 4);
        await env.waitReachable(fromPod('cli-1'), tcp(ip));
        const rs = await env.probe(fromPod('cli-1'), tcp(ip), { count: 20 });
        allAnswered(t, rs, `20 probes cli-1 → sticky ${ip}`);
        t.equal(podsSeen(rs).length, 1, `all answered by the same pod; got ${summarize(rs)}`);
        await traceAgrees(t, env, rs, { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip) }, 'trace cli-1 → sticky');
      });

      await t.test('Service without endpoints fails at once (rejected, not a timeout)', async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(await env.service('nowhere'), 4);
        await env.waitRefusal(fromPod('cli-1'), tcp(ip), env.expect.noEndpointsTCP.value);
        // A reject is an ICMP error, and the kernel rate-limits those per destination
        // (net.ipv4.icmp_ratelimit, 1/s after a small burst): probes are spaced so that every
        // one gets its own answer. Spacing, not a timing assertion.
        const spaced = { count: 3, timeoutMs: 3000, intervalMs: 1100 };
        const flows = [
          { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip), e: env.expect.noEndpointsTCP, what: `TCP cli-1 → nowhere ${ip}` },
          { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: udp(ip), e: env.expect.noEndpointsUDP, what: `UDP cli-1 → nowhere ${ip}` },
          { from: fromNode('node-3'), src: c.node('node-3').ip, target: tcp(ip), e: env.expect.noEndpointsTCP, what: `TCP node-3 → nowhere ${ip}` },
        ];
        for (const f of flows) {
          const rs = await env.probe(f.from, f.target, spaced);
          failedWith(t, rs, f.e, f.what);
          await traceAgrees(t, env, rs, { ...f, refused: 'reject' }, `trace ${f.what}`);
        }
      });

      await t.test('hairpin: a pod reaching its own Service is answered by itself', async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(await env.service('self'), 4);
        const pod = c.pod('hp-2');
        await env.waitReachable(fromPod('hp-2'), tcp(ip));
        const rs = await env.probe(fromPod('hp-2'), tcp(ip), { count: 10 });
        allAnswered(t, rs, `10 probes hp-2 → self ${ip}`);
        answeredBy(t, rs, ['hp-2'], 'the only endpoint is the sender');
        sourceIs(t, env, rs, env.expect.hairpin, pod.ip, pod.node, 'hairpin hp-2 → self');
        await traceAgrees(t, env, rs, { from: fromPod('hp-2'), src: pod.ip, target: tcp(ip) }, 'trace hairpin hp-2 → self');
      });

      await t.test("ClusterIP from a pod process outside the node's cgroup (ebpf: the tc program, not socket LB): spread, source, UDP, hairpin, no endpoints", async (t) => {
        env.diagnoseOnFailure(t);
        // ferry trace takes a pod's processes to be in the node's cgroup (the socket path), so
        // these flows are checked on the wire only.
        const pod = c.pod('cli-1');
        const from = fromPodOutsideCgroup('cli-1');
        await env.waitReachable(from, tcp(web4));
        const rs = await env.probe(from, tcp(web4), { count: 30 });
        allAnswered(t, rs, `30 TCP probes cli-1 (outside its cgroup) → ${web4}`);
        answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'spread over all 3 endpoints');
        sourceIs(t, env, rs, env.expect.uncgroupedPodToClusterIP, pod.ip, pod.node, 'cli-1 outside its cgroup → ClusterIP');
        const us = await env.probe(from, udp(web4), { count: 10 });
        allAnswered(t, us, `10 UDP probes cli-1 (outside its cgroup) → ${web4}`);
        const self = clusterIPOf(await env.service('self'), 4);
        const hp = c.pod('hp-2');
        const hpFrom = fromPodOutsideCgroup('hp-2');
        await env.waitReachable(hpFrom, tcp(self));
        const hs = await env.probe(hpFrom, tcp(self), { count: 5 });
        allAnswered(t, hs, `5 probes hp-2 (outside its cgroup) → self ${self}`);
        answeredBy(t, hs, ['hp-2'], 'the only endpoint is the sender');
        sourceIs(t, env, hs, env.expect.uncgroupedHairpin, hp.ip, hp.node, 'hairpin hp-2 outside its cgroup → self');
        const nowhere = clusterIPOf(await env.service('nowhere'), 4);
        const none = await env.probe(from, tcp(nowhere), { count: 2 });
        failedWith(t, none, env.expect.noEndpointsTCP, `cli-1 (outside its cgroup) → nowhere ${nowhere}`);
      });

      await t.test('ClusterIP from outside the cluster, routed to node-1: every endpoint answers, masqueraded', async (t) => {
        env.diagnoseOnFailure(t);
        // As with a router that sends the Service CIDR to a node (ClusterIPs advertised over BGP).
        await c.addClientRoute(SERVICE_CIDR, 'node-1');
        await env.waitReachable(fromClient, tcp(web4));
        const rs = await env.probe(fromClient, tcp(web4), { count: 30 });
        allAnswered(t, rs, `30 probes client → ${web4} (routed to node-1)`);
        answeredBy(t, rs, ['web-1', 'web-2', 'web-3'], 'spread over all 3 endpoints');
        sourceIs(t, env, rs, env.expect.outsideToClusterIP, c.clientIP, 'node-1', 'client → ClusterIP via node-1');
        await traceAgrees(t, env, rs, { from: fromClient, via: 'node-1', src: c.clientIP, target: tcp(web4) }, 'trace client → ClusterIP via node-1');
      });

      await t.test('internalTrafficPolicy Local: only local endpoints; a node without one drops', async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(await env.service('itl'), 4);
        await env.waitReachable(fromPod('cli-1'), tcp(ip));
        const rs = await env.probe(fromPod('cli-1'), tcp(ip), { count: 20 });
        allAnswered(t, rs, `20 probes cli-1 (node-1) → itl ${ip}`);
        answeredBy(t, rs, ['lonely-1'], 'only the endpoint on node-1 (lonely-3 on node-3 is not local)');
        await traceAgrees(t, env, rs, { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip) }, 'trace cli-1 → itl');
        await env.barrier();
        const none = await env.probe(fromPod('cli-2'), tcp(ip), { count: 3, timeoutMs: 1500 });
        failedWith(t, none, env.expect.policyDrop, `cli-2 (node-2, no local endpoint) → itl ${ip}`);
        await traceAgrees(t, env, none, { from: fromPod('cli-2'), src: c.pod('cli-2').ip, target: tcp(ip), refused: 'drop' }, 'trace cli-2 → itl');
      });

      await t.test("the node's /metrics shows the syncs and, in userspace mode, the forwarded connections", async (t) => {
        env.diagnoseOnFailure(t);
        const node = env.ferries[0]!.node;
        const r = await runIn(node.netns, ['curl', '-sS', '--max-time', '5', `http://127.0.0.1:${METRICS_PORT}/metrics`], { allowFailure: true });
        t.equal(r.exitCode, 0, `GET /metrics on ${node.name} (${r.stderr.trim()})`);
        const count = (re: RegExp): number => Number(re.exec(r.stdout)?.[1] ?? NaN);
        t.ok(count(/^kubeproxy_sync_proxy_rules_duration_seconds_count (\d+)$/m) > 0, 'syncs recorded');
        t.match(r.stdout, new RegExp(`^ferry_backend_info\\{mode="${mode}"\\} 1$`, 'm'), 'the mode is named');
        const st = await ferryCli(env, node.name, ['status', '-o', 'json']);
        t.equal(st.exitCode, 0, `ferry status on ${node.name} (${st.stderr.trim()})`);
        const status = JSON.parse(st.stdout || '{}') as { mode?: string; syncs?: { total: number; lastFull?: unknown }; apiServer?: { watches: { resource: string; synced: boolean }[] } };
        t.equal(status.mode, mode, 'ferry status names the mode');
        t.ok((status.syncs?.total ?? 0) > 0 && status.syncs?.lastFull !== undefined, 'ferry status reports the syncs and the last full one');
        t.ok(status.apiServer?.watches.some((w) => w.resource === 'services' && w.synced), 'ferry status: the Services watch is synced');
        if (mode === 'userspace') {
          // Every probe above from a pod on node-1 went through this node's forwarder.
          t.ok(count(/^ferry_userspace_tcp_connections_total\{outcome="forwarded"\} (\d+)$/m) > 0, 'forwarded TCP connections counted');
          t.ok(count(/^ferry_userspace_udp_sessions_total\{event="created"\} (\d+)$/m) > 0, 'UDP sessions counted');
          t.match(r.stdout, /^ferry_userspace_tcp_connections_active \d+$/m, 'active connections exported');
        } else {
          t.notMatch(r.stdout, /ferry_userspace_/, 'no userspace counters in a kernel mode');
        }
      });
    });
  });
}
