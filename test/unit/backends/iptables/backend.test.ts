/**
 * The backend against the in-memory FakeIptables: jump rules installed once and idempotently,
 * canary chains and intact(), failure → IptablesSyncError and a forced full sync, cleanup
 * leaving only other programs' chains, conntrack cleanup after UDP endpoint changes.
 */
import t from 'tap';
import { createIptablesBackend, IptablesSyncError, JUMP_RULES } from '../../../../src/backends/iptables/backend.js';
import { FakeIptables } from '../../../../src/backends/iptables/fake.js';
import { chainsInSave } from '../../../../src/backends/iptables/cleanup.js';
import { FakeConntrack } from '../../../../src/backends/kernel/conntrack.js';
import { setLogSink } from '../../../../src/util/log.js';
import { changesOf, ep, FULL, fwd, svc, table, tables } from './fixtures.js';

setLogSink(() => {});

const web = svc({ namespace: 'default', name: 'web', nodePort: 30080, internal: fwd(ep('198.18.1.1', 8080)) });
const ir1 = tables(table(4, [web]), table(6, [svc({ namespace: 'default', name: 'web', family: 6, internal: fwd(ep('2001:db8:18::1', 8080)) })]));

function backend(fake: FakeIptables, extra: Partial<Parameters<typeof createIptablesBackend>[0]> = {}) {
  return createIptablesBackend({ runner: fake, dropInvalid: true, ...extra });
}

t.test('first sync is full: jump rules, canaries, rules for both families; intact() then true', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake);
  t.equal(await b.intact(), false, 'intact() is false before any sync');
  await b.sync(null, ir1, FULL);
  for (const f of [4, 6] as const) {
    for (const j of JUMP_RULES) {
      const save = await fake.save(f, j.table);
      t.ok(save.includes(`-A ${j.from} `) && save.includes(`-j ${j.to}`) && save.includes(`"${j.comment}"`), `IPv${f} ${j.table} ${j.from} jumps to ${j.to}`);
    }
    for (const table of ['mangle', 'nat', 'filter']) t.ok(chainsInSave(await fake.save(f, table)).includes('KUBE-PROXY-CANARY'), `IPv${f} ${table} has the canary`);
  }
  t.equal(await b.intact(), true, 'intact() after a sync');
  const before = await fake.dump(4);
  await b.sync(ir1, ir1, FULL);
  t.equal(await fake.dump(4), before, 'a second full sync changes nothing (no duplicate jump rules)');
  t.equal(b.lastSync()?.full, true, 'stats say full');
});

t.test('an external flush is noticed by intact()', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake);
  await b.sync(null, ir1, FULL);
  fake.flushAll();
  t.equal(await b.intact(), false, 'canary gone → intact() false');
});

t.test('a failing restore throws IptablesSyncError with the line and stderr; the next sync is full', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake);
  await b.sync(null, ir1, FULL);
  const web2 = { ...web, internal: fwd(ep('198.18.1.1', 8080), ep('198.18.1.2', 8080)) };
  web2.cluster = web2.internal;
  const ir2 = tables(table(4, [web2]), ir1[6]);
  fake.failNextRestore = 'iptables-restore: line 3 failed\n';
  const err = await b.sync(ir1, ir2, changesOf([web.key])).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof IptablesSyncError, `IptablesSyncError thrown (got ${String(err)})`);
  if (err instanceof IptablesSyncError) {
    t.equal(err.family, 4, 'family');
    t.equal(err.line, 1, 'line from the restore error');
    t.match(err.stderr, /line 3 failed/, 'stderr carried');
    t.equal(err.full, false, 'it was a partial sync');
  }
  t.equal(await b.intact(), false, 'after a failure intact() is false');
  await b.sync(ir1, ir2, changesOf([web.key]));
  t.equal(b.lastSync()?.full, true, 'the sync after a failure is full even though the syncer asked for partial');
  t.match(fake.restores.at(-1)!.input, /^\*mangle/, 'full restore input (with the canary)');
});

t.test('partial sync after a full one touches only the changed service chains', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake, { families: [4] });
  await b.sync(null, ir1, FULL);
  const web2 = { ...web, internal: fwd(ep('198.18.1.1', 8080), ep('198.18.1.2', 8080)) };
  web2.cluster = web2.internal;
  web2.external = web2.internal;
  const ir2 = tables(table(4, [web2]), ir1[6]);
  await b.sync(ir1, ir2, changesOf([web.key]));
  const st = b.lastSync()!;
  t.equal(st.full, false, 'partial');
  t.equal(st.perFamily.length, 1, 'only IPv4 (families: [4])');
  t.equal(st.perFamily[0]!.chainsWritten, 2, 'KUBE-SVC rewritten and one new KUBE-SEP');
  t.notOk(fake.restores.some((r) => r.family === 6), 'IPv6 never touched');
});

