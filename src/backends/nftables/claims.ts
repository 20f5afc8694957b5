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
   * Grouped frontends (names.ts) installed per count set, from the winning claims; the compiler
   * keeps it up to date (it expands the claims) and it moves on with the index.
   */
  readonly countSetSizes = new Map<string, number>();

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

  private container(name: string): Map<string, Claims> {
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

  remove(container: string, key: string, owner: ServicePortKey): void {
    if (this.isShard(container)) {
      const n = (this.shardCounts.get(container) ?? 0) - 1;
      if (n > 0) this.shardCounts.set(container, n);
      else this.shardCounts.delete(container);
      return;
    }
    const c = this.containers.get(container);
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
    return [...this.containers.keys(), ...this.shardCounts.keys()][Symbol.iterator]();
  }

  /** How many elements of a container are claimed. */
  size(container: string): number {
    if (this.isShard(container)) return this.shardCounts.get(container) ?? 0;
    return this.containers.get(container)?.size ?? 0;
  }

  /**
   * The element's value as installed (winner's value; '' for a set element), or undefined when
   * nobody claims it. Not for endpoint shards: their elements are the owning contribution's.
   */
  value(container: string, key: string): string | undefined {
    if (this.isShard(container)) throw new Error(`claim index: ${container} is an endpoint shard; its elements are not kept`);
    const had = this.containers.get(container)?.get(key);
    if (had === undefined) return undefined;
    if (typeof had === 'number') return '';
    return Array.isArray(had) ? had[0]!.value : had.value;
  }

  /**
   * entries() without an iterator: `fn` gets each claimed key and its value. For the full
   * compile, which reads every container once (at 44k Services, ~600k entries).
   */
  forEach(container: string, fn: (key: string, value: string) => void): void {
    this.containers.get(container)?.forEach((had, k) => fn(k, typeof had === 'number' ? '' : Array.isArray(had) ? had[0]!.value : had.value));
  }

  /** Every claimed key of a (non-shard) container with its value, in insertion order of first claim. */
  *entries(container: string): Generator<[string, string]> {
    const c = this.containers.get(container);
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
}
