/**
 * The netlink runner against a real kernel (root), in fresh `fyn<rand>` network namespaces the
 * test creates and always removes:
 *  - every golden full sync, and every step of random partial-sync sequences, applied over
 *    netlink in one namespace and through libnftables in another, lists identically
 *    (`nft list table`, text, elements included);
 *  - a failing batch (a rule jumping to a missing chain, deleting a missing element) leaves the
 *    kernel untouched, and the error names the failing op;
 *  - names() by netlink dump equals what `nft -j list` finds;
 *  - the backend reports `via: netlink`, and a runner whose socket cannot be opened falls back;
 *  - in its own namespace (the daemon's case) the addon keeps one socket for batches and one for
 *    dumps, and every batch's answers, refused or not, stay with that batch.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run, runIn } from '../../../src/util/exec.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { loadNative, type NativeAddon, type NfnlBatchResult } from '../../../src/native/index.js';
import { addonNft, execNft, namesByListing, namesFromJSON, NftNetlinkError, type NftRunner } from '../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../src/backends/kernel/nft-netlink.js';
import { encodeTransaction } from '../../../src/backends/nftables/netlink.js';
import { CompileState, compileFull, compilePartial } from '../../../src/backends/nftables/compiler.js';
import { createNftablesBackend } from '../../../src/backends/nftables/backend.js';
import { Transaction } from '../../../src/backends/nftables/transaction.js';
import * as R from '../../../src/backends/nftables/rules.js';
import type { IPFamily, ProxyTables } from '../../../src/plan/types.js';
import { changesOf, ep, fwd, GOLDENS, randomWalk, svc, table, tables } from '../../unit/backends/nftables/fixtures.js';

interface Teardown {
  teardown(fn: () => unknown): void;
}

// Namespaces still present when the process ends (a time limit kills the file before teardown).
const live = new Set<string>();
process.on('exit', () => {
  for (const name of live) spawnSync('ip', ['netns', 'del', name]);
});
process.on('SIGTERM', () => process.exit(1));

async function freshNetns(t: Teardown): Promise<string> {
  const name = `fyn${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', name]);
  live.add(name);
  t.teardown(async () => {
    await run(['ip', 'netns', 'del', name], { allowFailure: true });
    live.delete(name);
  });
  return name;
}

// Dozens of namespaced nft listings: well within 30 s alone, not on a loaded 2-core machine.
t.setTimeout(scaledMs(5 * 60_000));

const addon = loadNative();
if (!addon?.nfnlBatch) throw new Error('the native addon with nf_tables netlink support is required (cd native && npx node-gyp rebuild)');
const native: NativeAddon = addon;

/** libnftables in a namespace: the addon acts on its caller's namespace, so `nft -f` it is. */
function scriptRunner(ns: string): NftRunner {
  return execNft({ netns: ns });
}

function netlinkRunner(ns: string): NftRunner {
  return netlinkNft(native, { netns: ns, fallback: scriptRunner(ns) });
}

async function listing(ns: string, families: readonly IPFamily[], table = 'ferry'): Promise<string> {
  const out: string[] = [];
  for (const f of families) {
    const r = await runIn(ns, ['nft', 'list', 'table', f === 4 ? 'ip' : 'ip6', table], { allowFailure: true });
    out.push(r.exitCode === 0 ? r.stdout : `<no table: ${r.stderr.trim()}>`);
  }
  return out.join('\n');
}

function firstDiff(a: string, b: string): string {
  const al = a.split('\n');
  const bl = b.split('\n');
  for (let i = 0; i < Math.max(al.length, bl.length); i++) {
    if (al[i] !== bl[i]) return `line ${i + 1}:\n  netlink      ${al[i]}\n  libnftables  ${bl[i]}`;
  }
  return 'none';
}

