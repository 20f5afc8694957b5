/**
 * Paths from outside the cluster through a real ferry per node: NodePort on every node (also
 * nodes without a local endpoint), IPv6 NodePort, externalTrafficPolicy Local with its
 * healthCheckNodePort, LoadBalancer ingress IPs, externalIPs and loadBalancerSourceRanges, and a
 * NodePort whose endpoint is a hostNetwork pod (one of a node's own addresses).
 * The outside client is 198.18.0.100; external/LB IPs (203.0.113.0/24) are routed to node-1.
 * Runs once per mode in modes().
 */
import t from 'tap';
import { scaledMs } from '../../../src/util/timescale.js';
import { CLIENT_IP6 } from '../../../src/sim/cluster/index.js';
import { readNetCounters } from '../../../src/bench/tcpstat.js';
import {
  allAnswered,
  answeredBy,
  eventually,
  expectations,
  failedWith,
  fromClient,
  fromNode,
  fromPodOutsideCgroup,
  modes,
  nodePortOf,
  NotYet,
  serviceDoc,
  sourceIs,
  tcp,
  traceAgrees,
  udp,
  withProxyCluster,
  type ProxyEnv,
} from '../lib/harness.js';

const LB_LOCAL_IP = '203.0.113.10';
const LB_ALLOW_IP = '203.0.113.11';
const LB_DENY_IP = '203.0.113.12';
const EXTERNAL_IP = '203.0.113.20';
/** The hostNetwork pod's port on node-1 (free in the node's namespace). */
const HOSTNET_PORT = 8090;
const NO_ENDPOINTS_IP = '203.0.113.21';
const NO_ENDPOINTS_IP6 = '2001:db8:3::21';
const VIA = 'node-1';
/** Added to node-3's LAN interface during the run (a free address of the simulated LAN). */
const EXTRA_NODE_IP = '198.18.0.200';
const EXTRA_NODE_IP6 = '2001:db8:0:1::200';

async function waitHealth(env: ProxyEnv, node: string, port: number, want: number): Promise<void> {
  const ip = env.cluster.node(node).ip;
  await eventually(
    async () => {
      const code = await env.httpStatus(fromClient, ip, port, '/healthz');
      if (code !== want) throw new NotYet(`HTTP ${code || 'no answer'}`);
    },
    { what: `healthCheckNodePort ${ip}:${port} (${node}) answers ${want} to the client`, timeoutMs: 30_000 },
  );
}

/** The client's count of ICMP destination unreachables received (IPv4), from /proc/net/snmp. */
async function icmpInDestUnreachs(env: ProxyEnv): Promise<number> {
  const snmp = (await env.cluster.exec(env.cluster.clientNetns, ['cat', '/proc/net/snmp'])).stdout;
  const v = readNetCounters([snmp], { Icmp: ['InDestUnreachs'] }).InDestUnreachs;
  if (v === undefined || !Number.isInteger(v)) throw new Error(`no Icmp InDestUnreachs in the client's /proc/net/snmp`);
  return v;
}

// A cluster per mode takes a minute or so; tap's default of 30 s per file would cut it short.
t.setTimeout(scaledMs(modes().length * 10 * 60_000));

