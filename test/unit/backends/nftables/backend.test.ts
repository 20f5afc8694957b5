/**
 * The nftables backend on FakeNft and FakeConntrack: full and partial syncs, stale chain cleanup
 * on full sync, typed errors with the failing line, intact(), cleanup(), conntrack cleanup.
 */
import t from 'tap';
import { createNftablesBackend, NftSyncError } from '../../../../src/backends/nftables/backend.js';
import { FakeNft } from '../../../../src/backends/nftables/fake.js';
import { FakeConntrack } from '../../../../src/backends/kernel/conntrack.js';
import { setLogSink } from '../../../../src/util/log.js';
import { compileFull, compilePartial, CompileState, SetFullError } from '../../../../src/backends/nftables/compiler.js';
import { groupedSetSize } from '../../../../src/backends/nftables/skeleton.js';
import { changesOf, ep, fwd, FULL, REJECT, svc, table, tables } from './fixtures.js';

setLogSink(() => {});

const web = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080), ep('198.18.0.3', 8080)) });
const dns = svc({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.0.5', 53)) });
const ir1 = tables(table(4, [web, dns]));

t.test('full sync, then a partial sync that only touches the changed service', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  t.equal(b.lastSync()?.full, true);
  t.same(nft.listed, ['list chains ip', 'list maps ip', 'list sets ip'], 'a full sync lists chains, maps and sets (names only)');
  const web2 = { ...web, internal: fwd(ep('198.18.0.2', 8080)), external: fwd(ep('198.18.0.2', 8080)), cluster: fwd(ep('198.18.0.2', 8080)) };
  const ir2 = tables(table(4, [web2, dns]));
  await b.sync(ir1, ir2, changesOf([web.key]));
  t.equal(b.lastSync()?.full, false);
  t.same(nft.listed, ['list chains ip', 'list maps ip', 'list sets ip'], 'a partial sync reads nothing from the kernel');
  // Endpoint-count layout: web's key moves from n-tcp-2 to n-tcp-1 (a count not in use before:
  // its set and map created, services-by-count rewritten, n-tcp-2 and its map deleted), its
  // endpoint moves to the one-endpoint map, and one hairpin element goes.
  t.ok((b.lastSync()?.lines ?? 99) <= 14, `partial sync is small: ${b.lastScript()}`);
  t.notMatch(b.lastScript() ?? '', /198\.19\.0\.53/, 'the unchanged service is not in the transaction');
  t.ok(nft.elements('ip', 'ferry', 'n-tcp-1')?.has('198.19.0.10 . tcp . 80'), 'web is in the one-endpoint count set');
  t.same([...(nft.elements('ip', 'ferry', 'endpoints-tcp-n1') ?? [])], [['198.19.0.10 . tcp . 80 . 0', '198.18.0.2 . 8080']], 'with its one endpoint, in that count\'s map');
  t.notOk(nft.mapNames('ip', 'ferry').includes('endpoints-tcp-n2'), 'the two-endpoint map nothing uses any more is gone');
  await b.sync(ir2, ir2, changesOf([]));
  t.equal(b.lastSync()?.lines, 0, 'nothing changed: nothing applied');
  t.equal(nft.scripts.length, 2, 'no script was sent for the empty sync');
});

t.test('grouped endpoints maps are sized; one that would outgrow its size is made again by a full sync', async (t) => {
  // One-endpoint ClusterIP Services share endpoints-tcp-n1: i of them, i elements.
  const many = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => {
      const i = from + k;
      return svc({ namespace: 'm', name: `s${i}`, clusterIP: `198.19.${(i >> 8) & 255}.${i & 255}`, internal: fwd(ep(`198.18.${(i >> 8) & 255}.${i & 255}`, 8080)) });
    });
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.teardown(() => setLogSink(() => {}));
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  const small = tables(table(4, many(0, 600)));
  await b.sync(null, small, FULL);
  t.equal(nft.setSize('ip', 'ferry', 'endpoints-tcp-n1'), 1024, 'made with room for half again its 600 elements (at least 1,024)');
  t.equal(nft.setSize('ip', 'ferry', 'n-tcp-1'), 1024, 'and its count set for its 600 frontends');
  t.equal(nft.elements('ip', 'ferry', 'endpoints-tcp-n1')?.size, 600);

  // 600 → 1,000 fits: a partial sync.
  const mid = tables(table(4, many(0, 1000)));
  await b.sync(small, mid, changesOf([...mid[4].services.keys()].filter((k) => !small[4].services.has(k))));
  t.equal(b.lastSync()?.full, false, 'growing within the size is a partial sync');
  t.equal(nft.setSize('ip', 'ferry', 'endpoints-tcp-n1'), 1024, 'the map is not made again');

  // 1,000 → 1,100 does not fit: the partial compile refuses, the backend syncs in full.
  const big = tables(table(4, many(0, 1100)));
  const added = [...big[4].services.keys()].filter((k) => !mid[4].services.has(k));
  await b.sync(mid, big, changesOf(added));
  t.equal(b.lastSync()?.full, true, 'outgrowing the size makes the sync full');
  t.match(lines.join('\n'), /a set outgrew its size: syncing in full.*set=endpoints-tcp-n1.*elements=1100.*size=1024/, 'with a log line naming the map');
  t.equal(nft.setSize('ip', 'ferry', 'endpoints-tcp-n1'), groupedSetSize(1100), 'the map is made again, larger');
  t.equal(groupedSetSize(1100), 2048);
  t.equal(nft.setSize('ip', 'ferry', 'n-tcp-1'), 2048, 'and the count set');
  t.match(b.lastScript() ?? '', /^delete set ip ferry n-tcp-1\nadd set ip ferry n-tcp-1 \{ .* size 2048 ;/m);
  t.match(b.lastScript() ?? '', /^delete map ip ferry endpoints-tcp-n1\nadd map ip ferry endpoints-tcp-n1 \{ .* size 2048 ;/m, 'deleted and added in the same transaction');
  t.notMatch(b.lastScript() ?? '', /^flush map ip ferry endpoints-tcp-n1$/m, 'not flushed: it is new');
  t.equal(nft.elements('ip', 'ferry', 'endpoints-tcp-n1')?.size, 1100, 'with every element');
  const fresh = new FakeNft();
  fresh.applySync(compileFull(big, { families: [4], masqueradeMark: 0x4000 }).render());
  t.equal(nft.dumpResolved(), fresh.dumpResolved(), 'the same as a fresh full sync');

  // The next change is partial again.
  const after = tables(table(4, many(0, 1101)));
  await b.sync(big, after, changesOf([...after[4].services.keys()].filter((k) => !big[4].services.has(k))));
  t.equal(b.lastSync()?.full, false, 'and the next change is partial again');

  // What the guard prevents: the kernel (and FakeNft) refuse an element beyond the size.
  const tiny = new FakeNft();
  t.throws(() => tiny.applySync('add table ip x\nadd map ip x m { type inet_service : inet_service ; size 2 ; }\nadd element ip x m { 1 : 1, 2 : 2, 3 : 3 }\n'), /Too many open files/, 'an element beyond the size is refused');
});

t.test('a partial compile that would outgrow a grouped map throws a typed error, before writing anything', async (t) => {
  const one = (i: number) => svc({ namespace: 'g', name: `s${i}`, clusterIP: `198.19.1.${i}`, internal: fwd(ep(`198.18.1.${i}`, 80)) });
  const state = new CompileState();
  const ir1 = tables(table(4, [one(1)]));
  compileFull(ir1, { families: [4], masqueradeMark: 0x4000, state, existingMaps: { 4: new Set() } });
  const services: ReturnType<typeof one>[] = [];
  for (let i = 2; i < 1100; i++) services.push(svc({ namespace: 'g', name: `s${i}`, clusterIP: `198.19.${2 + (i >> 8)}.${i & 255}`, internal: fwd(ep(`198.18.${2 + (i >> 8)}.${i & 255}`, 80)) }));
  const ir2 = tables(table(4, [one(1), ...services]));
  t.throws(() => compilePartial(ir1, ir2, changesOf(services.map((s) => s.key)), { families: [4], masqueradeMark: 0x4000, state }), SetFullError);
});

t.test('the service sets (cluster-ips, hairpin, masquerade sets) are sized; one that would outgrow its size is made again by a full sync', async (t) => {
  // Services without endpoints: ClusterIPs only (no grouped frontend, no hairpin element).
  const bare = (to: number) =>
    Array.from({ length: to }, (_, i) => svc({ namespace: 'c', name: `s${i}`, clusterIP: `198.19.${(i >> 8) & 255}.${i & 255}`, internal: REJECT }));
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.teardown(() => setLogSink(() => {}));
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  const small = tables(table(4, bare(600)));
  await b.sync(null, small, FULL);
  for (const set of ['cluster-ips', 'hairpin', 'masq-all', 'masq-nonlocal', 'masq-nodeports']) t.equal(nft.setSize('ip', 'ferry', set), 1024, `${set} made with a size`);
  const mid = tables(table(4, bare(1000)));
  await b.sync(small, mid, changesOf([...mid[4].services.keys()].filter((k) => !small[4].services.has(k))));
  t.equal(b.lastSync()?.full, false, 'growing within the size is a partial sync');
  const big = tables(table(4, bare(1100)));
  await b.sync(mid, big, changesOf([...big[4].services.keys()].filter((k) => !mid[4].services.has(k))));
  t.equal(b.lastSync()?.full, true, 'outgrowing it makes the sync full');
  t.match(lines.join('\n'), /a set outgrew its size: syncing in full.*set=cluster-ips.*elements=1100.*size=1024/, 'with a log line naming the set');
  t.equal(nft.setSize('ip', 'ferry', 'cluster-ips'), 2048, 'made again, larger');
  t.match(b.lastScript() ?? '', /^delete set ip ferry cluster-ips\nadd set ip ferry cluster-ips \{ .* size 2048 ;/m, 'deleted and added in the same transaction');
  t.equal(nft.elements('ip', 'ferry', 'cluster-ips')?.size, 1100, 'with every element');
  const fresh = new FakeNft();
  fresh.applySync(compileFull(big, { families: [4], masqueradeMark: 0x4000 }).render());
  t.equal(nft.dumpResolved(), fresh.dumpResolved(), 'the same as a fresh full sync');
  const after = tables(table(4, bare(1101)));
  await b.sync(big, after, changesOf([...after[4].services.keys()].filter((k) => !big[4].services.has(k))));
  t.equal(b.lastSync()?.full, false, 'and the next change is partial again');
});

t.test('a partial compile that would outgrow the hairpin or a masquerade set throws a typed error', async (t) => {
  const full = (ir: ReturnType<typeof tables>, state: CompileState) => compileFull(ir, { families: [4], masqueradeMark: 0x4000, state, existingMaps: { 4: new Set() }, existingSets: { 4: new Set() } });
  const outgrows = (ir1: ReturnType<typeof tables>, ir2: ReturnType<typeof tables>): unknown => {
    const state = new CompileState();
    full(ir1, state);
    state.settle();
    const added = [...ir2[4].services.keys()].filter((k) => !ir1[4].services.has(k));
    try {
      compilePartial(ir1, ir2, changesOf(added), { families: [4], masqueradeMark: 0x4000, state });
    } catch (e) {
      return e;
    }
    return undefined;
  };
  // Hairpin: Services of 300 endpoints each (beyond the endpoint-count layout, so no grouped map), every endpoint its own address.
  const wide = (i: number) =>
    svc({ namespace: 'h', name: `w${i}`, clusterIP: `198.19.9.${i}`, internal: fwd(...Array.from({ length: 300 }, (_, j) => ep(`198.${40 + i}.${j >> 8}.${j & 255}`, 1000 + j))) });
  const two = tables(table(4, [wide(0), wide(1)]));
  const four = tables(table(4, [wide(0), wide(1), wide(2), wide(3)]));
  const h = outgrows(two, four);
  t.ok(h instanceof SetFullError, 'the hairpin set: a SetFullError');
  t.equal((h as SetFullError).set, 'hairpin');
  t.equal((h as SetFullError).elements, 1200);
  t.equal(outgrows(two, tables(table(4, [wide(0), wide(1), wide(2)]))), undefined, 'within its size: no error');
  // masq-nonlocal: one-endpoint frontends, a TCP and a UDP port per Service (one ClusterIP, one
  // endpoint address), so no count set, map, cluster-ips or hairpin outgrows first.
  const one = (i: number) => {
    const k = i >> 1;
    return svc({ namespace: 'm', name: `s${k}`, protocol: i % 2 ? 'UDP' : 'TCP', clusterIP: `198.19.${20 + (k >> 8)}.${k & 255}`, internal: fwd(ep(`198.18.${20 + (k >> 8)}.${k & 255}`, 80)) });
  };
  const some = (n: number) => tables(table(4, Array.from({ length: n }, (_, i) => one(i))));
  const m = outgrows(some(600), some(1100));
  t.ok(m instanceof SetFullError, 'masq-nonlocal: a SetFullError');
  t.equal((m as SetFullError).set, 'masq-nonlocal');
  t.equal((m as SetFullError).elements, 1100);
});

t.test('a stale chain whose rules bind a sized set does not stop the full sync that makes the set again', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  // A chain of another ferry version, binding sets a full sync deletes and adds with their size.
  nft.applySync(
    'add chain ip ferry old-checks\n' +
      'add rule ip ferry old-checks ip daddr @cluster-ips drop\n' +
      'add rule ip ferry old-checks ip saddr . ip daddr @hairpin accept\n' +
      'add rule ip ferry old-checks ip daddr . meta l4proto . th dport @masq-nonlocal accept\n' +
      'add rule ip ferry old-checks ip daddr . meta l4proto . th dport @n-tcp-2 accept\n',
  );
  const b2 = createNftablesBackend({ nft, families: [4] });
  await t.resolves(b2.sync(null, ir1, FULL), 'the full sync goes through (the stale chain is flushed before the sets are deleted)');
  t.notOk(nft.chainNames('ip', 'ferry').includes('old-checks'), 'and the stale chain is gone');
  t.match(b2.lastScript() ?? '', /^flush chain ip ferry old-checks\n(?:.*\n)*delete set ip ferry cluster-ips\n(?:.*\n)*delete chain ip ferry old-checks$/m, 'flushed before the sets are made again, deleted at the end');
  const fresh = new FakeNft();
  fresh.applySync(compileFull(ir1, { families: [4], masqueradeMark: 0x4000 }).render());
  t.equal(nft.dumpResolved(), fresh.dumpResolved(), 'the same as a fresh full sync');
});

t.test('full sync deletes chains it no longer wants (listed from the kernel)', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  // An earlier ferry kept all grouped endpoints of a protocol in one map (endpoints-tcp).
  nft.applySync('add map ip ferry endpoints-tcp { typeof ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . tcp dport ; }\n');
  t.ok(nft.mapNames('ip', 'ferry').includes('endpoints-tcp'), 'the old map is there');
  // A restart: ferry lost its memory and the cluster lost "web" meanwhile.
  const b2 = createNftablesBackend({ nft, families: [4] });
  await b2.sync(null, tables(table(4, [dns])), FULL);
  t.notOk(
    nft.chainNames('ip', 'ferry').some((n) => n.includes('/web/')),
    `stale chains of the deleted service are gone: ${nft.chainNames('ip', 'ferry').join(' ')}`,
  );
  t.notOk(nft.setNames('ip', 'ferry').includes('n-tcp-2'), 'the count set only web used is gone');
  t.notOk(nft.mapNames('ip', 'ferry').includes('endpoints-tcp-n2'), 'and its endpoints map');
  t.notOk(nft.mapNames('ip', 'ferry').includes('endpoints-tcp'), 'and the one TCP endpoints map of an earlier ferry');
  t.ok(nft.elements('ip', 'ferry', 'n-udp-1')?.has('198.19.0.53 . udp . 53'), 'the live service keeps its count set');
});

t.test('a failing apply throws NftSyncError with the failing line and changes nothing', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  // Someone edits ferry's table behind its back: the partial transaction that removes "web"
  // then deletes an element that no longer exists, and the kernel (and the fake) refuse it.
  nft.applySync(`delete element ip ferry cluster-ips { ${web.clusterIP} }\n`);
  const before = nft.dump();
  const err = await b.sync(ir1, tables(table(4, [dns])), changesOf([web.key])).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof NftSyncError, `NftSyncError thrown; got ${String(err)}`);
  const e = err as NftSyncError;
  t.equal(e.full, false);
  t.equal(e.stage, 'apply');
  t.match(e.failingLine?.text ?? '', /^delete element ip ferry/, `failing line named: ${e.failingLine?.text}`);
  t.equal(nft.dump(), before, 'the ruleset is unchanged');
});

