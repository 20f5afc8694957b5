/**
 * The trace explanation over IR fixtures: every verdict kind (DNAT, REJECT, DROP, untouched),
 * every frontend kind, the traffic classes, masquerade decisions and the policy lines, and the
 * per-mode paths naming the objects each backend really creates.
 */
import t from 'tap';
import { explain, trace, validateQuery, TraceInputError, type HostFacts, type TraceQuery } from '../../../src/plan/explain.js';
import type { ProxyTables } from '../../../src/plan/types.js';
import { NFTABLES_FACTS, nftablesPath } from '../../../src/backends/nftables/trace.js';
import { iptablesFacts, iptablesPath } from '../../../src/backends/iptables/trace.js';
import { userspaceFacts, userspacePath } from '../../../src/backends/userspace/trace.js';
import { ebpfFacts, ebpfPath } from '../../../src/backends/ebpf/trace.js';
const EBPF_FACTS = ebpfFacts(false);
import { serviceNames } from '../../../src/backends/nftables/names.js';
import { serviceChainNames, endpointChainName } from '../../../src/backends/iptables/names.js';
import { DROP, ep, fwd, REJECT, svc, table, tables } from '../backends/ir-builders.js';

const NODE_IP = '192.0.2.10';
const POD = '198.18.0.5'; // in the detector's 198.18.0.0/16
const POD_EP = ep('198.18.0.7', 8080, true);
const REMOTE_EP = ep('198.18.1.7', 8080, false);
const CLIENT = '203.0.113.100'; // outside lb's 203.0.113.0/26
const host: HostFacts = { localAddresses: [NODE_IP, '127.0.0.1', '198.18.0.1'] };
const IPT = iptablesFacts(true);
const US = userspaceFacts(false);

const web = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', internal: fwd(POD_EP, REMOTE_EP), nodePort: 30080, externalIPs: ['203.0.113.20'] });
const sticky = svc({ namespace: 'default', name: 'sticky', clusterIP: '198.19.0.11', internal: fwd(POD_EP, REMOTE_EP), affinityTimeoutSeconds: 10800 });
const empty = svc({ namespace: 'default', name: 'empty', clusterIP: '198.19.0.12', internal: REJECT, nodePort: 30012 });
const itl = svc({ namespace: 'default', name: 'itl', clusterIP: '198.19.0.13', internal: DROP, cluster: fwd(REMOTE_EP), internalPolicyLocal: true });
const local = svc({
  namespace: 'default',
  name: 'local',
  clusterIP: '198.19.0.14',
  internal: fwd(REMOTE_EP),
  cluster: fwd(REMOTE_EP),
  external: DROP,
  externalPolicyLocal: true,
  nodePort: 30014,
  loadBalancerIPs: ['203.0.113.10'],
});
const lb = svc({
  namespace: 'default',
  name: 'lb',
  clusterIP: '198.19.0.15',
  internal: fwd(POD_EP, REMOTE_EP),
  nodePort: 30015,
  loadBalancerIPs: ['203.0.113.11'],
  loadBalancerSourceRanges: ['203.0.113.0/26'],
});
const self = svc({ namespace: 'default', name: 'self', clusterIP: '198.19.0.16', internal: fwd(ep(POD, 8080, true)) });
const term = { ...svc({ namespace: 'default', name: 'term', clusterIP: '198.19.0.17', internal: fwd(ep('198.18.1.8', 8080, false, false)) }), topology: 'PreferSameZone' as const };
const udp = svc({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(REMOTE_EP) });

