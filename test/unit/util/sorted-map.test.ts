import t, { type Test } from 'tap';
import { SortedMap } from '../../../src/util/sorted-map.js';

/** Deterministic pseudo-random numbers (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const THIS = { thisArg: true };

const byKey = (a: [string, number], b: [string, number]): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** Every way of reading `m` agrees with the reference Map, in sorted order. */
function same(t: Test, m: SortedMap<number>, ref: Map<string, number>, what: string): void {
  const want = [...ref].sort(byKey);
  t.equal(m.size, ref.size, `${what}: size`);
  t.same([...m], want, `${what}: entries in key order`);
  t.same([...m.keys()], want.map((e) => e[0]), `${what}: keys`);
  t.same([...m.values()], want.map((e) => e[1]), `${what}: values`);
  const walked: [string, number][] = [];
  m.forEach(function (this: unknown, v, k, map) {
    if (map !== m || this !== THIS) throw new Error('forEach: wrong map or thisArg');
    walked.push([k, v]);
  }, THIS);
  t.same(walked, want, `${what}: forEach in key order`);
  let bad = 0;
  for (const [k, v] of ref) if (m.get(k) !== v || !m.has(k)) bad++;
  t.equal(bad, 0, `${what}: every key found with its value`);
}

t.test('random edits match a Map, and every earlier version stays as it was', async (t) => {
  const rand = rng(7);
  const key = (): string => `ns${Math.floor(rand() * 40)}/svc${Math.floor(rand() * 200)}:${Math.floor(rand() * 3)}/TCP`;
  let m = SortedMap.empty<number>();
  const ref = new Map<string, number>();
  const versions: [SortedMap<number>, Map<string, number>][] = [];
  const mismatches: string[] = [];
  for (let round = 0; round < 60; round++) {
    const e = m.edit();
    const ops = round < 5 ? 3000 : 1 + Math.floor(rand() * 200);
    for (let i = 0; i < ops; i++) {
      const k = key();
      if (rand() < (round < 5 ? 0.1 : 0.45)) {
        if (e.delete(k) !== ref.delete(k)) mismatches.push(`round ${round}: delete ${k} misreported`);
      } else {
        const v = Math.floor(rand() * 1e6);
        e.set(k, v);
        ref.set(k, v);
      }
      if (e.size !== ref.size) mismatches.push(`round ${round}: editor size ${e.size} != ${ref.size}`);
    }
    m = e.finish();
    versions.push([m, new Map(ref)]);
  }
  t.same(mismatches.slice(0, 5), [], 'deletes report presence; the editor counts entries');
  same(t, m, ref, 'last version');
  for (const [i, [v, r]] of versions.entries()) if (i % 10 === 0) same(t, v, r, `version ${i}`);
});

t.test('an edit that changes nothing returns the same map; an editor is done after finish', async (t) => {
  const m = SortedMap.from(new Map([['a', 1], ['b', 2]]));
  const e = m.edit();
  e.set('a', 1);
  e.delete('zz');
  t.equal(e.finish(), m);
  t.throws(() => e.set('c', 3), /after finish/);
});

t.test('bulk builds: fromSorted, appending in order, deleting everything', async (t) => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `k${String(i).padStart(6, '0')}`);
  const vals = keys.map((_, i) => i);
  const a = SortedMap.fromSorted(keys, vals);
  const e = SortedMap.empty<number>().edit();
  for (const [i, k] of keys.entries()) e.set(k, i);
  const b = e.finish();
  t.same([...a], [...b]);
  t.equal(b.get('k000500'), 500);
  t.throws(() => SortedMap.fromSorted(['b', 'a'], [1, 2]), /not strictly increasing/);

  const d = b.edit();
  for (const k of keys) d.delete(k);
  const empty = d.finish();
  t.equal(empty.size, 0);
  t.same([...empty], []);
  t.equal(b.size, 10_000, 'the version deleted from is untouched');
  const again = empty.edit();
  again.set('x', 1);
  t.same([...again.finish()], [['x', 1]]);
});

t.test('keysFrom and keysWithPrefix find a Service run', async (t) => {
  const e = SortedMap.empty<number>().edit();
  for (const ns of ['a', 'b', 'c']) for (const name of ['web', 'web2', 'x']) for (const p of ['80/TCP', '443/TCP']) e.set(`${ns}/${name}:${p}`, 0);
  const m = e.finish();
  t.same([...m.keysWithPrefix('b/web:')], ['b/web:443/TCP', 'b/web:80/TCP']);
  t.same([...m.keysWithPrefix('b/nope:')], []);
  t.same([...m.keysFrom('c/x:8')], ['c/x:80/TCP']);
  t.same([...m.keysFrom('d')], []);
});
