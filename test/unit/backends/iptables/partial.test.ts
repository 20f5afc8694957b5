/**
 * Partial syncs must leave exactly what a full sync leaves. Seeded random IR walks (the nftables
 * fixtures' generator) are applied to an in-memory iptables (FakeIptables: references and -X
 * checked): one fake gets a full sync and then only partial syncs; after every step a fresh fake
 * gets one full sync of the same IR; the two dumps must be equal. Also: a full sync over a
 * kernel holding stale chains deletes them; large cluster mode drops the endpoint comments.
 */
import t from 'tap';
import { compileFull, compilePartial, skeletonOf } from '../../../../src/backends/iptables/compiler.js';
import { chainsInSave } from '../../../../src/backends/iptables/cleanup.js';
import { FakeIptables } from '../../../../src/backends/iptables/fake.js';
import type { IPFamily } from '../../../../src/plan/types.js';
import { randomWalk } from '../nftables/fixtures.js';
import { bigTable, changesOf, ep, fwd, GOLDEN_OPTS, svc, table } from './fixtures.js';

async function fullInto(fake: FakeIptables, family: IPFamily, ir: Parameters<typeof compileFull>[0]): Promise<void> {
  const existing = new Set(chainsInSave(await fake.save(family, 'nat')));
  await fake.restore(family, compileFull(ir, { ...GOLDEN_OPTS, existingNatChains: existing }).text);
}

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  t.test(`random walk seed ${seed}: partial syncs equal a full sync at every step`, async (t) => {
    const families: IPFamily[] = seed % 2 ? [4] : [4, 6];
    const walk = randomWalk(seed, 25, families);
    const live = new FakeIptables();
    for (const f of families) await fullInto(live, f, walk.initial[f]);
    let prev = walk.initial;
    let i = 0;
    for (const step of walk.steps) {
      i++;
      for (const f of families) {
        const input = compilePartial(prev[f], step.next[f], step.changes, GOLDEN_OPTS).text;
        try {
          await live.restore(f, input);
        } catch (e) {
          t.fail(`step ${i} IPv${f}: partial restore rejected: ${e instanceof Error ? e.message : String(e)}\n${input}`);
          return;
        }
        const fresh = new FakeIptables();
        await fullInto(fresh, f, step.next[f]);
        const got = await live.dump(f);
        const want = await fresh.dump(f);
        if (got !== want) {
          t.equal(got, want, `step ${i} IPv${f}: ruleset after partial syncs differs from a full sync (changed: ${[...step.changes.changed].join(', ')}, tableChanged: ${step.changes.tableChanged})`);
          return;
        }
      }
      prev = step.next;
    }
    t.pass(`${walk.steps.length} steps agree`);
  });
}

t.test('a full sync deletes stale service chains found in the kernel, and only those', async (t) => {
  const fake = new FakeIptables();
  await fake.restore(4, '*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-XLB-BBBBBBBBBBBBBBBB - [0:0]\n:KUBE-SEP-CCCCCCCCCCCCCCCC - [0:0]\n:CNI-THING - [0:0]\n-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-CCCCCCCCCCCCCCCC\nCOMMIT\n');
  const ir = table(4, [svc({ namespace: 'a', name: 'b', internal: fwd(ep('198.18.0.1', 80)) })]);
  await fullInto(fake, 4, ir);
  const chains = chainsInSave(await fake.save(4, 'nat'));
  for (const stale of ['KUBE-SVC-AAAAAAAAAAAAAAAA', 'KUBE-XLB-BBBBBBBBBBBBBBBB', 'KUBE-SEP-CCCCCCCCCCCCCCCC']) t.notOk(chains.includes(stale), `${stale} deleted (chains now: ${chains.join(' ')})`);
  t.ok(chains.includes('CNI-THING'), 'a foreign chain is kept');
});

t.test('partial sync of one changed service writes only its chains and the skeleton', async (t) => {
  const prevT = bigTable(4, 200, 2);
  const changedKey = [...prevT.services.keys()][17]!;
  const old = prevT.services.get(changedKey)!;
  const services = new Map(prevT.services);
  services.set(changedKey, { ...old, internal: fwd(...old.internal.endpoints, ep('198.18.250.250', 8080)), cluster: fwd(...old.internal.endpoints, ep('198.18.250.250', 8080)), external: fwd(...old.internal.endpoints, ep('198.18.250.250', 8080)) });
  const nextT = { ...prevT, services };
  const out = compilePartial(prevT, nextT, changesOf([changedKey]), GOLDEN_OPTS);
  const declared = out.text.split('\n').filter((l) => /^:KUBE-(SVC|SEP|EXT|SVL|FW)-/.test(l));
  // The SVC chain changes (a third endpoint) and the new SEP chain appears; the old SEPs and EXT are unchanged.
  t.equal(declared.length, 2, `two service chains written (got ${declared.join(', ')})`);
  t.equal(out.chainsDeleted.length, 0, 'nothing deleted');
});

