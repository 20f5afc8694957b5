/**
 * The nftables backend against a real kernel (root), each test in fresh `fyt<rand>` network
 * namespaces that the test creates and removes:
 *  - the kernel accepts every golden full sync, also applied a second time over itself;
 *  - random partial-sync sequences leave exactly what one full sync of the final IR leaves;
 *  - a failing transaction leaves the previous ruleset intact;
 *  - the data path: ClusterIP DNAT from the node, hairpin from the endpoint itself (masqueraded),
 *    reject for a service without endpoints and for a non-service port of a ClusterIP;
 *  - intact() notices an external delete, cleanup() removes ferry's and kube-proxy's tables;
 *  - ClientIP affinity through the shared `affinity` set, over `nft -f` and over netlink: sticky
 *    per service port, kept over a resync and a restart, never to a removed endpoint.
 * All traffic stays inside the namespaces, on documentation/test addresses.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { run, runIn } from '../../../src/util/exec.js';
import { execNft, NftError } from '../../../src/backends/kernel/nft.js';
import { CompileState, compileFull, compilePartial } from '../../../src/backends/nftables/compiler.js';
import { createNftablesBackend } from '../../../src/backends/nftables/backend.js';
import { loadNative } from '../../../src/native/index.js';
import { netlinkNft } from '../../../src/backends/kernel/nft-netlink.js';
import type { NftRunner } from '../../../src/backends/kernel/nft.js';
import type { IPFamily, ProxyTables } from '../../../src/plan/types.js';
import { changesOf, ep, fwd, FULL, GOLDENS, randomWalk, REJECT, svc, table, tables } from '../../unit/backends/nftables/fixtures.js';

interface Teardown {
  teardown(fn: () => unknown): void;
}

async function freshNetns(t: Teardown): Promise<string> {
  const name = `fyt${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', name]);
  t.teardown(() => run(['ip', 'netns', 'del', name], { allowFailure: true }));
  await runIn(name, ['ip', 'link', 'set', 'lo', 'up']);
  return name;
}

/**
 * `nft -j list table` reduced to a canonical form: handles dropped, chains/sets sorted by name,
 * rules kept in chain order, set elements sorted (their order depends on insertion history).
 * Endpoint blocks are numbered by sync history, so a `numgen ... offset B` lookup in a named map
 * is replaced by the elements it selects, and such a map keeps only what no rule reaches.
 */