t.test('a previous table the backend did not compile last gets a full sync', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  // Partial syncs need the endpoint blocks the compile of prev allocated; for a prev the
  // backend never compiled it cannot know them, so it rewrites everything instead of guessing.
  const stranger = tables(table(4, [web, dns]));
  const ir2 = tables(table(4, [dns]));
  await b.sync(stranger, ir2, changesOf([web.key]));
  t.equal(b.lastSync()?.full, true, 'synced in full');
  const fresh = new FakeNft();
  await createNftablesBackend({ nft: fresh, families: [4] }).sync(null, ir2, FULL);
  t.equal(nft.dumpResolved(), fresh.dumpResolved(), 'the kernel holds what a fresh full sync writes');
});

t.test('intact() notices a deleted or flushed table', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4, 6] });
  t.equal(await b.intact(), false, 'nothing installed yet');
  await b.sync(null, ir1, FULL);
  t.equal(await b.intact(), true);
  nft.applySync('flush table ip6 ferry\n');
  t.equal(await b.intact(), false, 'a flushed table (canary rule gone) is noticed');
  await b.sync(null, ir1, FULL);
  t.equal(await b.intact(), true);
  nft.applySync('delete table ip ferry\n');
  t.equal(await b.intact(), false, 'a deleted table is noticed');
});

