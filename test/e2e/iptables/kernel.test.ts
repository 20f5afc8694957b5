/**
 * The iptables backend against the real kernel, each test in a fresh network namespace `fyt…`:
 *  - the kernel (iptables-nft-restore and iptables-legacy-restore) accepts every golden, twice;
 *  - random partial syncs leave exactly what a full sync leaves (normalized iptables-save);
 *  - a failing restore throws IptablesSyncError and leaves the previous rules in place;
 *  - cleanup leaves no KUBE-* chain and keeps a foreign chain;
 *  - the rules proxy: a TCP connection to a ClusterIP inside the namespace reaches the endpoint.
 * Traffic stays inside the namespaces these tests create.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import { runIn } from '../../../src/util/exec.js';
import { createIptablesBackend, cleanupIptables, IptablesSyncError } from '../../../src/backends/iptables/backend.js';
import { chainsInSave } from '../../../src/backends/iptables/cleanup.js';
import { execRunner, type IptablesRunner, type IptablesVariant } from '../../../src/backends/iptables/runner.js';
import type { IPFamily, ProxyTables } from '../../../src/plan/types.js';
import { setLogSink } from '../../../src/util/log.js';
import { freshNetns } from '../kernel/netns.js';
import { randomWalk } from '../../unit/backends/nftables/fixtures.js';
import { changesOf, ep, FULL, fwd, svc, table, tables } from '../../unit/backends/iptables/fixtures.js';

setLogSink(() => {});

const goldenDir = fileURLToPath(new URL('../../../../test/unit/backends/iptables/golden/', import.meta.url));
const TABLES = ['mangle', 'nat', 'filter'] as const;

function tool(family: IPFamily, variant: IptablesVariant, suffix: '-save' | '-restore'): string {
  return `${family === 6 ? 'ip6tables' : 'iptables'}-${variant}${suffix}`;
}

/** iptables-save of our tables without comments and counters; chains sorted, rules kept in chain order. */
async function normalizedSave(ns: string, family: IPFamily, variant: IptablesVariant = 'nft'): Promise<string> {
  const out: string[] = [];
  for (const table of TABLES) {
    const text = (await runIn(ns, [tool(family, variant, '-save'), '-t', table])).stdout;
    const chains: string[] = [];
    const rules = new Map<string, string[]>();
    for (const line of text.split('\n')) {
      if (line.startsWith(':')) chains.push(line.split(' ')[0]!);
      else if (line.startsWith('-A ')) {
        const chain = line.split(' ')[1]!;
        const l = rules.get(chain) ?? [];
        l.push(line);
        rules.set(chain, l);
      }
    }
    out.push(`*${table}`, ...chains.sort());
    for (const c of [...rules.keys()].sort()) out.push(...rules.get(c)!);
  }
  return out.join('\n');
}

for (const variant of ['nft', 'legacy'] as const) {
  t.test(`iptables-${variant}: the kernel accepts every golden, twice, and a full resync changes nothing`, async (t) => {
    const files = readdirSync(goldenDir).filter((f) => f.endsWith('.rules')).sort();
    t.ok(files.length >= 10, `goldens found in ${goldenDir}: ${files.join(', ')}`);
    for (const file of files) {
      const ns = await freshNetns(t);
      const family: IPFamily = file.includes('.v6.') ? 6 : 4;
      const input = readFileSync(goldenDir + file, 'utf8');
      const first = await runIn(ns, [tool(family, variant, '-restore'), '-w', '5', '--noflush'], { input, allowFailure: true });
      t.equal(first.exitCode, 0, `${file}: ${tool(family, variant, '-restore')} accepts it; stderr: ${first.stderr}`);
      const once = await normalizedSave(ns, family, variant);
      const second = await runIn(ns, [tool(family, variant, '-restore'), '-w', '5', '--noflush'], { input, allowFailure: true });
      t.equal(second.exitCode, 0, `${file}: accepted a second time; stderr: ${second.stderr}`);
      t.equal(await normalizedSave(ns, family, variant), once, `${file}: applying it again leaves the same rules`);
    }
  });
}

