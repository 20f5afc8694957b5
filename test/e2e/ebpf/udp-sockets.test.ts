// ebpf mode: a CONNECTED UDP socket follows its Service's endpoints as the NAT modes' flows do.
// Socket LB fixes a connected socket's destination at connect(); when that endpoint stops serving
// the Service, ferry destroys the socket (native/bpf/sock_term.c, bpf_sock_destroy) where
// kube-proxy would delete the conntrack entry, and the client, connecting again, reaches a serving
// endpoint. Both while ferry runs and across a restart (the first sync lists the sockets). The
// deselected pod keeps answering, so without the destruction the socket would stay with it for
// good. So must a dual-stack socket connected to the IPv4 ClusterIP as ::ffff:a.b.c.d, and an
// unconnected flow beside them (socket LB's per-datagram flow entries).
// The clients run in a pod of the node (its own network namespace, under the node's cgroup), so
// the iterators are proven to walk the pods' namespaces, not only ferry's.
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { startUdpFlow, summarize, type UdpFlow } from '../lib/harness.js';
import { withOneNode } from '../hardening/node.js';

t.setTimeout(scaledMs(6 * 60_000));

const KINDS = ['connected', 'mapped', 'unconnected'] as const;
type Kind = (typeof KINDS)[number];

t.test('ebpf: connected UDP sockets to an endpoint that stops serving are destroyed, live and after a restart', async (t) => {
  await withOneNode(t, { mode: 'ebpf', pods: 3 }, async (env) => {
    const c = env.cluster;
    const client = c.netnsOf({ kind: 'pod', pod: 'echo-3' });
    t.ok(client !== undefined && client !== env.netns, 'the clients run in a pod namespace of their own');
    const svc = (app: string) =>
      JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'stats' }, spec: { selector: { app }, ports: [{ name: 'stats', port: 8125, targetPort: 8080, protocol: 'UDP' }] } });
    await env.kubectl(['apply', '-f', '-'], svc('echo-1'));
    const ip = (await env.kubectl(['get', 'svc', 'stats', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    env.startFerry();
    await env.waitHealthy();

    // The unconnected flow first: once it is answered the Service is in the maps, so the
    // connected socket made next is balanced at its connect() (not left untranslated).
    const unconnected = startUdpFlow(c, client, { addr: ip, port: 8125 }, { srcPort: 40812, intervalMs: 150, timeoutMs: 400 });
    t.teardown(() => unconnected.stop());
    await unconnected.waitFor((x) => x.ok && x.pod === 'echo-1', { what: `unconnected: ${ip}:8125 answered by echo-1`, timeoutMs: 30_000 });
    const connected = startUdpFlow(c, client, { addr: ip, port: 8125 }, { srcPort: 40811, intervalMs: 150, timeoutMs: 400, connect: true });
    t.teardown(() => connected.stop());
    // A dual-stack (IPv6) socket connected to the IPv4 ClusterIP as ::ffff:a.b.c.d, as Java's are.
    const mapped = startUdpFlow(c, client, { addr: ip, port: 8125 }, { srcPort: 40813, intervalMs: 150, timeoutMs: 400, connect: true, v4Mapped: true });
    t.teardown(() => mapped.stop());
    const flows: Record<Kind, UdpFlow> = { connected, mapped, unconnected };
    const answeredBy = (kind: Kind, pod: string, from: number, what: string, timeoutMs: number) =>
      flows[kind].waitFor((x) => x.ok && x.pod === pod, { what: `${kind}: ${what}`, timeoutMs, afterIndex: from });
    const marks = (): Record<Kind, number> => ({ connected: connected.results.length, mapped: mapped.results.length, unconnected: unconnected.results.length });
    for (const kind of ['connected', 'mapped'] as const) {
      const first = await answeredBy(kind, 'echo-1', 0, `${ip}:8125 answered by echo-1`, 10_000);
      t.equal(flows[kind].results.indexOf(first), 0, `${kind}: the socket was balanced at its connect(): ${summarize(flows[kind].results)}`);
    }

    // Live: the selector moves to echo-2; echo-1 still answers whoever reaches it.
    let mark = marks();
    await env.kubectl(['patch', 'svc', 'stats', '-p', JSON.stringify({ spec: { selector: { app: 'echo-2' } } })]);
    for (const kind of KINDS) {
      const moved = await answeredBy(kind, 'echo-2', mark[kind], 'answered by echo-2 after the selector moved', 15_000);
      const results = flows[kind].results;
      const after = results.slice(results.indexOf(moved));
      await new Promise((r) => setTimeout(r, 600));
      t.notOk(
        results.slice(results.indexOf(moved)).some((x) => x.ok && x.pod === 'echo-1'),
        `${kind}: echo-1 never answers the flow again once it moved (${summarize(after)})`,
      );
    }
    for (const kind of ['connected', 'mapped'] as const) {
      const sinceLive = flows[kind].results.slice(mark[kind]);
      t.ok(
        sinceLive.some((x) => !x.ok && x.error !== 'timeout'),
        `${kind}: the socket failed with an error (destroyed), and its client connected again: ${summarize(sinceLive)}`,
      );
    }
    t.match(env.log(), /connected UDP sockets destroyed/, 'the destruction is in the log');

    // Across a restart: while ferry is down the selector moves back to echo-1; the connected
    // socket (made again above, to echo-2) keeps its endpoint until the restarted ferry's first
    // sync, which lists the sockets and destroys those to an endpoint that does not serve.
    await env.stopFerry();
    await env.kubectl(['patch', 'svc', 'stats', '-p', JSON.stringify({ spec: { selector: { app: 'echo-1' } } })]);
    await new Promise((r) => setTimeout(r, 1500));
    mark = marks();
    for (const kind of ['connected', 'mapped'] as const) {
      const whileDown = flows[kind].results.slice(-3);
      t.ok(
        whileDown.every((x) => x.ok && x.pod === 'echo-2'),
        `${kind}: while ferry is down the socket stays with echo-2 (${summarize(whileDown)})`,
      );
    }
    env.startFerry();
    await env.waitHealthy();
    for (const kind of KINDS) {
      const moved = await answeredBy(kind, 'echo-1', mark[kind], 'answered by echo-1 after the restart', 20_000);
      await new Promise((r) => setTimeout(r, 600));
      const after = flows[kind].results.slice(flows[kind].results.indexOf(moved));
      t.notOk(
        after.some((x) => x.ok && x.pod === 'echo-2'),
        `${kind}: echo-2 never answers the flow again after the restart (${summarize(after)})`,
      );
    }
  });
});
