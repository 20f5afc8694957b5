// A UDP flow pinned (conntrack) to an endpoint that was replaced while ferry was down moves to the
// new endpoint once ferry is back, as kube-proxy's first-sync CleanStaleEntries moves it: the
// first sync after a start lists the node's UDP entries and deletes those to a frontend whose
// reply source is no serving endpoint (src/backends/conntrack-sync.ts). The flow keeps one
// source port and sends every 200 ms, so its entry never times out on its own: the new endpoint
// answering it proves the entry was deleted. nftables and iptables modes (the NAT backends).
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { startUdpFlow, summarize } from '../lib/harness.js';
import { withOneNode } from './node.js';

const SRC_PORT = 40777;

t.setTimeout(scaledMs(6 * 60_000));

for (const mode of ['nftables', 'iptables'] as const) {
  t.test(`${mode}: a UDP flow to an endpoint replaced while ferry was down moves after its restart`, async (t) => {
    await withOneNode(t, { mode, pods: 2 }, async (env) => {
      const c = env.cluster;
      const node = c.nodes[0]!;
      const svc = (app: string) =>
        JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'dns' }, spec: { selector: { app }, ports: [{ name: 'dns', port: 53, targetPort: 8080, protocol: 'UDP' }] } });
      await env.kubectl(['apply', '-f', '-'], svc('echo-1'));
      const ip = (await env.kubectl(['get', 'svc', 'dns', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
      env.startFerry();
      await env.waitHealthy();

      const flow = startUdpFlow(c, node.netns, { addr: ip, port: 53 }, { srcPort: SRC_PORT, intervalMs: 200, timeoutMs: 500 });
      t.teardown(() => flow.stop());
      const results = flow.results;
      const answeredBy = (pod: string, from: number, what: string, timeoutMs: number) => flow.waitFor((x) => x.ok && x.pod === pod, { what, timeoutMs, afterIndex: from });
      await answeredBy('echo-1', 0, `the flow from node port ${SRC_PORT} to ${ip}:53 answered by echo-1`, 30_000);

      await env.stopFerry();
      // While ferry is down the kernel keeps its rules: the selector moves to echo-2, and the
      // flow's entry stays pinned to echo-1 (which still answers: it was only deselected).
      await env.kubectl(['patch', 'svc', 'dns', '-p', JSON.stringify({ spec: { selector: { app: 'echo-2' } } })]);
      await new Promise((r) => setTimeout(r, 1500));
      const mark = results.length;
      env.startFerry();
      await env.waitHealthy();
      const moved = await answeredBy('echo-2', mark, `the SAME flow (node port ${SRC_PORT}) answered by echo-2 after the restart`, 20_000);
      t.equal(moved.pod, 'echo-2', `the flow moved to echo-2; since the restart it saw ${summarize(results.slice(mark))}`);
      await new Promise((r) => setTimeout(r, 1000));
      const after = results.slice(results.indexOf(moved));
      t.notOk(after.some((x) => x.ok && x.pod === 'echo-1'), `and echo-1 never answers it again (${summarize(after)})`);
      t.match(env.log(), /conntrack/i, 'the cleanup is in the log');
    });
  });
}