t.test('cleanup() removes ferry and kube-proxy tables of both families; absent is fine', async (t) => {
  const nft = new FakeNft();
  const b = createNftablesBackend({ nft, families: [4] });
  await b.sync(null, ir1, FULL);
  nft.applySync('add table ip kube-proxy\nadd table ip6 kube-proxy\nadd table ip other\n');
  await b.cleanup();
  t.notOk(nft.hasTable('ip', 'ferry'));
  t.notOk(nft.hasTable('ip', 'kube-proxy'));
  t.notOk(nft.hasTable('ip6', 'kube-proxy'));
  t.ok(nft.hasTable('ip', 'other'), "someone else's table is left alone");
  await t.resolves(b.cleanup(), 'a second cleanup is fine');
});

t.test('conntrack: stale UDP endpoints and newly served UDP frontends are cleared after a sync', async (t) => {
  const nft = new FakeNft();
  const ct = new FakeConntrack();
  const b = createNftablesBackend({ nft, conntrack: ct, families: [4] });
  const dnsEmpty = { ...dns, internal: REJECT, external: REJECT, cluster: REJECT };
  const irA = tables(table(4, [web, dnsEmpty]));
  await b.sync(null, irA, FULL);
  t.same(ct.lists, [{ family: 4, protocol: 'udp' }], 'after a start the UDP table is read once');
  t.same(ct.calls, [], 'an empty table: nothing to clear');
  ct.reset();
  await b.sync(irA, ir1, changesOf([dns.key]));
  t.same(ct.lists, [], 'only the first sync reads the table');
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 }], 'flows the ClusterIP answered itself while it rejected are cleared');
  ct.reset();
  ct.failWith = new Error('netlink says no');
  await t.resolves(b.sync(ir1, irA, changesOf([dns.key])), 'a conntrack failure does not fail the sync');
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.5', replySrcPort: 53 }], "the endpoint that left is cleared through the Service's frontend");
  ct.reset();
  ct.failWith = undefined;
  // The tables the kernel held (irA) are what a full sync compares with, not "nothing":
  // unchanged, it clears nothing (it used to clear every forwarding UDP frontend, hourly).
  await b.sync(null, irA, FULL);
  t.same([ct.calls, ct.lists], [[], [{ family: 4, protocol: 'udp' }]], 'after the failed cleanup the next one reads the table (empty here: nothing to clear)');
  ct.reset();
  await b.sync(null, irA, FULL);
  t.same([ct.calls, ct.lists], [[], []], 'a full sync of the same tables clears nothing and reads nothing');
  await b.sync(null, ir1, FULL);
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 }], 'a full sync that starts serving the ClusterIP clears its undelivered flows, as a partial one');
});