async function canonicalTable(ns: string, family: 'ip' | 'ip6', name = 'ferry'): Promise<string> {
  const r = await runIn(ns, ['nft', '-j', 'list', 'table', family, name], { allowFailure: true });
  if (r.exitCode !== 0) return `<no table ${family} ${name}: ${r.stderr.trim()}>`;
  const items = (JSON.parse(r.stdout) as { nftables: Record<string, Record<string, unknown>>[] }).nftables;
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (k !== 'handle') o[k] = strip(x);
      return o;
    }
    return v;
  };
  const chains = new Map<string, unknown>();
  const rules = new Map<string, unknown[]>();
  const maps = new Map<string, Record<string, unknown>>();
  for (const it of items) {
    if (it['chain']) chains.set(String(it['chain']['name']), strip(it['chain']));
    else if (it['rule']) {
      const c = String(it['rule']['chain']);
      rules.set(c, [...(rules.get(c) ?? []), strip(it['rule']['expr'])]);
    } else if (it['set'] || it['map']) {
      const s = strip(it['set'] ?? it['map']) as Record<string, unknown>;
      maps.set(String(s['name']), s);
    }
  }
  // name → element key (JSON) → element, for named maps reached by offset lookups.
  const reached = new Map<string, Set<string>>();
  const elemsOf = (name: string): Map<string, unknown> => {
    const out = new Map<string, unknown>();
    for (const e of (maps.get(name)?.['elem'] as unknown[] | undefined) ?? []) {
      if (Array.isArray(e)) out.set(JSON.stringify(e[0]), e[1]);
    }
    return out;
  };
  const resolve = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(resolve);
    if (!v || typeof v !== 'object') return v;
    const o = v as Record<string, unknown>;
    const m = o['map'] as { key?: { numgen?: { mode: string; mod: number; offset?: number } }; data?: unknown } | undefined;
    const ng = m?.key?.numgen;
    if (ng && ng.offset !== undefined && typeof m.data === 'string' && m.data.startsWith('@')) {
      const name = m.data.slice(1);
      const elems = elemsOf(name);
      let seen = reached.get(name);
      if (!seen) reached.set(name, (seen = new Set()));
      const picked: unknown[] = [];
      for (let i = 0; i < ng.mod; i++) {
        const k = JSON.stringify(ng.offset + i);
        seen.add(k);
        picked.push([i, elems.get(k) ?? '<missing>']);
      }
      return { map: { key: { numgen: { mode: ng.mode, mod: ng.mod } }, data: { set: picked } } };
    }
    const r: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) r[k] = resolve(x);
    return r;
  };
  for (const [c, list] of rules) rules.set(c, list.map(resolve));
  const sets: string[] = [];
  for (const [name, s] of maps) {
    let elem = s['elem'] as unknown[] | undefined;
    const seen = reached.get(name);
    if (elem && seen) elem = elem.filter((e) => !(Array.isArray(e) && seen.has(JSON.stringify(e[0]))));
    const c = { ...s };
    if (elem) c['elem'] = elem.map((e) => JSON.stringify(e)).sort();
    if (elem && elem.length === 0) delete c['elem'];
    sets.push(JSON.stringify(c));
  }
  const out: string[] = [];
  for (const name of [...chains.keys()].sort()) {
    out.push(`chain ${JSON.stringify(chains.get(name))}`);
    for (const r of rules.get(name) ?? []) out.push(`  ${JSON.stringify(r)}`);
  }
  out.push(...sets.sort());
  return out.join('\n');
}

async function canonical(ns: string, families: readonly IPFamily[]): Promise<string> {
  const parts: string[] = [];
  for (const f of families) parts.push(await canonicalTable(ns, f === 4 ? 'ip' : 'ip6'));
  return parts.join('\n');
}

function firstDiff(a: string, b: string): string {
  const al = a.split('\n');
  const bl = b.split('\n');
  for (let i = 0; i < Math.max(al.length, bl.length); i++) {
    if (al[i] !== bl[i]) return `line ${i + 1}:\n  got  ${al[i]}\n  want ${bl[i]}`;
  }
  return 'none';
}

t.test('the kernel accepts every golden full sync, twice', async (t) => {
  const ns = await freshNetns(t);
  const nft = execNft({ netns: ns });
  for (const g of GOLDENS) {
    const script = compileFull(g.ir, { families: g.families, masqueradeMark: 0x4000 }).render();
    await t.resolves(nft.apply(script), `${g.name}: first apply`);
    await t.resolves(nft.apply(script), `${g.name}: applied again over itself (periodic resync)`);
  }
});

