import t from 'tap';
import type { V1Service } from '@kubernetes/client-node';
import { parseService } from '../../../src/model/service.js';
import { FAMILIES, svc, vip } from './fixtures.js';

const BOTH = [4, 6] as const;

function mutate(s: V1Service, fn: (spec: Record<string, unknown>, whole: Record<string, unknown>) => void): V1Service {
  const copy = structuredClone(s) as unknown as Record<string, unknown>;
  fn(copy.spec as Record<string, unknown>, copy);
  return copy as V1Service;
}

t.test('dual-stack service with two ports yields one ServicePort per port per family', async (t) => {
  const r = parseService(svc({ families: [4, 6], ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }] }), BOTH);
  t.same(r.problems, [], 'no problems expected');
  t.same(
    r.ports.map((p) => `${p.family} ${p.key} ${p.clusterIP}:${p.port}`),
    [
      `4 default/web:http/TCP ${vip(4)}:80`,
      `4 default/web:dns/UDP ${vip(4)}:53`,
      `6 default/web:http/TCP ${vip(6)}:80`,
      `6 default/web:dns/UDP ${vip(6)}:53`,
    ],
  );
});

t.test('only the families this proxy serves are produced', async (t) => {
  const r = parseService(svc({ families: [4, 6] }), [6]);
  t.same(r.ports.map((p) => p.family), [6]);
});

t.test('single-stack legacy object: clusterIP only, no ipFamilies', async (t) => {
  const s = mutate(svc(), (spec) => {
    delete spec.clusterIPs;
    delete spec.ipFamilies;
    spec.clusterIP = '2001:DB8:FFFF:0::1';
  });
  const r = parseService(s, BOTH);
  t.same(r.ports.map((p) => [p.family, p.clusterIP]), [[6, '2001:db8:ffff::1']], 'IPv6 normalized to canonical form');
});

t.test('leading zeros are decimal, as kube-proxy reads them (ParseIPSloppy)', async (t) => {
  const r = parseService(svc({ clusterIPs: ['010.096.000.010'] }), BOTH);
  t.same(r.problems, []);
  t.same(r.ports.map((p) => p.clusterIP), ['10.96.0.10']);
});

t.test('skipped without problems: ExternalName, headless, service-proxy-name label, no ClusterIP yet', async (t) => {
  const cases: Array<[string, V1Service]> = [
    ['ExternalName', mutate(svc(), (spec) => (spec.type = 'ExternalName'))],
    ['headless', mutate(svc(), (spec) => ((spec.clusterIP = 'None'), (spec.clusterIPs = ['None'])))],
    ['proxy-name', svc({ labels: { 'service.kubernetes.io/service-proxy-name': 'other' } })],
    ['unallocated', mutate(svc(), (spec) => ((spec.clusterIP = ''), delete spec.clusterIPs))],
  ];
  for (const [name, s] of cases) {
    const r = parseService(s, BOTH);
    t.same(r, { ports: [], problems: [] }, `${name}: expected skip without problems`);
  }
});

t.test('a namespace or name the API server would refuse skips the Service with a problem (keys split at "/" and ":")', async (t) => {
  const cases: Array<[string, V1Service, RegExp]> = [
    ['":" in the name', svc({ name: 'a:x' }), /^metadata\.name: "a:x" is not a DNS-1123 label .*; Service skipped$/],
    ['"/" in the name', svc({ ns: 'a', name: 'b/s' }), /^metadata\.name: "b\/s" is not/],
    ['"/" in the namespace', svc({ ns: 'a/b', name: 's' }), /^metadata\.namespace: "a\/b" is not/],
    ['upper case', svc({ name: 'Web' }), /^metadata\.name: "Web" is not/],
    ['64 characters', svc({ name: 'a'.repeat(64) }), /^metadata\.name: "a{64}" is not/],
  ];
  for (const [what, s, problem] of cases) {
    const r = parseService(s, BOTH);
    t.same(r.ports, [], `${what}: no ports`);
    t.equal(r.problems.length, 1, `${what}: one problem`);
    t.match(r.problems[0], problem, what);
  }
  const digit = parseService(svc({ name: '1web' }), BOTH);
  t.same([digit.problems, digit.ports.map((p) => p.key)], [[], ['default/1web:http/TCP']], 'a leading digit is valid (RelaxedServiceNameValidation, Kubernetes 1.34+)');
});