t.test('golden full syncs list identically over netlink and through nft', async (t) => {
  const nsN = await freshNetns(t);
  const nsS = await freshNetns(t);
  const viaNetlink = netlinkRunner(nsN);
  const viaScript = scriptRunner(nsS);
  for (const g of GOLDENS) {
    await run(['ip', 'netns', 'exec', nsN, 'nft', 'flush', 'ruleset']);
    await run(['ip', 'netns', 'exec', nsS, 'nft', 'flush', 'ruleset']);
    const tx = compileFull(g.ir, { families: g.families, masqueradeMark: 0x4000 });
    await t.resolves(viaNetlink.applyTransaction!(tx), `${g.name}: netlink apply`);
    await viaScript.apply(tx.render());
    const a = await listing(nsN, g.families);
    const b = await listing(nsS, g.families);
    t.equal(a, b, `${g.name}: same listing; first difference ${firstDiff(a, b)}`);
    // A periodic full resync over itself.
    await t.resolves(viaNetlink.applyTransaction!(tx), `${g.name}: netlink apply again over itself`);
    await viaScript.apply(tx.render());
    t.equal(await listing(nsN, g.families), await listing(nsS, g.families), `${g.name}: same listing after a second full sync`);
  }
});

t.test('anonymous maps and sets, prefixes, interval sets, 5000-endpoint maps list identically', async (t) => {
  const nsN = await freshNetns(t);
  const nsS = await freshNetns(t);
  const eps = [ep('198.18.0.2', 80), ep('198.18.0.3', 81), ep('198.18.0.4', 82)];
  for (const f of [4, 6] as const) {
    const fs = R.familySyntax(f);
    const tx = new Transaction();
    const target = `${fs.nft} t`;
    const v6eps = [ep('2001:db8::2', 80), ep('2001:db8::3', 81)];
    tx.addTable(target).addChain(target, { name: 'c', base: { type: 'nat', hook: 'output', priority: -100 } });
    tx.addSet(target, { name: 'local-cidrs', type: fs.addrType, flags: ['interval'] });
    tx.addRule(target, 'c', R.dnatRandom(fs, 'TCP', f === 4 ? eps : v6eps, 'fromNode'));
    tx.addRule(target, 'c', R.firewallDrop(fs, f === 4 ? ['10.0.0.0/8', '10.1.0.0/16', '192.168.0.0/24', '192.168.1.0/24', '0.0.0.0/32'] : ['2001:db8::/32', '::1/128']));
    tx.addChain(target, { name: 'd' });
    tx.addRule(target, 'c', R.randomEndpointChain(fs, ['d', 'd', 'd'], 'localSrc'));
    for (const one of f === 4 ? ['203.0.113.0/25', '203.0.113.0/24', '203.0.113.7', '0.0.0.0/0'] : ['2001:db8::/64', '2001:db8::/65']) {
      tx.addRule(target, 'c', R.firewallDrop(fs, [one]));
    }
    tx.addRule(target, 'd', R.dnatTo(fs, 'UDP', f === 4 ? ep('198.18.0.9', 53) : ep('2001:db8::9', 53), 'notLocalSrc'));
    // More endpoints than a block: an anonymous map whose elements need several messages.
    const many = Array.from({ length: 5000 }, (_, i) => (f === 4 ? ep(`198.18.${i >> 8}.${i & 255}`, 8080) : ep(`2001:db8::${i.toString(16)}`, 8080)));
    tx.addRule(target, 'd', R.dnatRandom(fs, 'TCP', many, ''));
    tx.addElement(target, 'local-cidrs', f === 4 ? '10.0.0.0/16' : '2001:db8::/64');
    tx.addElement(target, 'local-cidrs', f === 4 ? '10.1.0.0/16' : '2001:db9::/64');
    tx.addElement(target, 'local-cidrs', f === 4 ? '10.3.0.0/16' : '2001:db9:0:1::/64'); // 10.1 is adjacent to 10.0
    tx.addElement(target, 'local-cidrs', f === 4 ? '255.255.255.0/24' : 'ffff::/16'); // up to the top
    await netlinkRunner(nsN).applyTransaction!(tx);
    await scriptRunner(nsS).apply(tx.render());
    const a = (await runIn(nsN, ['nft', 'list', 'table', fs.nft, 't'])).stdout;
    const b = (await runIn(nsS, ['nft', 'list', 'table', fs.nft, 't'])).stdout;
    t.equal(a, b, `IPv${f}: same listing; first difference ${firstDiff(a, b)}`);
  }
});