t.test('random partial-sync sequences equal one full sync of the final IR (real kernel)', async (t) => {
  const nsA = await freshNetns(t);
  const nsB = await freshNetns(t);
  const nftA = execNft({ netns: nsA });
  const nftB = execNft({ netns: nsB });
  const seeds = [7, 8, 9, 10, 11, 12];
  for (const seed of seeds) {
    const fams: IPFamily[] = seed % 2 ? [4, 6] : [4];
    const walk = randomWalk(seed, 12, fams);
    // The partial sequence keeps its compile state, as the backend does; B's full sync is fresh.
    const opts = { families: fams, masqueradeMark: 0x4000, state: new CompileState() };
    await run(['ip', 'netns', 'exec', nsA, 'nft', 'flush', 'ruleset']);
    await run(['ip', 'netns', 'exec', nsB, 'nft', 'flush', 'ruleset']);
    await nftA.apply(compileFull(walk.initial, opts).render());
    let prev: ProxyTables = walk.initial;
    for (let i = 0; i < walk.steps.length; i++) {
      const step = walk.steps[i]!;
      const script = compilePartial(prev, step.next, step.changes, opts).render();
      if (script) {
        try {
          await nftA.apply(script);
        } catch (e) {
          t.fail(`seed ${seed} step ${i}: kernel rejected the partial transaction: ${(e as Error).message}\n${script}`);
          return;
        }
      }
      prev = step.next;
    }
    await nftB.apply(compileFull(prev, { families: fams, masqueradeMark: 0x4000 }).render());
    const a = await canonical(nsA, fams);
    const b = await canonical(nsB, fams);
    t.equal(a, b, `seed ${seed}: partial sequence and full sync give the same kernel ruleset; first difference ${firstDiff(a, b)}`);
  }
});

t.test('a failing transaction leaves the previous ruleset intact', async (t) => {
  const ns = await freshNetns(t);
  const nft = execNft({ netns: ns });
  const s = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080)) });
  const ir1 = tables(table(4, [s]));
  await nft.apply(compileFull(ir1, { families: [4], masqueradeMark: 0x4000 }).render());
  const before = await canonical(ns, [4]);

  const s2 = { ...s, internal: fwd(ep('198.18.0.3', 8080)), external: fwd(ep('198.18.0.3', 8080)), cluster: fwd(ep('198.18.0.3', 8080)) };
  const good = compilePartial(ir1, tables(table(4, [s2])), changesOf([s.key]), { families: [4], masqueradeMark: 0x4000 }).render();
  const bad = good + 'delete element ip ferry hairpin { 198.18.0.99 . 198.18.0.99 }\n';
  const err = await nft.apply(bad).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof NftError, `the bad transaction fails with NftError; got ${String(err)}`);
  t.match((err as NftError).failingLine?.text ?? '', /198\.18\.0\.99/, 'the error names the failing line');
  t.equal(await canonical(ns, [4]), before, 'nothing of the failed transaction was applied');
});

// ---- data path ----

function spawnIn(ns: string, code: string): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Connects from inside `ns`; resolves with `OK <what the server saw>`, `ERR <code>` or `TIMEOUT`. */
async function dial(ns: string, host: string, port: number): Promise<string> {
  const code = `const s=require('net').connect(${port},'${host}');let d='';s.on('data',x=>d+=x);s.on('end',()=>{console.log('OK '+d.trim());process.exit(0)});s.on('error',e=>{console.log('ERR '+e.code);process.exit(0)});setTimeout(()=>{console.log('TIMEOUT');process.exit(0)},3000)`;
  const r = await runIn(ns, [process.execPath, '-e', code], { allowFailure: true });
  return r.stdout.trim();
}

