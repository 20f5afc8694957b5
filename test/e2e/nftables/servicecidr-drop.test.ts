// nftables mode drops traffic to an unallocated address inside a service CIDR, as kube-proxy's
// nftables mode does ("Drop traffic to unallocated ClusterIPs"), after DNAT so real Services are
// untouched: from the node, a real ClusterIP answers, the same ClusterIP on a port it does not
// serve is refused at once (the existing reject), and an unallocated address in the range gets
// no answer at all (dropped, not routed out and not refused). A real ferry against the simulator.
import t from 'tap';
import { withOneNode } from '../hardening/node.js';
import { eventually, NotYet } from '../lib/eventually.js';

t.test('an unallocated service-CIDR address is dropped; real ClusterIPs are not', async (t) => {
  await withOneNode(t, { mode: 'nftables', pods: 1 }, async (env) => {
    env.startFerry();
    await env.waitHealthy();
    await env.kubectl(['apply', '-f', '-'], 'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {selector: {app: echo-1}, ports: [{port: 80, targetPort: 8080}]}\n');
    const svc = JSON.parse(await env.kubectl(['get', 'service', 'web', '-o', 'json'])) as { spec: { clusterIP: string } };
    const ip = svc.spec.clusterIP;
    await env.waitReachable(ip, 80, 'web');

    // The ServiceCIDR ferry learned, in the kernel.
    const cidrs = await eventually(async () => {
      const r = await env.exec(['nft', 'list', 'set', 'ip', 'ferry', 'service-cidrs']);
      const m = /elements = \{ ([^}]*) \}/.exec(r.stdout);
      if (!m) throw new NotYet(`no elements yet: ${r.stdout.trim()} ${r.stderr.trim()}`);
      return m[1]!.split(',').map((s) => s.trim());
    }, { timeoutMs: 20_000, what: 'the service CIDRs in nftables' });
    t.ok(cidrs.length > 0, `service-cidrs holds ${cidrs.join(', ')}`);

    // An address in the same range that no Service holds: the ClusterIP with its last octet moved.
    const parts = ip.split('.').map(Number);
    parts[3] = parts[3]! === 250 ? 251 : 250;
    const unallocated = parts.join('.');
    const services = await env.kubectl(['get', 'services', '-A', '-o', 'jsonpath={.items[*].spec.clusterIP}']);
    t.notOk(services.split(/\s+/).includes(unallocated), `${unallocated} is not a ClusterIP`);

    // A table of the test's own counts what leaves the output hook after ferry's post-DNAT check
    // (priority 10 > ferry's filter-output at 0, kube-proxy's place for it): a packet ferry
    // dropped never reaches it. The control address,
    // outside every service CIDR, shows that the counter does see what is not dropped.
    const control = '192.0.2.123';
    const nftIn = async (script: string) => {
      const r = await env.exec(['nft', script]);
      if (r.exitCode !== 0) throw new Error(`nft ${script}: ${r.stderr}`);
    };
    await nftIn(`add table ip probe`);
    await nftIn(`add chain ip probe out { type filter hook output priority 10 ; }`);
    await nftIn(`add rule ip probe out ip daddr ${unallocated} counter`);
    await nftIn(`add rule ip probe out ip daddr ${control} counter`);
    const counters = async (): Promise<number[]> => {
      const r = await env.exec(['nft', 'list', 'chain', 'ip', 'probe', 'out']);
      return [...r.stdout.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
    };

    const answered = await env.probe(ip, 80, 2000);
    t.ok(answered.ok, `the real ClusterIP ${ip}:80 answers (${answered.error ?? answered.pod})`);
    const wrongPort = await env.probe(ip, 81, 2000);
    t.notOk(wrongPort.ok, 'the ClusterIP on a port it does not serve does not answer');
    t.match(wrongPort.error ?? '', /refused|unreachable/i, `…and is rejected at once, not dropped (${wrongPort.error}, ${wrongPort.ms} ms)`);
    const dropped = await env.probe(unallocated, 80, 2000);
    t.notOk(dropped.ok, `${unallocated}:80 gets no answer`);
    t.notMatch(dropped.error ?? '', /refused/i, `…and is not refused (${dropped.error}, ${dropped.ms} ms)`);
    await env.probe(control, 80, 1500);
    const [toUnallocated, toControl] = await counters();
    t.equal(toUnallocated, 0, 'no packet to the unallocated address got past ferry\'s post-DNAT check');
    t.ok((toControl ?? 0) > 0, `the control address's packets did reach the counter (${toControl})`);

    const chain = await env.exec(['nft', 'list', 'chain', 'ip', 'ferry', 'cluster-ips-check']);
    t.match(chain.stdout, /ip daddr @service-cidrs drop/, 'the drop rule sits in cluster-ips-check, after DNAT');
  });
});