t.test('random partial-sync sequences: netlink and nft give the same kernel ruleset at every step', async (t) => {
  const nsN = await freshNetns(t);
  const nsS = await freshNetns(t);
  const viaNetlink = netlinkRunner(nsN);
  const viaScript = scriptRunner(nsS);
  for (const seed of [21, 22, 23, 24, 25, 26]) {
    const fams: IPFamily[] = seed % 2 ? [4, 6] : [4];
    const walk = randomWalk(seed, 12, fams);
    const opts = { families: fams, masqueradeMark: 0x4000, state: new CompileState() };
    await run(['ip', 'netns', 'exec', nsN, 'nft', 'flush', 'ruleset']);
    await run(['ip', 'netns', 'exec', nsS, 'nft', 'flush', 'ruleset']);
    const first = compileFull(walk.initial, opts);
    await viaNetlink.applyTransaction!(first);
    await viaScript.apply(first.render());
    let prev: ProxyTables = walk.initial;
    for (let i = 0; i < walk.steps.length; i++) {
      const step = walk.steps[i]!;
      const tx = compilePartial(prev, step.next, step.changes, opts);
      prev = step.next;
      if (tx.size === 0) continue;
      try {
        await viaNetlink.applyTransaction!(tx);
      } catch (e) {
        t.fail(`seed ${seed} step ${i}: kernel rejected the netlink batch: ${(e as Error).message}\n${tx.render()}`);
        return;
      }
      await viaScript.apply(tx.render());
      const a = await listing(nsN, fams);
      const b = await listing(nsS, fams);
      if (a !== b) {
        t.equal(a, b, `seed ${seed} step ${i}: same listing; first difference ${firstDiff(a, b)}`);
        return;
      }
    }
    t.pass(`seed ${seed}: ${walk.steps.length} partial syncs list identically`);
  }
});

