/**
 * Who claims which element of the shared sets and maps. Elements are shared: every port of a
 * Service claims the same ClusterIP in `cluster-ips`, many services may share an endpoint IP in
 * `hairpin`, and two Services may (wrongly, but Kubernetes allows it) list the same externalIP and
 * port. An element exists while anyone claims it; for maps the claimant with the smallest
 * service port key decides the value, so the outcome never depends on sync history.
 *
 * The index of the last compiled table is kept in a CompileState and, on a partial sync, moved
 * from the previous table to the next one by applying only the changed services' claims — so a
 * partial compile costs O(changes), not O(services).
 * Pure data structure; no I/O.
 */
import type { IPFamily, ProxyTable, ServicePortKey } from '../../plan/types.js';
import { endpointShardProtocol } from './names.js';
import { SlotTable } from './slots.js';

/** Deferred set claims (ClaimIndex.deferCounts): the keys, or a walk that hands each to `emit`. */
export type DeferredClaims = readonly string[] | ((emit: (key: string) => void) => void);

/**
 * Deferred map claims (ClaimIndex.deferClaims): claim i is (key(i), owners[i], values[i]), for i
 * below owners.length. The key is spelled only when the claims are indexed.
 */
export interface DeferredMapClaims {
  key(i: number): string;
  readonly owners: readonly ServicePortKey[];
  readonly values: readonly string[];
}

interface Claim {
  readonly owner: ServicePortKey;
  readonly value: string;
}

/**
 * A map element: one claim (the common case, no allocation beyond it) or several, sorted by
 * owner. A set element (value '') is only a count: every claimant wants the same thing, so who
 * claims it does not matter, only whether anyone still does.
 */
type Claims = Claim | Claim[] | number;

/**
 * Endpoint shard elements are not kept at all. A block of keys belongs to one service port
 * (slots.ts) and is never handed to another within a sync, so the elements are exactly what
 * that service's contribution says; the compiler takes them from there. The index only counts
 * them per shard, to know when a shard map must be created or deleted. (At 10k Services × 10
 * endpoints this index held 100,000 such elements, with their key and value strings.)
 */
export class ClaimIndex {
  private readonly containers = new Map<string, Map<string, Claims>>();
  private readonly shardCounts = new Map<string, number>();
  private readonly shardNames = new Map<string, boolean>();
  /**
   * Set claims a full compile handed over uncounted (deferCounts): container → every claimed
   * key, repeats included, or a walk that makes them. Counted into `containers` the first time
   * that container is read or changed, or by settle().
   */
  private readonly deferred = new Map<string, DeferredClaims | DeferredMapClaims>();

  /**
   * Grouped frontends (names.ts) installed per count set, from the winning claims; the compiler
   * keeps it up to date (it expands the claims) and it moves on with the index.
   */
  readonly countSetSizes = new Map<string, number>();

  /**
   * Grouped frontends in each masquerade set (masq-all, masq-nonlocal, masq-nodeports), from the
   * winning claims; kept up to date like countSetSizes. A partial sync checks them against the
   * sets' sizes (setSizes).
   */
  readonly masqSetSizes = new Map<string, number>();

  /**
   * The size each grouped endpoints map, count set and sized service set (compiler.ts SIZED_SETS)
   * was created with in the kernel (its
   * NFTA_SET_DESC_SIZE), by name; absent where not known (an index rebuilt without the kernel, a
   * full compile without the kernel's names). Moves on with the index.
   */
  readonly setSizes = new Map<string, number>();

  /** The endpoint-map blocks behind the shard elements; moves on with the index. */
  constructor(readonly slots: SlotTable = new SlotTable()) {}

  /** Whether `name` is an endpoint shard map (its elements are counted, not kept). */
  isShard(name: string): boolean {
    let b = this.shardNames.get(name);
    if (b === undefined) {
      b = endpointShardProtocol(name) !== undefined;
      this.shardNames.set(name, b);
    }
    return b;
  }

  /**
   * Takes a full compile's set claims of `container` (value '', no owner: only counts matter)
   * without counting them now: the full compile writes the elements from its own walk, and the
   * counts only matter to the next partial sync, so they are made after the rules are in — at
   * 44k Services × 10 endpoints the hairpin set alone is 440,000 claims. `claims` is the list of
   * claimed keys, repeats included, or a walk that makes them again (over a table that does not
   * change: the index keeps it until it is counted).
   */
  deferCounts(container: string, claims: DeferredClaims): void {
    if (Array.isArray(claims) && claims.length === 0) return;
    if (this.deferred.has(container)) this.count(container);
    this.deferred.set(container, claims);
  }