t.test('conntrack: after a restart, flows to endpoints replaced while ferry was down are cleared from the listed table; serving ones are kept', async (t) => {
  const flow = (origDst: string, origDstPort: number, replySrc: string, replySrcPort: number, protocol: 'udp' | 'tcp' = 'udp') =>
    ({ family: 4, protocol, origSrc: '198.18.5.5', origSrcPort: 40000, origDst, origDstPort, replySrc, replySrcPort, replyDst: '198.18.5.5', replyDstPort: 40000 }) as const;
  const ct = new FakeConntrack();
  ct.entries = [
    flow('198.19.0.53', 53, '198.18.0.9', 53), // X: replaced by 198.18.0.5 while ferry was down
    flow('198.19.0.53', 53, '198.18.0.5', 53), // the serving endpoint
    flow('198.19.0.10', 80, '198.18.0.9', 8080, 'tcp'), // TCP: never touched
  ];
  await createNftablesBackend({ nft: new FakeNft(), conntrack: ct, families: [4] }).sync(null, ir1, FULL);
  t.same(ct.lists, [{ family: 4, protocol: 'udp' }], 'one read of the IPv4 UDP entries');
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53 }]);
  t.same(ct.entries.map((e) => `${e.protocol} ${e.replySrc}`), ['udp 198.18.0.5', 'tcp 198.18.0.9'], 'the stale flow is gone, the others remain');

  const failing = new FakeConntrack();
  failing.listFailWith = new Error('conntrack dump: Operation not permitted');
  await t.resolves(createNftablesBackend({ nft: new FakeNft(), conntrack: failing, families: [4] }).sync(null, ir1, FULL), 'a failed listing does not fail the sync');
  t.same(failing.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.19.0.53', replySrcPort: 53 }], 'without a listing, only the flows the ClusterIP answered itself');
});