t.test('data path: ClusterIP, hairpin, reject; intact() and cleanup()', async (t) => {
  const node = await freshNetns(t);
  const pod = await freshNetns(t);
  const vn = `fyv${randomBytes(3).toString('hex')}`;
  await run(['ip', 'link', 'add', vn, 'netns', node, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
  await runIn(node, ['ip', 'addr', 'add', '198.18.0.1/24', 'dev', vn]);
  await runIn(node, ['ip', 'link', 'set', vn, 'up']);
  await runIn(node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  // A node has a default route; ClusterIPs are routed by it until DNAT rewrites them. Here it
  // points back into the pod link, so ICMP redirects are turned off: they would use up the
  // per-host ICMP rate limit that the reject's port-unreachable needs.
  await runIn(node, ['sysctl', '-qw', 'net.ipv4.conf.all.send_redirects=0']);
  await runIn(node, ['sysctl', '-qw', `net.ipv4.conf.${vn}.send_redirects=0`]);
  await runIn(node, ['ip', 'route', 'add', 'default', 'via', '198.18.0.2']);
  await runIn(pod, ['ip', 'addr', 'add', '198.18.0.2/24', 'dev', 'eth0']);
  await runIn(pod, ['ip', 'link', 'set', 'eth0', 'up']);
  await runIn(pod, ['ip', 'route', 'add', 'default', 'via', '198.18.0.1']);

  // The endpoint answers with the source address it saw.
  const server = spawnIn(pod, `require('net').createServer(s=>s.end(s.remoteAddress+'\\n')).listen(8080,'198.18.0.2',()=>console.log('ready'))`);
  t.teardown(() => {
    server.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('ready')) resolve();
    });
    server.on('exit', (c) => reject(new Error(`echo server exited ${c}`)));
  });

  const nft = execNft({ netns: node });
  const backend = createNftablesBackend({ nft, families: [4] });
  const web = svc({ namespace: 'd', name: 'web', clusterIP: '198.19.0.10', port: 80, clusterIPMasquerade: 'none', internal: fwd(ep('198.18.0.2', 8080, true)) });
  const empty = svc({ namespace: 'd', name: 'empty', clusterIP: '198.19.0.11', port: 80, internal: REJECT });
  const ir = tables(table(4, [web, empty], { localTraffic: { kind: 'none' } }));
  await backend.sync(null, ir, FULL);

  t.equal(await dial(node, '198.19.0.10', 80), 'OK 198.18.0.1', 'the node reaches the ClusterIP; the endpoint sees the node address');
  t.equal(await dial(pod, '198.19.0.10', 80), 'OK 198.18.0.1', 'hairpin: the endpoint reaches itself through the ClusterIP, masqueraded to the node address');
  t.equal(await dial(node, '198.19.0.11', 80), 'ERR ECONNREFUSED', 'a service without endpoints is rejected at once');
  t.equal(await dial(node, '198.19.0.10', 81), 'ERR ECONNREFUSED', 'a ClusterIP port that is not a service port is rejected');
  t.equal(await dial(pod, '198.19.0.11', 80), 'ERR ECONNREFUSED', 'rejected for forwarded traffic too');

  // One externalIP:port listed by a Service without endpoints and by one with: the reject for
  // the first is checked after DNAT (priority 0, as kube-proxy since 1.34), so the node's own
  // connection reaches the second, as a pod's does (a check before DNAT refused the node's).
  const dupEmpty = svc({ namespace: 'd', name: 'dup-a', clusterIP: '198.19.0.12', port: 80, externalIPs: ['203.0.113.80'], internal: REJECT, external: REJECT, cluster: REJECT });
  const dupServed = svc({ namespace: 'd', name: 'dup-b', clusterIP: '198.19.0.13', port: 80, externalIPs: ['203.0.113.80'], internal: fwd(ep('198.18.0.2', 8080, true)) });
  const withDup = tables(table(4, [web, empty, dupEmpty, dupServed], { localTraffic: { kind: 'none' } }));
  await backend.sync(ir, withDup, changesOf([dupEmpty.key, dupServed.key]));
  t.equal(await dial(node, '203.0.113.80', 80), 'OK 198.18.0.1', 'the node reaches the externalIP another Service serves');
  t.equal(await dial(pod, '203.0.113.80', 80), 'OK 198.18.0.1', 'and so does a pod (masqueraded: external traffic, Cluster policy)');
  await backend.sync(withDup, ir, changesOf([dupEmpty.key, dupServed.key]));

  t.equal(await backend.intact(), true, 'intact after a sync');
  await runIn(node, ['nft', 'flush', 'table', 'ip', 'ferry']);
  t.equal(await backend.intact(), false, 'intact() notices an external flush of the table');
  await backend.sync(ir, ir, FULL);
  t.equal(await backend.intact(), true, 'a full sync restores it');
  t.equal(await dial(node, '198.19.0.10', 80), 'OK 198.18.0.1', 'and the ClusterIP works again');

  await runIn(node, ['nft', 'add', 'table', 'ip', 'kube-proxy']);
  await backend.cleanup();
  const left = (await runIn(node, ['nft', 'list', 'tables'])).stdout;
  t.notMatch(left, /ferry|kube-proxy/, `cleanup removed ferry's and kube-proxy's tables; left: ${left}`);
  await t.resolves(backend.cleanup(), 'cleanup with nothing there is not an error');
});

