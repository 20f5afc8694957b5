/**
 * Conntrack deletion against a real kernel. Each test builds its own namespace where UDP to a
 * "ClusterIP" is DNAT-ed to a local "endpoint" (as ferry's rules would), makes real flows with
 * echo replies, then deletes by original destination (the service) or by reply source (the
 * endpoint) and checks exactly those entries are gone — through the addon and the conntrack
 * command alike.
 */
import t from 'tap';
import { runIn } from '../../../src/util/exec.js';
import { loadNative, type ConntrackEntry } from '../../../src/native/index.js';
import { freshNetns, inChild, childConntrackDelete, childConntrackList } from './netns.js';
import { execConntrack } from '../../../src/backends/kernel/conntrack.js';

const RULES = `
table inet fytnat {
  chain out {
    type nat hook output priority -100; policy accept;
    ip daddr 203.0.113.10 udp dport 80 dnat ip to 198.18.0.5:8080
    ip daddr 203.0.113.11 udp dport 81 dnat ip to 198.18.0.6:8081
    ip6 daddr 2001:db8:1::10 udp dport 80 dnat ip6 to [2001:db8::5]:8080
  }
}
`;

/** A namespace with endpoints on lo, "service" ranges routed out an uplink, and the DNAT rules. */
async function serviceNetns(t: Parameters<typeof freshNetns>[0]): Promise<string> {
  const ns = await freshNetns(t);
  const sh = (...argv: string[]) => runIn(ns, argv);
  // A veth pair stands in for the node's uplink (this kernel may lack the dummy driver).
  await sh('ip', 'link', 'add', 'fytup0', 'type', 'veth', 'peer', 'name', 'fytup1');
  await sh('ip', 'link', 'set', 'fytup0', 'up');
  await sh('ip', 'link', 'set', 'fytup1', 'up');
  await sh('ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'fytup0');
  await sh('ip', '-6', 'addr', 'add', '2001:db8:2::1/64', 'dev', 'fytup0', 'nodad');
  for (const a of ['198.18.0.5/32', '198.18.0.6/32', '198.18.0.7/32']) await sh('ip', 'addr', 'add', a, 'dev', 'lo');
  await sh('ip', '-6', 'addr', 'add', '2001:db8::5/128', 'dev', 'lo', 'nodad');
  await sh('ip', 'route', 'add', '203.0.113.0/24', 'dev', 'fytup0', 'src', '192.0.2.1');
  await sh('ip', '-6', 'route', 'add', '2001:db8:1::/64', 'dev', 'fytup0', 'src', '2001:db8:2::1');
  await runIn(ns, ['nft', '-f', '-'], { input: RULES });
  // The tests' unreplied UDP flows must outlive a slow run (30 s by default; an emulated VM
  // takes longer than that between creating and checking them). Per-namespace sysctls.
  await sh('sysctl', '-qw', 'net.netfilter.nf_conntrack_udp_timeout=600', 'net.netfilter.nf_conntrack_udp_timeout_stream=600');
  return ns;
}

/** 3 flows to service A, 2 to service B, 1 straight to an unrelated local address, 1 IPv6 flow. */
async function makeFlows(ns: string): Promise<void> {
  const r = await inChild(ns, {
    op: 'udpFlows',
    flows: [
      { to: '203.0.113.10', port: 80, server: '198.18.0.5', serverPort: 8080, count: 3 },
      { to: '203.0.113.11', port: 81, server: '198.18.0.6', serverPort: 8081, count: 2 },
      { to: '198.18.0.7', port: 9000, server: '198.18.0.7', serverPort: 9000, count: 1 },
      { to: '2001:db8:1::10', port: 80, server: '2001:db8::5', serverPort: 8080, count: 1 },
    ],
  });
  if (r.kind !== 'ports') throw new Error(`making flows failed: ${JSON.stringify(r)}`);
}

const summary = (es: ConntrackEntry[]) =>
  es.map((e) => `${e.origDst}:${e.origDstPort}->${e.replySrc}:${e.replySrcPort}`).sort();

async function udp4(ns: string): Promise<string[]> {
  return summary(await childConntrackList(ns, { family: 4, protocol: 'udp' }));
}

t.test('conntrackList reports the NAT-ed tuples of real flows', async (t) => {
  const ns = await serviceNetns(t);
  await makeFlows(ns);
  t.same(await udp4(ns), [
    '198.18.0.7:9000->198.18.0.7:9000',
    '203.0.113.10:80->198.18.0.5:8080',
    '203.0.113.10:80->198.18.0.5:8080',
    '203.0.113.10:80->198.18.0.5:8080',
    '203.0.113.11:81->198.18.0.6:8081',
    '203.0.113.11:81->198.18.0.6:8081',
  ]);
  const [a] = await childConntrackList(ns, { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 80 }).then((es) => es.slice(0, 1));
  t.ok(a, 'there is a flow to service A');
  if (a) {
    t.equal(a.origSrc, '192.0.2.1', 'source is the uplink address');
    t.equal(a.replyDst, '192.0.2.1', 'no SNAT: replies go back to the client');
    t.equal(a.replyDstPort, a.origSrcPort);
    t.equal(a.protocol, 'udp');
    t.equal(a.family, 4);
  }
  t.same(summary(await childConntrackList(ns, { family: 6, protocol: 'udp' })), ['2001:db8:1::10:80->2001:db8::5:8080']);
});

t.test("the conntrack command's listing (the first sync's fallback) parses to what the addon lists", async (t) => {
  const ns = await serviceNetns(t);
  await makeFlows(ns);
  const full = (es: ConntrackEntry[]) =>
    es.map((e) => `${e.family} ${e.protocol} ${e.origSrc}:${e.origSrcPort}>${e.origDst}:${e.origDstPort} ${e.replySrc}:${e.replySrcPort}>${e.replyDst}:${e.replyDstPort}`).sort();
  const exec = execConntrack({ netns: ns });
  for (const family of [4, 6] as const) {
    const byAddon = await childConntrackList(ns, { family, protocol: 'udp' });
    const byCommand = await exec.list(family, 'udp');
    t.ok(byAddon.length > 0, `IPv${family}: there are flows (${byAddon.length})`);
    t.same(full(byCommand), full(byAddon), `IPv${family}: every field of every flow, NAT-ed reply tuples included`);
  }
  t.same(await exec.list(4, 'sctp'), [], 'another protocol: none');
});

for (const via of ['addon', 'exec'] as const) {
  t.test(`${via}: delete by service (origDst:port) removes only that service's flows`, async (t) => {
    const ns = await serviceNetns(t);
    await makeFlows(ns);
    t.equal(await childConntrackDelete(ns, via, { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 81 }), 0, 'wrong port matches nothing');
    t.equal(await childConntrackDelete(ns, via, { family: 4, protocol: 'tcp', origDst: '203.0.113.10' }), 0, 'wrong protocol matches nothing');
    t.equal(await childConntrackDelete(ns, via, { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 80 }), 3);
    t.same(await udp4(ns), [
      '198.18.0.7:9000->198.18.0.7:9000',
      '203.0.113.11:81->198.18.0.6:8081',
      '203.0.113.11:81->198.18.0.6:8081',
    ]);
    t.equal((await childConntrackList(ns, { family: 6, protocol: 'udp' })).length, 1, 'the IPv6 flow is untouched');
  });

  t.test(`${via}: delete by endpoint (replySrc:port) removes only flows NAT-ed to it`, async (t) => {
    const ns = await serviceNetns(t);
    await makeFlows(ns);
    t.equal(await childConntrackDelete(ns, via, { family: 4, protocol: 'udp', replySrc: '198.18.0.6', replySrcPort: 8081 }), 2);
    t.same(await udp4(ns), [
      '198.18.0.7:9000->198.18.0.7:9000',
      '203.0.113.10:80->198.18.0.5:8080',
      '203.0.113.10:80->198.18.0.5:8080',
      '203.0.113.10:80->198.18.0.5:8080',
    ]);
    t.equal(await childConntrackDelete(ns, via, { family: 6, protocol: 'udp', replySrc: '2001:db8::5' }), 1, 'IPv6 by endpoint');
    t.same(await childConntrackList(ns, { family: 6, protocol: 'udp' }), []);
  });

  t.test(`${via}: several filters in one call delete the union, both families, and nothing else`, async (t) => {
    const ns = await serviceNetns(t);
    await makeFlows(ns);
    const n = await childConntrackDelete(ns, via, [
      // Service B by endpoint; the same port under another address; A's port with a wrong endpoint.
      { family: 4, protocol: 'udp', origDst: '203.0.113.11', origDstPort: 81, replySrc: '198.18.0.6', replySrcPort: 8081 },
      { family: 4, protocol: 'udp', origDst: '203.0.113.99', origDstPort: 81 },
      { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 80, replySrc: '198.18.0.7', replySrcPort: 8080 },
      // No port: matched by address alone (the index's any-port list).
      { family: 4, protocol: 'udp', replySrc: '198.18.0.7' },
      // Twice the same flows: counted once.
      { family: 6, protocol: 'udp', origDst: '2001:db8:1::10', origDstPort: 80 },
      { family: 6, protocol: 'udp', replySrc: '2001:db8::5', replySrcPort: 8080 },
      // Another protocol on a port in use: nothing.
      { family: 4, protocol: 'tcp', origDst: '203.0.113.10', origDstPort: 80 },
    ]);
    t.equal(n, 4, "B's two flows, the direct flow and the IPv6 flow");
    t.same(await udp4(ns), ['203.0.113.10:80->198.18.0.5:8080', '203.0.113.10:80->198.18.0.5:8080', '203.0.113.10:80->198.18.0.5:8080'], "only A's flows are left");
    t.same(await childConntrackList(ns, { family: 6, protocol: 'udp' }), []);
    t.equal(await childConntrackDelete(ns, via, []), 0, 'no filters: nothing deleted');
    t.equal((await udp4(ns)).length, 3);
  });
}

t.test('addon: invalid filters are refused before touching the kernel', async (t) => {
  const addon = loadNative();
  t.ok(addon, 'the addon must be built (cd native && npx node-gyp rebuild)');
  if (!addon) return;
  t.throws(() => addon.conntrackDelete({ family: 4, protocol: 'udp', origDst: '2001:db8::1' }), /origDst is not an IPv4 address/);
  t.throws(() => addon.conntrackDelete({ family: 4, protocol: 'udp', origDstPort: 70000 }), /origDstPort must be an integer port/);
  t.throws(() => addon.conntrackDelete({ family: 5 as 4, protocol: 'udp' }), /family must be 4 or 6/);
  t.throws(() => addon.conntrackList({ family: 4, protocol: 'icmp' as 'udp' }), /protocol must be/);
  t.throws(() => addon.conntrackDelete([{ family: 4, protocol: 'udp' }, { family: 4, protocol: 'udp', replySrc: 'x' }]), /filter 1: conntrack filter: replySrc is not an IPv4 address/, 'a bad element is named by its index');
  t.throws(() => addon.conntrackDelete([null as unknown as { family: 4; protocol: 'udp' }]), /filter 0: conntrack: a filter must be an object/);
  t.throws(() => addon.nftRunSync(42 as unknown as string), /must be a string/);
});
