// The Node informer's sink as the daemon wires it: the model's tracker and /healthz's node state.
import t from 'tap';
import type { V1Node } from '@kubernetes/client-node';
import { nodeSink } from '../../../src/kube/watches.js';
import { ChangeTracker } from '../../../src/model/tracker.js';
import { ProxyHealth } from '../../../src/servers/health.js';
import type { Logger } from '../../../src/util/log.js';

function wired(nodeName: string) {
  const warns: string[] = [];
  const log: Logger = { info: () => {}, v: () => {}, warn: (m) => warns.push(m), error: () => {} };
  const tracker = new ChangeTracker({ nodeName, families: [4, 6], log });
  const health = new ProxyHealth(60_000);
  const setNodeCalls: unknown[] = [];
  const presence: boolean[] = [];
  const sink = nodeSink(
    nodeName,
    {
      setNode: (n) => {
        setNodeCalls.push(n);
        health.setNode(n);
        tracker.setNode(n);
      },
    },
    log,
    (p) => presence.push(p),
  );
  return { sink, tracker, health, warns, setNodeCalls, presence };
}

function nodeObject(name: string, address: string, podCIDR: string): V1Node {
  return {
    metadata: { name, labels: { 'topology.kubernetes.io/zone': 'z1' } },
    spec: { podCIDRs: [podCIDR] },
    status: { addresses: [{ type: 'InternalIP', address }] },
  };
}

t.test("another node's events are ignored and logged, as kube-proxy's OnNodeAdd/Update/Delete", async (t) => {
  const w = wired('node-1');
  w.sink.upsert(nodeObject('node-1', '192.0.2.11', '10.0.1.0/24'));
  w.tracker.takeSnapshot();
  w.sink.upsert(nodeObject('other', '192.0.2.99', '10.0.9.0/24'));
  w.sink.remove({ metadata: { name: 'other' } });
  w.sink.upsert({ metadata: {}, status: { addresses: [{ type: 'InternalIP', address: '192.0.2.98' }] } });
  t.equal(w.setNodeCalls.length, 1, 'only node-1 reached the model');
  t.same(w.presence, [true]);
  t.equal(w.tracker.pending(), false, 'no node change queued');
  t.equal(w.health.nodeEligible(), true, "another node's deletion does not make this one unknown");
  t.equal(w.warns.filter((m) => /ignoring a Node (update|deletion) for .*this proxy serves Node node-1/.test(m)).length, 3, w.warns.join('\n'));
});

t.test('the Node deleted: the rules keep its addresses and podCIDRs (kube-proxy never drops them); /healthz says unknown', async (t) => {
  const w = wired('node-1');
  w.sink.upsert(nodeObject('node-1', '192.0.2.11', '10.0.1.0/24'));
  const before = w.tracker.takeSnapshot().snapshots[4].node;
  t.same(before.addresses, ['192.0.2.11']);
  w.sink.remove({ metadata: { name: 'node-1' } });
  t.same(w.presence, [true, false]);
  t.equal(w.health.nodeEligible(), false, 'an unknown Node is not eligible');
  t.equal(w.tracker.pending(), false, 'nothing to sync');
  const after = w.tracker.takeSnapshot().snapshots[4].node;
  t.same(after.addresses, ['192.0.2.11'], 'addresses kept');
  t.same(after.podCIDRs, ['10.0.1.0/24'], 'podCIDRs kept');
  t.match(w.warns.join('\n'), /Node node-1 deleted; keeping its last addresses/);
  // The Node registered again (a VM that re-joins): followed as any update.
  w.sink.upsert(nodeObject('node-1', '192.0.2.12', '10.0.2.0/24'));
  t.equal(w.health.nodeEligible(), true);
  t.same(w.tracker.takeSnapshot().snapshots[4].node.addresses, ['192.0.2.12']);
});