const emptyExt = svc({ namespace: 'default', name: 'empty-ext', clusterIP: '198.19.0.18', internal: REJECT, externalIPs: ['203.0.113.21'] });
const emptyExtUdp = svc({ namespace: 'default', name: 'empty-ext', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.18', internal: REJECT, externalIPs: ['203.0.113.21'] });

const T: ProxyTables = tables(table(4, [web, sticky, empty, itl, local, lb, self, term, udp, emptyExt, emptyExtUdp], { serviceCIDRs: ['198.19.0.0/16'] }));

const q = (src: string, dst: string, port: number, extra: Partial<TraceQuery> = {}): TraceQuery => ({ src, dst, port, protocol: 'TCP', ...extra });

t.test('ClusterIP from a local pod: DNAT to the internal set, no masquerade', async (t) => {
  const e = explain(T, q(POD, '198.19.0.10', 80), host, NFTABLES_FACTS);
  t.equal(e.traffic.class, 'pod');
  t.ok(e.traffic.derived && e.traffic.detectorMatches);
  t.match(e.match, { service: web.key, frontend: 'clusterIP', address: '198.19.0.10', port: 80 });
  t.equal(e.verdict.kind, 'dnat');
  t.equal(e.endpointSet, 'internal');
  t.same(e.endpoints.map((x) => `${x.ip}:${x.port}`), ['198.18.0.7:8080', '198.18.1.7:8080']);
  t.equal(e.masquerade.value, 'no');
  t.match(e.policy, [/internalTrafficPolicy Cluster/]);
});

t.test('ClusterIP from the node, from localhost and from outside: masqueraded (not local pod traffic)', async (t) => {
  for (const [src, cls] of [
    [NODE_IP, 'node'],
    ['127.0.0.1', 'localhost'],
    [CLIENT, 'external'],
  ] as const) {
    const e = explain(T, q(src, '198.19.0.10', 80), host, NFTABLES_FACTS);
    t.equal(e.traffic.class, cls, `${src} is ${cls}`);
    t.equal(e.masquerade.value, 'yes', `${src}: masquerade`);
    t.equal(e.verdict.kind, 'dnat');
  }
});

t.test('--from overrides the derived class; an address outside the detector does not match it', async (t) => {
  const e = explain(T, q('10.1.2.3', '198.19.0.10', 80, { from: 'pod' }), host, NFTABLES_FACTS);
  t.equal(e.traffic.class, 'pod');
  t.notOk(e.traffic.derived);
  t.notOk(e.traffic.detectorMatches);
  t.match(e.traffic.reason, /does not match/);
  t.equal(e.masquerade.value, 'yes');
});

t.test('masquerade-all and no detector', async (t) => {
  const all = tables(table(4, [{ ...web, clusterIPMasquerade: 'all' }], { masqueradeAll: true }));
  t.equal(explain(all, q(POD, '198.19.0.10', 80), host, NFTABLES_FACTS).masquerade.value, 'yes');
  const none = tables(table(4, [{ ...web, clusterIPMasquerade: 'none' }], { localTraffic: { kind: 'none' } }));
  const e = explain(none, q(CLIENT, '198.19.0.10', 80), host, NFTABLES_FACTS);
  t.equal(e.masquerade.value, 'no');
  t.match(e.masquerade.reason, /only hairpin/);
});

t.test('hairpin: the only endpoint is the source → masqueraded; one of several → hairpin only', async (t) => {
  const only = explain(T, q(POD, '198.19.0.16', 80), host, NFTABLES_FACTS);
  t.equal(only.masquerade.value, 'yes');
  t.match(only.masquerade.reason, /hairpin/);
  const some = explain(T, q('198.18.0.7', '198.19.0.10', 80), host, NFTABLES_FACTS);
  t.equal(some.masquerade.value, 'hairpin');
});

t.test('sessionAffinity, terminating fallback and topology are named', async (t) => {
  const s = explain(T, q(POD, '198.19.0.11', 80), host, NFTABLES_FACTS);
  t.equal(s.affinitySeconds, 10800);
  t.match(s.policy.join('\n'), /sessionAffinity ClientIP, timeout 10800s/);
  t.match(s.verdict.reason, /sticky/);
  const tr = explain(T, q(POD, '198.19.0.17', 80), host, NFTABLES_FACTS);
  t.match(tr.policy.join('\n'), /terminating fallback/);
  t.match(tr.policy.join('\n'), /topology: PreferSameZone/);
  t.equal(tr.endpoints[0]?.ready, false);
});

t.test('topology is named for external traffic under externalTrafficPolicy Cluster (the cluster set), not under Local', async (t) => {
  const zoned = { ...svc({ namespace: 'default', name: 'zoned', clusterIP: '198.19.0.19', internal: fwd(POD_EP), nodePort: 30019 }), topology: 'PreferSameZone' as const };
  const zonedLocal = {
    ...svc({ namespace: 'default', name: 'zoned-local', clusterIP: '198.19.0.20', internal: fwd(POD_EP), cluster: fwd(POD_EP), external: fwd(POD_EP), externalPolicyLocal: true, nodePort: 30020 }),
    topology: 'PreferSameZone' as const,
  };
  const Z = tables(table(4, [zoned, zonedLocal]));
  const ext = explain(Z, q(CLIENT, NODE_IP, 30019), host, NFTABLES_FACTS);
  t.equal(ext.endpointSet, 'external');
  t.match(ext.policy.join('\n'), /topology: PreferSameZone/, 'a NodePort from outside, ETP Cluster: the endpoints are topology-filtered');
  t.match(explain(Z, q(POD, '198.19.0.19', 80), host, NFTABLES_FACTS).policy.join('\n'), /topology: PreferSameZone/, 'as on the ClusterIP');
  const loc = explain(Z, q(CLIENT, NODE_IP, 30020), host, NFTABLES_FACTS);
  t.equal(loc.endpointSet, 'external');
  t.notMatch(loc.policy.join('\n'), /topology/, 'ETP Local: the local set, which topology does not narrow');
  t.match(explain(Z, q(NODE_IP, NODE_IP, 30020), host, NFTABLES_FACTS).policy.join('\n'), /topology: PreferSameZone/, 'the node itself to an ETP Local NodePort: the cluster set');
});

t.test('REJECT: a Service without endpoints, on its ClusterIP and its NodePort', async (t) => {
  const c = explain(T, q(POD, '198.19.0.12', 80), host, NFTABLES_FACTS);
  t.equal(c.verdict.kind, 'reject');
  t.match(c.verdict.reason, /no usable endpoint anywhere/);
  t.same(c.endpoints, []);
  const n = explain(T, q(CLIENT, NODE_IP, 30012), host, NFTABLES_FACTS);
  t.equal(n.match?.frontend, 'nodePort');
  t.equal(n.verdict.kind, 'reject');
});

t.test('DROP: internalTrafficPolicy Local without a local endpoint', async (t) => {
  const e = explain(T, q(POD, '198.19.0.13', 80), host, NFTABLES_FACTS);
  t.equal(e.verdict.kind, 'drop');
  t.match(e.verdict.reason, /internalTrafficPolicy Local/);
  t.match(e.policy, [/internalTrafficPolicy Local/]);
});

t.test('externalTrafficPolicy Local: external client dropped here; the node and local pods use the cluster set', async (t) => {
  const ext = explain(T, q(CLIENT, NODE_IP, 30014), host, NFTABLES_FACTS);
  t.equal(ext.verdict.kind, 'drop');
  t.match(ext.verdict.reason, /externalTrafficPolicy Local/);
  const fromNode = explain(T, q(NODE_IP, NODE_IP, 30014), host, NFTABLES_FACTS);
  t.equal(fromNode.verdict.kind, 'dnat');
  t.equal(fromNode.endpointSet, 'cluster');
  t.equal(fromNode.masquerade.value, 'yes');
  const fromPod = explain(T, q(POD, '203.0.113.10', 80), host, NFTABLES_FACTS);
  t.equal(fromPod.match?.frontend, 'loadBalancerIP');
  t.equal(fromPod.endpointSet, 'cluster');
  t.equal(fromPod.masquerade.value, 'no');
});

t.test('externalTrafficPolicy Cluster: NodePort and externalIP from outside are masqueraded', async (t) => {
  const np = explain(T, q(CLIENT, NODE_IP, 30080), host, NFTABLES_FACTS);
  t.match(np.match, { frontend: 'nodePort', address: NODE_IP, port: 30080 });
  t.equal(np.endpointSet, 'external');
  t.equal(np.masquerade.value, 'yes');
  const x = explain(T, q(CLIENT, '203.0.113.20', 80), host, NFTABLES_FACTS);
  t.equal(x.match?.frontend, 'externalIP');
  t.equal(x.verdict.kind, 'dnat');
});

t.test('loadBalancerSourceRanges: inside passes, outside is dropped', async (t) => {
  const ok = explain(T, q('203.0.113.5', '203.0.113.11', 80), host, NFTABLES_FACTS);
  t.equal(ok.verdict.kind, 'dnat');
  t.match(ok.policy.join('\n'), /allowed/);
  const no = explain(T, q(CLIENT, '203.0.113.11', 80), host, NFTABLES_FACTS);
  t.equal(no.verdict.kind, 'drop');
  t.match(no.verdict.reason, /outside/);
  t.same(no.endpoints, []);
  t.equal(no.masquerade.value, 'no');
  t.ok(no.blockedBySourceRanges);
  t.equal(no.endpointSet, null);
  t.notOk(ok.blockedBySourceRanges);
  const fromNode = explain(T, q(NODE_IP, '203.0.113.11', 80), host, NFTABLES_FACTS);
  t.equal(fromNode.verdict.kind, 'drop', 'the ranges apply to the node itself too');
  t.notMatch(fromNode.policy.join('\n'), /cluster-wide/, 'no short-circuit line for a refused source');
  const us = trace(T, q(CLIENT, '203.0.113.11', 80), host, US, userspacePath);
  t.match(us.path[0]?.does, /source outside loadBalancerSourceRanges/);
  const ipt = trace(T, q(CLIENT, '203.0.113.11', 80), host, IPT, iptablesPath);
  t.match(ipt.path, [{ at: 'filter KUBE-PROXY-FIREWALL', does: /DROP/ }]);
});

t.test('no Service port: untouched, or mode-specific REJECT/DROP inside the service range', async (t) => {
  const none = explain(T, q(POD, '10.9.9.9', 80), host, NFTABLES_FACTS);
  t.equal(none.match, null);
  t.equal(none.verdict.kind, 'untouched');
  const port = explain(T, q(POD, '198.19.0.10', 81), host, NFTABLES_FACTS);
  t.equal(port.verdict.kind, 'reject', 'nftables rejects an unused port of a ClusterIP');
  t.match(port.why, /no TCP port 81/);
  t.equal(explain(T, q(POD, '198.19.0.10', 81), host, IPT).verdict.kind, 'untouched', 'iptables leaves it alone');
  const unalloc = explain(T, q(POD, '198.19.9.9', 80), host, NFTABLES_FACTS);
  t.equal(unalloc.verdict.kind, 'drop', 'nftables drops unallocated service IPs');
  t.equal(explain(T, q(POD, '198.19.9.9', 80), host, IPT).verdict.kind, 'untouched');
  const notNodeAddr = explain(T, q(CLIENT, '192.0.2.99', 30080), host, NFTABLES_FACTS);
  t.equal(notNodeAddr.verdict.kind, 'untouched');
  t.match(notNodeAddr.why, /not an address of node/);
});

t.test('localhost NodePorts: iptables with the option serves them, nftables never', async (t) => {
  t.equal(explain(T, q('127.0.0.1', '127.0.0.1', 30080), host, IPT).verdict.kind, 'dnat');
  const n = explain(T, q('127.0.0.1', '127.0.0.1', 30080), host, NFTABLES_FACTS);
  t.equal(n.verdict.kind, 'untouched');
  t.match(n.why, /loopback/);
});

t.test('userspace re-originates: always masqueraded', async (t) => {
  const e = explain(T, q(POD, '198.19.0.10', 80), host, US);
  t.equal(e.masquerade.value, 'yes');
  t.match(e.masquerade.reason, /re-originates/);
});

t.test('UDP and IPv6 pick their own entries and tables', async (t) => {
  const e = explain(T, q(POD, '198.19.0.53', 53, { protocol: 'UDP' }), host, NFTABLES_FACTS);
  t.equal(e.match?.service, udp.key);
  t.equal(explain(T, q(POD, '198.19.0.53', 53), host, NFTABLES_FACTS).verdict.kind, 'reject', 'TCP to a UDP-only ClusterIP port');
  const v6 = tables(table(4, []), table(6, [svc({ namespace: 'default', name: 'web', family: 6, internal: fwd(ep('2001:db8:18::7', 8080, true)) })]));
  const e6 = explain(v6, q('2001:db8:18::5', '2001:db8:19::10', 80), host, NFTABLES_FACTS);
  t.equal(e6.family, 6);
  t.equal(e6.verdict.kind, 'dnat');
  t.equal(e6.traffic.class, 'pod');
});

t.test('bad input is a TraceInputError with one line', async (t) => {
  t.throws(() => validateQuery({ src: 'nope', dst: '1.2.3.4', port: 80, protocol: 'TCP' }), TraceInputError);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '1.2.3.300', port: 80, protocol: 'TCP' }), /not an IP address/);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '1.2.3.5', port: '0', protocol: 'TCP' }), /out of range/);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '1.2.3.5', port: '65536', protocol: 'TCP' }), /out of range/);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '::1', port: '80', protocol: 'TCP' }), /different IP families/);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '1.2.3.5', port: '80', protocol: 'icmp' }), /not one of/);
  t.throws(() => validateQuery({ src: '1.2.3.4', dst: '1.2.3.5', port: '80', protocol: 'TCP', from: 'moon' }), /--from/);
  t.same(validateQuery({ src: '2001:db8::2', dst: '2001:DB8::1', port: '80', protocol: 'udp' }), { src: '2001:db8::2', dst: '2001:db8::1', port: 80, protocol: 'UDP' });
});