t.test('UDP endpoint removal clears conntrack through the injected Conntrack', async (t) => {
  const fake = new FakeIptables();
  const ct = new FakeConntrack();
  const b = backend(fake, { families: [4], conntrack: ct });
  const dns = svc({ namespace: 'kube-system', name: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.1.5', 53), ep('198.18.1.6', 53)) });
  const a = tables(table(4, [dns]));
  await b.sync(null, a, FULL);
  ct.reset();
  const dns2 = { ...dns, internal: fwd(ep('198.18.1.5', 53)) };
  dns2.cluster = dns2.internal;
  dns2.external = dns2.internal;
  await b.sync(a, tables(table(4, [dns2])), changesOf([dns.key]));
  t.ok(
    ct.calls.some((c) => c.replySrc === '198.18.1.6' && c.protocol === 'udp'),
    `flows from the removed endpoint are deleted (calls: ${JSON.stringify(ct.calls)})`,
  );
});

t.test('after a restart the served families\' UDP tables are read and flows to replaced endpoints cleared', async (t) => {
  const ct = new FakeConntrack();
  const flow = (family: 4 | 6, origDst: string, replySrc: string) =>
    ({ family, protocol: 'udp', origSrc: family === 4 ? '198.18.5.5' : '2001:db8:18::5:5', origSrcPort: 40000, origDst, origDstPort: 53, replySrc, replySrcPort: 53, replyDst: family === 4 ? '198.18.5.5' : '2001:db8:18::5:5', replyDstPort: 40000 }) as const;
  ct.entries = [flow(4, '198.19.0.53', '198.18.1.9'), flow(4, '198.19.0.53', '198.18.1.5'), flow(6, '2001:db8:19::53', '2001:db8:18::9')];
  const dns4 = svc({ namespace: 'kube-system', name: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.1.5', 53)) });
  const dns6 = svc({ namespace: 'kube-system', name: 'dns', protocol: 'UDP', port: 53, family: 6, clusterIP: '2001:db8:19::53', internal: fwd(ep('2001:db8:18::5', 53)) });
  await backend(new FakeIptables(), { families: [4], conntrack: ct }).sync(null, tables(table(4, [dns4]), table(6, [dns6])), FULL);
  t.same(ct.lists, [{ family: 4, protocol: 'udp' }], 'IPv6 is not served: not read');
  t.same(ct.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.1.9', replySrcPort: 53 }]);
});

t.test('cleanup removes every KUBE-* chain and our jumps, keeps kubelet and foreign chains', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake);
  await b.sync(null, ir1, FULL);
  await fake.restore(4, '*filter\n:KUBE-FIREWALL - [0:0]\n:CNI-FOO - [0:0]\n-A CNI-FOO -j ACCEPT\n-A INPUT -j CNI-FOO\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n');
  await b.cleanup();
  for (const f of [4, 6] as const) {
    for (const table of ['mangle', 'nat', 'filter']) {
      const save = await fake.save(f, table);
      const ours = chainsInSave(save).filter((c) => c.startsWith('KUBE-') && c !== 'KUBE-FIREWALL');
      t.same(ours, [], `IPv${f} ${table}: no KUBE-* chain left`);
      t.notMatch(save, /-j KUBE-(SERVICES|NODEPORTS|POSTROUTING|FORWARD|EXTERNAL-SERVICES|PROXY-FIREWALL)\b/, `IPv${f} ${table}: no jump to our chains left`);
    }
  }
  const filter = await fake.save(4, 'filter');
  t.match(filter, /-A CNI-FOO -j ACCEPT/, 'foreign chain and its rule kept');
  t.match(filter, /-A INPUT -j CNI-FOO/, 'foreign jump kept');
  t.match(filter, /-A INPUT -j KUBE-FIREWALL/, "kubelet's KUBE-FIREWALL kept");
  await t.resolves(b.cleanup(), 'a second cleanup (nothing left) is not an error');
});

t.test('a partial sync restores only the families whose service ports changed', async (t) => {
  const fake = new FakeIptables();
  const b = backend(fake);
  // Single-stack: the IPv6 tables hold nothing but ferry's skeleton.
  const v4only = tables(table(4, [web]));
  await b.sync(null, v4only, FULL);
  const web2 = { ...web, internal: fwd(ep('198.18.1.1', 8080), ep('198.18.1.2', 8080)) };
  const next = tables(table(4, [web2]));
  const n = fake.restores.length;
  await b.sync(v4only, next, changesOf([web.key]));
  t.same(fake.restores.slice(n).map((r) => r.family), [4], 'one iptables-restore, IPv4 only');
  const ip6 = tables(table(4, [web2]), table(6, [svc({ namespace: 'default', name: 'v6', family: 6, internal: fwd(ep('2001:db8:18::1', 8080)) })]));
  const m = fake.restores.length;
  await b.sync(next, ip6, changesOf([ip6[6].services.keys().next().value!]));
  t.same(fake.restores.slice(m).map((r) => r.family), [6], 'an IPv6-only change restores IPv6 only');
  const k = fake.restores.length;
  await b.sync(ip6, ip6, changesOf([], true));
  t.same(fake.restores.slice(k).map((r) => r.family), [4, 6], 'a table-level change restores both');
});
