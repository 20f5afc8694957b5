import t from 'tap';
import { nodeObject, podObject, ZONE_LABEL } from '../../../../src/sim/cluster/register.js';

const node = { name: 'node-2', netns: 'fyab-n2', ip: '198.18.0.12', ip6: '2001:db8:0:1::12', podCIDR: '198.19.2.0/24', podCIDR6: '2001:db8:1:2::/64' };

t.test('a Node carries hostname and zone labels, both InternalIPs and both pod CIDRs', async (t) => {
  const o = nodeObject(node, 'zone-b');
  t.equal(o.metadata?.name, 'node-2');
  t.equal(o.metadata?.labels?.['kubernetes.io/hostname'], 'node-2');
  t.equal(o.metadata?.labels?.[ZONE_LABEL], 'zone-b');
  t.same(
    o.status?.addresses?.filter((a) => a.type === 'InternalIP').map((a) => a.address),
    ['198.18.0.12', '2001:db8:0:1::12'],
  );
  t.equal(o.spec?.podCIDR, '198.19.2.0/24');
  t.same(o.spec?.podCIDRs, ['198.19.2.0/24', '2001:db8:1:2::/64']);
});

t.test('a single-stack Node without zone has no zone label and one InternalIP', async (t) => {
  const o = nodeObject({ name: 'n', netns: 'x', ip: '198.18.0.11', podCIDR: '198.19.1.0/24' });
  t.notOk(o.metadata?.labels && ZONE_LABEL in o.metadata.labels);
  t.same(o.spec?.podCIDRs, ['198.19.1.0/24']);
  t.equal(o.status?.addresses?.filter((a) => a.type === 'InternalIP').length, 1);
});

t.test('a Pod is Running on its node with podIPs, hostIP and the requested Ready state', async (t) => {
  const pod = { name: 'web-1', namespace: 'shop', node: 'node-2', netns: 'fyab-n2p1', ip: '198.19.2.2', ip6: '2001:db8:1:2::2', labels: { app: 'web' } };
  const o = podObject(pod, node.ip, node.ip6, { containerPorts: [{ name: 'http', containerPort: 8080 }], ready: false });
  t.equal(o.metadata?.namespace, 'shop');
  t.same(o.metadata?.labels, { app: 'web' });
  t.equal(o.spec?.nodeName, 'node-2');
  t.same(o.spec?.containers[0]?.ports, [{ name: 'http', containerPort: 8080, protocol: 'TCP' }]);
  t.equal(o.status?.phase, 'Running');
  t.equal(o.status?.podIP, '198.19.2.2');
  t.same(o.status?.podIPs, [{ ip: '198.19.2.2' }, { ip: '2001:db8:1:2::2' }]);
  t.equal(o.status?.hostIP, '198.18.0.12');
  const ready = o.status?.conditions?.find((c) => c.type === 'Ready');
  t.equal(ready?.status, 'False', 'Ready condition follows the ready flag');
  t.match(String(ready?.lastTransitionTime), /^\d{4}-\d\d-\d\dT/, 'timestamps are RFC 3339 strings on the wire');
  const json = JSON.parse(JSON.stringify(o)) as { status: { conditions: { type: string; status: string }[] } };
  t.ok(json.status.conditions.some((c) => c.type === 'Ready' && c.status === 'False'));
});

t.test('a hostNetwork pod: spec.hostNetwork, and the node\'s addresses as its own', async (t) => {
  const pod = { name: 'agent', namespace: 'default', node: 'node-2', netns: node.netns, ip: node.ip, ip6: node.ip6, labels: { app: 'agent' }, hostNetwork: true };
  const o = podObject(pod, node.ip, node.ip6, { containerPorts: [{ containerPort: 8090 }], ready: true });
  t.equal(o.spec?.hostNetwork, true);
  t.same(o.status?.podIPs, [{ ip: node.ip }, { ip: node.ip6 }], 'podIPs are the node\'s');
  t.equal(o.status?.podIP, o.status?.hostIP);
  const plain = podObject({ ...pod, hostNetwork: undefined, ip: '198.19.2.2' }, node.ip, node.ip6, { containerPorts: [], ready: true });
  t.equal(plain.spec?.hostNetwork, undefined, 'other pods say nothing of it');
});
