/**
 * Localhost NodePorts (kube-proxy's iptables.localhostNodePorts) and intact() noticing a flushed
 * or deleted chain of ours, against the in-memory FakeIptables.
 */
import t from 'tap';
import { createIptablesBackend, KUBELET_JUMP_RULES, ruleArgv } from '../../../../src/backends/iptables/backend.js';
import { compileFull, skeletonOf } from '../../../../src/backends/iptables/compiler.js';
import { FakeIptables } from '../../../../src/backends/iptables/fake.js';
import { setLogSink } from '../../../../src/util/log.js';
import { changesOf, ep, FULL, fwd, GOLDEN_OPTS, svc, table, tables } from './fixtures.js';

setLogSink(() => {});

const web = svc({ namespace: 'default', name: 'web', nodePort: 30080, internal: fwd(ep('198.18.1.1', 8080)) });
const web6 = svc({ namespace: 'default', name: 'web', family: 6, nodePort: 30080, internal: fwd(ep('2001:db8:18::1', 8080)) });
const FIREWALL_RULE = '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP';
const TAIL = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain"';

t.test('compiler: localhost NodePorts on → loopback accepted for IPv4 and KUBE-FIREWALL written; off → as before', async (t) => {
  const on4 = compileFull(table(4, [web]), { ...GOLDEN_OPTS, localhostNodePorts: true }).text;
  t.ok(on4.includes(`${TAIL} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n`), 'IPv4: local destinations, loopback included');
  t.ok(on4.includes(':KUBE-FIREWALL - [0:0]') && on4.includes(FIREWALL_RULE), 'IPv4: the martian-source drop (CVE-2020-8558)');
  const on6 = compileFull(table(6, [web6]), { ...GOLDEN_OPTS, localhostNodePorts: true }).text;
  t.ok(on6.includes(`${TAIL} -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS`), 'IPv6 never: no route_localnet');
  t.notOk(on6.includes('KUBE-FIREWALL'), 'no KUBE-FIREWALL for IPv6');
  const off = compileFull(table(4, [web]), { ...GOLDEN_OPTS, localhostNodePorts: false }).text;
  t.ok(off.includes(`${TAIL} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS`), 'off: loopback excluded');
  t.notOk(off.includes('KUBE-FIREWALL'));
  t.equal(compileFull(table(4, [web]), GOLDEN_OPTS).text, off, 'absent = off (goldens unchanged)');
  const listed = table(4, [web], { nodePortAddresses: { kind: 'list', addresses: ['127.0.0.1', '192.0.2.10'] } });
  t.ok(compileFull(listed, { ...GOLDEN_OPTS, localhostNodePorts: true }).text.includes(`${TAIL} -d 127.0.0.1 -j KUBE-NODEPORTS`), '--nodeport-addresses with 127.0.0.1: served when on');
  t.notOk(compileFull(listed, GOLDEN_OPTS).text.includes('-d 127.0.0.1 -j'), '... and skipped when off');
});

t.test('backend: kubelet-style jumps to KUBE-FIREWALL (IPv4 only), route_localnet ensured on full syncs', async (t) => {
  const fake = new FakeIptables();
  let routeLocalnet = 0;
  const b = createIptablesBackend({ runner: fake, dropInvalid: true, localhostNodePorts: true, ensureRouteLocalnet: async () => void routeLocalnet++ });
  await b.sync(null, tables(table(4, [web]), table(6, [web6])), FULL);
  const f4 = await fake.save(4, 'filter');
  for (const j of KUBELET_JUMP_RULES) t.ok(f4.includes(`-A ${j.from} -j KUBE-FIREWALL\n`), `IPv4 ${j.from} -j KUBE-FIREWALL, no comment (as kubelet)`);
  t.ok(f4.includes(FIREWALL_RULE));
  t.notOk((await fake.save(6, 'filter')).includes('KUBE-FIREWALL'), 'IPv6 untouched');
  t.equal(routeLocalnet, 1, 'route_localnet ensured once per full sync');
  await b.sync(tables(table(4, [web]), table(6, [web6])), tables(table(4, [web]), table(6, [web6])), changesOf([]));
  t.equal(routeLocalnet, 1, 'not on partial syncs');
  t.equal(await b.intact(), true);
  const off = new FakeIptables();
  let offCalls = 0;
  await createIptablesBackend({ runner: off, dropInvalid: true, localhostNodePorts: false, ensureRouteLocalnet: async () => void offCalls++ }).sync(null, tables(table(4, [web])), FULL);
  t.equal(offCalls, 0, 'off: route_localnet left alone');
  t.notOk((await off.save(4, 'filter')).includes('KUBE-FIREWALL'));
});

