// The claim index keeps as little as the compiler needs (claims.ts): set elements as counts,
// map elements with their claimants (the smallest owner's value wins), and endpoint shard
// elements not at all — only a count per shard. The compile state of 10k Services × 10
// endpoints went from 44 MB to 16 MB with this; these tests pin the semantics down.
import t from 'tap';
import { ClaimIndex } from '../../../../src/backends/nftables/claims.js';
import { endpointShard, GROUPED_FRONTENDS, GROUPED_NODEPORTS, Maps, Sets } from '../../../../src/backends/nftables/names.js';
import { tableSyntax } from '../../../../src/backends/nftables/rules.js';
import { serviceContribution } from '../../../../src/backends/nftables/service.js';
import type { ServicePortKey } from '../../../../src/plan/types.js';
import { buildCluster } from '../../../../src/bench/synthetic.js';
import { compileFull, CompileState } from '../../../../src/backends/nftables/compiler.js';

t.test('set elements are counted: present while anyone claims them', async (t) => {
  const ix = new ClaimIndex();
  ix.add(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'a/x:/TCP', '');
  ix.add(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'b/y:/TCP', '');
  ix.remove(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'a/x:/TCP');
  t.equal(ix.value(Sets.hairpin, '10.0.0.1 . 10.0.0.1'), '', 'still claimed by b');
  ix.remove(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'b/y:/TCP');
  t.equal(ix.value(Sets.hairpin, '10.0.0.1 . 10.0.0.1'), undefined, 'gone with its last claimant');
  t.equal(ix.size(Sets.hairpin), 0);
});

t.test('map elements: the smallest owner decides the value, whatever the order of claims', async (t) => {
  const ix = new ClaimIndex();
  ix.add(Maps.serviceIPs, '192.0.2.1 . tcp . 80', 'ns/b:/TCP', 'goto svc-b');
  ix.add(Maps.serviceIPs, '192.0.2.1 . tcp . 80', 'ns/a:/TCP', 'goto svc-a');
  t.equal(ix.value(Maps.serviceIPs, '192.0.2.1 . tcp . 80'), 'goto svc-a');
  ix.remove(Maps.serviceIPs, '192.0.2.1 . tcp . 80', 'ns/a:/TCP');
  t.equal(ix.value(Maps.serviceIPs, '192.0.2.1 . tcp . 80'), 'goto svc-b');
});

t.test('endpoint shard elements are counted per shard, never stored', async (t) => {
  const ix = new ClaimIndex();
  const shard = endpointShard('TCP', 0);
  ix.add(shard, '0', 'ns/a:/TCP', '10.0.0.1 . 8080');
  ix.add(shard, '1', 'ns/a:/TCP', '10.0.0.2 . 8080');
  t.equal(ix.size(shard), 2);
  t.same([...ix.entries(shard)], [], 'no elements kept');
  t.throws(() => ix.value(shard, '0'), /endpoint shard/, 'asking for a value is a compiler bug, not undefined');
  ix.remove(shard, '0', 'ns/a:/TCP');
  ix.remove(shard, '1', 'ns/a:/TCP');
  t.equal(ix.size(shard), 0);
});

t.test('a compile state at 1k Services x 10 endpoints keeps no endpoint elements', async (t) => {
  const c = buildCluster(1000, 10);
  const state = new CompileState();
  compileFull(c.tables, { families: [4], masqueradeMark: 0x4000, state });
  const ix = state.take(4, c.tables[4]);
  t.ok(ix, 'the state knows the table it compiled');
  // ClusterIP frontends and Cluster-policy NodePorts use the endpoint-count layout: one claim
  // string per service port, no element each; no ext- chain, so no endpoint shard in use.
  t.equal(ix!.size(GROUPED_FRONTENDS), 1000, 'a grouped frontend claim per ClusterIP');
  t.equal(ix!.size(GROUPED_NODEPORTS), 100, 'a grouped NodePort claim per NodePort (every 10th Service)');
  const shards = [...ix!.containerNames()].filter((n) => ix!.isShard(n) && ix!.size(n) > 0);
  t.same(shards, [], 'no endpoint shard in use');
  t.same([...ix!.entries(GROUPED_NODEPORTS)].slice(0, 1), [['tcp . 30000', 'all|10']], 'a NodePort claim: its key, masquerade and endpoint count');
});