t.test('counts coming into use and going out of use: only their rules are added and deleted, in place, over netlink', async (t) => {
  const nsN = await freshNetns(t);
  const nsS = await freshNetns(t);
  const viaNetlink = netlinkRunner(nsN);
  const viaScript = scriptRunner(nsS);
  // ClusterIP-only Services (the endpoint-count layout): Service `name` with `n` endpoints.
  const grouped = (name: string, n: number, last: number): ReturnType<typeof svc> =>
    svc({ namespace: 'c', name, clusterIP: `198.19.7.${last}`, internal: fwd(...Array.from({ length: n }, (_, j) => ep(`198.18.7.${last * 10 + j}`, 8080))) });
  const irs: ProxyTables[] = [
    tables(table(4, [grouped('a', 1, 1), grouped('b', 3, 2), grouped('c', 5, 3)])),
    // 1 goes out of use, 2 and 4 come into use (4 between the kept 3 and 5).
    tables(table(4, [grouped('a', 2, 1), grouped('b', 3, 2), grouped('c', 5, 3), grouped('d', 4, 4)])),
    // 3 and 5 go, 6 comes after the kept 4; 2 is unchanged.
    tables(table(4, [grouped('a', 2, 1), grouped('c', 6, 3), grouped('d', 4, 4)])),
    // Both ends: a count before every kept one (1) and after (7).
    tables(table(4, [grouped('a', 1, 1), grouped('c', 6, 3), grouped('d', 4, 4), grouped('e', 7, 5)])),
  ];
  const opts = { families: [4] as const, masqueradeMark: 0x4000, state: new CompileState() };
  const first = compileFull(irs[0]!, opts);
  await viaNetlink.applyTransaction!(first);
  await viaScript.apply(first.render());
  // `nft -a`: each count rule's set and handle.
  const handles = async (): Promise<Map<string, string>> => {
    const r = await runIn(nsN, ['nft', '-a', 'list', 'chain', 'ip', 'ferry', 'services-by-count']);
    const out = new Map<string, string>();
    for (const m of r.stdout.matchAll(/@(n-tcp-\d+|masq-\w+) .*# handle (\d+)/g)) out.set(m[1]!, m[2]!);
    return out;
  };
  for (let i = 1; i < irs.length; i++) {
    const before = await handles();
    const tx = compilePartial(irs[i - 1]!, irs[i]!, changesOf(['c/a:http/TCP', 'c/b:http/TCP', 'c/c:http/TCP', 'c/d:http/TCP', 'c/e:http/TCP']), opts);
    t.ok(tx.ops.some((op) => op.kind === 'countRules'), `step ${i}: counts changed`);
    await viaNetlink.applyTransaction!(tx);
    await viaScript.apply(tx.render());
    const a = await listing(nsN, [4]);
    t.equal(a, await listing(nsS, [4]), `step ${i}: in place over netlink lists as the rewritten chain through nft`);
    const after = await handles();
    const kept = [...before.keys()].filter((k) => after.has(k));
    t.ok(kept.length >= 2, `step ${i}: rules kept (${kept.join(' ')})`);
    t.same(kept.map((k) => after.get(k)), kept.map((k) => before.get(k)), `step ${i}: the kept rules keep their handles (not rewritten)`);
  }
  t.match(await listing(nsN, [4]), /@n-tcp-1 [^\n]*\n[^\n]*@n-tcp-4 [^\n]*\n[^\n]*@n-tcp-6 [^\n]*\n[^\n]*@n-tcp-7 /, 'the count rules in order');
});

t.test('a failing batch leaves the kernel untouched and names the failing op', async (t) => {
  const ns = await freshNetns(t);
  const nft = netlinkRunner(ns);
  const s = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080)) });
  const ir1 = tables(table(4, [s]));
  await nft.applyTransaction!(compileFull(ir1, { families: [4], masqueradeMark: 0x4000 }));
  const before = await listing(ns, [4]);

  const s2 = { ...s, internal: fwd(ep('198.18.0.3', 8080)), external: fwd(ep('198.18.0.3', 8080)), cluster: fwd(ep('198.18.0.3', 8080)) };
  const good = () => compilePartial(ir1, tables(table(4, [s2])), changesOf([s.key]), { families: [4], masqueradeMark: 0x4000 });

  const missingElement = good().deleteElement('ip ferry', 'hairpin', '198.18.0.99 . 198.18.0.99');
  const e1 = await nft.applyTransaction!(missingElement).then(() => undefined, (e: unknown) => e);
  t.ok(e1 instanceof NftNetlinkError, `deleting a missing element fails with NftNetlinkError; got ${String(e1)}`);
  if (e1 instanceof NftNetlinkError) {
    t.equal(e1.errnoName, 'ENOENT', 'ENOENT');
    t.equal(e1.opIndex, missingElement.size - 1, 'the failing op is the delete');
    t.match(e1.opText, /delete element ip ferry hairpin \{ 198\.18\.0\.99 \. 198\.18\.0\.99 \}/, 'the error names the element');
    t.match(e1.message, /198\.18\.0\.99/, 'and so does the message');
  }
  t.equal(await listing(ns, [4]), before, 'nothing of the failed batch was applied');

  // The same batch through the addon's two calls: on a pool thread, and on this (JS) thread, which
  // the runner uses for small batches in its own namespace (the daemon's case).
  // The JS thread never enters a namespace (nfnlBatchSync refuses one), so both run in a child
  // started inside it, as the daemon runs in its own.
  if (native.nfnlBatchSync) {
    const bytes = encodeTransaction(missingElement).bytes;
    const child = fileURLToPath(new URL('./batch-sync-child.js', import.meta.url));
    const r = await run(['ip', 'netns', 'exec', ns, process.execPath, child, Buffer.from(bytes).toString('hex')], { allowFailure: true });
    t.equal(r.exitCode, 0, `the child ran: ${r.stderr.slice(-2000)}`);
    const { onPool, onThisThread } = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { onPool: NfnlBatchResult; onThisThread: NfnlBatchResult };
    t.equal(onThisThread.ok, false, 'nfnlBatchSync reports the refused batch');
    t.same(onThisThread.errors, onPool.errors, 'with the same errors as nfnlBatch (sequence, errno, extack offset and message)');
    t.equal(await listing(ns, [4]), before, 'and neither applied anything');
    t.throws(() => native.nfnlBatchSync!(bytes, `/var/run/netns/${ns}`), { name: 'TypeError', message: /no netns on the JS thread/ }, 'nfnlBatchSync with a namespace is refused');
  } else t.fail('the addon has no nfnlBatchSync');

  // Several elements in one message: the extack offset picks the right one.
  const many = good();
  for (let i = 0; i < 300; i++) many.addElement('ip ferry', 'cluster-ips', `198.19.${i >> 8}.${i & 255}`);
  many.deleteElement('ip ferry', 'cluster-ips', '198.19.0.5').deleteElement('ip ferry', 'cluster-ips', '198.19.0.6').deleteElement('ip ferry', 'cluster-ips', '198.20.0.1');
  const e2 = await nft.applyTransaction!(many).then(() => undefined, (e: unknown) => e);
  t.ok(e2 instanceof NftNetlinkError, 'deleting one missing element among several fails');
  if (e2 instanceof NftNetlinkError) t.match(e2.opText, /198\.20\.0\.1/, `the error names the missing element among three in one message: ${e2.message}`);
  t.equal(await listing(ns, [4]), before, 'nothing of that batch was applied');

  const missingChain = good().addRule('ip ferry', 'services', R.jump('no-such-chain'));
  const e3 = await nft.applyTransaction!(missingChain).then(() => undefined, (e: unknown) => e);
  t.ok(e3 instanceof NftNetlinkError, 'a rule jumping to a missing chain fails');
  if (e3 instanceof NftNetlinkError) {
    t.equal(e3.opIndex, missingChain.size - 1, 'the failing op is that rule');
    t.match(e3.opText, /add rule ip ferry services jump no-such-chain/, 'the error names the rule');
  }
  t.equal(await listing(ns, [4]), before, 'nothing of that batch was applied');
});

