/**
 * A persistent map from strings, iterated in key order (code-unit order): a B+tree whose updates
 * copy only the path they change. A new version shares every untouched leaf with the old one, so
 * the tracker's snapshot and the planner's table can change one service port in O(log n) while
 * the previous version stays readable — what a sync needs to compare prev with next — instead of
 * copying a whole Map per change (tens of milliseconds at 44k Services).
 *
 * Versions are made through a SortedMapEditor (a "transient"): nodes the editor copied are
 * its own and are changed in place by its later edits, so a batch of k changes copies each
 * touched node once. finish() seals them. A finished map never changes.
 *
 * Deletes do not rebalance beyond merging a small leaf into a neighbour: the tree never gets
 * deeper on a delete, and a rebuild (fromSorted) compacts it.
 */

/** Entries per leaf, children per branch. 64 keeps a 440,000-entry map at depth 3-4. */
const MAX = 64;
const HALF = MAX >> 1;
/** A leaf this small after a delete is merged into a neighbour when the two fit in one. */
const SMALL = MAX >> 2;

/** Owner token of nodes no editor may change in place (finished maps). */
const SEALED: object = Object.freeze({});

class Leaf<V> {
  constructor(
    public keys: string[],
    public vals: V[],
    public owner: object,
  ) {}
}

class Branch<V> {
  /**
   * seps[i] is a lower bound of every key under kids[i] and above every key under kids[i-1];
   * seps[0] is not consulted.
   */
  constructor(
    public seps: string[],
    public kids: Node<V>[],
    public owner: object,
  ) {}
}

type Node<V> = Leaf<V> | Branch<V>;

