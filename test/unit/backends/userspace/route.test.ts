import t from 'tap';
import { LocalSourceDetector, ServiceRuntime } from '../../../../src/backends/userspace/route.js';
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
