// iptables mode against a real ferry process (issue #15, finding 5 and 7):
// - localhost NodePorts with kube-proxy's default: 127.0.0.1:NODEPORT on the node answers from
//   the endpoint, masqueraded (the endpoint sees a node address), route_localnet=1 and the
//   KUBE-FIREWALL martian drop are in place; with --iptables-localhost-nodeports=false it does
//   not answer while the node's own address still does;
// - a flushed nat KUBE-SERVICES is noticed within the canary interval and repaired.
// Kernel changes only inside the test's own namespaces.
import t from 'tap';
import ipaddr from 'ipaddr.js';
import type { ApiCore } from '../../../src/sim/apiserver/index.js';
import { eventually, NotYet } from '../lib/eventually.js';
import { withOneNode, type OneNode } from './node.js';

function createService(core: ApiCore, name: string, type: 'ClusterIP' | 'NodePort'): { clusterIP: string; nodePort: number } {
  const o = core.registry.create(core.services.def, 'default', {
    metadata: { name },
    spec: { type, selector: { app: 'echo-1' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] },
  }) as { spec?: { clusterIP?: string; ports?: { nodePort?: number }[] } };
  return { clusterIP: o.spec!.clusterIP!, nodePort: o.spec!.ports?.[0]?.nodePort ?? 0 };
}

/** The iptables binary of the variant ferry chose (its log says which). */
function iptablesOf(env: OneNode): string {
  const m = /iptables variant selected variant=(\w+)/.exec(env.log());
  return m?.[1] === 'legacy' ? 'iptables-legacy' : 'iptables-nft';
}

/** Addresses of the node a masqueraded packet may carry: its LAN IP or the pod gateway (.1 of its podCIDR). */
function nodeOwned(env: OneNode): string[] {
  const n = env.cluster.node(env.nodeName);
  const b = ipaddr.parseCIDR(n.podCIDR)[0].toByteArray();
  b[3] = 1;
  return [n.ip, ipaddr.fromByteArray(b).toString()];
}

t.test('iptables: localhost NodePorts on by default (masqueraded), off with --iptables-localhost-nodeports=false', async (t) => {
  await withOneNode(t, { mode: 'iptables', pods: 1 }, async (env) => {
    env.startFerry();
    await env.waitHealthy();
    const web = createService(env.core, 'web', 'NodePort');
    await env.core.controller.settled();
    t.ok(web.nodePort > 0, `NodePort ${web.nodePort} allocated`);
    const node = env.cluster.node(env.nodeName);
    await env.waitReachable(node.ip, web.nodePort, 'the NodePort on the node IP answers');

    const lo = await env.waitReachable('127.0.0.1', web.nodePort, '127.0.0.1:NodePort answers (default on)');
    t.equal(lo.pod, 'echo-1', 'answered by the endpoint');
    t.ok(lo.seenIP !== undefined && nodeOwned(env).includes(lo.seenIP), `masqueraded: the endpoint saw ${lo.seenIP}, a node address (${nodeOwned(env).join(', ')}), not 127.0.0.1`);
    const sysctl = await env.exec(['cat', '/proc/sys/net/ipv4/conf/all/route_localnet']);
    t.equal(sysctl.stdout.trim(), '1', 'route_localnet=1 in the node namespace');
    const ipt = iptablesOf(env);
    const fw = await env.exec([ipt, '-t', 'filter', '-S', 'KUBE-FIREWALL']);
    // As iptables -S prints it (addresses first).
    t.match(fw.stdout, /-A KUBE-FIREWALL ! -s 127\.0\.0\.0\/8 -d 127\.0\.0\.0\/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP/, 'the martian-source drop (CVE-2020-8558)');
    for (const hook of ['INPUT', 'OUTPUT']) {
      const s = await env.exec([ipt, '-t', 'filter', '-S', hook]);
      t.match(s.stdout, new RegExp(`-A ${hook} -j KUBE-FIREWALL`), `${hook} jumps to KUBE-FIREWALL`);
    }

    await env.stopFerry();
    env.startFerry(['--iptables-localhost-nodeports=false']);
    await env.waitHealthy();
    await eventually(
      async () => {
        const s = await env.exec([ipt, '-t', 'nat', '-S', 'KUBE-SERVICES']);
        if (!/! -d 127\.0\.0\.0\/8 .*--dst-type LOCAL -j KUBE-NODEPORTS/.test(s.stdout)) throw new NotYet(`the NodePort dispatch still accepts loopback:\n${s.stdout}`);
      },
      { what: 'the restarted ferry rewrote the NodePort dispatch without loopback', timeoutMs: 30_000 },
    );
    await env.waitReachable(node.ip, web.nodePort, 'the NodePort on the node IP still answers with the option off');
    const off = await env.probe('127.0.0.1', web.nodePort, 1500);
    t.equal(off.ok, false, `127.0.0.1:NodePort does not answer with the option off (${off.error ?? 'answered'})`);
  });
});

t.test('iptables: a flushed nat KUBE-SERVICES is noticed within the canary interval and repaired', async (t) => {
  await withOneNode(t, { mode: 'iptables', pods: 1 }, async (env) => {
    env.startFerry();
    await env.waitHealthy();
    const web = createService(env.core, 'web', 'ClusterIP');
    await env.core.controller.settled();
    await env.waitReachable(web.clusterIP, 80, 'the ClusterIP answers');
    const ipt = iptablesOf(env);
    const flushedAt = Date.now();
    const r = await env.exec([ipt, '-t', 'nat', '-F', 'KUBE-SERVICES']);
    t.equal(r.exitCode, 0, `${ipt} -t nat -F KUBE-SERVICES`);
    await eventually(
      async () => {
        if (!/an iptables chain of ours was changed by someone else.*chain=KUBE-SERVICES/.test(env.log())) throw new NotYet('not noticed yet');
      },
      { what: 'ferry notices the flushed chain', timeoutMs: 30_000, intervalMs: 100 },
    );
    const noticedMs = Date.now() - flushedAt;
    await env.waitReachable(web.clusterIP, 80, 'the ClusterIP answers again after the repair', 30_000);
    t.pass(`noticed ${noticedMs} ms after the flush, answering again ${Date.now() - flushedAt} ms after it`);
    t.comment(`FIGURE: flushed nat KUBE-SERVICES noticed after ${noticedMs} ms (canary interval 5 s), repaired and answering after ${Date.now() - flushedAt} ms`);
  });
});