/** The elements of the affinity set: key (JSON of the concatenation) → timeout and expiry in ms. */
async function affinityRecords(ns: string): Promise<Map<string, { timeout: number; expires: number }>> {
  const r = await runIn(ns, ['nft', '-j', 'list', 'set', 'ip', 'ferry', 'affinity']);
  const items = (JSON.parse(r.stdout) as { nftables: Record<string, { elem?: unknown[] }>[] }).nftables;
  const out = new Map<string, { timeout: number; expires: number }>();
  for (const it of items) {
    for (const e of it['set']?.elem ?? []) {
      const el = (e as { elem?: { val: unknown; timeout?: number; expires?: number } }).elem;
      out.set(JSON.stringify(el ? el.val : e), { timeout: el?.timeout ?? 0, expires: el?.expires ?? 0 });
    }
  }
  return out;
}

/** The elements of the affinity set: key → timeout in seconds. */
async function affinityElements(ns: string): Promise<Map<string, number>> {
  return new Map([...(await affinityRecords(ns))].map(([k, v]) => [k, v.timeout]));
}

const addonForAffinity = loadNative();
const affinityRunners: [string, (ns: string) => NftRunner][] = [['nft -f', (ns) => execNft({ netns: ns })]];
if (addonForAffinity?.nfnlBatch) affinityRunners.push(['netlink', (ns) => netlinkNft(addonForAffinity, { netns: ns, fallback: execNft({ netns: ns }) })]);

