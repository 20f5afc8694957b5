import t from 'tap';
import { FakeConntrack, ConntrackError, addonConntrack, conntrackDeleteArgv, describeFilter, describeFilters, listEntries, parseConntrackLine } from '../../../../src/backends/kernel/conntrack.js';
import type { ConntrackEntry } from '../../../../src/native/index.js';
import type { NativeAddon } from '../../../../src/native/index.js';

t.test('the exec fallback builds conntrack-tools arguments for each field', async (t) => {
  t.same(conntrackDeleteArgv({ family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 53 }), [
    'conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '203.0.113.10', '--orig-port-dst', '53',
  ]);
  t.same(conntrackDeleteArgv({ family: 6, protocol: 'sctp', replySrc: '2001:db8::5', replySrcPort: 8080 }), [
    'conntrack', '-D', '-f', 'ipv6', '-p', 'sctp', '--reply-src', '2001:db8::5', '--reply-port-src', '8080',
  ]);
});

t.test('describeFilter is short and names what is matched', async (t) => {
  t.equal(describeFilter({ family: 4, protocol: 'udp', replySrc: '198.18.0.5', replySrcPort: 8080 }), 'udp/4 replySrc=198.18.0.5:8080');
  t.equal(describeFilter({ family: 6, protocol: 'udp', origDst: '2001:db8::10' }), 'udp/6 origDst=2001:db8::10:*');
});

t.test('describeFilters names the first filter and counts the rest', async (t) => {
  const a = { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 53 } as const;
  const b = { family: 4, protocol: 'udp', replySrc: '198.18.0.5', replySrcPort: 53 } as const;
  t.equal(describeFilters([a]), 'udp/4 origDst=203.0.113.10:53');
  t.equal(describeFilters([a, b]), 'udp/4 origDst=203.0.113.10:53 and 1 more filter');
  t.equal(describeFilters([a, b, b]), 'udp/4 origDst=203.0.113.10:53 and 2 more filters');
});

t.test('FakeConntrack records calls and answers as told', async (t) => {
  const ct = new FakeConntrack();
  t.equal(await ct.delete([{ family: 4, protocol: 'udp', origDst: '203.0.113.10' }]), 0);
  ct.result = (f) => (f.replySrc === '198.18.0.5' ? 2 : 0);
  t.equal(await ct.delete([{ family: 4, protocol: 'udp', replySrc: '198.18.0.5' }, { family: 4, protocol: 'udp', replySrc: '198.18.0.5', replySrcPort: 53 }]), 4);
  t.same(ct.calls, [
    { family: 4, protocol: 'udp', origDst: '203.0.113.10' },
    { family: 4, protocol: 'udp', replySrc: '198.18.0.5' },
    { family: 4, protocol: 'udp', replySrc: '198.18.0.5', replySrcPort: 53 },
  ]);
  t.same(ct.batches, [1, 2], 'each call is one batch');
  ct.failWith = new Error('netlink down');
  await t.rejects(ct.delete([{ family: 6, protocol: 'udp' }]), /netlink down/);
  t.equal(ct.calls.length, 4, 'failed calls are recorded too');
});

t.test('addonConntrack wraps addon failures in ConntrackError with errno', async (t) => {
  const addon: NativeAddon = {
    abiVersion: 1,
    nftRun: async () => ({ ok: true, output: '', error: '' }),
    nftRunSync: () => ({ ok: true, output: '', error: '' }),
    conntrackDelete: async () => {
      throw Object.assign(new Error('conntrack dump: Operation not permitted'), { errno: 1 });
    },
    conntrackList: async () => [],
  };
  const filter = { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 53 } as const;
  const err = await addonConntrack(addon).delete([filter]).then(() => null, (e: unknown) => e);
  t.ok(err instanceof ConntrackError, `expected ConntrackError, got ${String(err)}`);
  if (!(err instanceof ConntrackError)) return;
  t.equal(err.errno, 1);
  t.equal(err.code, 'FERRY_ERR_CONNTRACK');
  t.match(err.message, /udp\/4 origDst=203\.0\.113\.10:53: conntrack dump: Operation not permitted/);
});

t.test('addonConntrack: no filters, no call; several go to the addon as one array', async (t) => {
  const seen: unknown[] = [];
  const addon: NativeAddon = {
    abiVersion: 2,
    nftRun: async () => ({ ok: true, output: '', error: '' }),
    nftRunSync: () => ({ ok: true, output: '', error: '' }),
    conntrackDelete: async (f) => {
      seen.push(f);
      return 5;
    },
    conntrackList: async () => [],
  };
  const ct = addonConntrack(addon);
  t.equal(await ct.delete([]), 0);
  t.same(seen, [], 'the addon is not called for nothing');
  const a = { family: 4, protocol: 'udp', origDst: '203.0.113.10', origDstPort: 53 } as const;
  const b = { family: 6, protocol: 'udp', replySrc: '2001:db8::5', replySrcPort: 53 } as const;
  t.equal(await ct.delete([a, b]), 5);
  t.same(seen, [[a, b]], 'one call with both filters');
});