t.test('names by netlink dump equal names by listing; the backend reports via netlink', async (t) => {
  const ns = await freshNetns(t);
  const nft = netlinkRunner(ns);
  const g = GOLDENS.find((x) => x.families.length === 2) ?? GOLDENS[0]!;
  const backend = createNftablesBackend({ nft, families: g.families });
  await backend.sync(null, g.ir, { full: true, tableChanged: true, changed: new Set() } as never);
  t.equal(backend.lastSync()?.via, 'netlink', 'the sync went over netlink');
  for (const fam of ['ip', 'ip6'] as const) {
    const byDump = await nft.names!(fam, 'ferry');
    const byList = await namesByListing(scriptRunner(ns), fam, 'ferry');
    t.same([...byDump.chains].sort(), [...byList.chains].sort(), `${fam}: chains`);
    t.same([...byDump.maps].sort(), [...byList.maps].sort(), `${fam}: maps`);
    const listedSets = namesFromJSON((await runIn(ns, ['nft', '-j', '-t', 'list', 'sets', fam])).stdout, 'ferry', 'set');
    t.same([...(byDump.sets ?? [])].sort(), [...listedSets].sort(), `${fam}: sets`);
  }
  t.same([...(await nft.names!('ip', 'absent')).chains], [], 'an absent table has no names');
  t.equal(await backend.intact(), true, 'intact() by rule dump: the canary is there');
  await run(['ip', 'netns', 'exec', ns, 'nft', 'flush', 'chain', 'ip', 'ferry', 'ferry-canary']);
  t.equal(await backend.intact(), false, 'intact() notices the flushed canary chain');
  t.equal(await nft.ruleCount!('ip', 'absent', 'x'), 0, 'no rules in an absent table');
  // A second full sync finds nothing stale and is accepted.
  await t.resolves(backend.sync(g.ir, g.ir, { full: true, tableChanged: true, changed: new Set() } as never), 'a second full sync');
  t.equal(await backend.intact(), true, 'the full sync restored the canary');
  await t.resolves(backend.cleanup(), 'cleanup over netlink');
  t.match(await listing(ns, [4]), /no table/, 'cleanup removed the table');
});

/**
 * The IPv4 table in `ns` lists as one fresh full sync of `ir` through libnftables does (lines
 * sorted: a set or map made again is listed after those made before it).
 */
async function listsAsFreshFullSync(t: Teardown & { equal: (a: unknown, b: unknown, m: string) => void }, ns: string, ir: ProxyTables): Promise<void> {
  const fresh = await freshNetns(t);
  await scriptRunner(fresh).apply(compileFull(ir, { families: [4], masqueradeMark: 0x4000 }).render());
  const got = (await listing(ns, [4])).split('\n').sort().join('\n');
  const want = (await listing(fresh, [4])).split('\n').sort().join('\n');
  t.equal(got, want, `lists as a fresh full sync does (${firstDiff(got, want)})`);
}

