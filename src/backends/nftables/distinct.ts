/**
 * Addresses each once, in the order of first claim — the element lists a full compile writes.
 *
 * The hairpin set is the big one: at 44k Services × 10 endpoints a full compile walks 440,000
 * endpoint IPs that name 64,000 addresses. A `Set<string>` spent ~200 ns per add there (each IP
 * is its own string from the API's JSON, so each is hashed and compared by content, in a table
 * too large for the cache), close to half the compile. Canonical IPv4 addresses are kept apart
 * as 32-bit numbers in bitmaps of their own (IPv4Set); anything else goes to a Set.
 * Canonical dotted quads and their numbers correspond one to one, so the outcome is exactly
 * that of deduplicating the strings.
 * Pure; no I/O.
 */
import { canonicalIPv4 } from '../../util/ipv4.js';
import { keepShape } from '../../util/shapes.js';

const MIN_BITS = 10;

/**
 * Addresses as added, each once, in the order of first claim: canonical IPv4 ones by value, the
 * rest (IPv6, anything odd) by string. IPv4 addresses are kept as numbers only and spelled when
 * read (key): the netlink encoder reads the numbers (v4Pieces), so a full compile at 44k Services
 * neither reads the text of 64,000 endpoint objects scattered over the heap nor stores a pointer
 * for each.
 */
export class FirstAddresses {
  /** Entry i: its address as `v | 0` (a small integer to V8), or -1: spelled in `spelled`. */
  private nums: Int32Array;
  private readonly spelled = new Map<number, string>();
  private n = 0;
  private readonly v4 = new IPv4Set();
  private others: Set<string> | undefined;

  /** `capacity`: how many addresses the caller expects (more are fine: the list grows). */
  constructor(capacity = 0) {
    this.nums = new Int32Array(Math.max(capacity, 16));
    keepShape(this);
  }

  get count(): number {
    return this.n;
  }

  /**
   * Entry i as a V4Piece (transaction.ts) at [i]: the address as a signed 32-bit number, or -1
   * (read key(i)). What lies from `count` on is not an entry.
   */
  get v4Pieces(): ArrayLike<number> {
    return this.nums;
  }

  /** Entry i as spelled: the canonical dotted quad of an IPv4 number, or the string as added. */
  key(i: number): string {
    const v = this.nums[i]!;
    return v === -1 ? this.spelled.get(i)! : ipv4Text(v >>> 0);
  }

  private pushNumber(v: number): void {
    const i = this.n++;
    if (i === this.nums.length) this.grow();
    // 255.255.255.255 is -1 as a signed number: spelled instead, like any address without one.
    if (v === 0xffffffff) {
      this.nums[i] = -1;
      this.spelled.set(i, '255.255.255.255');
    } else {
      this.nums[i] = v | 0;
    }
  }

  private pushSpelled(ip: string): void {
    const i = this.n++;
    if (i === this.nums.length) this.grow();
    this.nums[i] = -1;
    this.spelled.set(i, ip);
  }

  private grow(): void {
    const nums = new Int32Array(this.nums.length * 2);
    nums.set(this.nums);
    this.nums = nums;
  }

  /** `v4`: the address's value if the caller has it (PlannedEndpoint.v4), -1 if not IPv4. */
  add(ip: string, v4?: number): void {
    const v = v4 ?? canonicalIPv4(ip);
    if (v < 0) {
      const others = (this.others ??= new Set());
      const n = others.size;
      others.add(ip);
      if (others.size !== n) this.pushSpelled(ip);
      return;
    }
    if (this.v4.add(v)) this.pushNumber(v);
  }

  /** An address by its canonical IPv4 value alone (PlannedEndpoint.v4 ≥ 0): its text is never read. */
  addV4(v4: number): void {
    if (this.v4.add(v4)) this.pushNumber(v4);
  }
}