for (const mode of modes()) {
  // Every path here comes from outside the node; a mode that does not serve that yet says why.
  t.test(`external paths [${mode}]`, { skip: expectations(mode).notServed.fromOutside ?? false }, async (t) => {
    await withProxyCluster(t, { mode, nodes: 3, dualStack: true }, async (env) => {
      const c = env.cluster;
      // Endpoints on node-1 and node-2; node-3 has none (only a client pod).
      await Promise.all([
        c.addPod({ name: 'ext-1', node: 'node-1', labels: { app: 'ext' } }),
        c.addPod({ name: 'ext-2', node: 'node-2', labels: { app: 'ext' } }),
        c.addPod({ name: 'cli-3', node: 'node-3', labels: { role: 'client' } }),
        // A hostNetwork pod on node-1: its endpoint is node-1's own address.
        c.addPod({ name: 'hostnet-1', node: 'node-1', labels: { app: 'hostnet' }, hostNetwork: true, ports: [HOSTNET_PORT] }),
      ]);
      await c.addClientRoute('203.0.113.0/24', VIA);
      await c.addClientRoute('2001:db8:3::/64', VIA);
      await env.apply([
        serviceDoc('np', { type: 'NodePort', selector: { app: 'ext' }, protocols: ['TCP', 'UDP'], dualStack: true }),
        serviceDoc('lb-local', { type: 'LoadBalancer', selector: { app: 'ext' }, spec: { externalTrafficPolicy: 'Local' } }),
        serviceDoc('extip', { selector: { app: 'ext' }, spec: { externalIPs: [EXTERNAL_IP] } }),
        serviceDoc('lb-allow', { type: 'LoadBalancer', selector: { app: 'ext' }, spec: { loadBalancerSourceRanges: [`${c.clientIP}/32`] } }),
        serviceDoc('extip-none', { selector: { app: 'none' }, protocols: ['TCP', 'UDP'], dualStack: true, spec: { externalIPs: [NO_ENDPOINTS_IP, NO_ENDPOINTS_IP6] } }),
        serviceDoc('lb-deny', { type: 'LoadBalancer', selector: { app: 'ext' }, spec: { loadBalancerSourceRanges: ['192.0.2.0/24'] } }),
        serviceDoc('hostnet', { type: 'NodePort', selector: { app: 'hostnet' }, spec: { ports: [{ name: 'tcp', protocol: 'TCP', port: 80, targetPort: HOSTNET_PORT }] } }),
      ]);
      await env.setLoadBalancerIngress('lb-local', [LB_LOCAL_IP]);
      await env.setLoadBalancerIngress('lb-allow', [LB_ALLOW_IP]);
      await env.setLoadBalancerIngress('lb-deny', [LB_DENY_IP]);
      const np = await env.service('np');
      const npPort = nodePortOf(np, 'TCP');
      const npUdp = nodePortOf(np, 'UDP');

      await t.test('NodePort, Cluster policy: every node answers (also without a local endpoint); source masqueraded', async (t) => {
        env.diagnoseOnFailure(t);
        for (const n of c.nodes) {
          await env.waitReachable(fromClient, tcp(n.ip, npPort));
          const rs = await env.probe(fromClient, tcp(n.ip, npPort), { count: 20 });
          allAnswered(t, rs, `20 probes client → ${n.name} ${n.ip}:${npPort}`);
          answeredBy(t, rs, ['ext-1', 'ext-2'], `${n.name} spreads over both endpoints`);
          sourceIs(t, env, rs, env.expect.externalClusterPolicy, c.clientIP, n.name, `client → ${n.name} NodePort`);
          await traceAgrees(t, env, rs, { from: fromClient, via: n.name, src: c.clientIP, target: tcp(n.ip, npPort) }, `trace client → ${n.name} NodePort`);
        }
        const n3 = c.node('node-3');
        await env.waitReachable(fromClient, udp(n3.ip, npUdp));
        const rs = await env.probe(fromClient, udp(n3.ip, npUdp), { count: 10 });
        allAnswered(t, rs, `10 UDP probes client → node-3 ${n3.ip}:${npUdp} (no local endpoint)`);
        sourceIs(t, env, rs, env.expect.externalClusterPolicy, c.clientIP, 'node-3', 'client → node-3 UDP NodePort');
        const udpFlow = { from: fromClient, via: 'node-3', src: c.clientIP, target: udp(n3.ip, npUdp), allEndpointsSeen: false };
        await traceAgrees(t, env, rs, udpFlow, 'trace client → node-3 UDP NodePort');
      });

      await t.test('IPv6 NodePort from the client on every node', async (t) => {
        env.diagnoseOnFailure(t);
        const client6 = CLIENT_IP6;
        for (const n of c.nodes) {
          if (!n.ip6) throw new Error(`${n.name} has no IPv6 address although the cluster is dual-stack`);
          await env.waitReachable(fromClient, tcp(n.ip6, npPort));
          const rs = await env.probe(fromClient, tcp(n.ip6, npPort), { count: 10 });
          allAnswered(t, rs, `10 probes client → [${n.ip6}]:${npPort}`);
          sourceIs(t, env, rs, env.expect.externalClusterPolicy, client6, n.name, `client → ${n.name} IPv6 NodePort`);
          const flow = { from: fromClient, via: n.name, src: client6, target: tcp(n.ip6, npPort), allEndpointsSeen: false };
          await traceAgrees(t, env, rs, flow, `trace client → ${n.name} IPv6 NodePort`);
        }
      });

      await t.test('NodePort on an address the node gained after ferry started, and not once it lost it', async (t) => {
        env.diagnoseOnFailure(t);
        // kube-proxy accepts NodePorts on every local address (nodePortAddresses unset), also one
        // added later: the kernel modes ask the kernel per packet, ebpf and userspace mode follow
        // the host's address changes (a netlink subscription; well within the 10 s allowed, which
        // is a third of the periodic sync). Its nftables mode defaults to the primary IP only.
        const n3 = c.node('node-3');
        const added = [
          [EXTRA_NODE_IP, `${EXTRA_NODE_IP}/24`, c.clientIP],
          [EXTRA_NODE_IP6, `${EXTRA_NODE_IP6}/64`, CLIENT_IP6],
        ] as const;
        const del = async () => {
          for (const [, cidr] of added) await c.exec(n3.netns, ['ip', 'addr', 'del', cidr, 'dev', 'eth0'], { allowFailure: true });
        };
        t.teardown(del);
        const addAddress = (ip: string, cidr: string) =>
          // IPv6: deprecated at once (preferred_lft 0) — still local, but never picked as a source
          // (RFC 6724 rule 3), so masquerade keeps using the node IP the checks below expect; a
          // fresh IPv6 address would otherwise be preferred over it.
          c.exec(n3.netns, ['ip', 'addr', 'add', cidr, 'dev', 'eth0', ...(ip.includes(':') ? ['nodad', 'preferred_lft', '0'] : [])]);
        if (!env.expect.nodePortOnGainedAddress.value) {
          for (const [ip, cidr] of added) {
            await addAddress(ip, cidr);
            // The node's own IP answers (ferry is running and programmed); the new address must
            // not: nothing of ferry's takes it for a NodePort.
            await env.waitReachable(fromClient, tcp(n3.ip6 && ip.includes(':') ? n3.ip6 : n3.ip, npPort));
            const rs = await env.probe(fromClient, tcp(ip, npPort), { count: 5, timeoutMs: 1500 });
            t.notOk(rs.some((r) => r.ok), `client → node-3's new address ${ip}:${npPort}: not a NodePort address (${env.expect.nodePortOnGainedAddress.reason}); got ${JSON.stringify(rs.map((r) => r.ok ? r.pod : r.error))}`);
          }
          return;
        }
        for (const [ip, cidr, src] of added) {
          await addAddress(ip, cidr);
          await env.waitReachable(fromClient, tcp(ip, npPort), { timeoutMs: 10_000, what: `client → node-3's new address ${ip}:${npPort}` });
          const rs = await env.probe(fromClient, tcp(ip, npPort), { count: 10 });
          allAnswered(t, rs, `10 probes client → node-3's new address ${ip}:${npPort}`);
          await traceAgrees(t, env, rs, { from: fromClient, via: 'node-3', src, target: tcp(ip, npPort), allEndpointsSeen: false }, `trace client → ${ip} NodePort`);
        }
        await env.waitReachable(fromNode('node-3'), tcp(EXTRA_NODE_IP, npPort), { timeoutMs: 10_000, what: `node-3 → its new address ${EXTRA_NODE_IP}:${npPort}` });
        const own = await env.probe(fromNode('node-3'), tcp(EXTRA_NODE_IP, npPort), { count: 5 });
        allAnswered(t, own, `node-3 → its own new address ${EXTRA_NODE_IP}:${npPort}`);
        // Gone again: from the node itself nothing may still take it for a NodePort (ebpf's
        // socket LB would connect to an endpoint if ferry missed the removal).
        await del();
        const gone = await eventually(
          async () => {
            const [r] = await env.probe(fromNode('node-3'), tcp(EXTRA_NODE_IP, npPort), { count: 1, timeoutMs: 1500 });
            if (!r || r.ok) throw new NotYet(`still answered by ${r?.pod ?? '?'}`);
            return r;
          },
          { what: `node-3 → ${EXTRA_NODE_IP}:${npPort} after the address was removed fails`, timeoutMs: 10_000 },
        );
        t.notOk(gone.ok, `node-3 → ${EXTRA_NODE_IP}:${npPort} after the address was removed: ${gone.error ?? 'failed'}`);
      });

      await t.test("NodePort to a hostNetwork pod (an endpoint on a node's own address): via its node and via another, from the client and from a pod", async (t) => {
        env.diagnoseOnFailure(t);
        const port = nodePortOf(await env.service('hostnet'), 'TCP');
        for (const via of ['node-1', 'node-2']) {
          const ip = c.node(via).ip;
          await env.waitReachable(fromClient, tcp(ip, port));
          const rs = await env.probe(fromClient, tcp(ip, port), { count: 10 });
          allAnswered(t, rs, `10 probes client → ${via} ${ip}:${port}`);
          answeredBy(t, rs, ['hostnet-1'], `${via}: the hostNetwork pod on node-1 answers`);
        }
        // A process of a pod on node-1 that socket LB does not see: in ebpf mode its packets meet
        // the tc program on the node, and the endpoint's replies leave through its veth.
        const ip1 = c.node('node-1').ip;
        const rs = await env.probe(fromPodOutsideCgroup('ext-1'), tcp(ip1, port), { count: 5 });
        allAnswered(t, rs, `5 probes ext-1 (outside its cgroup) → node-1 ${ip1}:${port}`);
        answeredBy(t, rs, ['hostnet-1'], 'the hostNetwork pod answers the local pod');
      });

      await t.test('externalTrafficPolicy Local: local endpoint only, client IP preserved, no local endpoint → dropped, health check', async (t) => {
        env.diagnoseOnFailure(t);
        const svc = await env.service('lb-local');
        const port = nodePortOf(svc, 'TCP');
        const hc = svc.healthCheckNodePort;
        t.ok(hc, `lb-local got a healthCheckNodePort (spec: ${JSON.stringify(svc)})`);
        for (const [node, pod] of [
          ['node-1', 'ext-1'],
          ['node-2', 'ext-2'],
        ] as const) {
          const ip = c.node(node).ip;
          await env.waitReachable(fromClient, tcp(ip, port));
          const rs = await env.probe(fromClient, tcp(ip, port), { count: 10 });
          allAnswered(t, rs, `10 probes client → ${node} ${ip}:${port}`);
          answeredBy(t, rs, [pod], `${node} only uses its local endpoint`);
          sourceIs(t, env, rs, env.expect.externalLocalPolicy, c.clientIP, node, `client → ${node} Local NodePort`);
          await traceAgrees(t, env, rs, { from: fromClient, via: node, src: c.clientIP, target: tcp(ip, port) }, `trace client → ${node} Local NodePort`);
        }
        await env.barrier();
        const n3 = c.node('node-3');
        const dropped = await env.probe(fromClient, tcp(n3.ip, port), { count: 3, timeoutMs: 1500 });
        failedWith(t, dropped, env.expect.outsidePolicyDrop, `client → node-3 ${n3.ip}:${port} (no local endpoint)`);
        await traceAgrees(t, env, dropped, { from: fromClient, via: 'node-3', src: c.clientIP, target: tcp(n3.ip, port), refused: 'drop' }, 'trace client → node-3 Local NodePort');
        if (hc) {
          await waitHealth(env, 'node-1', hc, 200);
          await waitHealth(env, 'node-2', hc, 200);
          await waitHealth(env, 'node-3', hc, 503);
          t.pass(`healthCheckNodePort ${hc}: 200 on node-1 and node-2 (local endpoint), 503 on node-3`);
        }
        // A pod is not "outside": traffic from the cluster CIDR takes the cluster-wide set (the
        // IR's short-circuit), so node-3's pod reaches the Local NodePort on node-3 although
        // node-3 has no endpoint. From a process outside the node's cgroup, which ebpf mode's
        // socket LB does not see: the tc program short-circuits it.
        const cli3 = c.pod('cli-3');
        const inPod = fromPodOutsideCgroup('cli-3');
        await env.waitReachable(inPod, tcp(n3.ip, port));
        const short = await env.probe(inPod, tcp(n3.ip, port), { count: 20 });
        allAnswered(t, short, `20 probes cli-3 (node-3, outside its cgroup) → node-3 ${n3.ip}:${port} (no local endpoint)`);
        answeredBy(t, short, ['ext-1', 'ext-2'], 'the cluster-wide set');
        sourceIs(t, env, short, env.expect.uncgroupedPodToLocalNodePort, cli3.ip, 'node-3', 'cli-3 → Local NodePort on its own node');
        // An endpoint doing the same reaches itself about half of the time: a hairpin, which
        // must be masqueraded on this path too or its reply would bypass the translation.
        const n2 = c.node('node-2');
        const hp = await env.probe(fromPodOutsideCgroup('ext-2'), tcp(n2.ip, port), { count: 20 });
        allAnswered(t, hp, `20 probes ext-2 (outside its cgroup) → node-2 ${n2.ip}:${port}`);
        answeredBy(t, hp, ['ext-1', 'ext-2'], 'the cluster-wide set, the sender included');
      });

      await t.test('LoadBalancer ingress IP with Local policy, reached from the client', async (t) => {
        env.diagnoseOnFailure(t);
        await env.waitReachable(fromClient, tcp(LB_LOCAL_IP));
        const rs = await env.probe(fromClient, tcp(LB_LOCAL_IP), { count: 10 });
        allAnswered(t, rs, `10 probes client → ${LB_LOCAL_IP} (routed to ${VIA})`);
        answeredBy(t, rs, ['ext-1'], `${VIA} only uses its local endpoint`);
        sourceIs(t, env, rs, env.expect.externalLocalPolicy, c.clientIP, VIA, 'client → LB IP, Local policy');
        await traceAgrees(t, env, rs, { from: fromClient, via: VIA, src: c.clientIP, target: tcp(LB_LOCAL_IP) }, 'trace client → LB IP, Local policy');
      });

      await t.test('externalIPs reached from the client', async (t) => {
        env.diagnoseOnFailure(t);
        await env.waitReachable(fromClient, tcp(EXTERNAL_IP));
        const rs = await env.probe(fromClient, tcp(EXTERNAL_IP), { count: 20 });
        allAnswered(t, rs, `20 probes client → ${EXTERNAL_IP} (routed to ${VIA})`);
        answeredBy(t, rs, ['ext-1', 'ext-2'], 'Cluster policy spreads over both endpoints');
        sourceIs(t, env, rs, env.expect.externalClusterPolicy, c.clientIP, VIA, 'client → externalIP');
        await traceAgrees(t, env, rs, { from: fromClient, via: VIA, src: c.clientIP, target: tcp(EXTERNAL_IP) }, 'trace client → externalIP');
      });

      await t.test('externalIPs of a Service without endpoints, from the client: TCP and UDP refused at once, IPv4 and IPv6', async (t) => {
        env.diagnoseOnFailure(t);
        // An ICMP error of the kernel is rate-limited per destination (1/s after a small burst):
        // probes are spaced so that every one gets its own answer. And a non-blocking IPv6
        // connect() here ignores the ICMPv6 error to its first SYN (measured: refused ~1 s later,
        // at the retransmission; the kernel NAT modes, as with kube-proxy), so an attempt may take
        // 3 s to fail. Spacing and patience, not timing assertions.
        const spaced = { count: 2, timeoutMs: 3000, intervalMs: 1100 };
        for (const [ip, src] of [
          [NO_ENDPOINTS_IP, c.clientIP],
          [NO_ENDPOINTS_IP6, CLIENT_IP6],
        ] as const) {
          for (const [target, e] of [
            [tcp(ip), env.expect.outsideNoEndpointsTCP],
            [udp(ip), env.expect.outsideNoEndpointsUDP],
          ] as const) {
            const what = `${target.proto.toUpperCase()} client → extip-none ${ip} (routed to ${VIA})`;
            await env.waitRefusal(fromClient, target, e.value, { probeTimeoutMs: spaced.timeoutMs, what: `${what} fails with ${e.value}` });
            const rs = await env.probe(fromClient, target, spaced);
            failedWith(t, rs, e, what);
            await traceAgrees(t, env, rs, { from: fromClient, via: VIA, src, target, refused: 'reject' }, `trace ${what}`);
          }
        }
        // A flood is not answered one for one: every mode rate-limits these errors (the kernel's
        // own limits; in ebpf mode the tc program's bucket, 1,000 a second after a burst of 50).
        // Counted where they arrive, in the client's ICMP counters; the client sends nothing else.
        const N = 2000;
        await new Promise((r) => setTimeout(r, 1100)); // the kernel's per-client budget refills
        const before = await icmpInDestUnreachs(env);
        const flood = `const s=require('dgram').createSocket('udp4');s.on('error',()=>{});let n=0;const b=Buffer.from('x');(function go(){for(let i=0;i<100&&n<${N};i++,n++)s.send(b,80,'${NO_ENDPOINTS_IP}');if(n<${N})setImmediate(go);else setTimeout(()=>s.close(),500)})()`;
        const sent = await c.exec(c.clientNetns, [process.execPath, '-e', flood], { allowFailure: true });
        t.equal(sent.exitCode, 0, `the client sent ${N} datagrams to ${NO_ENDPOINTS_IP}:80 (${sent.stderr.trim() || 'ok'})`);
        const errors = (await icmpInDestUnreachs(env)) - before;
        t.ok(errors >= 1 && errors < N / 2, `${N} datagrams in a burst got ${errors} ICMP errors: some, far fewer than one each`);
      });

      await t.test('loadBalancerSourceRanges: an allowed source passes, an excluded one is dropped', async (t) => {
        env.diagnoseOnFailure(t);
        await env.waitReachable(fromClient, tcp(LB_ALLOW_IP));
        const ok = await env.probe(fromClient, tcp(LB_ALLOW_IP), { count: 10 });
        allAnswered(t, ok, `client (in ${c.clientIP}/32) → lb-allow ${LB_ALLOW_IP}`);
        await traceAgrees(t, env, ok, { from: fromClient, via: VIA, src: c.clientIP, target: tcp(LB_ALLOW_IP), allEndpointsSeen: false }, 'trace client → lb-allow');
        await env.barrier();
        const denied = await env.probe(fromClient, tcp(LB_DENY_IP), { count: 3, timeoutMs: 1500 });
        failedWith(t, denied, env.expect.outsidePolicyDrop, `client (not in 192.0.2.0/24) → lb-deny ${LB_DENY_IP}`);
        await traceAgrees(t, env, denied, { from: fromClient, via: VIA, src: c.clientIP, target: tcp(LB_DENY_IP), refused: 'drop' }, 'trace client → lb-deny');
      });
    });
  });
}