t.test('a grouped endpoints map has its size in the kernel; one that would outgrow it is made again by a full sync', async (t) => {
  const ns = await freshNetns(t);
  const nft = netlinkRunner(ns);
  // One-endpoint ClusterIP Services share endpoints-tcp-n1: n of them, n elements.
  const many = (n: number): ProxyTables =>
    tables(table(4, Array.from({ length: n }, (_, i) => svc({ namespace: 'm', name: `s${i}`, clusterIP: `198.19.${i >> 8}.${i & 255}`, internal: fwd(ep(`198.18.${i >> 8}.${i & 255}`, 8080)) }))));
  const added = (a: ProxyTables, b: ProxyTables) => changesOf([...b[4].services.keys()].filter((k) => !a[4].services.has(k)));
  const backend = createNftablesBackend({ nft, families: [4] });
  const mapOf = async (): Promise<string> => (await runIn(ns, ['nft', 'list', 'map', 'ip', 'ferry', 'endpoints-tcp-n1'])).stdout;
  const countSetOf = async (): Promise<string> => (await runIn(ns, ['nft', 'list', 'set', 'ip', 'ferry', 'n-tcp-1'])).stdout;
  const ir600 = many(600);
  await backend.sync(null, ir600, { full: true, tableChanged: true, changed: new Set() } as never);
  t.match(await mapOf(), /^\s*size 1024$/m, 'the kernel holds the size: half again its 600 elements, at least 1,024');
  t.match(await countSetOf(), /^\s*size 1024$/m, 'and the count set its own');
  const setOf = async (name: string): Promise<string> => (await runIn(ns, ['nft', 'list', 'set', 'ip', 'ferry', name])).stdout;
  for (const name of ['cluster-ips', 'hairpin', 'masq-nonlocal']) t.match(await setOf(name), /^\s*size 1024$/m, `and ${name} its own`);

  // The kernel enforces it: more elements than the size are refused, and nothing of the batch applies.
  const over = new Transaction();
  for (let i = 0; i < 500; i++) over.addElement('ip ferry', 'endpoints-tcp-n1', R.groupedEndpointKey(`10.1.${i >> 8}.${i & 255} . tcp . 80`, 0), '10.0.0.1 . 80');
  const before = await mapOf();
  await t.rejects(nft.applyTransaction!(over), /ENFILE|Too many open files/, 'the kernel refuses elements beyond the size');
  t.equal(await mapOf(), before, 'and keeps the map as it was');

  const ir1000 = many(1000);
  await backend.sync(ir600, ir1000, added(ir600, ir1000));
  t.equal(backend.lastSync()?.full, false, 'growing within the size is a partial sync');
  const ir1100 = many(1100);
  await backend.sync(ir1000, ir1100, added(ir1000, ir1100));
  t.equal(backend.lastSync()?.full, true, 'outgrowing it makes the sync full');
  t.match(await mapOf(), /^\s*size 2048$/m, 'which makes the map again, larger, in the same transaction');
  t.match(await countSetOf(), /^\s*size 2048$/m, 'and the count set');
  for (const name of ['cluster-ips', 'hairpin', 'masq-nonlocal']) t.match(await setOf(name), /^\s*size 2048$/m, `and ${name}, bound by rules of base and regular chains, made again in the same transaction`);

  await listsAsFreshFullSync(t, ns, ir1100);
});

