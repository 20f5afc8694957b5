import t from 'tap';
import { interfaceMatches, LocalSourceDetector, ServiceRuntime } from '../../../../src/backends/userspace/route.js';
import { parseRoutesVia } from '../../../../src/backends/userspace/iface.js';
import { DROP, REJECT, ep, fwd, svc } from './fixtures.js';

const detector = new LocalSourceDetector(new Set(['192.0.2.1']), [{ kind: 'clusterCIDR', cidrs: ['198.18.0.0/16'] }]);
const LOCAL_EP = ep('198.18.0.11', 80, true);
const REMOTE_EP = ep('198.18.1.11', 80);

function target(r: ReturnType<ServiceRuntime['route']>, rt: ServiceRuntime): string {
  if (r.verdict !== 'forward') return r.verdict;
  return r.picker === rt.internal ? 'internal' : r.picker === rt.external ? 'external' : 'cluster';
}

t.test('ClusterIP uses the internal set; NodePort/externalIP/LB use the external set', async (t) => {
  const rt = new ServiceRuntime(svc({ name: 'web', internal: fwd(REMOTE_EP), external: fwd(LOCAL_EP) }));
  t.equal(target(rt.route('clusterIP', '192.0.2.50', detector), rt), 'internal');
  for (const role of ['nodePort', 'externalIP', 'loadBalancer'] as const) {
    t.equal(target(rt.route(role, '192.0.2.50', detector), rt), 'external', role);
  }
});

t.test('Local policy, no local endpoint: outside clients dropped; the node and local pods use the cluster set', async (t) => {
  const rt = new ServiceRuntime(
    svc({ name: 'web', internal: fwd(REMOTE_EP), external: DROP, cluster: fwd(REMOTE_EP), externalPolicyLocal: true }),
  );
  t.equal(target(rt.route('nodePort', '192.0.2.50', detector), rt), 'drop');
  t.equal(target(rt.route('nodePort', '192.0.2.1', detector), rt), 'cluster', 'node address');
  t.equal(target(rt.route('nodePort', '127.0.0.1', detector), rt), 'cluster', 'loopback');
  t.equal(target(rt.route('externalIP', '198.18.0.40', detector), rt), 'cluster', 'local pod (cluster CIDR)');
});

t.test('no endpoints → reject; loadBalancerSourceRanges drop other clients on LB IPs only', async (t) => {
  const none = new ServiceRuntime(svc({ name: 'none', internal: REJECT }));
  t.equal(none.route('clusterIP', '192.0.2.50', detector).verdict, 'reject');
  const lb = new ServiceRuntime(
    svc({ name: 'lb', internal: fwd(REMOTE_EP), loadBalancerIPs: ['198.51.100.9'], loadBalancerSourceRanges: ['203.0.113.0/24'] }),
  );
  t.equal(lb.route('loadBalancer', '192.0.2.50', detector).verdict, 'drop');
  t.equal(lb.route('loadBalancer', '203.0.113.5', detector).verdict, 'forward');
  t.equal(lb.route('nodePort', '192.0.2.50', detector).verdict, 'forward', 'ranges apply to LB IPs only');
});

t.test('update swaps the sets without replacing the pickers', async (t) => {
  const rt = new ServiceRuntime(svc({ name: 'web', internal: fwd(REMOTE_EP) }));
  const picker = rt.internal;
  rt.update(svc({ name: 'web', internal: REJECT }));
  t.equal(rt.internal, picker);
  t.equal(rt.route('clusterIP', '192.0.2.50', detector).verdict, 'reject');
});

t.test('interface detectors: the pods routed out of the matching interfaces are local', async (t) => {
  t.ok(interfaceMatches({ kind: 'interfaceNamePrefix', prefix: 'veth' }, 'veth12ab'));
  t.notOk(interfaceMatches({ kind: 'interfaceNamePrefix', prefix: 'veth' }, 'eth0'));
  t.ok(interfaceMatches({ kind: 'bridgeInterface', name: 'cbr0' }, 'cbr0'));
  t.notOk(interfaceMatches({ kind: 'bridgeInterface', name: 'cbr0' }, 'cbr01'), 'a bridge name is exact');
  const json = JSON.stringify([
    { dst: 'default', gateway: '192.0.2.1', dev: 'veth9' },
    { dst: '10.244.1.0/24', dev: 'cbr0', protocol: 'kernel' },
    { dst: '10.244.2.7', dev: 'veth1' },
    { dst: '192.0.2.0/24', dev: 'eth0' },
  ]);
  const match = (n: string) => n === 'cbr0' || n.startsWith('veth');
  t.same(parseRoutesVia(json, 4, match), ['10.244.1.0/24', '10.244.2.7/32'], 'default routes never; a bare address is a host route');
  t.same(parseRoutesVia('[{"dst":"fd00::5","dev":"veth2"}]', 6, match), ['fd00::5/128']);
  t.same(parseRoutesVia('not json', 4, match), [], 'garbage: nothing');

  const d = new LocalSourceDetector(new Set(['192.0.2.10']), [{ kind: 'interfaceNamePrefix', prefix: 'veth' }], ['10.244.2.7/32', 'fd00::5/128']);
  t.ok(d.isLocal('10.244.2.7'), 'a pod behind a matching interface');
  t.ok(d.isLocal('fd00::5'));
  t.notOk(d.isLocal('10.244.2.8'), 'another address is not');
  t.ok(d.isLocal('192.0.2.10'), 'the node itself still is');
  const cidr = new LocalSourceDetector(new Set(), [{ kind: 'clusterCIDR', cidrs: [] }], ['10.244.2.7/32']);
  t.notOk(cidr.isLocal('10.244.2.7'), 'routes count only for an interface detector');
});
