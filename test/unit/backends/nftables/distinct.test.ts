// The full compile's address lists keep each address once, in the order of first claim
// (distinct.ts). Addresses are deduplicated by value where they are canonical IPv4: the outcome
// must be exactly that of deduplicating the strings.
import t from 'tap';
import { canonicalIPv4, FirstAddresses, NumberSet } from '../../../../src/backends/nftables/distinct.js';

t.test('canonicalIPv4: the value of a canonical dotted quad, -1 for anything else', async (t) => {
  t.equal(canonicalIPv4('0.0.0.0'), 0);
  t.equal(canonicalIPv4('10.1.2.3'), 0x0a010203);
  t.equal(canonicalIPv4('255.255.255.255'), 0xffffffff);
  t.equal(canonicalIPv4('192.168.100.7'), 0xc0a86407);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.256', '01.2.3.4', '1.2.3.04', '1.00.2.3', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.1000', ' 1.2.3.4', '1.2.3.4 ', '::1', '2001:db8::1', '::ffff:1.2.3.4', '1.2.3.a', '1e1.2.3.4', '+1.2.3.4']) {
    t.equal(canonicalIPv4(bad), -1, JSON.stringify(bad));
  }
});

// A small deterministic generator (no Math.random: a failure must reproduce).
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s >>> 8; // an LCG's low bits repeat with short periods
  };
}

t.test('FirstAddresses keeps the same keys in the same order as deduplicating the strings', async (t) => {
  for (const seed of [1, 2, 3]) {
    const next = rng(seed);
    const input: string[] = [];
    for (let i = 0; i < 40_000; i++) {
      const r = next();
      const kind = r % 10;
      // Few distinct values, so repeats are common; enough of them that the table grows.
      const v = (next() % 6000) + (kind === 0 ? 0 : 0x0a000000);
      const quad = `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
      if (kind === 1) input.push(`fd00::${(v % 500).toString(16)}`);
      else if (kind === 2) input.push(quad.replace(/^(\d+)\./, '0$1.')); // non-canonical twin of a canonical address
      else input.push(quad);
    }
    input.push('0.0.0.0', '0.0.0.0', '00.0.0.0');
    const want = [...new Set(input)]; // a Set iterates in the order of first insertion
    const byValue = new FirstAddresses();
    for (const ip of input) byValue.add(ip);
    t.same(byValue.keys, want, `seed ${seed}: ${want.length} distinct of ${input.length}`);
    t.ok(want.length > 2048, 'the table grew several times');
  }
});

t.test('NumberSet: each integer once, whatever the order; grows without losing any', async (t) => {
  const ns = new NumberSet();
  const seen = new Set<number>();
  const next = rng(7);
  const wrong: number[] = [];
  for (let i = 0; i < 30_000; i++) {
    // Values above 2^32 too (address, protocol and port in one integer): both halves hash.
    const x = (next() % 3000) * 0x40000 + (next() % 4);
    const isNew = !seen.has(x);
    seen.add(x);
    if (ns.add(x) !== isNew) wrong.push(i);
  }
  t.same(wrong, [], 'every add says whether its integer was new');
  t.equal(ns.size, seen.size);
  t.ok(seen.size > 2048, 'the table grew several times');
  const edges = new NumberSet();
  t.ok(edges.add(0), 'zero is an integer like any other');
  t.notOk(edges.add(0));
  t.ok(edges.add(0xffffffff * 0x40000 + 0x3ffff), 'the largest address, protocol and port');
  t.notOk(edges.add(0xffffffff * 0x40000 + 0x3ffff));
  for (const bad of [-1, 0.5, Number.NaN, 2 ** 53]) t.throws(() => edges.add(bad), RangeError, String(bad));
});