t.test('random partial syncs equal a full sync (seeded walk, both families)', async (t) => {
  const nsPartial = await freshNetns(t);
  const nsFull = await freshNetns(t);
  const families: IPFamily[] = [4, 6];
  const partial = createIptablesBackend({ netns: nsPartial, variant: 'nft', families, dropInvalid: true });
  const full = createIptablesBackend({ netns: nsFull, variant: 'nft', families, dropInvalid: true });
  const walk = randomWalk(20240611, 14, families);
  await partial.sync(null, walk.initial, FULL);
  let prev: ProxyTables = walk.initial;
  let i = 0;
  for (const step of walk.steps) {
    i++;
    await partial.sync(prev, step.next, step.changes);
    t.equal(partial.lastSync()?.full, false, `step ${i}: the sync was partial`);
    await full.sync(null, step.next, FULL);
    for (const f of families) {
      const got = await normalizedSave(nsPartial, f);
      const want = await normalizedSave(nsFull, f);
      if (got !== want) {
        t.equal(got, want, `step ${i} IPv${f}: kernel rules after partial syncs differ from a full sync (changed: ${[...step.changes.changed].join(', ')})`);
        return;
      }
    }
    prev = step.next;
  }
  // And the full-synced namespace (full over full over ...) equals a brand-new one.
  const nsFresh = await freshNetns(t);
  await createIptablesBackend({ netns: nsFresh, variant: 'nft', families, dropInvalid: true }).sync(null, prev, FULL);
  for (const f of families) t.equal(await normalizedSave(nsFull, f), await normalizedSave(nsFresh, f), `IPv${f}: repeated full syncs converge to a fresh full sync`);
});

t.test('a failing restore throws IptablesSyncError and leaves the previous rules', async (t) => {
  const ns = await freshNetns(t);
  const real = execRunner('nft', { netns: ns });
  let corrupt = false;
  const runner: IptablesRunner = {
    variant: 'nft',
    save: (f, tb) => real.save(f, tb),
    chains: (f, tb) => real.chains(f, tb),
    saveLines: (f, tb, onLine) => real.saveLines(f, tb, onLine),
    exec: (f, a) => real.exec(f, a),
    restore: (f, pieces) => {
      const input = typeof pieces === 'string' ? pieces : pieces.join('');
      return real.restore(f, corrupt ? input.replace('\nCOMMIT\n*filter', '\n-A KUBE-SERVICES -j KUBE-NO-SUCH-CHAIN\nCOMMIT\n*filter') : input);
    },
  };
  const b = createIptablesBackend({ runner, families: [4], dropInvalid: true });
  const a = svc({ namespace: 'default', name: 'web', nodePort: 30080, internal: fwd(ep('198.18.1.1', 8080)) });
  const ir1 = tables(table(4, [a]));
  await b.sync(null, ir1, FULL);
  const before = await normalizedSave(ns, 4);
  const a2 = { ...a, internal: fwd(ep('198.18.1.2', 8080)) };
  const ir2 = tables(table(4, [{ ...a2, cluster: a2.internal, external: a2.internal }]));
  corrupt = true;
  const err = await b.sync(ir1, ir2, changesOf([a.key])).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof IptablesSyncError, `IptablesSyncError thrown (got ${String(err)})`);
  if (err instanceof IptablesSyncError) {
    t.equal(err.family, 4, 'family 4');
    t.type(err.line, 'number', `the failing line is reported (stderr: ${err.stderr})`);
    t.ok(err.stderr.length > 0, 'stderr is carried');
  }
  t.equal(await normalizedSave(ns, 4), before, 'nat and filter are exactly as before the failed sync');
  corrupt = false;
  await b.sync(ir1, ir2, changesOf([a.key]));
  t.equal(b.lastSync()?.full, true, 'the next sync is full');
  t.match(await normalizedSave(ns, 4), /198\.18\.1\.2:8080/, 'and applies the new endpoint');
});

