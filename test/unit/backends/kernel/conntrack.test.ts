import t from 'tap';
import { FakeConntrack, ConntrackError, addonConntrack, conntrackDeleteArgv, describeFilter, describeFilters } from '../../../../src/backends/kernel/conntrack.js';
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
