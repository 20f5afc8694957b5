// --detect-local-mode in the planner: which detector each mode puts in the IR (NodeCIDR from the
// Node's spec.podCIDRs through parseNode), and what that does to ClusterIP masquerading.
import t from 'tap';
import type { V1Node } from '@kubernetes/client-node';
import { FAMILIES, cidr, svc } from '../model/fixtures.js';
import { parseNode } from '../../../src/model/node.js';
import type { DetectLocalSpec } from '../../../src/plan/planner.js';
import { NODE, NODE_V4, defaultNode, planWorld } from './helpers.js';

function withPodCIDRs(spec: Record<string, unknown>): V1Node {
  return { ...defaultNode(), spec } as V1Node;
}

t.test('parseNode: spec.podCIDRs, else spec.podCIDR; normalized; one per family; junk dropped', async (t) => {
  const p = (spec: unknown) => parseNode({ ...defaultNode(), spec } as V1Node, NODE).podCIDRs;
  t.same(p({ podCIDRs: ['10.244.1.7/24', 'fd00:10:244:1::/64'] }), ['10.244.1.0/24', 'fd00:10:244:1::/64']);
  t.same(p({ podCIDR: '10.244.2.0/24' }), ['10.244.2.0/24'], 'the single older field');
  t.same(p({ podCIDRs: ['10.244.1.0/24', '10.244.9.0/24', 'x', 7, '2001:db8::/200'] }), ['10.244.1.0/24'], 'first per family; invalid ignored');
  t.equal(p({}), undefined, 'none: absent');
  t.equal(p({ podCIDRs: 'not-a-list' }), undefined);
  t.equal(parseNode(undefined, NODE).podCIDRs, undefined);
});

const v4pod = '10.244.3.0/24';
const v6pod = 'fd00:10:244:3::/64';

for (const f of FAMILIES) {
  const mine = f === 4 ? v4pod : v6pod;
  t.test(`IPv${f}: the detector and ClusterIP masquerade of each detect-local mode`, async (t) => {
    type Row = [string, DetectLocalSpec | undefined, V1Node | undefined, unknown, string];
    const both = withPodCIDRs({ podCIDRs: [v4pod, v6pod] });
    const rows: Row[] = [
      ['absent = ClusterCIDR', undefined, both, { kind: 'clusterCIDR', cidrs: [cidr(f, 5)] }, 'nonLocal'],
      ['ClusterCIDR ignores the node', { kind: 'clusterCIDR' }, both, { kind: 'clusterCIDR', cidrs: [cidr(f, 5)] }, 'nonLocal'],
      ['NodeCIDR: the node podCIDR of this family', { kind: 'nodeCIDR' }, both, { kind: 'clusterCIDR', cidrs: [mine] }, 'nonLocal'],
      ['NodeCIDR, single-stack node of the other family', { kind: 'nodeCIDR' }, withPodCIDRs({ podCIDRs: [f === 4 ? v6pod : v4pod] }), { kind: 'none' }, 'none'],
      ['NodeCIDR, node without podCIDRs', { kind: 'nodeCIDR' }, defaultNode(), { kind: 'none' }, 'none'],
      ['BridgeInterface', { kind: 'bridgeInterface', name: 'cbr0' }, both, { kind: 'bridgeInterface', name: 'cbr0' }, 'nonLocal'],
      ['InterfaceNamePrefix', { kind: 'interfaceNamePrefix', prefix: 'veth' }, both, { kind: 'interfaceNamePrefix', prefix: 'veth' }, 'nonLocal'],
    ];
    for (const [name, detectLocal, node, detector, masq] of rows) {
      const { table } = planWorld(f, {
        services: [svc({ families: [4, 6] })],
        slices: [],
        node,
        opts: { clusterCIDRs: [cidr(4, 5), cidr(6, 5)], ...(detectLocal ? { detectLocal } : {}) },
      });
      t.same(table.localTraffic, detector, `${name}: detector`);
      t.equal(table.services.get('default/web:http/TCP')?.clusterIPMasquerade, masq, `${name}: clusterIPMasquerade`);
    }
  });
}

t.test('NodeCIDR follows the Node: the detector appears once the Node has pod CIDRs', async (t) => {
  const before = planWorld(4, { services: [svc({})], slices: [], node: null, opts: { detectLocal: { kind: 'nodeCIDR' } } });
  t.same(before.table.localTraffic, { kind: 'none' }, 'no Node yet');
  const after = planWorld(4, { services: [svc({})], slices: [], node: withPodCIDRs({ podCIDRs: [v4pod] }), opts: { detectLocal: { kind: 'nodeCIDR' } } });
  t.same(after.table.localTraffic, { kind: 'clusterCIDR', cidrs: [v4pod] });
  t.same(after.table.nodeIPs, [NODE_V4], 'node addresses unaffected');
});