t.test("cleanup removes kube-proxy's layout (nft and legacy, v4 and v6), keeps foreign chains, KUBE-* ones too", async (t) => {
  const ns = await freshNetns(t);
  const ir = tables(
    table(4, [svc({ namespace: 'default', name: 'web', nodePort: 30080, affinityTimeoutSeconds: 60, internal: fwd(ep('198.18.1.1', 8080)) })]),
    table(6, [svc({ namespace: 'default', name: 'web', family: 6, internal: fwd(ep('2001:db8:18::1', 8080)) })]),
  );
  await createIptablesBackend({ netns: ns, variant: 'nft', dropInvalid: true }).sync(null, ir, FULL);
  // Leftovers of a kube-proxy that ran with iptables-legacy.
  await createIptablesBackend({ netns: ns, variant: 'legacy', families: [4], dropInvalid: true }).sync(null, ir, FULL);
  for (const variant of ['nft', 'legacy'] as const) {
    const r = await runIn(ns, [tool(4, variant, '-restore'), '-w', '5', '--noflush'], {
      // FOREIGN-*, and a KUBE-* chain of another program (kube-router's network policy).
      input:
        '*filter\n:FOREIGN-CHAIN - [0:0]\n:KUBE-ROUTER-FORWARD - [0:0]\n-A FOREIGN-CHAIN -j ACCEPT\n-A KUBE-ROUTER-FORWARD -j RETURN\n' +
        '-A INPUT -j FOREIGN-CHAIN\n-A FORWARD -j KUBE-ROUTER-FORWARD\nCOMMIT\n*nat\n:FOREIGN-NAT - [0:0]\n-A FOREIGN-NAT -j RETURN\nCOMMIT\n',
      allowFailure: true,
    });
    t.equal(r.exitCode, 0, `foreign chains installed (${variant}): ${r.stderr}`);
  }
  await cleanupIptables({ netns: ns });
  for (const variant of ['nft', 'legacy'] as const) {
    for (const family of [4, 6] as const) {
      for (const tb of TABLES) {
        const save = (await runIn(ns, [tool(family, variant, '-save'), '-t', tb])).stdout;
        t.same(chainsInSave(save).filter((c) => c.startsWith('KUBE-') && !c.startsWith('KUBE-ROUTER-')), [], `${variant} IPv${family} ${tb}: no KUBE-* chain of kube-proxy's layout left`);
        t.notMatch(save, /-j KUBE-(?!ROUTER-)/, `${variant} IPv${family} ${tb}: no jump to one left`);
      }
    }
    const filter = (await runIn(ns, [tool(4, variant, '-save'), '-t', 'filter'])).stdout;
    t.match(filter, /-A FOREIGN-CHAIN -j ACCEPT/, `${variant}: the foreign chain and its rule are kept`);
    t.match(filter, /-A INPUT -j FOREIGN-CHAIN/, `${variant}: the foreign jump is kept`);
    t.match(filter, /-A KUBE-ROUTER-FORWARD -j RETURN/, `${variant}: another program's KUBE-* chain is kept`);
    t.match(filter, /-A FORWARD -j KUBE-ROUTER-FORWARD/, `${variant}: and the jump to it`);
    t.match((await runIn(ns, [tool(4, variant, '-save'), '-t', 'nat'])).stdout, /:FOREIGN-NAT/, `${variant}: the foreign nat chain is kept`);
  }
  await t.resolves(cleanupIptables({ netns: ns }), 'cleaning up again (nothing left) is not an error');
});

t.test('cleanup on a node without iptables-legacy tables creates none (iptables-legacy-save -t would)', async (t) => {
  const ns = await freshNetns(t);
  await cleanupIptables({ netns: ns });
  for (const file of ['/proc/net/ip_tables_names', '/proc/net/ip6_tables_names']) {
    const r = await runIn(ns, ['cat', file], { allowFailure: true });
    t.equal(r.stdout.trim(), '', `${file} lists no table after the cleanup`);
  }
  // The check can fail: a save with -t creates the table it names.
  await runIn(ns, ['iptables-legacy-save', '-t', 'nat']);
  t.equal((await runIn(ns, ['cat', '/proc/net/ip_tables_names'])).stdout.trim(), 'nat', 'iptables-legacy-save -t nat created nat');
});