t.test('a full sync makes its sized sets again even when a stale chain of another ferry binds them', async (t) => {
  const ns = await freshNetns(t);
  const nft = netlinkRunner(ns);
  const ir = tables(table(4, [svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080), ep('198.18.0.3', 8080)) })]));
  await createNftablesBackend({ nft, families: [4] }).sync(null, ir, { full: true, tableChanged: true, changed: new Set() } as never);
  const script = [
    'add chain ip ferry old-checks',
    'add rule ip ferry old-checks ip daddr @cluster-ips drop',
    'add rule ip ferry old-checks ip saddr . ip daddr @hairpin accept',
    'add rule ip ferry old-checks ip daddr . meta l4proto . th dport @n-tcp-2 accept',
  ].join('\n');
  const added = await runIn(ns, ['nft', '-f', '-'], { input: script });
  t.equal(added.exitCode, 0, `the stale chain is added (${added.stderr.trim()})`);
  // A restart: a new backend, which knows the kernel only by its names.
  const backend = createNftablesBackend({ nft, families: [4] });
  await t.resolves(backend.sync(null, ir, { full: true, tableChanged: true, changed: new Set() } as never), 'the kernel takes the full sync');
  t.notMatch(await listing(ns, [4]), /old-checks/, 'the stale chain is gone');
  await listsAsFreshFullSync(t, ns, ir);
});

t.test('in its own namespace the addon keeps its sockets, and answers never cross batches', async (t) => {
  const ns = await freshNetns(t);
  const child = fileURLToPath(new URL('./kept-socket-child.js', import.meta.url));
  const r = await run(['ip', 'netns', 'exec', ns, process.execPath, child], { allowFailure: true });
  t.equal(r.exitCode, 0, `the child ran: ${r.stderr.slice(-2000)}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { afterFirst: string[]; atEnd: string[]; afterConntrack: string[]; rounds: { step: string; result: string }[] };
  for (const { step, result } of out.rounds) {
    const i = step.split(' ')[0];
    if (step.endsWith('refused small')) t.equal(result, `ENOENT delete element ip ferry cluster-ips { 198.19.2.${i} }`, `${step}: refused, naming its own missing element`);
    else if (step.endsWith('refused large')) t.equal(result, `ENOENT delete element ip ferry cluster-ips { 198.19.3.${i} }`, `${step}: refused, naming its own missing element`);
    else t.equal(result, 'ok', `${step}: accepted, no answer left from the batch before`);
  }
  t.equal(out.rounds.length, 6 * 7, 'every step reported');
  // Closing a socket would make nf_tables wait out an RCU grace period (native/src/nfnl.cc).
  t.equal(out.afterFirst.length, 1, `one nf_tables socket open after the first batch: ${out.afterFirst.join(',')}`);
  t.equal(out.atEnd.length, 2, `two at the end, the batch socket and the dump socket: ${out.atEnd.join(',')}`);
  t.ok(out.afterFirst.every((s) => out.atEnd.includes(s)), 'the first batch\'s socket carried all the others');
  t.equal(out.afterConntrack.length, 3, `three conntrack deletions keep one ctnetlink socket: ${out.afterConntrack.join(',')}`);
  t.ok(out.atEnd.every((s) => out.afterConntrack.includes(s)), 'beside the two kept before');
  const set = (await runIn(ns, ['nft', 'list', 'set', 'ip', 'ferry', 'cluster-ips'])).stdout;
  for (let i = 0; i < 6; i++) {
    t.match(set, new RegExp(`198\\.19\\.5\\.${i}\\b`), `198.19.5.${i} is in cluster-ips`);
    t.notMatch(set, new RegExp(`198\\.19\\.[0-4]\\.${i}\\b`), `no other 198.19 element of round ${i}`);
  }
  t.notMatch(set, /198\.20\./, 'nothing of the refused large batches');
});

t.test('a netlink socket that cannot be used falls back to the script runner, visibly', async (t) => {
  const ns = await freshNetns(t);
  const fallback = scriptRunner(ns);
  const nft = netlinkNft(native, { netns: '/nonexistent/netns', fallback });
  t.equal(nft.via, 'netlink', 'netlink until proven otherwise');
  const tx = compileFull(GOLDENS[0]!.ir, { families: GOLDENS[0]!.families, masqueradeMark: 0x4000 });
  await t.resolves(nft.applyTransaction!(tx), 'the transaction still applies');
  t.equal(nft.via, 'exec', 'via now names the fallback');
  t.match(await listing(ns, GOLDENS[0]!.families), /table ip ferry/, 'through the fallback');
  t.equal(await nft.ruleCount!('ip', 'ferry', 'ferry-canary'), 1, 'the canary counted by listing on the fallback');
  void addonNft;
});
