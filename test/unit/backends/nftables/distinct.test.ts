// The full compile's address lists keep each address once, in the order of first claim
// (distinct.ts). Addresses are deduplicated by value where they are canonical IPv4: the outcome
// must be exactly that of deduplicating the strings.
import t from 'tap';
import { FirstAddresses, IPv4Set, NumberSet } from '../../../../src/backends/nftables/distinct.js';
import { canonicalIPv4 } from '../../../../src/util/ipv4.js';

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
    input.push('0.0.0.0', '0.0.0.0', '00.0.0.0', '255.255.255.255', '198.19.0.1', '255.255.255.255', '198.19.0.1');
    const want = [...new Set(input)]; // a Set iterates in the order of first insertion
    // Without a capacity, with one too small (the list grows past it) and one too large (cut to the count).
    for (const capacity of [0, 100, 50_000]) {
      const byValue = new FirstAddresses(capacity);
      for (const ip of input) byValue.add(ip);
      t.same(Array.from({ length: byValue.count }, (_, i) => byValue.key(i)), want, `seed ${seed}, capacity ${capacity}: ${want.length} distinct of ${input.length}`);
      t.equal(byValue.count, want.length, 'counted');
      // Each entry's number (V4Piece) is its key's, as a signed 32-bit value; -1 where it is read as spelled.
      const wrong = want.filter((ip, i) => {
        const v = canonicalIPv4(ip);
        return byValue.v4Pieces[i] !== (v < 0 || v === 0xffffffff ? -1 : v | 0);
      });
      t.same(wrong, [], 'numbers agree with the keys');
    }
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
  t.ok([...seen].every((x) => ns.has(x)), 'has every integer added');
  t.notOk([3000 * 0x40000, 4, 0x40000 + 4, -1, 0.5].some((x) => ns.has(x)), 'and none other');
  t.ok(seen.size > 2048, 'the table grew several times');
  const edges = new NumberSet();
  t.ok(edges.add(0), 'zero is an integer like any other');
  t.notOk(edges.add(0));
  t.ok(edges.add(0xffffffff * 0x40000 + 0x3ffff), 'the largest address, protocol and port');
  t.notOk(edges.add(0xffffffff * 0x40000 + 0x3ffff));
  for (const bad of [-1, 0.5, Number.NaN, 2 ** 53]) t.throws(() => edges.add(bad), RangeError, String(bad));
});

t.test('IPv4Set: each address once, in few /16s or spread over more than it keeps bitmaps for', async (t) => {
  for (const [what, spread] of [['dense: four /16s', 4], ['spread: 600 /16s, past the bitmaps', 600]] as const) {
    const set = new IPv4Set();
    const seen = new Set<number>();
    const next = rng(spread);
    const wrong: number[] = [];
    for (let i = 0; i < 50_000; i++) {
      // The /16s far apart (high bits set: values from 2^31 up as well), few addresses in each.
      const x = ((next() % spread) * 0x9e3779b1 + 0x0a000000) % 0x10000 * 0x10000 + (next() % 40);
      const isNew = !seen.has(x);
      seen.add(x);
      if (set.add(x) !== isNew) wrong.push(i);
    }
    t.same(wrong, [], `${what}: every add says whether its address was new (${seen.size} distinct)`);
    t.ok([...seen].every((x) => set.has(x)), `${what}: has every address added`);
    let absent = 0;
    for (const x of seen) if (!seen.has(x + 40) && set.has(x + 40)) absent++;
    t.equal(absent, 0, `${what}: and none other`);
  }
  const edges = new IPv4Set();
  for (const x of [0, 0xffffffff, 0xffff, 0x10000, 31, 32]) {
    t.ok(edges.add(x), `${x} new`);
    t.notOk(edges.add(x), `${x} again`);
  }
  for (const bad of [-1, 0.5, Number.NaN, 2 ** 32]) t.throws(() => edges.add(bad), RangeError, String(bad));
  t.notOk(edges.has(1) || edges.has(2 ** 32) || edges.has(-1), 'has: not added, or not an address');
});