t.test('deferred set claims count as if each were added: present while anyone claims them', async (t) => {
  const claims = ['10.0.0.1 . 10.0.0.1', '10.0.0.2 . 10.0.0.2', '10.0.0.1 . 10.0.0.1', '10.0.0.3 . 10.0.0.3'];
  const added = new ClaimIndex();
  for (const k of claims) added.add(Sets.hairpin, k, 'o/x:/TCP', '');
  const deferred = new ClaimIndex();
  deferred.deferCounts(Sets.hairpin, claims);
  t.ok(deferred.unsettled, 'nothing counted yet');
  t.same([...deferred.containerNames()], [Sets.hairpin], 'the container is listed before it is counted');
  t.equal(deferred.size(Sets.hairpin), 3, 'reading counts it: three distinct elements');
  t.notOk(deferred.unsettled);
  t.same([...deferred.entries(Sets.hairpin)], [...added.entries(Sets.hairpin)], 'same elements, same order as added one by one');
  // 10.0.0.1 was claimed twice: one removal leaves it, the second takes it away.
  deferred.remove(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'o/x:/TCP');
  t.equal(deferred.value(Sets.hairpin, '10.0.0.1 . 10.0.0.1'), '', 'still claimed once');
  deferred.remove(Sets.hairpin, '10.0.0.1 . 10.0.0.1', 'o/x:/TCP');
  t.equal(deferred.value(Sets.hairpin, '10.0.0.1 . 10.0.0.1'), undefined, 'gone with its last claim');

  const bySettle = new ClaimIndex();
  bySettle.deferCounts(Sets.clusterIPs, ['198.19.0.1', '198.19.0.1']);
  bySettle.deferCounts(Sets.hairpin, claims);
  bySettle.settle();
  t.notOk(bySettle.unsettled, 'settle counts every container');
  t.equal(bySettle.size(Sets.clusterIPs), 1);
  t.equal(bySettle.size(Sets.hairpin), 3);

  const onMap = new ClaimIndex();
  onMap.add(Maps.serviceIPs, '192.0.2.1 . tcp . 80', 'ns/a:/TCP', 'goto svc-a');
  onMap.deferCounts(Maps.serviceIPs, ['192.0.2.1 . tcp . 80']);
  t.throws(() => onMap.size(Maps.serviceIPs), /holds map claims/, 'a set claim on a map element is a compiler bug, not a count');
});

t.test('a full compile defers its set claims to the state, and writes each element once', async (t) => {
  const c = buildCluster(7000, 10); // 70,000 endpoints from a pool of 60,000 pods: some behind two Services
  const state = new CompileState();
  const tx = compileFull(c.tables, { families: [4], masqueradeMark: 0x4000, state });
  const hairpinAdds = tx.render().split('\n').filter((l) => l.startsWith('add element ip ferry hairpin'));
  t.ok(hairpinAdds.length > 0, 'the hairpin set is written');
  const written = hairpinAdds.flatMap((l) => l.slice(l.indexOf('{') + 1, l.lastIndexOf('}')).split(',').map((s) => s.trim()));
  t.equal(new Set(written).size, written.length, 'each hairpin element once');
  let claims = 0;
  for (const s of c.tables[4].services.values()) claims += new Set(s.internal.endpoints.map((e) => e.ip)).size;
  t.ok(written.length < claims, `fewer elements (${written.length}) than claims (${claims}): the cluster shares pods`);
  t.ok(state.settle(), 'counts were left for after the rules');
  t.notOk(state.settle(), 'and made once');
  const ix = state.take(4, c.tables[4])!;
  t.equal(ix.size(Sets.hairpin), written.length, 'the index counts what was written');
});

t.test('deferred map claims index as if each were added, in order: winners and all', async (t) => {
  const key = '192.0.2.1 . tcp . 80';
  const keys = [key, '192.0.2.2 . tcp . 80', key, '192.0.2.3 . udp . 53'];
  let spelled = 0;
  const claims = {
    key: (i: number) => (spelled++, keys[i]!),
    owners: ['ns/b:/TCP', 'ns/c:/TCP', 'ns/a:/TCP', 'ns/d:/UDP'] as ServicePortKey[],
    values: ['|2', 'all|1', '|3', '|1'],
  };
  const added = new ClaimIndex();
  for (let i = 0; i < keys.length; i++) added.add(GROUPED_FRONTENDS, keys[i]!, claims.owners[i]!, claims.values[i]!);
  const deferred = new ClaimIndex();
  deferred.deferClaims(GROUPED_FRONTENDS, claims);
  t.ok(deferred.unsettled, 'nothing indexed yet');
  t.equal(spelled, 0, 'no key spelled yet');
  t.equal(deferred.winner(GROUPED_FRONTENDS, key), 'ns/a:/TCP', 'reading indexes them: the smallest owner wins');
  t.notOk(deferred.unsettled);
  t.same([...deferred.entries(GROUPED_FRONTENDS)], [...added.entries(GROUPED_FRONTENDS)], 'same elements, values and order as added one by one');
  deferred.remove(GROUPED_FRONTENDS, key, 'ns/a:/TCP');
  t.equal(deferred.value(GROUPED_FRONTENDS, key), '|2', 'the next claimant takes over');

  const bySettle = new ClaimIndex();
  bySettle.deferClaims(GROUPED_FRONTENDS, claims);
  bySettle.settle();
  t.notOk(bySettle.unsettled, 'settle indexes them too');
  t.equal(bySettle.size(GROUPED_FRONTENDS), 3);

  const onClaims = new ClaimIndex();
  onClaims.add(GROUPED_FRONTENDS, key, 'ns/z:/TCP', '|1');
  t.throws(() => onClaims.deferClaims(GROUPED_FRONTENDS, claims), /deferred onto earlier claims/, 'deferring onto claims already made is a compiler bug');
  t.throws(() => new ClaimIndex().deferClaims(endpointShard('TCP', 0), claims), /endpoint shard/);
});

