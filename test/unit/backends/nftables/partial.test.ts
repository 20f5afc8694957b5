/**
 * Partial sync against the in-memory nftables: any sequence of partial syncs must leave exactly
 * the ruleset one full sync of the final IR leaves, and a one-endpoint change must cost a
 * handful of lines at any scale.
 */
import t from 'tap';
import { CompileState, compileFull, compilePartial, type CompileOptions } from '../../../../src/backends/nftables/compiler.js';
import { FakeNft } from '../../../../src/backends/nftables/fake.js';
import type { IPFamily, ProxyTables, ServiceEntry } from '../../../../src/plan/types.js';
import { bigTable, changesOf, emptyTable, ep, fwd, randomWalk, svc, table, tables } from './fixtures.js';

// One state per compile history (per fake kernel), as the backend keeps one per kernel table.
const opts = (families: readonly IPFamily[], state?: CompileState): CompileOptions => ({ families, masqueradeMark: 0x4000, ...(state ? { state } : {}) });

function fullDump(ir: ProxyTables, families: readonly IPFamily[]): string {
  const f = new FakeNft();
  f.applySync(compileFull(ir, opts(families)).render());
  return f.dumpResolved();
}

function firstDiff(a: string, b: string): string {
  const al = a.split('\n');
  const bl = b.split('\n');
  for (let i = 0; i < Math.max(al.length, bl.length); i++) {
    if (al[i] !== bl[i]) return `line ${i + 1}: partial has ${JSON.stringify(al[i])}, full has ${JSON.stringify(bl[i])}`;
  }
  return 'no difference';
}

t.test('random partial-sync sequences equal one full sync of the final IR (FakeNft)', async (t) => {
  const families: IPFamily[][] = [[4], [6], [4, 6]];
  let checked = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const fams = families[seed % 3]!;
    const walk = randomWalk(seed, 25, fams);
    const fake = new FakeNft();
    const state = new CompileState();
    fake.applySync(compileFull(walk.initial, opts(fams, state)).render());
    let prev = walk.initial;
    for (let i = 0; i < walk.steps.length; i++) {
      const step = walk.steps[i]!;
      const script = compilePartial(prev, step.next, step.changes, opts(fams, state)).render();
      try {
        fake.applySync(script);
      } catch (e) {
        t.fail(`seed ${seed} step ${i}: partial transaction rejected: ${(e as Error).message}\n${script}`);
        return;
      }
      const want = fullDump(step.next, fams);
      const got = fake.dumpResolved();
      if (got !== want) {
        t.fail(`seed ${seed} step ${i}: partial state differs from full sync: ${firstDiff(got, want)}\nscript:\n${script}`);
        return;
      }
      checked++;
      prev = step.next;
    }
  }
  t.equal(checked, 40 * 25, 'every step of every walk matched');
});

t.test('a full sync over any earlier state converges and deletes stale chains', async (t) => {
  for (let seed = 100; seed < 115; seed++) {
    const walk = randomWalk(seed, 10, [4, 6]);
    const final = walk.steps[walk.steps.length - 1]!.next;
    const fake = new FakeNft();
    // Leave the kernel holding the *initial* IR, then full-sync the final one over it.
    fake.applySync(compileFull(walk.initial, opts([4, 6])).render());
    const existing = { 4: new Set(fake.chainNames('ip', 'ferry')), 6: new Set(fake.chainNames('ip6', 'ferry')) };
    const existingMaps = { 4: new Set(fake.mapNames('ip', 'ferry')), 6: new Set(fake.mapNames('ip6', 'ferry')) };
    const existingSets = { 4: new Set(fake.setNames('ip', 'ferry')), 6: new Set(fake.setNames('ip6', 'ferry')) };
    fake.applySync(compileFull(final, { ...opts([4, 6]), existingChains: existing, existingMaps, existingSets }).render());
    const want = fullDump(final, [4, 6]);
    t.equal(fake.dumpResolved(), want, `seed ${seed}: full sync over old state equals a fresh full sync (${firstDiff(fake.dumpResolved(), want)})`);
  }
});

function withService(ir: ProxyTables, s: ServiceEntry): ProxyTables {
  const services = new Map(ir[4].services);
  services.set(s.key, s);
  return tables({ ...ir[4], services: new Map([...services].sort((a, b) => (a[0] < b[0] ? -1 : 1))) }, ir[6]);
}

