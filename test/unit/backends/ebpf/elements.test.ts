/**
 * The bulk element form of the ebpf maps: the hash-join diff against a dump equals the diff of
 * the same elements as Maps of strings, and the in-place address writer agrees with ipaddr.js.
 */
import t from 'tap';
import ipaddr from 'ipaddr.js';
import { diffElements, Elements } from '../../../../src/backends/ebpf/elements.js';
import { addrBytes, writeAddr } from '../../../../src/backends/ebpf/layout.js';

let seed = 4242;
function rnd(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}

/** A ferry_backend element (8-byte key, 20-byte value) from small numbers, so keys collide often. */
function element(id: number, slot: number, v: number): [string, string] {
  const k = Buffer.alloc(8);
  k.writeUInt32LE(id, 0);
  k.writeUInt32LE(slot, 4);
  const val = Buffer.alloc(20);
  val.writeUInt32LE(v, 0);
  return [k.toString('latin1'), val.toString('latin1')];
}

t.test('diffElements equals the string-map diff: changed and new elements written, missing ones deleted', async (t) => {
  for (let run = 0; run < 50; run++) {
    const current = new Map<string, string>();
    const desired = new Map<string, string>();
    const n = rnd(300);
    for (let i = 0; i < n; i++) {
      const [k, v] = element(rnd(40), rnd(8), rnd(3));
      current.set(k, v);
    }
    for (let i = 0; i < n; i++) {
      const [k, v] = element(rnd(40), rnd(8), rnd(3));
      desired.set(k, v);
    }
    const d = diffElements(Elements.fromPairs('ferry_backend', current), Elements.fromPairs('ferry_backend', desired));
    const wantUps = [...desired].filter(([k, v]) => current.get(k) !== v).map(([k, v]) => k + v).sort();
    const wantDels = [...current.keys()].filter((k) => !desired.has(k)).sort();
    const ups = [...d.upserts].map(([k, v]) => k + v).sort();
    const dels = [...d.deletes].sort();
    if (JSON.stringify(ups) !== JSON.stringify(wantUps) || JSON.stringify(dels) !== JSON.stringify(wantDels)) {
      t.same({ ups, dels }, { ups: wantUps, dels: wantDels }, `run ${run}`);
      return;
    }
  }
  t.pass('50 random dumps: the same upserts and deletes');
  const same = Elements.fromPairs('ferry_backend', [element(1, 0, 1), element(1, 1, 2)]);
  t.equal(diffElements(same, Elements.fromPairs('ferry_backend', [element(1, 1, 2), element(1, 0, 1)])).upserts.length, 0, 'order does not matter');
});

t.test('elements grow, take back the last one zeroed, and refuse pairs of the wrong size', async (t) => {
  const e = Elements.empty('ferry_member');
  for (let i = 0; i < 100; i++) e.values[e.add() * 4] = i;
  t.equal(e.length, 100);
  t.equal(e.keyBytes().length, 100 * 24);
  e.pop();
  t.equal(e.add(), 99, 'the popped slot is reused');
  t.equal(e.values[99 * 4], 0, 'and is zero again');
  t.throws(() => Elements.fromPairs('ferry_svc', [['short', 'x']]), RangeError);
});

t.test('writeAddr: canonical dotted IPv4 by hand, everything else as ipaddr.js reads it', async (t) => {
  const cases: [string, 4 | 6][] = [
    ['10.0.1.2', 4],
    ['255.255.255.255', 4],
    ['0.0.0.0', 4],
    ['010.0.0.1', 4],
    ['256.1.1.1', 4],
    ['1.2.3', 4],
    ['1.2.3.4.5', 4],
    ['1..3.4', 4],
    ['::ffff:10.0.0.1', 4],
    ['2001:db8::1', 6],
    ['2001:db8::1', 4],
    ['10.0.0.1', 6],
    ['', 4],
    ['x', 6],
  ];
  for (const [ip, family] of cases) {
    const out = Buffer.alloc(20, 0xee);
    const ok = writeAddr(out, 2, ip, family);
    let want: Buffer | undefined;
    if (ipaddr.isValid(ip) && !/(^|\.)0\d/.test(ip)) {
      let a = ipaddr.parse(ip);
      if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
      if (a.kind() === (family === 4 ? 'ipv4' : 'ipv6')) {
        want = Buffer.alloc(16);
        want.set(a.toByteArray());
      }
    }
    t.equal(ok, want !== undefined, `${ip} (IPv${family}) ${want ? 'parses' : 'is refused'}`);
    if (want) t.same(out.subarray(2, 18), want, `${ip}: 16 bytes in place`);
    t.same([out[0], out[1], out[18], out[19]], [0xee, 0xee, 0xee, 0xee], `${ip}: nothing written outside`);
    t.same(addrBytes(ip, family), want, `${ip}: addrBytes agrees`);
  }
});