t.test('large cluster mode drops per-endpoint comments, as kube-proxy', async (t) => {
  const small = compileFull(bigTable(4, 10, 2), { ...GOLDEN_OPTS, largeClusterThreshold: 100 });
  const large = compileFull(bigTable(4, 60, 2), { ...GOLDEN_OPTS, largeClusterThreshold: 100 });
  t.equal(small.largeCluster, false, '20 endpoints: normal mode');
  t.equal(large.largeCluster, true, '120 endpoints: large cluster mode');
  t.match(small.text, /-A KUBE-SEP-\S+ -m comment --comment ns\d+\/svc\d+:http -s /, 'normal mode: SEP rules carry the service comment');
  t.notMatch(large.text, /-A KUBE-SEP-\S+ -m comment/, 'large mode: no comment on SEP rules');
  t.notMatch(large.text, /-A KUBE-SVC-\S+ -m comment --comment "\S+ -> /, 'large mode: no endpoint comment on SVC dispatch rules');
  t.match(large.text, /-A KUBE-SERVICES -m comment --comment "ns\d+\/svc\d+:http cluster IP"/, 'large mode: KUBE-SERVICES keeps its comments (kube-proxy does)');
});

t.test('switching into large cluster mode rewrites every service chain in a partial sync', async (t) => {
  const prevT = bigTable(4, 40, 2); // 80 endpoints
  const extra = svc({ namespace: 'z', name: 'z', clusterIP: '198.19.200.1', internal: fwd(ep('198.18.251.1', 80), ep('198.18.251.2', 80), ep('198.18.251.3', 80)) });
  const services = new Map(prevT.services);
  services.set(extra.key, extra);
  const nextT = { ...prevT, services };
  const opts = { ...GOLDEN_OPTS, largeClusterThreshold: 81 };
  const live = new FakeIptables();
  await live.restore(4, compileFull(prevT, opts).text);
  await live.restore(4, compilePartial(prevT, nextT, changesOf([extra.key]), opts).text);
  const fresh = new FakeIptables();
  await fresh.restore(4, compileFull(nextT, opts).text);
  t.equal(await live.dump(4), await fresh.dump(4), 'after the mode switch the partial result equals a full sync');
});

t.test('the input in pieces: joined it is the text, no line is split, the skeleton reads the same', async (t) => {
  const prevT = bigTable(4, 1500, 3);
  const full = compileFull(prevT, GOLDEN_OPTS);
  const a = full.pieces.find((s) => s.includes('KUBE-SVC-'))!;
  t.ok(full.pieces.length > 10, `a full sync of 1,500 service ports comes in many pieces (${full.pieces.length})`);
  t.ok(a.length < full.text.length / 4, 'none is the whole input');
  const nextT = bigTable(4, 1500, 4);
  const partial = compilePartial(prevT, nextT, changesOf([...nextT.services.keys()]), GOLDEN_OPTS);
  for (const c of [full, partial]) {
    t.equal(c.pieces.join(''), c.text);
    let lines = 0;
    for (let i = 0; i < c.pieces.length; i++) {
      const p = c.pieces[i]!;
      t.ok(p.length > 0, 'no empty piece');
      for (let j = p.indexOf('\n'); j >= 0; j = p.indexOf('\n', j + 1)) lines++;
      if (i > 0 && !c.pieces[i - 1]!.endsWith('\n') && !p.startsWith('\n')) t.fail(`${c.full ? 'full' : 'partial'}: pieces ${i - 1} and ${i} split a line`);
    }
    t.equal(c.lines, lines, 'lines counted over the pieces');
    t.same(skeletonOf(c.pieces), skeletonOf(c.text), 'skeleton chains read from the pieces as from the text');
  }
  // Restored from pieces, the kernel (here the fake) ends as from the text.
  const viaPieces = new FakeIptables();
  const viaText = new FakeIptables();
  await viaPieces.restore(4, full.pieces);
  await viaText.restore(4, full.text);
  t.equal(await viaPieces.dump(4), await viaText.dump(4));
});
