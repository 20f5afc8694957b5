/**
 * Endpoint blocks in the shared per-protocol endpoints maps: stable across partial syncs,
 * released blocks reused only from the next sync on, one block for equal endpoint sets, and an
 * anonymous map for a set too large for a block.
 */
import t from 'tap';
import { CompileState, compileFull, compilePartial, type CompileOptions } from '../../../../src/backends/nftables/compiler.js';
import { FakeNft } from '../../../../src/backends/nftables/fake.js';
import { BLOCKS_PER_SHARD } from '../../../../src/backends/nftables/names.js';
import { SLOT_STRIDE, SlotTable } from '../../../../src/backends/nftables/slots.js';
import type { PlannedEndpoint } from '../../../../src/plan/types.js';
import { changesOf, ep, fwd, svc, table, tables } from './fixtures.js';

const opts = (state: CompileState): CompileOptions => ({ families: [4], masqueradeMark: 0x4000, state });

t.test('SlotTable: stable per owner and role, deferred reuse', async (t) => {
  const s = new SlotTable();
  const a = s.base('a', 'internal');
  t.equal(a, SLOT_STRIDE, 'the first block starts one stride in (block 0 is never used)');
  t.equal(s.base('a', 'internal'), a, 'asking again gives the same block');
  const b = s.base('b', 'internal');
  t.not(b, a);
  s.retain('a', new Set());
  t.equal(s.size, 1, 'a released');
  const c = s.base('c', 'internal');
  t.not(c, a, 'a block released in this sync is not handed out in the same sync');
  s.settle();
  t.equal(s.base('d', 'internal'), a, 'after settle() the released block is reused');
  s.retain('b', new Set(['internal']));
  t.equal(s.base('b', 'internal'), b, 'retained roles keep their block');

  const two = new SlotTable();
  const ext = two.base('e', 'external')!;
  const int = two.base('e', 'internal')!;
  const clu = two.base('e', 'cluster')!;
  t.equal(new Set([ext, int, clu]).size, 3, 'one block per role');
  t.equal(two.size, 3);
  two.retain('e', new Set(['internal']));
  t.equal(two.size, 1, 'the roles not kept are released');
  t.equal(two.base('e', 'internal'), int, 'the kept one stays');
  two.settle();
  t.same([two.base('f', 'internal'), two.base('f', 'cluster')].sort(), [ext, clu].sort(), 'the released blocks are reused after settle()');
  two.retain('e', new Set());
  t.equal(two.size, 2, 'an owner with no role left is gone');
});

t.test('a removed service frees its block for the next sync, not the current one', async (t) => {
  // Local-policy externalIPs: their ext- chains use blocks (ClusterIPs and the external frontends
  // of Cluster-policy Services use the endpoint-count layout).
  const two = (ip: string): PlannedEndpoint[] => [ep(ip, 80), ep(ip, 81)];
  const a = svc({ namespace: 'x', name: 'a', clusterIP: '198.19.1.1', externalIPs: ['203.0.113.1'], externalPolicyLocal: true, externalMasquerade: false, internal: fwd(...two('198.18.1.1')) });
  const b = svc({ namespace: 'x', name: 'b', clusterIP: '198.19.1.2', externalIPs: ['203.0.113.2'], externalPolicyLocal: true, externalMasquerade: false, internal: fwd(...two('198.18.1.2')) });
  const c = svc({ namespace: 'x', name: 'c', clusterIP: '198.19.1.3', externalIPs: ['203.0.113.3'], externalPolicyLocal: true, externalMasquerade: false, internal: fwd(...two('198.18.1.3')) });
  const d = svc({ namespace: 'x', name: 'd', clusterIP: '198.19.1.4', externalIPs: ['203.0.113.4'], externalPolicyLocal: true, externalMasquerade: false, internal: fwd(...two('198.18.1.4')) });
  const state = new CompileState();
  const fake = new FakeNft();
  const ir1 = tables(table(4, [a, b]));
  fake.applySync(compileFull(ir1, opts(state)).render());
  const blockOf = (name: string): string | undefined =>
    (fake.rules('ip', 'ferry', fake.chainNames('ip', 'ferry').find((n) => n.startsWith('ext-') && n.includes(`/${name}/`))!) ?? [])
      .map((r) => /offset (\d+) map @endpoints-tcp-\d+/.exec(r)?.[1])
      .find((x) => x !== undefined);
  const blockA = blockOf('a');
  t.ok(blockA, 'a uses a block of endpoints-tcp');

  // Remove a and add c in one sync: c must not take a's block (its elements are being deleted).
  const ir2 = tables(table(4, [b, c]));
  const script = compilePartial(ir1, ir2, changesOf([a.key, c.key]), opts(state)).render();
  fake.applySync(script);
  t.not(blockOf('c'), blockA, 'c got a fresh block');
  const shardA = `endpoints-tcp-${Math.floor(Number(blockA) / SLOT_STRIDE / BLOCKS_PER_SHARD)}`;
  t.notOk(fake.elements('ip', 'ferry', shardA)?.has(blockA!) ?? false, "a's elements are gone");

  // The next sync may reuse it.
  const ir3 = tables(table(4, [b, c, d]));
  fake.applySync(compilePartial(ir2, ir3, changesOf([d.key]), opts(state)).render());
  t.equal(blockOf('d'), blockA, 'd reuses the block a released a sync earlier');
  const fresh = new FakeNft();
  fresh.applySync(compileFull(ir3, { families: [4], masqueradeMark: 0x4000 }).render());
  t.equal(fake.dumpResolved(), fresh.dumpResolved(), 'the kernel forwards as a fresh full sync would');
});

t.test('equal endpoint sets share one block; a set larger than a block uses an anonymous map', async (t) => {
  const eps = [ep('198.18.1.1', 80), ep('198.18.1.2', 80)];
  const local = svc({
    namespace: 'x',
    name: 'local',
    clusterIP: '198.19.1.1',
    nodePort: 30080,
    externalPolicyLocal: true,
    externalMasquerade: false,
    internal: fwd(...eps),
    external: fwd(...eps),
    cluster: fwd(...eps),
  });
  const script = compileFull(tables(table(4, [local])), opts(new CompileState())).render();
  const offsets = new Set([...script.matchAll(/offset (\d+) map @endpoints-tcp-\d+/g)].map((m) => m[1]));
  t.equal(offsets.size, 1, `internal, external and cluster sets with equal endpoints use one block: ${[...offsets].join(',')}`);

  const many: PlannedEndpoint[] = [];
  for (let i = 0; i < SLOT_STRIDE + 1; i++) many.push(ep(`198.18.${100 + (i >> 8)}.${i & 255}`, 80));
  const big = svc({ namespace: 'x', name: 'big', clusterIP: '198.19.1.9', internal: fwd(...many) });
  const bigScript = compileFull(tables(table(4, [big])), opts(new CompileState())).render();
  t.match(bigScript, new RegExp(`numgen random mod ${SLOT_STRIDE + 1} map \\{ 0 : 198\\.18\\.100\\.0 \\. 80, `), 'anonymous map for 4097 endpoints');
  t.notMatch(bigScript, /add element ip ferry endpoints-tcp-/, 'nothing in the shared map');
});