t.test('a full compile leaves the grouped frontends to be indexed later, as its services claim them', async (t) => {
  const c = buildCluster(3000, 25);
  const table = c.tables[4];
  const state = new CompileState();
  compileFull(c.tables, { families: [4], masqueradeMark: 0x4000, state });
  const ix = state.take(4, table)!;
  t.ok(ix.unsettled, 'left for after the rules');
  // The index every service's own contribution makes, claim by claim.
  const want = new ClaimIndex();
  const ctx = { fs: tableSyntax(4, table.localTraffic), detector: table.localTraffic.kind !== 'none', slots: want.slots };
  for (const [key, svc] of table.services) {
    for (const el of serviceContribution(svc, ctx).elements) if (el.container === GROUPED_FRONTENDS) want.add(el.container, el.key, key, el.value);
  }
  t.ok(want.size(GROUPED_FRONTENDS) > 1000, 'most service ports are grouped frontends');
  const winners = (i: ClaimIndex): string[] => {
    const out: string[] = [];
    i.forEachWinner(GROUPED_FRONTENDS, (k, v, owner) => out.push(`${k}=${v}@${owner}`));
    return out;
  };
  t.same(winners(ix), winners(want), 'the same claims, winners and order');

  // Every other container too: the counts the compile left for later (ClusterIPs, hairpins) and
  // the map claims it indexed at once.
  const all = new ClaimIndex();
  const allCtx = { ...ctx, slots: all.slots };
  for (const [key, svc] of table.services) for (const el of serviceContribution(svc, allCtx).elements) all.add(el.container, el.key, key, el.value);
  for (const name of [Sets.clusterIPs, Sets.hairpin, GROUPED_NODEPORTS]) t.ok(all.size(name) > 0, `${name}: the cluster claims some`);
  for (const name of [Sets.clusterIPs, Sets.hairpin, GROUPED_NODEPORTS, Maps.serviceIPs, Maps.serviceNodePorts, Maps.noEndpointServices, Maps.noEndpointNodePorts, Maps.firewallIPs]) {
    t.same([...ix.entries(name)], [...all.entries(name)], `${name}: the same elements as claimed one by one`);
  }
  // The counts: one claim of each set element taken away leaves those claimed more than once.
  for (const name of [Sets.clusterIPs, Sets.hairpin]) {
    for (const i of [ix, all]) for (const [k] of [...i.entries(name)]) i.remove(name, k, '' as ServicePortKey);
    t.same([...ix.entries(name)], [...all.entries(name)], `${name}: the same counts`);
  }
  t.ok(all.size(Sets.hairpin) > 0, 'some hairpin addresses are claimed by several service ports (75,000 endpoints on 60,000 pods)');
});

// A full compile keeps the latest of its working objects for their hidden classes (util/shapes.ts);
// once released (CompileState.releaseFull, after the sync) they must hold none of the table.
t.test('released, what a full compile keeps for its hidden classes holds none of the table it compiled', async (t) => {
  const { fullCollection } = await import('../../../../src/util/gc.js');
  const state = new CompileState();
  // Grouped ClusterIPs, grouped NodePorts (a third of the Services) and their endpoint lists.
  const refs = ((): { entry: WeakRef<object>; nodePort: WeakRef<object>; endpoints: WeakRef<object> } => {
    const { tables } = buildCluster(300, 3);
    compileFull(tables, { families: [4], masqueradeMark: 0x4000, state });
    state.settle();
    const entries = [...tables[4].services.values()];
    const nodePort = entries.find((e) => e.nodePort > 0)!;
    const out = { entry: new WeakRef(entries[0]!), nodePort: new WeakRef(nodePort), endpoints: new WeakRef(nodePort.external.endpoints) };
    state.releaseFull();
    state.take(4, tables[4]); // the index the state keeps for partial syncs (and with it the table)
    return out;
  })();
  // WeakRefs made in this job keep their targets until it ends. An optimizing compile still in
  // flight on V8's worker (a loaded machine: CI) holds the objects it read until it finishes:
  // collect again a little later before calling anything kept. A real hold never lets go.
  let collected = false;
  for (let i = 0; i < 40 && !collected; i++) {
    await new Promise((r) => setTimeout(r, i === 0 ? 0 : 25));
    if (!fullCollection() || !fullCollection()) break;
    collected = refs.entry.deref() === undefined && refs.nodePort.deref() === undefined && refs.endpoints.deref() === undefined;
  }
  t.ok(fullCollection() && fullCollection(), 'a full collection can be asked for');
  t.equal(refs.entry.deref(), undefined, 'a grouped ClusterIP entry is collected');
  t.equal(refs.nodePort.deref(), undefined, 'a grouped NodePort entry is collected');
  t.equal(refs.endpoints.deref(), undefined, 'its endpoint list is collected');
});
