/**
 * Map elements in bulk: keys and values of one map side by side in two contiguous buffers, the
 * form the addon's batched calls take and give (bpf_map_update_batch, bpf_map_lookup_batch). A
 * full sync of 44k Services × 10 endpoints is about a million elements; kept as buffers they cost
 * two allocations per map instead of two strings and a Map entry each, and the diff against a
 * dump is a hash join over 32-bit words (diffElements) with no per-element object.
 *
 * Pure: no I/O. Iterating gives latin1 strings (one char per byte), for tests and small diffs.
 */
import { MAP_SIZES, type MapName } from './layout.js';

/** Elements of one map: element i's key at keys[i * keySize], its value at values[i * valueSize]. */
export class Elements implements Iterable<readonly [string, string]> {
  readonly keySize: number;
  readonly valueSize: number;
  keys: Buffer;
  values: Buffer;
  count: number;

  private constructor(
    readonly map: MapName,
    keys: Buffer,
    values: Buffer,
    count: number,
  ) {
    this.keySize = MAP_SIZES[map].key;
    this.valueSize = MAP_SIZES[map].value;
    this.keys = keys;
    this.values = values;
    this.count = count;
  }

  /** Empty, growing as elements are added (zero-filled: what a writer leaves out stays 0). */
  static empty(map: MapName): Elements {
    return new Elements(map, EMPTY, EMPTY, 0);
  }

  /** `count` elements already in buffers (a dump). */
  static of(map: MapName, keys: Buffer, values: Buffer, count: number): Elements {
    const { key, value } = MAP_SIZES[map];
    if (keys.length < count * key || values.length < count * value) throw new RangeError(`${map}: ${count} elements do not fit in ${keys.length}/${values.length} bytes`);
    return new Elements(map, keys, values, count);
  }

  /** From binary-string pairs (tests, the in-memory applier, partial syncs). */
  static fromPairs(map: MapName, pairs: Iterable<readonly [string, string]>): Elements {
    const e = Elements.empty(map);
    for (const [k, v] of pairs) {
      if (k.length !== e.keySize || v.length !== e.valueSize) throw new RangeError(`${map}: element of ${k.length}/${v.length} bytes, want ${e.keySize}/${e.valueSize}`);
      const i = e.add();
      e.keys.write(k, i * e.keySize, 'latin1');
      e.values.write(v, i * e.valueSize, 'latin1');
    }
    return e;
  }

  get length(): number {
    return this.count;
  }

  /** Appends a zeroed element; returns its index. The buffers may be replaced: read them after. */
  add(): number {
    if ((this.count + 1) * this.keySize > this.keys.length) this.reserve(Math.max(8, this.count));
    return this.count++;
  }

  /** Room for `n` more elements without growing (over-estimating costs only zeroed memory). */
  reserve(n: number): void {
    const cap = this.count + n;
    if (cap * this.keySize <= this.keys.length) return;
    this.keys = grown(this.keys, cap * this.keySize, this.count * this.keySize);
    this.values = grown(this.values, cap * this.valueSize, this.count * this.valueSize);
  }

  /** Empties it, keeping (and zeroing) its buffers for the next use. */
  clear(): void {
    this.keys.fill(0, 0, this.count * this.keySize);
    this.values.fill(0, 0, this.count * this.valueSize);
    this.count = 0;
  }

  /** Takes back the last element added (zeroing it, so it can be added again). */
  pop(): void {
    this.count--;
    this.keys.fill(0, this.count * this.keySize, (this.count + 1) * this.keySize);
    this.values.fill(0, this.count * this.valueSize, (this.count + 1) * this.valueSize);
  }

  key(i: number): string {
    return this.keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
  }

  value(i: number): string {
    return this.values.toString('latin1', i * this.valueSize, (i + 1) * this.valueSize);
  }

  /** The elements' bytes, exactly (no spare capacity): what the addon writes. */
  keyBytes(): Buffer {
    return this.keys.subarray(0, this.count * this.keySize);
  }

  valueBytes(): Buffer {
    return this.values.subarray(0, this.count * this.valueSize);
  }

  *[Symbol.iterator](): IterableIterator<readonly [string, string]> {
    for (let i = 0; i < this.count; i++) yield [this.key(i), this.value(i)];
  }
}

/** Keys of one map (elements to delete). Iterating gives latin1 strings. */
export class Keys implements Iterable<string> {
  readonly keySize: number;

  constructor(
    readonly map: MapName,
    readonly keys: Buffer,
    readonly count: number,
  ) {
    this.keySize = MAP_SIZES[map].key;
  }

  static fromStrings(map: MapName, keys: readonly string[]): Keys {
    return new Keys(map, Buffer.from(keys.join(''), 'latin1'), keys.length);
  }

  get length(): number {
    return this.count;
  }

  keyBytes(): Buffer {
    return this.keys.subarray(0, this.count * this.keySize);
  }

