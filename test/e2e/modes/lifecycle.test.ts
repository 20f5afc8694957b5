/**
 * Endpoint and Service changes under traffic, through a real ferry per node: a UDP flow pinned to
 * a removed endpoint moves to its replacement without waiting for the conntrack timeout,
 * terminating-but-serving endpoints keep a Service alive when nothing else is left, and 200
 * create/update/delete operations on other Services cost a stable Service zero requests.
 * Runs once per mode in modes().
 */
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { CoreV1Api, KubeConfig, type V1Service } from '@kubernetes/client-node';
import {
  allAnswered,
  answeredBy,
  clusterIPOf,
  eventually,
  failures,
  fromClient,
  fromPod,
  modes,
  nodePortOf,
  NotYet,
  serviceDoc,
  sourceIs,
  summarize,
  tcp,
  traceAgrees,
  udp,
  withProxyCluster,
  type ProxyEnv,
} from '../lib/harness.js';

const FLOW_SRC_PORT = 40123;
const HOLD = 'ferry.dev/hold';

/** Endpoint conditions of a Service's slices, "pod:ready/serving/terminating". */
async function sliceConditions(env: ProxyEnv, svc: string): Promise<string[]> {
  const out = JSON.parse(await env.kubectl(['get', 'endpointslices', '-l', `kubernetes.io/service-name=${svc}`, '-o', 'json'])) as unknown;
  const items = (out as { items?: unknown[] }).items ?? [];
  const res: string[] = [];
  for (const s of items) {
    for (const ep of (s as { endpoints?: unknown[] }).endpoints ?? []) {
      const e = ep as { targetRef?: { name?: string }; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean } };
      const k = e.conditions ?? {};
      res.push(`${e.targetRef?.name ?? '?'}:${String(k.ready)}/${String(k.serving)}/${String(k.terminating)}`);
    }
  }
  return res.sort();
}

async function setFinalizers(env: ProxyEnv, pod: string, finalizers: string[] | null): Promise<void> {
  await env.kubectl(['patch', 'pod', pod, '--type=merge', '-p', JSON.stringify({ metadata: { finalizers } })]);
}

// A cluster per mode takes a minute or so; tap's default of 30 s per file would cut it short.
t.setTimeout(scaledMs(modes().length * 10 * 60_000));