t.test('skeletonOf counts what every sync writes into the top-level chains', async (t) => {
  const sk = skeletonOf(compileFull(table(4, [web]), { ...GOLDEN_OPTS, localhostNodePorts: true }).text);
  const by = new Map(sk.map((c) => [`${c.table} ${c.chain}`, c]));
  t.equal(by.get('nat KUBE-POSTROUTING')?.rules, 3);
  t.equal(by.get('nat KUBE-MARK-MASQ')?.rules, 1);
  t.equal(by.get('filter KUBE-FIREWALL')?.rules, 1);
  t.match(by.get('nat KUBE-SERVICES')?.last, /kubernetes service nodeports/, 'the last rule of nat KUBE-SERVICES is the NodePort dispatch');
  t.same(ruleArgv('-m comment --comment "a b; c" -j X'), ['-m', 'comment', '--comment', 'a b; c', '-j', 'X']);
});

t.test('intact() notices a flushed or deleted chain of ours, short (listed) or long (-C of its last rule)', async (t) => {
  // 40 Services: nat KUBE-SERVICES is longer than the listing threshold, so its check is -C.
  const many = Array.from({ length: 40 }, (_, i) => svc({ namespace: 'default', name: `s${i}`, clusterIP: `10.96.0.${i + 1}`, internal: fwd(ep('198.18.1.1', 8080)) }));
  const ir = tables(table(4, many));
  const cases: [string, (fake: FakeIptables) => Promise<void>][] = [
    ['nat KUBE-SERVICES flushed', (f) => f.restore(4, '*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n')],
    ['filter KUBE-FORWARD flushed', (f) => f.restore(4, '*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n')],
    ['nat KUBE-MARK-MASQ flushed', (f) => f.restore(4, '*nat\n:KUBE-MARK-MASQ - [0:0]\nCOMMIT\n')],
    ['one rule deleted from nat KUBE-POSTROUTING', (f) => f.restore(4, '*nat\n-D KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully\nCOMMIT\n')],
    [
      'nat KUBE-POSTROUTING deleted (jump removed first)',
      async (f) => {
        await f.restore(4, '*nat\n-D POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n:KUBE-POSTROUTING - [0:0]\n-X KUBE-POSTROUTING\nCOMMIT\n');
      },
    ],
  ];
  // iptables-legacy: one save per table instead (every legacy call reads a whole table), which
  // counts the long chains' rules too — a rule someone appended is noticed as well.
  const legacyOnly: typeof cases = [
    ['nat canary deleted', (f) => f.restore(4, '*nat\n:KUBE-PROXY-CANARY - [0:0]\n-X KUBE-PROXY-CANARY\nCOMMIT\n')],
    ['a rule appended to nat KUBE-SERVICES', (f) => f.restore(4, '*nat\n-A KUBE-SERVICES -d 10.96.9.9/32 -j ACCEPT\nCOMMIT\n')],
  ];
  for (const variant of ['nft', 'legacy'] as const) {
    for (const [what, tamper] of variant === 'legacy' ? [...cases, ...legacyOnly] : cases) {
      const fake = new FakeIptables(variant);
      const b = createIptablesBackend({ runner: fake, dropInvalid: true, families: [4] });
      await b.sync(null, ir, FULL);
      const execs = fake.execs.length;
      t.equal(await b.intact(), true, `${variant}, ${what}: intact before`);
      if (variant === 'legacy') {
        t.equal(fake.execs.length, execs, 'legacy: no -S or -C calls');
        t.same(fake.linesSaved.map((x) => x.table), ['mangle', 'nat', 'filter'], 'legacy: one save of each table');
      }
      await tamper(fake);
      t.equal(await b.intact(), false, `${variant}, ${what}: noticed`);
      await b.sync(ir, ir, FULL);
      t.equal(await b.intact(), true, `${variant}, ${what}: a full sync repairs it`);
    }
  }
});