t.test('nftables path: the real chain, map and key names', async (t) => {
  const n = serviceNames(web);
  const d = trace(T, q(POD, '198.19.0.10', 80), host, NFTABLES_FACTS, nftablesPath);
  const text = d.path.map((s) => `${s.at} ${s.does}`).join('\n');
  t.match(text, 'ip ferry nat-prerouting jump services');
  // web's ClusterIP uses the endpoint-count layout: no svc- chain, its key in a count set.
  t.notMatch(text, n.svc);
  t.match(text, 'ip ferry services jump services-by-count');
  t.match(text, /ip ferry services-by-count @n-tcp-\d+ \[198\.19\.0\.10 \. tcp \. 80\]: .*via @endpoints-tcp-n\d+ \[198\.19\.0\.10 \. tcp \. 80 \. index\]/);
  const np = trace(T, q(CLIENT, NODE_IP, 30080), host, NFTABLES_FACTS, nftablesPath);
  const npText = np.path.map((s) => `${s.at} ${s.does}`).join('\n');
  // A Cluster-policy NodePort uses the endpoint-count layout too (its port kind): no ext- chain for it.
  t.notMatch(npText, n.ext);
  t.match(npText, 'ip ferry services NodePort address: jump nodeports-by-count');
  t.match(npText, 'ip ferry nodeports-by-count @masq-nodeports [tcp . 30080] → jump mark-for-masquerade');
  t.match(npText, /ip ferry nodeports-by-count @np-tcp-2 \[tcp \. 30080\]: .*via @np-endpoints-tcp-n2 \[tcp \. 30080 \. index\]/);
  // So does its externalIP, as a grouped frontend with the external endpoints, always masqueraded.
  const xip = trace(T, q(CLIENT, '203.0.113.20', 80), host, NFTABLES_FACTS, nftablesPath);
  const xipText = xip.path.map((s) => `${s.at} ${s.does}`).join('\n');
  t.notMatch(xipText, n.ext);
  t.match(xipText, 'ip ferry services-by-count @masq-all [203.0.113.20 . tcp . 80] → jump mark-for-masquerade');
  t.match(xipText, /ip ferry services-by-count @n-tcp-2 \[203\.0\.113\.20 \. tcp \. 80\]: .*via @endpoints-tcp-n2 \[203\.0\.113\.20 \. tcp \. 80 \. index\]/);
  // A Local-policy Service keeps its ext- chain (the short-circuits for pods and the node).
  const loc = trace(T, q(POD, '203.0.113.10', 80), host, NFTABLES_FACTS, nftablesPath);
  t.match(loc.path.map((s) => `${s.at} ${s.does}`).join('\n'), `goto ${serviceNames(local).ext}`);
  const rej = trace(T, q(POD, '198.19.0.12', 80), host, NFTABLES_FACTS, nftablesPath);
  t.match(rej.path.map((s) => s.does).join('\n'), /@no-endpoint-services \[198.19.0.12 . tcp . 80\] → goto reject-chain/);
  const fw = trace(T, q(CLIENT, '203.0.113.11', 80), host, NFTABLES_FACTS, nftablesPath);
  t.match(fw.path.map((s) => `${s.at} ${s.does}`).join('\n'), `goto ${serviceNames(lb).fw}`);
  const out = trace(T, q(NODE_IP, '198.19.0.10', 80), host, NFTABLES_FACTS, nftablesPath);
  t.equal(out.path[0]?.at, 'ip ferry nat-output', 'node traffic enters through the output hook');
});