for (const [how, runner] of affinityRunners) {
  t.test(`data path (${how}): ClientIP affinity in one shared set, per service port, across resyncs and restarts`, async (t) => {
    const node = await freshNetns(t);
    const pod = await freshNetns(t);
    const vn = `fyv${randomBytes(3).toString('hex')}`;
    await run(['ip', 'link', 'add', vn, 'netns', node, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
    await runIn(node, ['ip', 'addr', 'add', '198.18.0.1/24', 'dev', vn]);
    await runIn(node, ['ip', 'link', 'set', vn, 'up']);
    await runIn(node, ['ip', 'route', 'add', 'default', 'via', '198.18.0.2']);
    for (const a of ['198.18.0.2/24', '198.18.0.3/24', '198.18.0.4/24']) await runIn(pod, ['ip', 'addr', 'add', a, 'dev', 'eth0']);
    await runIn(pod, ['ip', 'link', 'set', 'eth0', 'up']);
    // Three endpoints in one namespace; each answers with its own address.
    const server = spawnIn(
      pod,
      `let n=0;for(const h of ['198.18.0.2','198.18.0.3','198.18.0.4'])require('net').createServer(s=>s.end(s.localAddress+'\\n')).listen(8080,h,()=>{if(++n===3)console.log('ready')})`,
    );
    t.teardown(() => {
      server.kill('SIGKILL');
    });
    await new Promise<void>((resolve, reject) => {
      server.stdout!.on('data', (b: Buffer) => {
        if (b.toString().includes('ready')) resolve();
      });
      server.on('exit', (c) => reject(new Error(`echo server exited ${c}`)));
    });
    const dials = async (host: string, n: number): Promise<Set<string>> => {
      const seen = new Set<string>();
      for (let i = 0; i < n; i++) seen.add(await dial(node, host, 80));
      return seen;
    };

    const eps = [ep('198.18.0.2', 8080, true), ep('198.18.0.3', 8080, true), ep('198.18.0.4', 8080, true)];
    const base = { clusterIPMasquerade: 'none' as const };
    const a = svc({ namespace: 'd', name: 'a', clusterIP: '198.19.0.20', port: 80, affinityTimeoutSeconds: 600, ...base, internal: fwd(...eps) });
    const b = svc({ namespace: 'd', name: 'b', clusterIP: '198.19.0.21', port: 80, affinityTimeoutSeconds: 300, ...base, internal: fwd(...eps) });
    const ir = tables(table(4, [a, b], { localTraffic: { kind: 'none' } }));
    const backend = createNftablesBackend({ nft: runner(node), families: [4] });
    await backend.sync(null, ir, FULL);

    const seenA = await dials('198.19.0.20', 8);
    t.equal(seenA.size, 1, `one client, one endpoint of Service a: ${[...seenA].join(', ')}`);
    const x = [...seenA][0]!;
    t.match(x, /^OK 198\.18\.0\.[234]$/);
    let els = await affinityElements(node);
    t.equal(els.size, 1, 'one record in the shared set');
    t.same([...els.values()], [600], "with Service a's timeout");

    const seenB = await dials('198.19.0.21', 8);
    t.equal(seenB.size, 1, 'sticky for Service b too');
    els = await affinityElements(node);
    t.equal(els.size, 2, 'a second record: stickiness is per service port, even where both chose the same endpoint');
    t.same([...els.values()].sort(), [300, 600], 'each with its own timeout');

    await backend.sync(ir, ir, FULL);
    t.equal((await affinityElements(node)).size, 2, 'a resync (full sync) keeps the records');
    t.same(await dials('198.19.0.20', 4), new Set([x]), 'and the client stays on its endpoint');

    const restarted = createNftablesBackend({ nft: runner(node), families: [4] });
    await restarted.sync(null, ir, FULL);
    t.same(await dials('198.19.0.20', 4), new Set([x]), 'a restarted ferry (fresh state, full sync) keeps the client on its endpoint');

    // The endpoint the client sticks to goes away: never again to it, and sticky to a new one.
    const left = eps.filter((e) => `OK ${e.ip}` !== x);
    const a2 = { ...a, internal: fwd(...left), external: fwd(...left), cluster: fwd(...left) };
    const ir2 = tables(table(4, [a2, b], { localTraffic: { kind: 'none' } }));
    await restarted.sync(ir, ir2, changesOf([a.key]));
    const after = await dials('198.19.0.20', 8);
    t.notOk(after.has(x), `never to the removed endpoint ${x}`);
    t.equal(after.size, 1, `sticky to one of the others: ${[...after].join(', ')}`);
    t.equal((await affinityElements(node)).size, 3, 'the stale record stays until it expires, and steers nothing');

    // Every new connection refreshes the record's timeout, as kube-proxy's `update` does.
    const c = svc({ namespace: 'd', name: 'c', clusterIP: '198.19.0.22', port: 80, affinityTimeoutSeconds: 6, ...base, internal: fwd(...eps) });
    const ir3 = tables(table(4, [a2, b, c], { localTraffic: { kind: 'none' } }));
    await restarted.sync(ir2, ir3, changesOf([c.key]));
    const known = new Set((await affinityElements(node)).keys());
    const firstC = await dials('198.19.0.22', 1);
    const recC = async (): Promise<{ timeout: number; expires: number }> => [...(await affinityRecords(node))].find(([k]) => !known.has(k))![1];
    await new Promise((r) => setTimeout(r, 3000));
    const aged = await recC();
    t.same(await dials('198.19.0.22', 1), firstC, 'still sticky after 3 s of a 6 s timeout');
    const refreshed = await recC();
    t.equal(refreshed.timeout, 6);
    t.ok(refreshed.expires > aged.expires, `the new connection refreshed the record: expires ${aged.expires} → ${refreshed.expires}`);
  });
}