/** A one-shot TCP server inside the namespace that answers "hello from <addr>" and exits. */
function startServer(ns: string, host: string, port: number): Promise<() => void> {
  const code = `const s=require('net').createServer(c=>{c.end('hello from '+c.remoteAddress)});s.listen(${port},'${host}',()=>console.log('ready'));`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.stdout.once('data', () => resolve(() => child.kill('SIGKILL')));
    child.once('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
}

async function connect(ns: string, host: string, port: number): Promise<string> {
  const code = `const c=require('net').connect(${port},'${host}');let d='';c.on('data',b=>d+=b);c.on('end',()=>{console.log(d);process.exit(0)});c.on('error',e=>{console.log('ERR '+e.code);process.exit(0)});setTimeout(()=>{console.log('ERR timeout');process.exit(0)},3000);`;
  return (await runIn(ns, [process.execPath, '-e', code])).stdout.trim();
}

t.test('the rules proxy: ClusterIP from the node (OUTPUT) and from a client (PREROUTING), NodePort; no endpoints → rejected', async (t) => {
  // node: endpoint address 198.18.0.1 on lo, 192.0.2.1 towards the client; client: 192.0.2.2,
  // ClusterIPs routed via the node.
  const node = await freshNetns(t);
  const client = await freshNetns(t);
  await runIn(node, ['ip', 'addr', 'add', '198.18.0.1/32', 'dev', 'lo']);
  await runIn(node, ['ip', 'route', 'add', '198.19.0.0/16', 'dev', 'lo']);
  await runIn(node, ['ip', 'link', 'add', 'fyv0', 'type', 'veth', 'peer', 'name', 'fyv1']);
  await runIn(node, ['ip', 'link', 'set', 'fyv1', 'netns', client]);
  await runIn(node, ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'fyv0']);
  await runIn(node, ['ip', 'link', 'set', 'fyv0', 'up']);
  await runIn(node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await runIn(client, ['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'fyv1']);
  await runIn(client, ['ip', 'link', 'set', 'fyv1', 'up']);
  await runIn(client, ['ip', 'route', 'add', '198.19.0.0/16', 'via', '192.0.2.1']);
  const stop = await startServer(node, '198.18.0.1', 8080);
  t.teardown(stop);

  const reject = { verdict: 'reject', endpoints: [] } as const;
  const web = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', port: 80, nodePort: 30080, internal: fwd(ep('198.18.0.1', 8080, true)) });
  const empty = svc({ namespace: 'default', name: 'empty', clusterIP: '198.19.0.11', port: 80, internal: reject });
  const b = createIptablesBackend({ netns: node, families: [4], dropInvalid: true });
  await b.sync(null, tables(table(4, [web, empty], { nodeIPs: ['192.0.2.1'] })), FULL);

  t.match(await connect(node, '198.19.0.10', 80), /^hello from /, 'node → ClusterIP answered by the endpoint (nat OUTPUT)');
  const fromClient = await connect(client, '198.19.0.10', 80);
  // The endpoint is on the node itself: delivered through INPUT, so never through POSTROUTING's
  // MASQUERADE (as with kube-proxy); the client's address is seen.
  t.equal(fromClient, 'hello from 192.0.2.2', `client → ClusterIP (nat PREROUTING) answered by the endpoint (got ${JSON.stringify(fromClient)})`);
  const np = await connect(client, '192.0.2.1', 30080);
  t.equal(np, 'hello from 192.0.2.2', `client → NodePort (KUBE-NODEPORTS → KUBE-EXT → KUBE-SVC) answered (got ${JSON.stringify(np)})`);
  const refused = await connect(client, '198.19.0.11', 80);
  t.equal(refused, 'ERR ECONNREFUSED', `client → ClusterIP without endpoints is rejected (got ${JSON.stringify(refused)})`);
  t.equal(await b.intact(), true, 'intact() sees the canaries');
  await runIn(node, ['iptables-nft', '-t', 'nat', '-X', 'KUBE-PROXY-CANARY']);
  t.equal(await b.intact(), false, 'deleting a canary is noticed');
});

for (const variant of ['nft', 'legacy'] as const) {
  t.test(`iptables-${variant}: intact() holds after a sync and notices a flushed KUBE-SERVICES or a deleted canary`, async (t) => {
    const ns = await freshNetns(t);
    const b = createIptablesBackend({ netns: ns, variant, families: [4], dropInvalid: true });
    const many = Array.from({ length: 40 }, (_, i) => svc({ namespace: 'default', name: `s${i}`, clusterIP: `10.96.0.${i + 1}`, internal: fwd(ep('198.18.1.1', 8080)) }));
    const ir = tables(table(4, many));
    await b.sync(null, ir, FULL);
    t.equal(await b.intact(), true, 'intact after the sync');
    const tool4 = `iptables-${variant}`;
    await runIn(ns, [tool4, '-w', '5', '-t', 'nat', '-F', 'KUBE-SERVICES']);
    t.equal(await b.intact(), false, 'nat KUBE-SERVICES flushed: noticed');
    await b.sync(ir, ir, FULL);
    t.equal(await b.intact(), true, 'repaired by a full sync');
    await runIn(ns, [tool4, '-w', '5', '-t', 'filter', '-X', 'KUBE-PROXY-CANARY']);
    t.equal(await b.intact(), false, 'filter canary deleted: noticed');
    await b.sync(ir, ir, FULL);
    await runIn(ns, [tool4, '-w', '5', '-t', 'nat', '-A', 'KUBE-SERVICES', '-d', '10.96.9.9/32', '-j', 'ACCEPT']);
    // Only the legacy check counts a long chain's rules; the nft one probes its last rule (-C).
    t.equal(await b.intact(), variant === 'nft', variant === 'legacy' ? 'a rule appended: noticed' : 'a rule appended: not looked for');
  });
}