  /**
   * Takes a full compile's map claims of an empty `container` without indexing them now: the
   * compile has chosen the winners itself (no key is claimed twice) and written the elements, so
   * the index only matters to the next partial sync — at 44k Services the grouped frontends are
   * 44,000 keys to spell and hash inserts of them. Made, in order, the first time the container
   * is read or changed, or by settle(): the index is then what adding them one by one would
   * have made.
   */
  deferClaims(container: string, claims: DeferredMapClaims): void {
    if (this.isShard(container)) throw new Error(`claim index: ${container} is an endpoint shard; its claims are counted at once`);
    if (this.deferred.has(container) || (this.containers.get(container)?.size ?? 0) > 0) throw new Error(`claim index: map claims of ${container} deferred onto earlier claims`);
    if (claims.owners.length === 0) return;
    this.deferred.set(container, claims);
  }

  /** Counts every deferred set claim (deferCounts) and indexes every deferred map claim (deferClaims); afterwards the index holds no claim list. */
  settle(): void {
    for (const name of [...this.deferred.keys()]) this.count(name);
  }

  /** Whether deferred set claims wait to be counted (settle). */
  get unsettled(): boolean {
    return this.deferred.size > 0;
  }

  private count(name: string): void {
    const claims = this.deferred.get(name);
    if (claims === undefined) return;
    this.deferred.delete(name);
    if (typeof claims !== 'function' && !Array.isArray(claims)) {
      const map = claims as DeferredMapClaims;
      const { owners, values } = map;
      for (let i = 0; i < owners.length; i++) this.add(name, map.key(i), owners[i]!, values[i]!);
      return;
    }
    let c = this.containers.get(name);
    if (!c) this.containers.set(name, (c = new Map()));
    const m = c;
    const one = (k: string): void => {
      const had = m.get(k);
      if (had !== undefined && typeof had !== 'number') throw new Error(`claim index: set claim ${k} in ${name}, which holds map claims`);
      m.set(k, (had ?? 0) + 1);
    };
    if (typeof claims === 'function') claims(one);
    else {
      const list = claims as readonly string[];
      for (let i = 0; i < list.length; i++) one(list[i]!);
    }
  }

  /** The container's claims, counting its deferred ones first. */
  private read(name: string): Map<string, Claims> | undefined {
    if (this.deferred.size > 0) this.count(name);
    return this.containers.get(name);
  }

  private container(name: string): Map<string, Claims> {
    if (this.deferred.size > 0) this.count(name);
    let c = this.containers.get(name);
    if (!c) {
      c = new Map();
      this.containers.set(name, c);
    }
    return c;
  }

  add(container: string, key: string, owner: ServicePortKey, value: string): void {
    if (this.isShard(container)) {
      this.shardCounts.set(container, (this.shardCounts.get(container) ?? 0) + 1);
      return;
    }
    const c = this.container(container);
    const had = c.get(key);
    if (value === '') {
      c.set(key, (typeof had === 'number' ? had : 0) + 1);
      return;
    }
    const claim: Claim = { owner, value };
    if (had === undefined || typeof had === 'number') {
      c.set(key, claim);
      return;
    }
    const list = Array.isArray(had) ? had : [had];
    let i = list.length;
    while (i > 0 && list[i - 1]!.owner > owner) i--;
    list.splice(i, 0, claim);
    c.set(key, list);
  }

  /** Counts `n` claims of endpoint shard `container` at once (a full compile's block: ShardBlockSink). */
  addShardClaims(container: string, n: number): void {
    if (!this.isShard(container)) throw new Error(`claim index: ${container} is not an endpoint shard`);
    if (n > 0) this.shardCounts.set(container, (this.shardCounts.get(container) ?? 0) + n);
  }

  remove(container: string, key: string, owner: ServicePortKey): void {
    if (this.isShard(container)) {
      const n = (this.shardCounts.get(container) ?? 0) - 1;
      if (n > 0) this.shardCounts.set(container, n);
      else this.shardCounts.delete(container);
      return;
    }
    const c = this.read(container);
    const had = c?.get(key);
    if (!c || had === undefined) return;
    if (typeof had === 'number') {
      if (had > 1) c.set(key, had - 1);
      else c.delete(key);
      return;
    }
    if (!Array.isArray(had)) {
      if (had.owner === owner) c.delete(key);
      return;
    }
    const i = had.findIndex((x) => x.owner === owner);
    if (i < 0) return;
    had.splice(i, 1);
    if (had.length === 1) c.set(key, had[0]!);
    else if (had.length === 0) c.delete(key);
  }