t.test('serviceProxyName: only Services labelled with it are ours; without it, only unlabelled ones', async (t) => {
  const label = (v: string) => svc({ labels: { 'service.kubernetes.io/service-proxy-name': v } });
  const count = (s: V1Service, name?: string) => parseService(s, BOTH, name).ports.length;
  t.equal(count(svc()), 1, 'unlabelled, no name configured: ours');
  t.equal(count(label('ferry')), 0, 'labelled, no name configured: another proxy\'s');
  t.equal(count(label('ferry'), 'ferry'), 1, 'labelled with the configured name: ours (the watch selects exactly these)');
  t.equal(count(label('other'), 'ferry'), 0, 'labelled with another name: not ours');
  t.equal(count(svc(), 'ferry'), 0, 'unlabelled with a name configured: not ours (the watch does not select it)');
});

t.test('each invalid field is a problem naming it', async (t) => {
  type Case = [string, V1Service, RegExp, number];
  const two = [{ name: 'a', port: 80 }, { name: 'b', port: 81 }];
  const cases: Case[] = [
    ['port out of range', svc({ ports: [{ name: 'a', port: 80 }, { name: 'b', port: 70000 }] }), /^spec\.ports\[1\]\.port: 70000 out of range$/, 1],
    ['port not a number', mutate(svc({ ports: two }), (spec) => ((spec.ports as Array<Record<string, unknown>>)[0].port = '80')), /spec\.ports\[0\]\.port: "80" out of range/, 1],
    ['unknown protocol', svc({ ports: [{ name: 'a', port: 80, protocol: 'ICMP' }, { name: 'b', port: 81 }] }), /spec\.ports\[0\]\.protocol: "ICMP" unknown/, 1],
    ['nodePort out of range', svc({ type: 'NodePort', ports: [{ name: 'a', port: 80, nodePort: -1 }, { name: 'b', port: 81, nodePort: 30001 }] }), /spec\.ports\[0\]\.nodePort: -1 out of range/, 1],
    ['invalid clusterIP', svc({ clusterIPs: ['198.18.0.300'] }), /spec\.clusterIPs\[0\]: "198\.18\.0\.300" is not a valid IP/, 0],
    ['IPv4-mapped clusterIP', svc({ families: [6], clusterIPs: ['::ffff:198.18.0.1'] }), /spec\.clusterIPs\[0\].*not a valid IP/, 0],
    ['family mismatch', svc({ families: [6], clusterIPs: ['198.18.0.1'] }), /not IPv6 as spec\.ipFamilies\[0\] says/, 0],
    ['affinity timeout 0', svc({ affinity: 0 }), /timeoutSeconds: 0 out of range 1\.\.86400/, 0],
    ['affinity timeout huge', svc({ affinity: 86401 }), /timeoutSeconds: 86401 out of range/, 0],
    ['unknown type', mutate(svc(), (spec) => (spec.type = 'Weird')), /spec\.type: "Weird" unknown/, 0],
    ['ports not an array', mutate(svc(), (spec) => (spec.ports = 'x')), /spec\.ports: "x" is not an array/, 0],
    ['bad externalIP is ignored', svc({ externalIPs: ['nope', '198.51.100.7'] }), /spec\.externalIPs\[0\]: "nope" is not a valid IP, ignored/, 1],
    ['bad source range is ignored', svc({ sourceRanges: ['198.51.100.0/33', ' 192.0.2.0/24 '] }), /spec\.loadBalancerSourceRanges\[0\]: "198\.51\.100\.0\/33" is not a valid CIDR, ignored/, 1],
  ];
  for (const [name, s, re, nPorts] of cases) {
    const r = parseService(s, BOTH);
    t.ok(r.problems.some((p) => re.test(p)), `${name}: expected a problem matching ${re}, got ${JSON.stringify(r.problems)}`);
    t.equal(r.ports.length, nPorts, `${name}: expected ${nPorts} ports, got ${r.ports.length}`);
  }
});

