/**
 * The nft runners against a real kernel, each test in its own namespace: a transaction applies
 * whole or not at all, errors name the failing line, listings come back as text and JSON. Every
 * behaviour is checked for both runners (libnftables in-process and the nft command), and the
 * resulting ruleset is read back with the nft command itself.
 */
import t from 'tap';
import { runIn } from '../../../src/util/exec.js';
import { NftError, execNft } from '../../../src/backends/kernel/nft.js';
import { freshNetns, childNft, inChild } from './netns.js';

async function ruleset(ns: string): Promise<string> {
  return (await runIn(ns, ['nft', 'list', 'ruleset'])).stdout;
}

const BASE = [
  'add table ip fyt',
  'add chain ip fyt services',
  'add map ip fyt svcmap { type ipv4_addr . inet_proto . inet_service : verdict; }',
  'add element ip fyt svcmap { 198.18.0.10 . tcp . 80 : goto services }',
  '',
].join('\n');

for (const via of ['addon', 'exec'] as const) {
  t.test(`${via}: a transaction creates a table, chain and map that list back`, async (t) => {
    const ns = await freshNetns(t);
    const nft = childNft(ns, via);
    await nft.apply(BASE);
    const rs = await ruleset(ns);
    t.match(rs, /chain services \{/, `nft list ruleset shows the chain; got:\n${rs}`);
    t.match(rs, /198\.18\.0\.10 \. tcp \. 80 : goto services/, `the map element is there; got:\n${rs}`);

    const text = await nft.list('list table ip fyt');
    t.match(text, /map svcmap \{/, 'listing the table as text shows the map');
    const json: unknown = JSON.parse(await nft.list('list table ip fyt', { json: true }));
    const objs = (json as { nftables: Record<string, unknown>[] }).nftables;
    t.ok(
      objs.some((o) => (o['chain'] as { name?: string } | undefined)?.name === 'services'),
      `JSON listing has the chain; got ${JSON.stringify(objs)}`,
    );
    const withHandles = await nft.list('list chain ip fyt services', { handles: true });
    t.match(withHandles, /# handle \d+/, `handles are shown when asked; got:\n${withHandles}`);
  });

  t.test(`${via}: a syntax error on line 3 applies nothing and names line 3`, async (t) => {
    const ns = await freshNetns(t);
    const nft = childNft(ns, via);
    await nft.apply(BASE);
    const before = await ruleset(ns);
    const script = [
      'add table ip fyt2',
      'add chain ip fyt services2',
      'add rule ip fyt services2 tcp dport 80 bogus-verdict',
      'add element ip fyt svcmap { 198.18.0.11 . tcp . 81 : goto services }',
    ].join('\n');
    const err = await nft.apply(script).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof NftError, `apply must reject with NftError; got ${String(err)}`);
    if (!(err instanceof NftError)) return;
    t.equal(err.via, via);
    t.same(err.failingLine, { lineNo: 3, text: 'add rule ip fyt services2 tcp dport 80 bogus-verdict' }, `stderr was: ${err.stderr}`);
    t.match(err.message, /line 3/);
    t.equal(await ruleset(ns), before, 'the ruleset is exactly what it was before the failed transaction');
  });

  t.test(`${via}: a kernel-rejected command on line 3 rolls back lines 1-2`, async (t) => {
    const ns = await freshNetns(t);
    const nft = childNft(ns, via);
    await nft.apply(BASE);
    const before = await ruleset(ns);
    // Lines 1-2 are valid and only fail as a batch: the kernel says EEXIST for line 3.
    const script = ['add table ip fyt2', 'add element ip fyt svcmap { 198.18.0.11 . tcp . 81 : goto services }', 'create table ip fyt'].join('\n');
    const err = await nft.apply(script).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof NftError, `apply must reject with NftError; got ${String(err)}`);
    if (!(err instanceof NftError)) return;
    t.equal(err.failingLine?.lineNo, 3, `failing line should be 3; stderr was: ${err.stderr}`);
    t.equal(err.failingLine?.text, 'create table ip fyt');
    t.match(err.nftMessage, /File exists/);
    const after = await ruleset(ns);
    t.equal(after, before, 'neither table fyt2 nor the new element was applied');
  });

  t.test(`${via}: listing a missing table fails with NftError`, async (t) => {
    const ns = await freshNetns(t);
    const err = await childNft(ns, via)
      .list('list table ip nope')
      .then(
        () => null,
        (e: unknown) => e,
      );
    t.ok(err instanceof NftError, `expected NftError, got ${String(err)}`);
    if (err instanceof NftError) t.match(err.nftMessage, /No such file or directory/);
  });
}

t.test('addon: concurrent applies are serialized and all land', async (t) => {
  const ns = await freshNetns(t);
  await childNft(ns, 'addon').apply('add table ip fyt\nadd set ip fyt seen { type ipv4_addr; }\n');
  const scripts: string[] = [];
  for (let i = 1; i <= 40; i++) scripts.push(`add element ip fyt seen { 198.18.1.${i} }\n`);
  const r = await inChild(ns, { op: 'nftApplyConcurrent', scripts });
  t.same(r, { kind: 'ok' });
  const listed = (await runIn(ns, ['nft', '-j', 'list', 'set', 'ip', 'fyt', 'seen'])).stdout;
  const set = (JSON.parse(listed) as { nftables: { set?: { elem?: string[] } }[] }).nftables.find((o) => o.set)?.set;
  t.equal(set?.elem?.length, 40, `all 40 elements present; got ${JSON.stringify(set?.elem)}`);
});

t.test('addon: the long-lived context sees changes made by other processes', async (t) => {
  const ns = await freshNetns(t);
  const r = await inChild(ns, {
    op: 'nftSequence',
    steps: [
      { via: 'addon', script: 'add table ip fyt\nadd set ip fyt s { type ipv4_addr; }\n' },
      // Someone else replaces the table behind the addon's back.
      { via: 'exec', script: 'delete table ip fyt\nadd table ip fyt\nadd chain ip fyt other\n' },
      { via: 'addon', script: 'add element ip fyt s { 198.18.0.1 }\n' },
      { via: 'addon', script: 'add rule ip fyt other counter\n' },
    ],
  });
  t.equal(r.kind, 'steps');
  if (r.kind !== 'steps') return;
  t.equal(r.errors[0], null);
  t.equal(r.errors[1], null);
  t.match(r.errors[2] ?? 'applied', /No such file or directory/, 'the set that vanished is not taken from a stale cache');
  t.equal(r.errors[3], null, 'the chain created by the other process is seen');
  t.match(await ruleset(ns), /chain other \{\s+counter/);
});

t.test('addon: a large transaction (5000 elements) applies in one call', async (t) => {
  const ns = await freshNetns(t);
  const lines = ['add table ip fyt', 'add map ip fyt m { type ipv4_addr . inet_service : ipv4_addr; }'];
  for (let i = 0; i < 5000; i++) lines.push(`add element ip fyt m { 198.18.${i >> 8}.${i & 255} . 80 : 198.19.${i >> 8}.${i & 255} }`);
  await childNft(ns, 'addon').apply(lines.join('\n') + '\n');
  const listed = (await runIn(ns, ['nft', '-j', 'list', 'map', 'ip', 'fyt', 'm'])).stdout;
  const map = (JSON.parse(listed) as { nftables: { map?: { elem?: unknown[] } }[] }).nftables.find((o) => o.map)?.map;
  t.equal(map?.elem?.length, 5000);
});

t.test('addon: dryRun checks without committing', async (t) => {
  const ns = await freshNetns(t);
  t.same(await inChild(ns, { op: 'nftDryRun', script: 'add table ip fytdry\n' }), { kind: 'ok' });
  t.equal(await ruleset(ns), '', 'nothing was committed');
  const bad = await inChild(ns, { op: 'nftDryRun', script: 'add table ip fytdry\nadd chain ip nope c\n' });
  t.equal(bad.kind, 'nftError', `a broken script fails the check; got ${JSON.stringify(bad)}`);
});

t.test('exec: the netns option runs nft in that namespace', async (t) => {
  const ns = await freshNetns(t);
  await execNft({ netns: ns }).apply('add table ip fytexec\n');
  t.match(await ruleset(ns), /table ip fytexec/);
  t.match(await execNft({ netns: ns }).list('list tables'), /table ip fytexec/);
});