t.test('conntrack: a cleanup that failed is made good by the next sync, from a listing of the table', async (t) => {
  const flow = (replySrc: string) =>
    ({ family: 4, protocol: 'udp', origSrc: '198.18.5.5', origSrcPort: 40000, origDst: '198.19.0.53', origDstPort: 53, replySrc, replySrcPort: 53, replyDst: '198.18.5.5', replyDstPort: 40000 }) as const;
  const ct = new FakeConntrack();
  const b = createNftablesBackend({ nft: new FakeNft(), conntrack: ct, families: [4] });
  const both = { ...dns, internal: fwd(ep('198.18.0.5', 53), ep('198.18.0.6', 53)) };
  const irBoth = tables(table(4, [web, both]));
  await b.sync(null, irBoth, FULL);
  ct.entries = [flow('198.18.0.5'), flow('198.18.0.6')];
  ct.reset();
  // 198.18.0.6 leaves; its flow's deletion fails (a netlink error, a full socket buffer).
  ct.failWith = new Error('conntrack delete: No buffer space available');
  await b.sync(irBoth, ir1, changesOf([dns.key]));
  t.equal(ct.entries.length, 2, 'the deletion failed: the stale flow is still there');
  ct.failWith = undefined;
  ct.reset();
  // An unrelated change: its own filters say nothing about dns.
  const web2 = { ...web, internal: fwd(ep('198.18.0.7', 8080)) };
  await b.sync(ir1, tables(table(4, [web2, dns])), changesOf([web.key]));
  t.same(ct.lists, [{ family: 4, protocol: 'udp' }], 'the next sync reads the UDP table');
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.6', replySrcPort: 53 }], 'and clears the flow the failed cleanup left');
  t.same(ct.entries.map((e) => e.replySrc), ['198.18.0.5'], 'the serving endpoint keeps its flow');
  ct.reset();
  await b.sync(tables(table(4, [web2, dns])), tables(table(4, [web, dns])), changesOf([web.key]));
  t.same(ct.lists, [], 'once it succeeded, syncs go back to their own filters');
});