t.test('the exec fallback reads `conntrack -L` lines, default and extended output', async (t) => {
  t.same(
    parseConntrackLine('udp      17 27 src=198.18.5.5 dst=198.19.0.53 sport=40000 dport=53 src=198.18.0.9 dst=198.18.5.5 sport=53 dport=40000 [ASSURED] mark=0 use=1', 4),
    { family: 4, protocol: 'udp', origSrc: '198.18.5.5', origSrcPort: 40000, origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53, replyDst: '198.18.5.5', replyDstPort: 40000 },
  );
  t.same(
    parseConntrackLine('ipv6     10 sctp     132 3 ESTABLISHED src=2001:db8::5 dst=2001:db8:19::9 sport=5000 dport=36412 src=2001:db8:18::9 dst=2001:db8::5 sport=36412 dport=5000 [ASSURED] mark=0 zone=0 use=1', 6),
    { family: 6, protocol: 'sctp', origSrc: '2001:db8::5', origSrcPort: 5000, origDst: '2001:db8:19::9', origDstPort: 36412, replySrc: '2001:db8:18::9', replySrcPort: 36412, replyDst: '2001:db8::5', replyDstPort: 5000 },
  );
  t.equal(parseConntrackLine('udp      17 29 src=198.18.5.5 dst=198.19.0.53 sport=40000 dport=53 [UNREPLIED] src=198.19.0.53 dst=198.18.5.5 sport=53 dport=40000 mark=0 use=1', 4)?.replySrc, '198.19.0.53', 'an unreplied flow has its expected reply tuple');
  t.equal(parseConntrackLine('conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.', 4), undefined);
  t.equal(parseConntrackLine('icmp     1 29 src=198.18.5.5 dst=198.19.0.53 type=8 code=0 id=7 src=198.19.0.53 dst=198.18.5.5 type=0 code=0 id=7 mark=0 use=1', 4), undefined, 'no ports: not an entry ferry can use');
});

const entry = (over: Partial<ConntrackEntry>): ConntrackEntry => ({
  family: 4, protocol: 'udp', origSrc: '198.18.5.5', origSrcPort: 40000, origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53, replyDst: '198.18.5.5', replyDstPort: 40000, ...over,
});

t.test('FakeConntrack is a table: list reads one family and protocol, delete removes what a filter matches', async (t) => {
  const ct = new FakeConntrack();
  ct.entries = [entry({}), entry({ replySrc: '198.18.0.2' }), entry({ protocol: 'tcp' }), entry({ family: 6, origDst: '2001:db8:19::53', replySrc: '2001:db8:18::9' })];
  t.same((await ct.list(4, 'udp')).map((e) => e.replySrc), ['198.18.0.9', '198.18.0.2']);
  t.same(ct.lists, [{ family: 4, protocol: 'udp' }]);
  t.equal(await ct.delete([{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53 }]), 1, 'one entry matched every field');
  t.same(ct.entries.map((e) => `${e.family}/${e.protocol} ${e.replySrc}`), ['4/udp 198.18.0.2', '4/tcp 198.18.0.9', '6/udp 2001:db8:18::9'], 'the TCP flow with the same tuple and the other family stay');
  ct.listFailWith = new Error('netlink down');
  await t.rejects(ct.list(6, 'udp'), /netlink down/);
});

t.test('addonConntrack lists one family and protocol with one filter; failures name the listing', async (t) => {
  const seen: unknown[] = [];
  let fail = false;
  const addon: NativeAddon = {
    abiVersion: 2,
    nftRun: async () => ({ ok: true, output: '', error: '' }),
    nftRunSync: () => ({ ok: true, output: '', error: '' }),
    conntrackDelete: async () => 0,
    conntrackList: async (f) => {
      seen.push(f);
      if (fail) throw Object.assign(new Error('conntrack dump: Operation not permitted'), { errno: 1 });
      return [entry({})];
    },
  };
  const ct = addonConntrack(addon);
  t.same(await ct.list(4, 'udp'), [entry({})]);
  t.same(seen, [{ family: 4, protocol: 'udp' }], 'family and protocol only: the whole table of that family, one read');
  fail = true;
  const err = await ct.list(6, 'sctp').then(() => null, (e: unknown) => e);
  t.ok(err instanceof ConntrackError, `expected ConntrackError, got ${String(err)}`);
  if (!(err instanceof ConntrackError)) return;
  t.equal(err.op, 'list');
  t.equal(err.errno, 1);
  t.match(err.message, /^conntrack list \(addon\) failed for sctp\/6: conntrack dump: Operation not permitted/);
});

t.test('listEntries concatenates the listings; one failure gives undefined (nothing known), not a partial table', async (t) => {
  const ct = new FakeConntrack();
  ct.entries = [entry({}), entry({ family: 6, origDst: '2001:db8:19::53', replySrc: '2001:db8:18::9' }), entry({ protocol: 'sctp' })];
  const got = await listEntries(ct, [{ family: 4, protocol: 'udp' }, { family: 6, protocol: 'udp' }]);
  t.same(got?.map((e) => `${e.family}/${e.protocol}`), ['4/udp', '6/udp']);
  t.same(await listEntries(ct, []), [], 'nothing to list: no call');
  t.equal(ct.lists.length, 2);
  ct.listFailWith = new Error('netlink down');
  t.equal(await listEntries(ct, [{ family: 4, protocol: 'udp' }]), undefined);
});
