/**
 * At start ferry removes what another mode — or kube-proxy — left that would still catch its
 * traffic, as kube-proxy's platformCleanup does (src/proxy/daemon.ts removeForeign), and nothing
 * else: the real backends' removal run in a fresh network namespace (`fylo<random>`, always
 * removed) holding ferry's and kube-proxy's nftables tables, kube-proxy's iptables chains and
 * another program's KUBE-* chain. Root.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run, runIn } from '../../../src/util/exec.js';

const CHILD = fileURLToPath(new URL('./leftovers-child.js', import.meta.url));

const live = new Set<string>();
process.on('exit', () => {
  for (const name of live) spawnSync('ip', ['netns', 'del', name]);
});
process.on('SIGTERM', () => process.exit(1));

async function freshNetns(t: Test): Promise<string> {
  const name = `fylo${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', name]);
  live.add(name);
  t.teardown(async () => {
    await run(['ip', 'netns', 'del', name], { allowFailure: true });
    live.delete(name);
  });
  return name;
}

async function nodeWithLeftovers(t: Test): Promise<string> {
  const ns = await freshNetns(t);
  await runIn(ns, ['nft', '-f', '-'], {
    input: [
      'add table ip ferry', 'add chain ip ferry services', 'add table ip6 ferry',
      'add table ip kube-proxy', 'add chain ip kube-proxy services',
    ].join('\n') + '\n',
  });
  await runIn(ns, ['iptables-restore', '--noflush'], {
    input: [
      '*nat', ':KUBE-SERVICES - [0:0]', ':KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]',
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp --dport 443 -j KUBE-SVC-ABCDEFGHIJKLMNOP', 'COMMIT',
      '*filter', ':KUBE-ROUTER-INPUT - [0:0]', '-A INPUT -j KUBE-ROUTER-INPUT', 'COMMIT',
    ].join('\n') + '\n',
  });
  return ns;
}

async function state(ns: string): Promise<{ tables: string[]; chains: string[] }> {
  // Only ferry's and kube-proxy's tables (iptables-nft keeps its own `ip nat`, `ip filter`).
  const tables = (await runIn(ns, ['nft', 'list', 'tables'])).stdout.split('\n').map((l) => l.trim()).filter((l) => /^table ip6? (ferry|kube-proxy)$/.test(l)).sort();
  const chains: string[] = [];
  for (const table of ['nat', 'filter']) {
    for (const line of (await runIn(ns, ['iptables-save', '-t', table])).stdout.split('\n')) if (line.startsWith(':KUBE-')) chains.push(`${table}/${line.slice(1).split(' ')[0]}`);
  }
  return { tables, chains: chains.sort() };
}

async function start(ns: string, mode: string): Promise<string> {
  return (await runIn(ns, [process.execPath, CHILD, mode], { timeoutMs: 60_000 })).stdout;
}

t.test('nftables mode: kube-proxy\'s table and iptables chains go, ferry\'s own table and a foreign KUBE-* chain stay', async (t) => {
  const ns = await nodeWithLeftovers(t);
  const log = await start(ns, 'nftables');
  const after = await state(ns);
  t.same(after.tables, ['table ip ferry', 'table ip6 ferry'], "kube-proxy's nftables table removed; ferry's own left for its first sync to replace");
  t.same(after.chains, ['filter/KUBE-ROUTER-INPUT'], "kube-proxy's layout removed (KUBE-SERVICES, KUBE-SVC-*, the PREROUTING jump); another program's KUBE-* chain kept");
  t.notMatch((await runIn(ns, ['iptables-save', '-t', 'nat'])).stdout, /KUBE-SERVICES/, 'no jump left behind');
  t.match(log, /removed what the nftables mode \(or kube-proxy\) left behind .*nftables table ip kube-proxy/, 'said in the log');
  t.match(log, /removed iptables chains/);
});

t.test("iptables mode: ferry's and kube-proxy's nftables tables go, the iptables chains stay", async (t) => {
  const ns = await nodeWithLeftovers(t);
  const log = await start(ns, 'iptables');
  const after = await state(ns);
  t.same(after.tables, [], 'both nftables tables removed (their DNAT would run in the same nat hooks)');
  t.same(after.chains, ['filter/KUBE-ROUTER-INPUT', 'nat/KUBE-SERVICES', 'nat/KUBE-SVC-ABCDEFGHIJKLMNOP'], "the iptables mode's own layout is its own to sync");
  t.match(log, /removed="nftables table ip ferry, nftables table ip kube-proxy, nftables table ip6 ferry"/);
});

t.test("kube-proxy's ipvs mode: its interface kube-ipvs0, holding the ClusterIPs, goes in every mode", async (t) => {
  for (const mode of ['nftables', 'iptables', 'userspace']) {
    const ns = await freshNetns(t);
    // A veth pair stands in for kube-proxy's dummy interface (this kernel may lack the dummy
    // driver); deleting one end deletes both.
    await runIn(ns, ['ip', 'link', 'add', 'kube-ipvs0', 'type', 'veth', 'peer', 'name', 'fyipvs1']);
    await runIn(ns, ['ip', 'addr', 'add', '10.96.0.10/32', 'dev', 'kube-ipvs0']);
    const log = await start(ns, mode);
    const links = (await runIn(ns, ['ip', '-o', 'link', 'show'])).stdout;
    t.notMatch(links, /kube-ipvs0/, `${mode}: kube-ipvs0 removed`);
    t.notMatch((await runIn(ns, ['ip', '-o', 'addr', 'show'])).stdout, /10\.96\.0\.10/, `${mode}: the ClusterIP is no longer a local address`);
    t.match(log, /kube-proxy's IPVS interface kube-ipvs0/, `${mode}: said in the log`);
  }
});

t.test('a node with nothing left behind: nothing removed, nothing logged', async (t) => {
  const log = await start(await freshNetns(t), 'userspace');
  t.notMatch(log, /removed|could not/, `quiet: ${log}`);
});
