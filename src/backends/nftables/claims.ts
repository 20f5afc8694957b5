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
import { SlotTable } from './slots.js';

interface Claim {
  readonly owner: ServicePortKey;
  readonly value: string;
}

/** One claim (the common case, no allocation beyond it) or several, sorted by owner. */
type Claims = Claim | Claim[];

export class ClaimIndex {
  private readonly containers = new Map<string, Map<string, Claims>>();

  /** The endpoint-map blocks behind the `endpoints` claims; moves on with the index. */
  constructor(readonly slots: SlotTable = new SlotTable()) {}

  private container(name: string): Map<string, Claims> {
    let c = this.containers.get(name);
    if (!c) {
      c = new Map();
      this.containers.set(name, c);
    }
    return c;
  }

  add(container: string, key: string, owner: ServicePortKey, value: string): void {
    const c = this.container(container);
    const had = c.get(key);
    const claim: Claim = { owner, value };
    if (had === undefined) {
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
    const c = this.containers.get(container);
    const had = c?.get(key);
    if (!c || had === undefined) return;
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

  /** Every container that has (or had) claims. */
  containerNames(): IterableIterator<string> {
    return this.containers.keys();
  }

  /** How many elements of a container are claimed. */
  size(container: string): number {
    return this.containers.get(container)?.size ?? 0;
  }

  /** The element's value as installed (winner's value), or undefined when nobody claims it. */
  value(container: string, key: string): string | undefined {
    const had = this.containers.get(container)?.get(key);
    if (had === undefined) return undefined;
    return Array.isArray(had) ? had[0]!.value : had.value;
  }

  /** Every claimed key of a container with its value, in insertion order of first claim. */
  *entries(container: string): Generator<[string, string]> {
    const c = this.containers.get(container);
    if (!c) return;
    for (const [k, had] of c) yield [k, Array.isArray(had) ? had[0]!.value : had.value];
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