/** First index whose key is >= k. */
function lowerBound(keys: readonly string[], k: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The child of a branch that holds k (or would): the last i >= 1 with seps[i] <= k, else 0. */
function childIndex(seps: readonly string[], k: string): number {
  let lo = 1;
  let hi = seps.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (seps[mid]! <= k) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

function isEmpty<V>(n: Node<V>): boolean {
  return n instanceof Leaf ? n.keys.length === 0 : n.kids.length === 0;
}

/** The leaf whose range holds k. */
function leafOf<V>(root: Node<V>, k: string): Leaf<V> {
  let n = root;
  while (n instanceof Branch) n = n.kids[childIndex(n.seps, k)]!;
  return n;
}

function getIn<V>(root: Node<V>, k: string): V | undefined {
  const leaf = leafOf(root, k);
  const i = lowerBound(leaf.keys, k);
  return leaf.keys[i] === k ? leaf.vals[i] : undefined;
}

function hasIn<V>(root: Node<V>, k: string): boolean {
  const leaf = leafOf(root, k);
  return leaf.keys[lowerBound(leaf.keys, k)] === k;
}

function eachIn<V>(n: Node<V>, fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg: unknown, map: ReadonlyMap<string, V>): void {
  if (n instanceof Leaf) {
    const keys = n.keys;
    const vals = n.vals;
    for (let i = 0; i < keys.length; i++) fn.call(thisArg, vals[i]!, keys[i]!, map);
    return;
  }
  const kids = n.kids;
  for (let i = 0; i < kids.length; i++) eachIn(kids[i]!, fn, thisArg, map);
}

const MODE_KEYS = 0;
const MODE_VALUES = 1;
const MODE_ENTRIES = 2;

/** In-order walk with an explicit stack (generators are several times slower in V8 here). */
class Walk<V, T> implements IterableIterator<T> {
  private readonly stack: { node: Branch<V>; i: number }[] = [];
  private leaf: Leaf<V> | undefined;
  private i = 0;

  constructor(
    root: Node<V>,
    private readonly mode: number,
    from?: string,
  ) {
    let n = root;
    while (n instanceof Branch) {
      const i = from === undefined ? 0 : childIndex(n.seps, from);
      this.stack.push({ node: n, i });
      n = n.kids[i]!;
    }
    this.leaf = n;
    this.i = from === undefined ? 0 : lowerBound(n.keys, from);
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this;
  }

  next(): IteratorResult<T> {
    for (;;) {
      const leaf = this.leaf;
      if (leaf === undefined) return { done: true, value: undefined };
      if (this.i < leaf.keys.length) {
        const i = this.i++;
        const value = (this.mode === MODE_KEYS ? leaf.keys[i] : this.mode === MODE_VALUES ? leaf.vals[i] : [leaf.keys[i], leaf.vals[i]]) as T;
        return { done: false, value };
      }
      this.advance();
    }
  }

  private advance(): void {
    this.leaf = undefined;
    while (this.stack.length > 0) {
      const top = this.stack[this.stack.length - 1]!;
      top.i++;
      if (top.i < top.node.kids.length) {
        let n = top.node.kids[top.i]!;
        while (n instanceof Branch) {
          this.stack.push({ node: n, i: 0 });
          n = n.kids[0]!;
        }
        this.leaf = n;
        this.i = 0;
        return;
      }
      this.stack.pop();
    }
  }
}

export class SortedMap<V> implements ReadonlyMap<string, V> {
  private static readonly EMPTY = new SortedMap<never>(new Leaf<never>([], [], SEALED), 0);

  /** @internal use empty(), fromSorted() or an editor. */
  constructor(
    /** @internal */ readonly root: Node<V>,
    readonly size: number,
  ) {}

  static empty<V>(): SortedMap<V> {
    return SortedMap.EMPTY as SortedMap<V>;
  }

  /** From keys in strictly increasing order (checked) and their values: O(n), leaves full. */
  static fromSorted<V>(keys: readonly string[], vals: readonly V[]): SortedMap<V> {
    if (keys.length !== vals.length) throw new Error('SortedMap.fromSorted: keys and values differ in length');
    for (let i = 1; i < keys.length; i++) {
      if (!(keys[i - 1]! < keys[i]!)) throw new Error(`SortedMap.fromSorted: keys not strictly increasing at ${i} (${keys[i - 1]} then ${keys[i]})`);
    }
    if (keys.length === 0) return SortedMap.empty();
    let level: Node<V>[] = [];
    let firsts: string[] = [];
    for (let i = 0; i < keys.length; i += MAX) {
      level.push(new Leaf(keys.slice(i, i + MAX), vals.slice(i, i + MAX), SEALED));
      firsts.push(keys[i]!);
    }
    while (level.length > 1) {
      const up: Node<V>[] = [];
      const upFirsts: string[] = [];
      for (let i = 0; i < level.length; i += MAX) {
        up.push(new Branch(firsts.slice(i, i + MAX), level.slice(i, i + MAX), SEALED));
        upFirsts.push(firsts[i]!);
      }
      level = up;
      firsts = upFirsts;
    }
    return new SortedMap(level[0]!, keys.length);
  }

  /** Any map or entry list, sorted by key (a SortedMap is returned as is). */
  static from<V>(m: ReadonlyMap<string, V> | Iterable<readonly [string, V]>): SortedMap<V> {
    if (m instanceof SortedMap) return m as SortedMap<V>;
    const entries = [...m].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const keys: string[] = [];
    const vals: V[] = [];
    for (const [k, v] of entries) {
      // A later duplicate wins, as in new Map(entries).
      if (keys.length > 0 && keys[keys.length - 1] === k) vals[vals.length - 1] = v;
      else {
        keys.push(k);
        vals.push(v);
      }
    }
    return SortedMap.fromSorted(keys, vals);
  }

  get(k: string): V | undefined {
    return getIn(this.root, k);
  }

  has(k: string): boolean {
    return hasIn(this.root, k);
  }

  keys(): IterableIterator<string> {
    return new Walk<V, string>(this.root, MODE_KEYS);
  }

  values(): IterableIterator<V> {
    return new Walk<V, V>(this.root, MODE_VALUES);
  }

  entries(): IterableIterator<[string, V]> {
    return new Walk<V, [string, V]>(this.root, MODE_ENTRIES);
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    // The leaves walked directly: iterating entries() would make an iterator result and a
    // [key, value] pair per entry (4 MB a full compile at 44k Services, which walks its table
    // with this).
    eachIn(this.root, fn, thisArg, this);
  }

  /** Keys >= from, in order. */
  keysFrom(from: string): IterableIterator<string> {
    return new Walk<V, string>(this.root, MODE_KEYS, from);
  }

  /** Keys that start with prefix, in order. */
  *keysWithPrefix(prefix: string): IterableIterator<string> {
    for (const k of this.keysFrom(prefix)) {
      if (!k.startsWith(prefix)) return;
      yield k;
    }
  }

  edit(): SortedMapEditor<V> {
    return new SortedMapEditor(this);
  }

  get [Symbol.toStringTag](): string {
    return 'SortedMap';
  }
}

/**
 * Changes to a SortedMap that make a new version; the map it started from is never changed.
 * Reads see the edits made so far.
 */
export class SortedMapEditor<V> {
  private owner: object | null = {};
  private root: Node<V>;
  private count: number;
  private readonly base: SortedMap<V>;
  private changed = false;
  // Results of the last insert below the root (a split's right half and its first key).
  private splitNode: Node<V> | undefined;
  private splitKey = '';
  private grew = false;
  private removed = false;

  constructor(base: SortedMap<V>) {
    this.base = base;
    this.root = base.root;
    this.count = base.size;
  }

  get size(): number {
    return this.count;
  }

  get(k: string): V | undefined {
    return getIn(this.root, k);
  }

  has(k: string): boolean {
    return hasIn(this.root, k);
  }

  set(k: string, v: V): this {
    const owner = this.live();
    this.grew = false;
    this.splitNode = undefined;
    const r = this.insert(this.root, k, v, owner);
    if (this.splitNode !== undefined) {
      const right = this.splitNode;
      this.splitNode = undefined;
      this.root = new Branch(['', this.splitKey], [r, right], owner);
      this.changed = true;
    } else if (r !== this.root) {
      this.root = r;
      this.changed = true;
    }
    if (this.grew) this.count++;
    return this;
  }

  delete(k: string): boolean {
    const owner = this.live();
    this.removed = false;
    const r = this.remove(this.root, k, owner);
    if (!this.removed) return false;
    let root = r;
    while (root instanceof Branch && root.kids.length === 1) root = root.kids[0]!;
    this.root = isEmpty(root) ? new Leaf<V>([], [], owner) : root;
    this.count--;
    this.changed = true;
    return true;
  }

  /** The new version (the base itself when nothing changed). The editor is done. */
  finish(): SortedMap<V> {
    const owner = this.live();
    this.owner = null;
    if (!this.changed) return this.base;
    seal(this.root, owner);
    return new SortedMap(this.root, this.count);
  }

  private live(): object {
    if (this.owner === null) throw new Error('SortedMapEditor used after finish()');
    return this.owner;
  }

  private insert(node: Node<V>, k: string, v: V, owner: object): Node<V> {
    if (node instanceof Leaf) {
      const i = lowerBound(node.keys, k);
      if (node.keys[i] === k) {
        if (node.vals[i] === v) return node;
        const n = node.owner === owner ? node : new Leaf(node.keys.slice(), node.vals.slice(), owner);
        n.vals[i] = v;
        return n;
      }
      const n = node.owner === owner ? node : new Leaf(node.keys.slice(), node.vals.slice(), owner);
      n.keys.splice(i, 0, k);
      n.vals.splice(i, 0, v);
      this.grew = true;
      if (n.keys.length > MAX) {
        // Appending in order (a bulk build) leaves full leaves behind, not half-full ones.
        const at = i === n.keys.length - 1 ? MAX : HALF;
        const right = new Leaf(n.keys.splice(at), n.vals.splice(at), owner);
        this.splitNode = right;
        this.splitKey = right.keys[0]!;
      }
      return n;
    }
    const i = childIndex(node.seps, k);
    const child = node.kids[i]!;
    const c = this.insert(child, k, v, owner);
    const split = this.splitNode;
    if (c === child && split === undefined) return node;
    const n = node.owner === owner ? node : new Branch(node.seps.slice(), node.kids.slice(), owner);
    n.kids[i] = c;
    if (split !== undefined) {
      this.splitNode = undefined;
      n.kids.splice(i + 1, 0, split);
      n.seps.splice(i + 1, 0, this.splitKey);
      if (n.kids.length > MAX) {
        const at = i + 1 === n.kids.length - 1 ? MAX : HALF;
        const right = new Branch(n.seps.splice(at), n.kids.splice(at), owner);
        this.splitNode = right;
        this.splitKey = right.seps[0]!;
      }
    }
    return n;
  }

  /** The node without k (itself when k is absent); may return an empty node. */
  private remove(node: Node<V>, k: string, owner: object): Node<V> {
    if (node instanceof Leaf) {
      const i = lowerBound(node.keys, k);
      if (node.keys[i] !== k) return node;
      const n = node.owner === owner ? node : new Leaf(node.keys.slice(), node.vals.slice(), owner);
      n.keys.splice(i, 1);
      n.vals.splice(i, 1);
      this.removed = true;
      return n;
    }
    const i = childIndex(node.seps, k);
    const child = node.kids[i]!;
    const c = this.remove(child, k, owner);
    if (!this.removed) return node;
    const n = node.owner === owner ? node : new Branch(node.seps.slice(), node.kids.slice(), owner);
    if (isEmpty(c)) {
      n.kids.splice(i, 1);
      n.seps.splice(i, 1);
      return n;
    }
    n.kids[i] = c;
    if (c instanceof Leaf && c.keys.length < SMALL) this.mergeSmallLeaf(n, i, owner);
    return n;
  }

  /** Folds the small leaf at i into a neighbour leaf when both fit in one. */
  private mergeSmallLeaf(n: Branch<V>, i: number, owner: object): void {
    const j = i + 1 < n.kids.length ? i + 1 : i - 1;
    if (j < 0) return;
    const [l, r] = j > i ? [i, j] : [j, i];
    const a = n.kids[l]!;
    const b = n.kids[r]!;
    if (!(a instanceof Leaf) || !(b instanceof Leaf) || a.keys.length + b.keys.length > MAX) return;
    n.kids.splice(l, 2, new Leaf(a.keys.concat(b.keys), a.vals.concat(b.vals), owner));
    n.seps.splice(r, 1);
  }
}

/** Marks the editor's own nodes as sealed; shared nodes below are sealed already. */
function seal<V>(node: Node<V>, owner: object): void {
  if (node.owner !== owner) return;
  node.owner = SEALED;
  if (node instanceof Branch) for (const k of node.kids) seal(k, owner);
}