  /** Every container that has (or had) claims, endpoint shards included. */
  containerNames(): IterableIterator<string> {
    const names = new Set([...this.containers.keys(), ...this.deferred.keys()]);
    return [...names, ...this.shardCounts.keys()][Symbol.iterator]();
  }

  /** How many elements of a container are claimed. */
  size(container: string): number {
    if (this.isShard(container)) return this.shardCounts.get(container) ?? 0;
    return this.read(container)?.size ?? 0;
  }

  /**
   * The element's value as installed (winner's value; '' for a set element), or undefined when
   * nobody claims it. Not for endpoint shards: their elements are the owning contribution's.
   */
  value(container: string, key: string): string | undefined {
    if (this.isShard(container)) throw new Error(`claim index: ${container} is an endpoint shard; its elements are not kept`);
    const had = this.read(container)?.get(key);
    if (had === undefined) return undefined;
    if (typeof had === 'number') return '';
    return Array.isArray(had) ? had[0]!.value : had.value;
  }

  /** Who decides a map element's value (the smallest claimant); undefined for set elements and unclaimed keys. */
  winner(container: string, key: string): ServicePortKey | undefined {
    const had = this.read(container)?.get(key);
    if (had === undefined || typeof had === 'number') return undefined;
    return Array.isArray(had) ? had[0]!.owner : had.owner;
  }

  /** forEach() for a map container, with each element's winner. */
  forEachWinner(container: string, fn: (key: string, value: string, owner: ServicePortKey) => void): void {
    this.read(container)?.forEach((had, k) => {
      if (typeof had === 'number') throw new Error(`claim index: ${container} holds set claims, not map claims`);
      const w = Array.isArray(had) ? had[0]! : had;
      fn(k, w.value, w.owner);
    });
  }

  /**
   * entries() without an iterator: `fn` gets each claimed key and its value. For the full
   * compile, which reads every container once (at 44k Services, ~600k entries).
   */
  forEach(container: string, fn: (key: string, value: string) => void): void {
    this.read(container)?.forEach((had, k) => fn(k, typeof had === 'number' ? '' : Array.isArray(had) ? had[0]!.value : had.value));
  }

  /** Every claimed key of a (non-shard) container with its value, in insertion order of first claim. */
  *entries(container: string): Generator<[string, string]> {
    const c = this.read(container);
    if (!c) return;
    for (const [k, had] of c) yield [k, typeof had === 'number' ? '' : Array.isArray(had) ? had[0]!.value : had.value];
  }
}

/**
 * What the last compile left in the kernel, per family: the table it compiled and that table's
 * claim index (with its endpoint blocks). A partial compile from that same table moves the index
 * on in O(changes); from any other table it must rebuild one as a full compile would, which is
 * exact only if that table was last compiled in full. One per kernel table (the backend owns it):
 * two compile histories must never share one.
 */
export class CompileState {
  private readonly held = new Map<IPFamily, { table: ProxyTable; index: ClaimIndex }>();
  /** The last full compile's working state, per family, until released (compiler.ts FullSink). */
  private readonly full = new Map<IPFamily, { release(): void }>();

  /** Keeps a full compile's working state until releaseFull(); the family's earlier one is released now. */
  holdFull(family: IPFamily, x: { release(): void }): void {
    this.full.get(family)?.release();
    this.full.set(family, x);
  }

  /**
   * Lets go of the IR the last full compile's kept objects reach: the backend's, once the full
   * sync's transaction is applied, settled, and kept by no one to render.
   */
  releaseFull(): void {
    for (const x of this.full.values()) x.release();
    this.full.clear();
  }

  knows(family: IPFamily, table: ProxyTable): boolean {
    return this.held.get(family)?.table === table;
  }

  /** Takes the index away (it is about to be mutated into the next table's). */
  take(family: IPFamily, table: ProxyTable): ClaimIndex | undefined {
    const h = this.held.get(family);
    this.held.delete(family);
    return h?.table === table ? h.index : undefined;
  }

  store(family: IPFamily, table: ProxyTable, index: ClaimIndex): void {
    this.held.set(family, { table, index });
  }

  /**
   * Counts what a full compile left uncounted (ClaimIndex.deferCounts); true if there was
   * anything. The backend calls it once the full sync's rules are in; a partial sync that comes
   * first counts what it reads.
   */
  settle(): boolean {
    let any = false;
    for (const { index } of this.held.values()) {
      if (!index.unsettled) continue;
      index.settle();
      any = true;
    }
    return any;
  }
}