t.test('conntrack: a sync\'s filters go to the kernel in one call (one table read however many)', async (t) => {
  const ct = new FakeConntrack();
  const b = createNftablesBackend({ nft: new FakeNft(), conntrack: ct, families: [4] });
  const two = fwd(ep('198.18.0.5', 53), ep('198.18.0.6', 53));
  const dns2 = svc({ namespace: 'kube-system', name: 'dns2', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.54', internal: two });
  const dnsTwo = { ...dns, internal: two };
  const stale = (origDst: string) => ({ family: 4, protocol: 'udp', origSrc: '198.18.5.5', origSrcPort: 40000, origDst, origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53, replyDst: '198.18.5.5', replyDstPort: 40000 }) as const;
  ct.entries = [stale('198.19.0.53'), stale('198.19.0.54')];
  await b.sync(null, tables(table(4, [web, dnsTwo, dns2])), FULL);
  t.same(ct.batches, [2], "after a start: both ClusterIPs' filters in one call");
  ct.reset();
  await b.sync(tables(table(4, [web, dnsTwo, dns2])), tables(table(4, [web, dns, svc({ namespace: 'kube-system', name: 'dns2', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.54', internal: fwd(ep('198.18.0.7', 53)) })])), changesOf([dns.key, dns2.key]));
  t.same(ct.batches, [3], 'three endpoints left two Services: one call');
  t.equal(ct.calls.length, 3);
  ct.reset();
  await b.sync(null, tables(table(4, [web, dns])), FULL);
  t.same(ct.batches, [1], 'a full sync: one call too');
  ct.reset();
  await b.sync(tables(table(4, [web, dns])), tables(table(4, [web, dns])), changesOf([web.key]));
  t.same(ct.batches, [], 'nothing stale: no call at all');
});