  *[Symbol.iterator](): IterableIterator<string> {
    for (let i = 0; i < this.count; i++) yield this.keys.toString('latin1', i * this.keySize, (i + 1) * this.keySize);
  }
}

const EMPTY = Buffer.alloc(0);

function grown(b: Buffer, size: number, used: number): Buffer {
  // Its own ArrayBuffer (never the shared pool): offset 0, so 32-bit views line up.
  const n = Buffer.alloc(size);
  b.copy(n, 0, 0, used);
  return n;
}

/** The elements' bytes as 32-bit words (every key and value size in maps.h is a multiple of 4). */
function words(b: Buffer, bytes: number): Int32Array {
  if (b.byteOffset % 4 === 0) return new Int32Array(b.buffer, b.byteOffset, bytes / 4);
  const w = new Int32Array(bytes / 4);
  new Uint8Array(w.buffer).set(b.subarray(0, bytes));
  return w;
}

/** murmur3's 32-bit mix over `n` words from `off`. */
function hashWords(w: Int32Array, off: number, n: number): number {
  let h = 0x9747b28c;
  for (let i = 0; i < n; i++) {
    let k = Math.imul(w[off + i] as number, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function sameWords(a: Int32Array, ao: number, b: Int32Array, bo: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/**
 * What a map holds (a dump), indexed by key for diffs against desired elements that may come in
 * several parts (a full sync compiled in chunks): probe() each part, then gone() gives the keys
 * no part had. A hash join: open addressing over an Int32Array of element indices, keys
 * compared as 32-bit words; no per-element object.
 */
export class DumpIndex {
  private readonly kw: number;
  private readonly vw: number;
  private readonly ck: Int32Array;
  private readonly cv: Int32Array;
  private readonly slots: Int32Array;
  private readonly mask: number;
  private readonly seen: Uint8Array;

  constructor(readonly current: Elements) {
    this.kw = current.keySize / 4;
    this.vw = current.valueSize / 4;
    this.ck = words(current.keys, current.count * current.keySize);
    this.cv = words(current.values, current.count * current.valueSize);
    let cap = 1;
    while (cap < current.count * 2) cap *= 2;
    this.mask = cap - 1;
    this.slots = new Int32Array(current.count === 0 ? 1 : cap); // element index + 1; 0 = free
    this.seen = new Uint8Array(current.count);
    for (let i = 0; i < current.count; i++) {
      let h = hashWords(this.ck, i * this.kw, this.kw) & this.mask;
      while (this.slots[h] !== 0) h = (h + 1) & this.mask;
      this.slots[h] = i + 1;
    }
  }

  /** The elements of `desired` the map does not hold as they are (all of them when it is empty). */
  probe(desired: Elements): Elements {
    const current = this.current;
    if (current.count === 0) return desired;
    const { kw, vw, ck, cv, slots, mask, seen } = this;
    const dk = words(desired.keys, desired.count * desired.keySize);
    const dv = words(desired.values, desired.count * desired.valueSize);
    const changed = new Int32Array(desired.count);
    let nChanged = 0;
    for (let j = 0; j < desired.count; j++) {
      let h = hashWords(dk, j * kw, kw) & mask;
      let found = -1;
      for (let e = slots[h] as number; e !== 0; h = (h + 1) & mask, e = slots[h] as number) {
        if (sameWords(ck, (e - 1) * kw, dk, j * kw, kw)) {
          found = e - 1;
          break;
        }
      }
      if (found >= 0) {
        seen[found] = 1;
        if (sameWords(cv, found * vw, dv, j * vw, vw)) continue;
      }
      changed[nChanged++] = j;
    }
    if (nChanged === desired.count) return desired;
    const upserts = Elements.empty(desired.map);
    upserts.reserve(nChanged);
    const ks = desired.keySize;
    const vs = desired.valueSize;
    for (let n = 0; n < nChanged; n++) {
      const j = changed[n] as number;
      const i = upserts.add();
      desired.keys.copy(upserts.keys, i * ks, j * ks, (j + 1) * ks);
      desired.values.copy(upserts.values, i * vs, j * vs, (j + 1) * vs);
    }
    return upserts;
  }

  /** The keys of the map that no probe() had. */
  gone(): Keys {
    const current = this.current;
    const ks = current.keySize;
    let n = 0;
    for (let i = 0; i < current.count; i++) if (this.seen[i] === 0) n++;
    const out = Buffer.alloc(n * ks);
    for (let i = 0, o = 0; i < current.count; i++) {
      if (this.seen[i] === 0) current.keys.copy(out, o++ * ks, i * ks, (i + 1) * ks);
    }
    return new Keys(current.map, out, n);
  }
}

/**
 * From `current` (what a map holds) to `desired`: the desired elements that are absent or hold
 * another value, and the keys of current elements desired does not have.
 */
export function diffElements(current: Elements, desired: Elements): { upserts: Elements; deletes: Keys } {
  const index = new DumpIndex(current);
  const upserts = index.probe(desired);
  return { upserts, deletes: index.gone() };
}