t.test("iptables path: kube-proxy's chain names", async (t) => {
  const n = serviceChainNames(web);
  const d = trace(T, q(POD, '198.19.0.10', 80), host, IPT, iptablesPath);
  const text = d.path.map((s) => `${s.at} ${s.does}`).join('\n');
  t.match(text, `KUBE-SERVICES -d 198.19.0.10 --dport 80 → ${n.svc}`);
  t.match(text, endpointChainName(n, POD_EP));
  const np = trace(T, q(CLIENT, NODE_IP, 30080), host, IPT, iptablesPath);
  t.match(np.path.map((s) => `${s.at} ${s.does}`).join('\n'), `KUBE-NODEPORTS --dport 30080 → ${n.ext}`);
  const rej = trace(T, q(POD, '198.19.0.12', 80), host, IPT, iptablesPath);
  t.match(rej.path[0], { at: 'filter KUBE-SERVICES', does: /REJECT/ });
  const drop = trace(T, q(CLIENT, NODE_IP, 30014), host, IPT, iptablesPath);
  t.match(drop.path.map((s) => `${s.at} ${s.does}`).join('\n'), /dropped|DROP/);
});

t.test("ebpf: a NodePort whose endpoint is the node's own address (a hostNetwork pod) says it is delivered by the stack", async (t) => {
  const hostnet = svc({ namespace: 'd', name: 'hostnet', clusterIP: '198.19.0.70', nodePort: 30070, internal: fwd(ep(NODE_IP, 8090)) });
  const HT: ProxyTables = tables(table(4, [hostnet], { serviceCIDRs: ['198.19.0.0/16'] }));
  const d = trace(HT, q(CLIENT, NODE_IP, 30070), host, EBPF_FACTS, ebpfPath);
  t.equal(d.verdict.kind, 'dnat');
  t.match(d.path.at(-1), { at: 'ferry_nodeaddr', does: /192\.0\.2\.10:8090 is this node's own: delivered by the stack, never masqueraded.*ferry_tc_egress/ });
  const other = trace(T, q(CLIENT, NODE_IP, 30080), host, EBPF_FACTS, ebpfPath);
  t.notOk(other.path.some((s) => s.at === 'ferry_nodeaddr' && /own/.test(s.does)), 'not said of endpoints elsewhere');
});

t.test('userspace path: the listener and the forwarder', async (t) => {
  const d = trace(T, q(POD, '198.19.0.10', 80), host, US, userspacePath);
  t.match(d.path[0], { at: 'listener TCP 198.19.0.10:80 (on ferry0)' });
  const rej = trace(T, q(POD, '198.19.0.53', 53, { protocol: 'UDP' }), host, US, userspacePath);
  t.match(rej.path[1]?.does, /new UDP connection from the node to one of 198.18.1.7:8080/);
  const e = trace(T, q(POD, '198.19.0.12', 80), host, US, userspacePath);
  t.match(e.path[0]?.does, /resets/);
});

t.test('ebpf: socket-level LB never masquerades; traffic from outside goes through the tc program with the IR\'s masquerade', async (t) => {
  const hp = trace(T, q(POD, '198.19.0.16', 80), host, EBPF_FACTS, ebpfPath);
  t.equal(hp.verdict.kind, 'dnat');
  t.equal(hp.masquerade.value, 'no', 'even hairpin: the pod connects straight to itself');
  t.match(hp.path[0], { at: 'cgroup connect4', does: /ferry_svc \[198\.19\.0\.16 80\/TCP\]/ });
  const ext = trace(T, q(CLIENT, NODE_IP, 30080), host, EBPF_FACTS, ebpfPath);
  t.equal(ext.verdict.kind, 'dnat');
  t.equal(ext.masquerade.value, 'yes', 'externalTrafficPolicy Cluster: masqueraded, as kube-proxy does');
  t.match(ext.path.map((s) => `${s.at}: ${s.does}`).join('\n'), /ferry_xsvc \[\* 30080\/TCP\].*MASQ[\s\S]*ferry_snat[\s\S]*ferry_ct/);
  const loc = trace(T, q(CLIENT, NODE_IP, 30014), host, EBPF_FACTS, ebpfPath);
  t.equal(loc.verdict.kind, 'drop', 'externalTrafficPolicy Local without a local endpoint: dropped');
  t.match(loc.path.at(-1)?.does, /dropped/);
  t.equal(trace(T, q(CLIENT, NODE_IP, 30012), host, EBPF_FACTS, ebpfPath).verdict.kind, 'reject', 'no endpoints on a node address: the stack refuses');
  t.equal(trace(T, q(POD, '198.19.0.12', 80), host, EBPF_FACTS, ebpfPath).verdict.kind, 'reject');
  // Elsewhere (an externalIP) the tc program answers itself: a RST for TCP, an ICMP error for UDP.
  const rst = trace(T, q(CLIENT, '203.0.113.21', 80), host, EBPF_FACTS, ebpfPath);
  t.equal(rst.verdict.kind, 'reject', 'TCP to an externalIP without endpoints: rejected');
  t.match(rst.path.at(-1)?.does, /SYN is turned into a RST/);
  const icmp = trace(T, q(CLIENT, '203.0.113.21', 53, { protocol: 'UDP' }), host, EBPF_FACTS, ebpfPath);
  t.equal(icmp.verdict.kind, 'reject', 'UDP to an externalIP without endpoints: rejected too');
  t.match(icmp.path.at(-1)?.does, /ICMP port unreachable/);
  // A ClusterIP reached from outside the node (routed to it): the tc program, from ferry_svc.
  const cip = trace(T, q(CLIENT, '198.19.0.16', 80), host, EBPF_FACTS, ebpfPath);
  t.equal(cip.verdict.kind, 'dnat');
  t.equal(cip.masquerade.value, 'yes', 'from outside the cluster CIDR: masqueraded (nonLocal)');
  t.match(cip.path.map((s) => `${s.at}: ${s.does}`).join('\n'), /tc ingress[^\n]*ferry_svc \(ClusterIP\) \[198\.19\.0\.16 80\/TCP\].*MASQ/);
  // What no frontend takes, as nftables mode: a ClusterIP's other port refused, an unallocated
  // service-CIDR address unreachable (socket LB) or dropped (tc).
  const other = trace(T, q(POD, '198.19.0.10', 81), host, EBPF_FACTS, ebpfPath);
  t.equal(other.verdict.kind, 'reject', "a ClusterIP's unused port: rejected");
  t.match(other.path.at(-1), { at: 'cgroup connect4', does: /ferry_svcip.*ECONNREFUSED/ });
  const unalloc = trace(T, q(POD, '198.19.9.9', 80), host, EBPF_FACTS, ebpfPath);
  t.equal(unalloc.verdict.kind, 'drop', 'an unallocated service-CIDR address: dropped');
  t.match(unalloc.path.at(-1)?.does, /service CIDRs \(ferry_srcrange\): the call fails with EHOSTUNREACH/);
  const fromOutside = trace(T, q(CLIENT, '198.19.9.9', 80), host, EBPF_FACTS, ebpfPath);
  t.match(fromOutside.path.at(-1), { at: /tc ingress/, does: /service CIDRs.*dropped/ });
  t.match(trace(T, q(CLIENT, '198.19.0.10', 81), host, EBPF_FACTS, ebpfPath).path.at(-1)?.does, /ferry_svcip.*RST/);
});