for (const mode of modes()) {
  t.test(`endpoint and Service changes [${mode}]`, async (t) => {
    await withProxyCluster(t, { mode, nodes: 3, dualStack: true }, async (env) => {
      const c = env.cluster;
      await Promise.all([
        c.addPod({ name: 'cli-1', node: 'node-1', labels: { role: 'client' } }),
        c.addPod({ name: 'flip-a', node: 'node-2', labels: { app: 'flip' } }),
        c.addPod({ name: 'term-1', node: 'node-1', labels: { app: 'term' } }),
        c.addPod({ name: 'term-2', node: 'node-2', labels: { app: 'term' } }),
        c.addPod({ name: 'stable-1', node: 'node-1', labels: { app: 'stable' } }),
        c.addPod({ name: 'stable-2', node: 'node-2', labels: { app: 'stable' } }),
      ]);
      await env.apply([
        serviceDoc('flip', { selector: { app: 'flip' }, protocols: ['UDP'] }),
        serviceDoc('term', { type: 'NodePort', selector: { app: 'term' } }),
        serviceDoc('stable', { type: 'NodePort', selector: { app: 'stable' } }),
      ]);

      await t.test('UDP: replacing the endpoint moves an existing flow (same source port) without waiting for conntrack timeout', async (t) => {
        env.diagnoseOnFailure(t);
        const ip = clusterIPOf(await env.service('flip'), 4);
        await env.waitReachable(fromPod('cli-1'), udp(ip), { accept: (r) => r.pod === 'flip-a' });
        const flow = env.udpFlow(fromPod('cli-1'), { addr: ip, port: 80 }, { srcPort: FLOW_SRC_PORT, intervalMs: 200, timeoutMs: 500 });
        t.teardown(() => flow.stop());
        await flow.waitFor((r) => r.ok && r.pod === 'flip-a', { what: `flow cli-1:${FLOW_SRC_PORT} → ${ip}:80 answered by flip-a`, timeoutMs: 15_000 });
        const mark = flow.results.length;
        await c.removePod('flip-a');
        await c.addPod({ name: 'flip-b', node: 'node-3', labels: { app: 'flip' } });
        // The flow sends every 200 ms, so a stale conntrack entry would never expire on its own
        // (the UDP timeout restarts with every packet): flip-b answering proves it was removed.
        const sysctl = async (k: string): Promise<string> =>
          (await c.exec(c.node('node-1').netns, ['cat', `/proc/sys/net/netfilter/${k}`], { allowFailure: true })).stdout.trim() || '?';
        const udpTimeout = `${await sysctl('nf_conntrack_udp_timeout')} s, ${await sysctl('nf_conntrack_udp_timeout_stream')} s once assured`;
        const r = await flow.waitFor((x) => x.ok && x.pod === 'flip-b', {
          what: `the SAME flow (cli-1 source port ${FLOW_SRC_PORT}) reaches flip-b after flip-a was replaced (stale conntrack entry removed; kernel UDP timeouts ${udpTimeout}, refreshed by every packet)`,
          timeoutMs: 20_000,
          afterIndex: mark,
        });
        t.equal(r.pod, 'flip-b', `the existing flow now reaches flip-b; since the change the flow saw ${summarize(flow.results.slice(mark))}`);
        const cli = c.pod('cli-1');
        sourceIs(t, env, [r], env.expect.podToClusterIP, cli.ip, cli.node, 'flow cli-1 → flip-b');
        await traceAgrees(t, env, [r], { from: fromPod('cli-1'), src: cli.ip, target: udp(ip) }, 'trace cli-1 → flip after the replacement');
        const rest = await flow.stop();
        const after = rest.slice(rest.findIndex((x, i) => i >= mark && x.ok && x.pod === 'flip-b'));
        t.notOk(
          after.some((x) => x.ok && x.pod === 'flip-a'),
          `once flip-b answered, flip-a never answers the flow again; after that point the flow saw ${summarize(after)}`,
        );
      });

      await t.test('terminating fallback: all endpoints terminating but serving → traffic still flows', async (t) => {
        env.diagnoseOnFailure(t);
        const svc = await env.service('term');
        const ip = clusterIPOf(svc, 4);
        const np = nodePortOf(svc, 'TCP');
        await env.waitReachable(fromPod('cli-1'), tcp(ip));
        t.teardown(async () => {
          for (const p of ['term-1', 'term-2']) {
            await setFinalizers(env, p, null).catch(() => undefined);
          }
        });
        for (const p of ['term-1', 'term-2']) await setFinalizers(env, p, [HOLD]);
        await env.kubectl(['delete', 'pod', 'term-1', 'term-2', '--wait=false']);
        const conds = await eventually(
          async () => {
            const cs = await sliceConditions(env, 'term');
            const want = ['term-1:false/true/true', 'term-2:false/true/true'];
            if (cs.join(',') !== want.join(',')) throw new NotYet(`slices say ${cs.join(', ') || 'no endpoints'} (want ${want.join(', ')}; pod:ready/serving/terminating)`);
            return cs;
          },
          { what: 'the EndpointSlice of term lists both pods as terminating and serving', timeoutMs: 20_000 },
        );
        t.pass(`EndpointSlice: ${conds.join(', ')}`);
        await env.barrier();
        const rs = await env.probe(fromPod('cli-1'), tcp(ip), { count: 20 });
        allAnswered(t, rs, `20 probes cli-1 → term ${ip} with only terminating endpoints`);
        answeredBy(t, rs, ['term-1', 'term-2'], 'the serving terminating endpoints');
        const n3 = c.node('node-3');
        await traceAgrees(t, env, rs, { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip) }, 'trace cli-1 → term (terminating fallback)');
        const outside = env.expect.notServed.fromOutside;
        if (outside) {
          t.pass(`client → node-3 NodePort with only terminating endpoints: ${outside}`, { skip: outside });
        } else {
          const ext = await env.probe(fromClient, tcp(n3.ip, np), { count: 10 });
          allAnswered(t, ext, `10 probes client → node-3 ${n3.ip}:${np} with only terminating endpoints`);
          const extFlow = { from: fromClient, via: 'node-3', src: c.clientIP, target: tcp(n3.ip, np), allEndpointsSeen: false };
          await traceAgrees(t, env, ext, extFlow, 'trace client → node-3 term NodePort (terminating fallback)');
        }

        for (const p of ['term-1', 'term-2']) await setFinalizers(env, p, null);
        await eventually(
          async () => {
            const r = await env.kubectl(['get', 'pods', 'term-1', 'term-2', '--ignore-not-found', '-o', 'name']);
            if (r.trim()) throw new NotYet(`still there: ${r.trim().replace(/\n/g, ', ')}`);
          },
          { what: 'term-1 and term-2 are gone once their finalizer is removed', timeoutMs: 20_000 },
        );
        for (const p of ['term-1', 'term-2']) await c.removePod(p);
        const gone = env.expect.noEndpointsTCP.value;
        const refused = await env.waitRefusal(fromPod('cli-1'), tcp(ip), gone, { what: `term ${ip} has no endpoints left and fails with ${gone}` });
        await traceAgrees(t, env, [refused], { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip), refused: 'reject' }, 'trace cli-1 → term without endpoints');
      });

      await t.test('churn: 200 operations on other Services cost a stable Service zero requests', async (t) => {
        env.diagnoseOnFailure(t);
        const svc = await env.service('stable');
        const ip = clusterIPOf(svc, 4);
        const np = nodePortOf(svc, 'TCP');
        const n3 = c.node('node-3');
        const outside = env.expect.notServed.fromOutside;
        await env.waitReachable(fromPod('cli-1'), tcp(ip));
        if (!outside) await env.waitReachable(fromClient, tcp(n3.ip, np));

        const kc = new KubeConfig();
        kc.loadFromFile(env.kubeconfig);
        const api = kc.makeApiClient(CoreV1Api);
        const ns = 'default';

        const stop = new AbortController();
        const internal = c.probeStream(fromPod('cli-1'), tcp(ip), { signal: stop.signal, intervalMs: 20, timeoutMs: 3000 });
        const external = outside ? Promise.resolve([]) : c.probeStream(fromClient, tcp(n3.ip, np), { signal: stop.signal, intervalMs: 20, timeoutMs: 3000 });
        let ops = 0;
        const live: string[] = [];
        let seq = 0;
        const churnError: string[] = [];
        try {
          while (ops < 200) {
            const kind = ops % 5;
            if (kind <= 1 || live.length === 0) {
              const name = `churn-${++seq}`;
              const body = serviceDoc(name, {
                type: seq % 3 === 0 ? 'NodePort' : 'ClusterIP',
                // Half of them share the stable Service's endpoints, so its pods' rules churn too.
                selector: seq % 2 === 0 ? { app: 'stable' } : { app: `churn-${seq}` },
                protocols: seq % 4 === 0 ? ['TCP', 'UDP'] : ['TCP'],
                labels: { 'ferry-e2e': 'churn' },
              }) as V1Service;
              await api.createNamespacedService({ namespace: ns, body });
              live.push(name);
            } else if (kind <= 3) {
              const name = live[(ops * 7) % live.length] as string;
              const cur = await api.readNamespacedService({ name, namespace: ns });
              const port = cur.spec?.ports?.[0];
              if (port) port.port = port.port === 80 ? 81 : 80;
              if (cur.spec) cur.spec.selector = kind === 2 ? { app: 'stable' } : { app: 'nothing' };
              await api.replaceNamespacedService({ name, namespace: ns, body: cur });
            } else {
              const name = live.splice((ops * 3) % live.length, 1)[0] as string;
              await api.deleteNamespacedService({ name, namespace: ns });
            }
            ops++;
            await new Promise((r) => setTimeout(r, 25));
          }
        } catch (e) {
          churnError.push(`operation ${ops + 1} failed: ${e instanceof Error ? e.message : String(e)}`);
        }
        // Everything the churn wrote must be applied on every node while the probes still run.
        await env.barrier();
        stop.abort();
        const [inRs, exRs] = await Promise.all([internal, external]);
        t.same(churnError, [], 'all 200 API operations succeeded');
        t.equal(ops, 200, 'ran 200 create/update/delete operations');
        t.ok(inRs.length >= 20, `the pod probe ran throughout (${inRs.length} requests)`);
        t.equal(failures(inRs).length, 0, `zero failed requests cli-1 → stable ${ip} during churn; got ${summarize(inRs)}`);
        if (outside) {
          t.pass(`client → node-3 NodePort during churn: ${outside}`, { skip: outside });
        } else {
          t.ok(exRs.length >= 20, `the client probe ran throughout (${exRs.length} requests)`);
          t.equal(failures(exRs).length, 0, `zero failed requests client → node-3 ${n3.ip}:${np} during churn; got ${summarize(exRs)}`);
        }
        answeredBy(t, inRs, ['stable-1', 'stable-2'], 'the stable Service kept both endpoints');
        await traceAgrees(t, env, inRs, { from: fromPod('cli-1'), src: c.pod('cli-1').ip, target: tcp(ip) }, 'trace cli-1 → stable after the churn');
        if (!outside) {
          const flow = { from: fromClient, via: 'node-3', src: c.clientIP, target: tcp(n3.ip, np), allEndpointsSeen: false };
          await traceAgrees(t, env, exRs, flow, 'trace client → node-3 stable NodePort after the churn');
        }
        await env.kubectl(['delete', 'services', '-l', 'ferry-e2e=churn', '--wait=false']);
      });
    });
  });
}