/** The canonical dotted quad of a 32-bit value (canonicalIPv4's inverse). */
export function ipv4Text(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/**
 * A set of integers in [0, 2^53): open addressing in one Float64Array, so an add costs one
 * random memory access (plus its neighbours) — a table of 64,000 addresses does not fit the
 * cache, and that access is most of the cost.
 */
export class NumberSet {
  private bits = MIN_BITS;
  private table = new Float64Array(1 << MIN_BITS).fill(-1);
  private count = 0;

  constructor() {
    keepShape(this);
  }

  get size(): number {
    return this.count;
  }

  /** Whether `x` was new. */
  add(x: number): boolean {
    if (!(x >= 0 && x <= Number.MAX_SAFE_INTEGER && Number.isInteger(x))) throw new RangeError(`NumberSet: ${x} is not an integer in [0, 2^53)`);
    const mask = (1 << this.bits) - 1;
    const table = this.table;
    for (let i = slotOf(x, this.bits); ; i = (i + 1) & mask) {
      const at = table[i]!;
      if (at === x) return false;
      if (at === -1) {
        table[i] = x;
        if (++this.count * 2 > mask) this.grow();
        return true;
      }
    }
  }

  /** Whether `x` was added. */
  has(x: number): boolean {
    if (!(x >= 0 && x <= Number.MAX_SAFE_INTEGER && Number.isInteger(x))) return false;
    const mask = (1 << this.bits) - 1;
    for (let i = slotOf(x, this.bits); ; i = (i + 1) & mask) {
      const at = this.table[i]!;
      if (at === x) return true;
      if (at === -1) return false;
    }
  }

  private grow(): void {
    const old = this.table;
    this.bits++;
    const mask = (1 << this.bits) - 1;
    const table = new Float64Array(1 << this.bits).fill(-1);
    for (let j = 0; j < old.length; j++) {
      const x = old[j]!;
      if (x === -1) continue;
      let i = slotOf(x, this.bits);
      while (table[i] !== -1) i = (i + 1) & mask;
      table[i] = x;
    }
    this.table = table;
  }
}

/** /16s with a bitmap of their own (8 KiB each, 2 MiB at most); addresses beyond go to a NumberSet. */
const MAX_PAGES = 256;

/**
 * A set of IPv4 addresses (32-bit values): one bitmap per /16 seen, the /16s found through a Map
 * (the last one remembered). Pod and Service addresses are dense in a few /16s, so at 44k
 * Services the hairpin set's 440,000 adds test bits in a few pages that stay in the cache, where
 * the NumberSet's megabyte table cost a cache miss an add in the daemon. Past MAX_PAGES /16s (a
 * cluster spread over the whole address space) the rest go to a NumberSet: exact either way.
 */
export class IPv4Set {
  private readonly pages = new Map<number, Int32Array>();
  private lastHi = -1;
  private lastPage: Int32Array | undefined;
  private overflow: NumberSet | undefined;

  constructor() {
    keepShape(this);
  }

  /** Whether `v4` (an integer in [0, 2^32)) was new. */
  add(v4: number): boolean {
    if (!(v4 >= 0 && v4 <= 0xffffffff && Number.isInteger(v4))) throw new RangeError(`IPv4Set: ${v4} is not an IPv4 address value`);
    const hi = Math.floor(v4 / 65536);
    let page = this.lastPage;
    if (hi !== this.lastHi) {
      page = this.pages.get(hi);
      if (page === undefined) {
        if (this.pages.size >= MAX_PAGES) return (this.overflow ??= new NumberSet()).add(v4);
        page = new Int32Array(2048);
        this.pages.set(hi, page);
      }
      this.lastHi = hi;
      this.lastPage = page;
    }
    const lo = v4 & 0xffff;
    const word = page![lo >>> 5]!;
    const bit = 1 << (lo & 31);
    if ((word & bit) !== 0) return false;
    page![lo >>> 5] = word | bit;
    return true;
  }

  /** Whether `v4` was added. */
  has(v4: number): boolean {
    if (!(v4 >= 0 && v4 <= 0xffffffff && Number.isInteger(v4))) return false;
    const page = this.pages.get(Math.floor(v4 / 65536));
    if (page === undefined) return this.overflow?.has(v4) ?? false;
    const lo = v4 & 0xffff;
    return (page[lo >>> 5]! & (1 << (lo & 31))) !== 0;
  }
}

function slotOf(x: number, bits: number): number {
  const lo = x >>> 0;
  const hi = (x - lo) / 4294967296;
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> (32 - bits);
}