t.test('one-endpoint change at 1,000 services is a handful of lines', async (t) => {
  const base = tables(bigTable(4, 1000, 10));
  const fake = new FakeNft();
  const state = new CompileState();
  fake.applySync(compileFull(base, opts([4], state)).render());

  const victim = [...base[4].services.values()][500]!;
  const eps = victim.internal.endpoints.slice(1);
  const changed = { ...victim, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) };
  const next = withService(base, changed);
  const script = compilePartial(base, next, changesOf([victim.key]), opts([4], state)).render();
  const lines = script.trim().split('\n');
  // Endpoint-count layout: the key moves from n-tcp-10 to n-tcp-9 (here a count not in use yet:
  // its set and endpoints map are created and services-by-count rewritten, 4 rules), the
  // endpoints move from endpoints-tcp-n10 to endpoints-tcp-n9, one hairpin element goes, and the
  // ext- chain (a NodePort) is rewritten when the service has one.
  t.ok(lines.length <= 12, `partial script has ${lines.length} lines (want ≤ 12):\n${script}`);
  t.match(script, /delete element ip ferry n-tcp-10 \{ /, 'the key leaves its count set');
  t.match(script, /add element ip ferry n-tcp-9 \{ /, 'and joins the new one');
  t.match(script, /delete element ip ferry endpoints-tcp-n10 \{ /, 'the service\'s endpoints leave its old count\'s map');
  t.match(script, /add element ip ferry endpoints-tcp-n9 \{ /, 'and go to the new count\'s map');
  t.match(script, /delete element ip ferry hairpin \{ 198\.18\.\d+\.\d+ \. 198\.18\.\d+\.\d+ \}/, 'the removed endpoint leaves the hairpin set');
  fake.applySync(script);
  t.equal(fake.dumpResolved(), fullDump(next, [4]), 'result equals a full sync');

  // Adding a whole new service is also small.
  const added = svc({ namespace: 'new', name: 'one', clusterIP: '198.19.200.1', nodePort: 31999, internal: fwd(ep('198.18.250.1', 80)) });
  const next2 = withService(next, added);
  const script2 = compilePartial(next, next2, changesOf([added.key]), opts([4], state)).render();
  const lines2 = script2.trim().split('\n');
  // (A one-endpoint NodePort service here brings count 1 into use for both kinds of grouped
  // frontend: two count sets and two maps created, and on this script path services-by-count and
  // nodeports-by-count rewritten.)
  t.ok(lines2.length <= 24, `new-service script has ${lines2.length} lines (want ≤ 24):\n${script2}`);
  fake.applySync(script2);
  t.equal(fake.dumpResolved(), fullDump(next2, [4]), 'result equals a full sync');
});

t.test('no change: empty transaction', async (t) => {
  const ir = tables(bigTable(4, 20, 2));
  const tx = compilePartial(ir, ir, changesOf([]), opts([4]));
  t.equal(tx.size, 0, 'nothing to do');
  t.equal(tx.render(), '', 'empty script');
});

for (const local of [false, true]) {
  t.test(`shared elements: ClusterIP of a two-port service, duplicate externalIP across services (${local ? 'Local policy: ext- chains' : 'Cluster policy: grouped frontends'})`, async (t) => {
    const pol = local ? { externalPolicyLocal: true, externalMasquerade: false } : {};
    const a = svc({ namespace: 'x', name: 'a', portName: 'p0', clusterIP: '198.19.9.1', externalIPs: ['203.0.113.50'], internal: fwd(ep('198.18.9.1', 80)), ...pol });
    const a1 = svc({ namespace: 'x', name: 'a', portName: 'p1', port: 81, clusterIP: '198.19.9.1', internal: fwd(ep('198.18.9.1', 81)) });
    const b = svc({ namespace: 'x', name: 'b', clusterIP: '198.19.9.2', externalIPs: ['203.0.113.50'], internal: fwd(ep('198.18.9.2', 80)), ...pol });
    const ir1 = tables(table(4, [a, a1, b]));
    const fake = new FakeNft();
    fake.applySync(compileFull(ir1, opts([4])).render());
    // Who the contested externalIP goes to: its ext- chain, or its grouped frontend's endpoint.
    const winner = (): string | undefined =>
      local ? fake.elements('ip', 'ferry', 'service-ips')!.get('203.0.113.50 . tcp . 80') : fake.elements('ip', 'ferry', 'endpoints-tcp-n1')!.get('203.0.113.50 . tcp . 80 . 0');
    t.match(winner(), local ? /^goto ext-[0-9a-f]{8}-x\/a\// : '198.18.9.1 . 80', 'the smallest service key wins a contested externalIP');
    if (!local) t.ok(fake.elements('ip', 'ferry', 'masq-all')!.has('203.0.113.50 . tcp . 80'), 'a Cluster-policy externalIP is always masqueraded');

    // Remove port p0 of service a: its ClusterIP stays (p1 still claims it); the externalIP goes to b.
    const ir2 = tables(table(4, [a1, b]));
    const script = compilePartial(ir1, ir2, changesOf([a.key]), opts([4])).render();
    fake.applySync(script);
    t.ok(fake.elements('ip', 'ferry', 'cluster-ips')!.has('198.19.9.1'), 'ClusterIP still claimed by the other port stays');
    t.match(winner(), local ? /^goto ext-[0-9a-f]{8}-x\/b\// : '198.18.9.2 . 80', 'externalIP now dispatches to b');
    t.equal(fake.dumpResolved(), fullDump(ir2, [4]), 'equals full sync');
  });
}

t.test("an externalIP that is another Service's ClusterIP: one grouped frontend, the smallest key's, in full and partial syncs", async (t) => {
  // Never in a valid cluster, but the IR can hold it (hostile or stale objects): both claim the
  // key `198.19.9.8 . tcp . 80` in <grouped-frontends>, a's as a ClusterIP, b's as an externalIP.
  const a = svc({ namespace: 'x', name: 'a', clusterIP: '198.19.9.8', internal: fwd(ep('198.18.9.1', 80), ep('198.18.9.2', 80)) });
  const b = svc({ namespace: 'x', name: 'b', clusterIP: '198.19.9.9', externalIPs: ['198.19.9.8'], internal: fwd(ep('198.18.9.3', 8080)) });
  const state = new CompileState();
  const fake = new FakeNft();
  const ir1 = tables(table(4, [a, b]));
  fake.applySync(compileFull(ir1, opts([4], state)).render());
  t.equal(fake.elements('ip', 'ferry', 'endpoints-tcp-n2')?.get('198.19.9.8 . tcp . 80 . 1'), '198.18.9.2 . 80', "a's ClusterIP frontend wins the key");
  t.notOk(fake.elements('ip', 'ferry', 'masq-all')?.has('198.19.9.8 . tcp . 80'), "with a's masquerade variant (none), not b's");
  const ir2 = tables(table(4, [b]));
  fake.applySync(compilePartial(ir1, ir2, changesOf([a.key]), opts([4], state)).render());
  t.equal(fake.elements('ip', 'ferry', 'endpoints-tcp-n1')?.get('198.19.9.8 . tcp . 80 . 0'), '198.18.9.3 . 8080', "a gone: b's externalIP frontend takes the key");
  t.ok(fake.elements('ip', 'ferry', 'masq-all')?.has('198.19.9.8 . tcp . 80'), 'masqueraded, as an external frontend');
  t.equal(fake.dumpResolved(), fullDump(ir2, [4]), 'equals a full sync');
  fake.applySync(compilePartial(ir2, ir1, changesOf([a.key]), opts([4], state)).render());
  t.equal(fake.dumpResolved(), fullDump(ir1, [4]), 'and back: equals a full sync');
});

t.test('one ClusterIP:port claimed by two Services: the winner\'s endpoints, read from its entry, across full and partial syncs', async (t) => {
  // Kubernetes never allocates one ClusterIP twice, but an IR built from hostile or stale objects
  // can hold it: the smallest service port key wins the whole frontend (claims.ts).
  const a = svc({ namespace: 'x', name: 'a', clusterIP: '198.19.9.7', internal: fwd(ep('198.18.9.1', 80), ep('198.18.9.2', 80)) });
  const b = svc({ namespace: 'x', name: 'b', clusterIP: '198.19.9.7', internal: fwd(ep('198.18.9.3', 8080), ep('198.18.9.4', 8080), ep('198.18.9.5', 8080)) });
  const b2 = svc({ namespace: 'x', name: 'b', clusterIP: '198.19.9.7', internal: fwd(ep('198.18.9.3', 8080), ep('198.18.9.6', 8080), ep('198.18.9.5', 8080)) });
  // Every grouped endpoints map (one per count): the frontend's endpoints, wherever its count put them.
  const endpointsOf = (f: FakeNft): string[] =>
    f
      .mapNames('ip', 'ferry')
      .filter((m) => /^endpoints-tcp-n\d+$/.test(m))
      .flatMap((m) => [...(f.elements('ip', 'ferry', m) ?? new Map())].map(([k, v]) => `${k} : ${v}`))
      .sort();
  const state = new CompileState();
  const fake = new FakeNft();
  const ir1 = tables(table(4, [a, b]));
  fake.applySync(compileFull(ir1, opts([4], state)).render());
  t.same(endpointsOf(fake), ['198.19.9.7 . tcp . 80 . 0 : 198.18.9.1 . 80', '198.19.9.7 . tcp . 80 . 1 : 198.18.9.2 . 80'], 'a wins: its two endpoints');

  const steps: [string, ProxyTables, string[]][] = [
    ['the loser changes an endpoint: its hairpin element only', tables(table(4, [a, b2])), [b.key]],
    ['the winner goes: the loser\'s three endpoints', tables(table(4, [b2])), [a.key]],
    ['the winner comes back', tables(table(4, [a, b2])), [a.key]],
  ];
  let prev = ir1;
  for (const [what, next, changed] of steps) {
    const tx = compilePartial(prev, next, changesOf(changed), opts([4], state));
    if (what.includes('hairpin element only')) t.notMatch(tx.render(), /endpoints-|count-/, `${what}: the frontend is a's, untouched`);
    fake.applySync(tx.render());
    t.equal(fake.dumpResolved(), fullDump(next, [4]), `${what}: equals a full sync`);
    prev = next;
  }
  t.same(endpointsOf(fake), ['198.19.9.7 . tcp . 80 . 0 : 198.18.9.1 . 80', '198.19.9.7 . tcp . 80 . 1 : 198.18.9.2 . 80'], 'a again');
});

t.test('an endpoint change of a Cluster-policy NodePort Service is element changes only', async (t) => {
  // Endpoint-count layout, NodePort kind: the NodePort has no ext- chain (whose `numgen mod N`
  // rule a count change would rewrite, making the kernel validate the whole table); its key moves
  // between np- count sets and its endpoints between their maps.
  const base = tables(bigTable(4, 1000, 10));
  const fake = new FakeNft();
  const state = new CompileState();
  fake.applySync(compileFull(base, opts([4], state)).render());
  t.notOk(fake.chainNames('ip', 'ferry').some((n) => n.startsWith('ext-')), 'no ext- chain: every NodePort is grouped');
  const nodePorts = [...base[4].services.values()].filter((s) => s.nodePort > 0);
  const shrink = (s: ServiceEntry): ServiceEntry => {
    const eps = s.internal.endpoints.slice(1);
    return { ...s, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) };
  };
  // The first brings count 9 into use (its count rules are added), the second finds it in use.
  const a = shrink(nodePorts[10]!);
  const mid = withService(base, a);
  fake.applySync(compilePartial(base, mid, changesOf([a.key]), opts([4], state)).render());
  const b = shrink(nodePorts[20]!);
  const next = withService(mid, b);
  const script = compilePartial(mid, next, changesOf([b.key]), opts([4], state)).render();
  t.notMatch(script, /^(add|flush|delete) (rule|chain) /m, `no rule or chain changes:\n${script}`);
  const key = `tcp . ${b.nodePort}`;
  t.match(script, `delete element ip ferry np-tcp-10 { ${key} }`, 'the NodePort leaves its count set');
  t.match(script, `add element ip ferry np-tcp-9 { ${key} }`, 'and joins the new one');
  t.match(script, `delete element ip ferry np-endpoints-tcp-n10 { ${key} . 0, `, "its endpoints leave the old count's map");
  t.match(script, `add element ip ferry np-endpoints-tcp-n9 { ${key} . 0 : `, "and go to the new count's map");
  fake.applySync(script);
  t.equal(fake.dumpResolved(), fullDump(next, [4]), 'result equals a full sync');
  t.same(fake.rules('ip', 'ferry', 'nodeports-by-count'), [
    'meta l4proto . th dport @masq-nodeports jump mark-for-masquerade',
    'meta l4proto . th dport @np-tcp-9 meta l4proto tcp dnat ip to meta l4proto . th dport . numgen random mod 9 map @np-endpoints-tcp-n9',
    'meta l4proto . th dport @np-tcp-10 meta l4proto tcp dnat ip to meta l4proto . th dport . numgen random mod 10 map @np-endpoints-tcp-n10',
  ]);

  // Local policy, or affinity, keeps the ext- chain (its short-circuits / endpoint chains).
  const local = { ...b, externalPolicyLocal: true, externalMasquerade: false };
  const after = withService(next, local);
  const script2 = compilePartial(next, after, changesOf([b.key]), opts([4], state)).render();
  t.match(script2, `delete element ip ferry np-tcp-9 { ${key} }`, 'a NodePort turned Local leaves the count set');
  t.match(script2, /add element ip ferry service-nodeports \{ tcp \. \d+ : goto ext-/, 'and dispatches to its ext- chain');
  fake.applySync(script2);
  t.equal(fake.dumpResolved(), fullDump(after, [4]), 'result equals a full sync');
});

t.test('affinity timeout change rewrites the update rule; the endpoint chain and the shared set stay', async (t) => {
  const s1 = svc({ namespace: 'd', name: 'st', affinityTimeoutSeconds: 60, internal: fwd(ep('198.18.0.1', 80)) });
  const s2 = { ...s1, affinityTimeoutSeconds: 120 };
  const ir1 = tables(table(4, [s1]));
  const ir2 = tables(table(4, [s2]));
  const fake = new FakeNft();
  fake.applySync(compileFull(ir1, opts([4])).render());
  const before = fake.chainNames('ip', 'ferry').filter((n) => n.startsWith('ep-'));
  const tx = compilePartial(ir1, ir2, changesOf([s1.key]), opts([4]));
  t.notOk(tx.ops.some((o) => o.kind === 'set'), 'no set is added, flushed or deleted');
  fake.applySync(tx.render());
  const after = fake.chainNames('ip', 'ferry').filter((n) => n.startsWith('ep-'));
  t.equal(before.length, 1);
  t.same(after, before, 'the endpoint chain keeps its name');
  t.match(fake.rules('ip', 'ferry', after[0]!)?.[0], /^update @affinity \{ ip saddr \. numgen random mod 1 offset \d+ \. numgen random mod 1 offset \d+ timeout 120s \}$/, 'the update carries the new timeout');
  t.notMatch(fake.dump(), /timeout 60s/, 'the old timeout is gone');
  t.equal(fake.dumpResolved(), fullDump(ir2, [4]), 'equals full sync of the new table');
});

t.test('affinity ports share one set: adding them adds no named set; keys are per service port and endpoint', async (t) => {
  const e1 = ep('198.18.0.1', 80);
  const e2 = ep('198.18.0.2', 80);
  const a = svc({ namespace: 'd', name: 'a', affinityTimeoutSeconds: 60, internal: fwd(e1, e2) });
  const b = svc({ namespace: 'd', name: 'b', clusterIP: '198.19.0.99', affinityTimeoutSeconds: 30, internal: fwd(e1) });
  const ir0 = tables(table(4, []));
  const ir1 = tables(table(4, [a, b]));
  const fake = new FakeNft();
  fake.applySync(compileFull(ir0, opts([4])).render());
  t.ok(fake.elements('ip', 'ferry', 'affinity'), 'the shared set exists without any affinity Service');
  const tx = compilePartial(ir0, ir1, changesOf([a.key, b.key]), opts([4]));
  t.notOk(tx.ops.some((o) => o.kind === 'set' || o.kind === 'map'), 'two affinity Services add no set or map');
  fake.applySync(tx.render());
  t.equal(fake.dumpResolved(), fullDump(ir1, [4]), 'equals full sync');
  const keyOf = (chain: string): string => /update @affinity \{ (.*) timeout/.exec(fake.rules('ip', 'ferry', chain)?.[0] ?? '')![1]!;
  const eps = fake.chainNames('ip', 'ferry').filter((n) => n.startsWith('ep-'));
  t.equal(eps.length, 3, 'an endpoint chain per (service port, endpoint)');
  t.equal(new Set(eps.map(keyOf)).size, 3, 'the same endpoint in two Services has two keys: stickiness stays per service port');
  // The same inputs give the same keys: a restarted ferry finds the clients recorded before.
  const again = new FakeNft();
  again.applySync(compileFull(ir1, opts([4])).render());
  t.same(eps.map(keyOf), eps.map((c) => /update @affinity \{ (.*) timeout/.exec(again.rules('ip', 'ferry', c)?.[0] ?? '')![1]!), 'keys are deterministic');
});

t.test('full sync: the affinity set is added, never flushed; per-endpoint sets of an earlier ferry are deleted', async (t) => {
  const s = svc({ namespace: 'd', name: 'st', affinityTimeoutSeconds: 60, internal: fwd(ep('198.18.0.1', 80)) });
  const ir = tables(table(4, [s]));
  const legacy = 'aff-f0a36c8a-d/st/tcp/http__198.18.0.1/80';
  const tx = compileFull(ir, { ...opts([4]), existingSets: { 4: new Set(['affinity', legacy, 'n-tcp-1']) } });
  const script = tx.render();
  t.match(script, /^add set ip ferry affinity \{ typeof ip saddr \. numgen random mod 1 \. numgen random mod 1 ; size \d+ ; flags dynamic,timeout ;/m);
  t.notMatch(script, /^flush set ip ferry affinity$/m, 'never flushed: stickiness survives a resync');
  t.match(script, new RegExp(`^delete set ip ferry ${legacy.replace(/[./]/g, '\\$&')}$`, 'm'), 'a legacy aff- set is deleted');
  t.notMatch(script, /^delete set ip ferry affinity$/m);
  // An earlier ferry's table (per-endpoint set, chain using it) is taken over in one transaction.
  const fake = new FakeNft();
  fake.applySync(['add table ip ferry', 'add chain ip ferry ep-old', `add set ip ferry ${legacy} { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }`, `add rule ip ferry ep-old update @${legacy} { ip saddr }`].join('\n'));
  fake.applySync(compileFull(ir, { ...opts([4]), existingChains: new Set(['ep-old']), existingSets: { 4: new Set([legacy]) } }).render());
  t.notOk(fake.elements('ip', 'ferry', legacy), 'the old set is gone');
  t.equal(fake.dumpResolved(), fullDump(ir, [4]));
});

t.test('table-level change (NodePort addresses, detector) rewrites what depends on it', async (t) => {
  const s = svc({ namespace: 'd', name: 'np', nodePort: 30001, externalPolicyLocal: true, externalMasquerade: false, internal: fwd(ep('198.18.0.1', 80, true)) });
  const ir1 = tables(table(4, [s]));
  const ir2 = tables(table(4, [s], { nodePortAddresses: { kind: 'list', addresses: ['192.0.2.10'] }, localTraffic: { kind: 'none' } }));
  const fake = new FakeNft();
  fake.applySync(compileFull(ir1, opts([4])).render());
  fake.applySync(compilePartial(ir1, ir2, changesOf([], true), opts([4])).render());
  t.equal(fake.dumpResolved(), fullDump(ir2, [4]), 'equals full sync of the new table');
  t.same(fake.rules('ip', 'ferry', 'services'), [
    'jump services-by-count',
    'ip daddr . meta l4proto . th dport vmap @service-ips',
    'ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports',
    'ip daddr @nodeport-ips jump nodeports-by-count',
  ]);
});

t.test('empty families stay empty tables; a family not served is not touched', async (t) => {
  const ir = tables(emptyTable(4), emptyTable(6));
  const script = compileFull(ir, opts([4])).render();
  t.notMatch(script, /ip6/, 'no ip6 command when only IPv4 is served');
  const fake = new FakeNft();
  fake.applySync(script);
  t.ok(fake.hasTable('ip', 'ferry'));
  t.notOk(fake.hasTable('ip6', 'ferry'));
});