t.test('per-family filtering of externalIPs, LB ingress and source ranges', async (t) => {
  const s = svc({
    type: 'LoadBalancer',
    families: [4, 6],
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    externalIPs: ['198.51.100.1', '2001:db8:e::1', '198.51.100.1'],
    ingress: [{ ip: '192.0.2.10' }, { ip: '2001:db8:1b::10', ipMode: 'Proxy' }, { hostname: 'lb.example' }],
    sourceRanges: ['192.0.2.77/24', '2001:db8:5::/48', ' 198.51.100.0/25'],
  });
  const r = parseService(s, BOTH);
  t.same(r.problems, []);
  for (const f of FAMILIES) {
    const p = r.ports.find((x) => x.family === f)!;
    if (f === 4) {
      t.same(p.externalIPs, ['198.51.100.1'], 'v4 externalIPs deduplicated');
      t.same(p.loadBalancerIngress, [{ ip: '192.0.2.10', ipMode: 'VIP' }], 'ipMode defaults to VIP; hostname dropped');
      t.same(p.loadBalancerSourceRanges, ['192.0.2.0/24', '198.51.100.0/25'], 'CIDRs normalized and trimmed');
    } else {
      t.same(p.externalIPs, ['2001:db8:e::1']);
      t.same(p.loadBalancerIngress, [{ ip: '2001:db8:1b::10', ipMode: 'Proxy' }]);
      t.same(p.loadBalancerSourceRanges, ['2001:db8:5::/48']);
    }
  }
});

t.test('a source range whose prefix length has leading zeros is enforced, not dropped (kube-proxy: ParseCIDRSloppy)', async (t) => {
  // Dropped, it would leave the family's list empty: every source allowed.
  const r = parseService(svc({ type: 'LoadBalancer', families: [4, 6], ports: [{ port: 80, nodePort: 30080 }], sourceRanges: ['192.168.0.0/016', '2001:db8::/032'] }), BOTH);
  t.same(r.problems, []);
  t.same(r.ports.find((p) => p.family === 4)?.loadBalancerSourceRanges, ['192.168.0.0/16']);
  t.same(r.ports.find((p) => p.family === 6)?.loadBalancerSourceRanges, ['2001:db8::/32']);
});

t.test('affinity, policies, healthCheckNodePort, trafficDistribution', async (t) => {
  const a = parseService(svc({ affinity: 'default' }), BOTH).ports[0];
  t.equal(a.affinityTimeoutSeconds, 10800, 'ClientIP without config defaults to 10800');
  t.equal(parseService(svc({ affinity: 60 }), BOTH).ports[0].affinityTimeoutSeconds, 60);
  t.equal(parseService(svc(), BOTH).ports[0].affinityTimeoutSeconds, 0);

  const lb = parseService(
    svc({ type: 'LoadBalancer', etp: 'Local', itp: 'Local', hcPort: 32000, trafficDistribution: 'PreferClose', ports: [{ port: 80, nodePort: 30080 }] }),
    BOTH,
  ).ports[0];
  t.equal(lb.healthCheckNodePort, 32000);
  t.equal(lb.externalTrafficPolicy, 'Local');
  t.equal(lb.internalTrafficPolicy, 'Local');
  t.equal(lb.trafficDistribution, 'PreferClose');
  t.equal(lb.portName, '', 'unnamed port');
  t.equal(lb.key, 'default/web:/TCP');

  const np = parseService(svc({ type: 'NodePort', etp: 'Local', hcPort: 32000, ports: [{ port: 80, nodePort: 30080 }] }), BOTH).ports[0];
  t.equal(np.healthCheckNodePort, 0, 'only LoadBalancer + Local has a health check port');
  t.equal(np.externalTrafficPolicy, 'Local', 'raw policy kept for the planner');

  const bad = parseService(svc({ etp: 'Sometimes' }), BOTH);
  t.equal(bad.ports[0].externalTrafficPolicy, 'Cluster');
  t.match(bad.problems[0], /spec\.externalTrafficPolicy: "Sometimes" unknown/);
});

t.test('garbage input never throws', async (t) => {
  const inputs: unknown[] = [null, 42, 'svc', [], { metadata: 7 }, { metadata: { name: 'x', namespace: 'y' }, spec: [] }, { metadata: { name: 'x', namespace: 'y' }, spec: { clusterIP: {}, ports: [null, 'a', { port: 1e99 }] } }];
  for (const i of inputs) {
    const r = parseService(i as V1Service, BOTH);
    t.equal(r.ports.length, 0, `no ports from ${JSON.stringify(i)}`);
  }
});
