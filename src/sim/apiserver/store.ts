/**
 * The simulator's etcd: every stored object, one global resourceVersion counter, a bounded
 * history of change events for watch resumption, and synchronous fan-out to subscribers
 * (watch streams, the EndpointSlice controller).
 * It never validates or defaults anything; the registry does that before writing here.
 * Stored objects are treated as immutable: callers must never mutate what they get back.
 */
import type { KObject } from './objects.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly type: EventType;
  /** The resource's storage key, e.g. `services` or `endpointslices.discovery.k8s.io`. */
  readonly resource: string;
  readonly rv: number;
  /** The new state; for DELETED the last state, carrying the deletion's resourceVersion. */
  readonly object: KObject;
  /** The state before this change (MODIFIED, DELETED). */
  readonly prev?: KObject;
}

export type Subscriber = (e: StoreEvent) => void;

export class Store {
  private rv = 1;
  /** resource → namespace ('' for cluster-scoped) → name → object */
  private readonly data = new Map<string, Map<string, Map<string, KObject>>>();
  private history: StoreEvent[] = [];
  private historyStart = 0;
  /** Watches may resume from any resourceVersion >= floor. */
  private floor = 1;
  private readonly subscribers = new Set<Subscriber>();

  constructor(private readonly maxHistory: number) {}

  get resourceVersion(): number {
    return this.rv;
  }

  /** The oldest resourceVersion a watch may still start from. */
  get oldestResumable(): number {
    return this.floor;
  }

  get(resource: string, namespace: string | undefined, name: string): KObject | undefined {
    return this.data.get(resource)?.get(namespace ?? '')?.get(name);
  }

  /**
   * Objects sorted by namespace then name, like etcd's key order. The sorted list is cached until
   * the next write: a paginated list of 44,000 objects asks for it once per page.
   */
  list(resource: string, namespace?: string): readonly KObject[] {
    const cacheKey = `${resource}\0${namespace ?? '\0all'}`;
    const hit = this.sorted.get(cacheKey);
    if (hit && hit.rv === this.rv) return hit.out;
    const byNs = this.data.get(resource);
    if (!byNs) return [];
    const out: KObject[] = [];
    const nss = namespace !== undefined ? [namespace] : [...byNs.keys()].sort();
    for (const ns of nss) {
      const m = byNs.get(ns);
      if (!m) continue;
      const names = [...m.keys()].sort();
      for (const n of names) out.push(m.get(n)!);
    }
    if (this.sorted.size > 64) this.sorted.clear();
    this.sorted.set(cacheKey, { rv: this.rv, out });
    return out;
  }
  private readonly sorted = new Map<string, { rv: number; out: readonly KObject[] }>();

  /** Unsorted iteration over one namespace (or all), for controllers that do not care about order. */
  *iterate(resource: string, namespace?: string): IterableIterator<KObject> {
    const byNs = this.data.get(resource);
    if (!byNs) return;
    if (namespace !== undefined) {
      const m = byNs.get(namespace);
      if (m) yield* m.values();
      return;
    }
    for (const m of byNs.values()) yield* m.values();
  }

  count(resource: string): number {
    let n = 0;
    for (const m of this.data.get(resource)?.values() ?? []) n += m.size;
    return n;
  }

  /**
   * Store `obj` (ADDED/MODIFIED) or remove it (DELETED), stamping the next resourceVersion.
   * Returns the stored object.
   */
  write(type: EventType, resource: string, obj: KObject, prev?: KObject): KObject {
    this.rv++;
    const stored: KObject = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(this.rv) } };
    let byNs = this.data.get(resource);
    if (!byNs) {
      byNs = new Map();
      this.data.set(resource, byNs);
    }
    const ns = stored.metadata.namespace ?? '';
    let m = byNs.get(ns);
    if (!m) {
      m = new Map();
      byNs.set(ns, m);
    }
    if (type === 'DELETED') {
      m.delete(stored.metadata.name ?? '');
      if (m.size === 0) byNs.delete(ns);
    } else {
      m.set(stored.metadata.name ?? '', stored);
    }
    const ev: StoreEvent = prev ? { type, resource, rv: this.rv, object: stored, prev } : { type, resource, rv: this.rv, object: stored };
    this.history.push(ev);
    if (this.history.length - this.historyStart > this.maxHistory) {
      this.floor = this.history[this.historyStart]!.rv;
      this.historyStart++;
      // Drop the dead prefix now and then instead of shifting on every write.
      if (this.historyStart > 1024 && this.historyStart * 2 > this.history.length) {
        this.history = this.history.slice(this.historyStart);
        this.historyStart = 0;
      }
    }
    for (const s of this.subscribers) s(ev);
    return stored;
  }

  /** Events after `rv`, or undefined when `rv` is older than the retained window. */
  eventsSince(rv: number): StoreEvent[] | undefined {
    if (rv < this.floor) return undefined;
    const out: StoreEvent[] = [];
    // History is ordered by rv; binary search for the first event after `rv`.
    let lo = this.historyStart;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.history[mid]!.rv <= rv) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.history.length; i++) out.push(this.history[i]!);
    return out;
  }

  /**
   * Forget all history: every resourceVersion handed out so far becomes too old to watch from.
   * The counter moves on by one so that a fresh list returns a version that is still valid.
   */
  compact(): void {
    this.rv++;
    this.floor = this.rv;
    this.history = [];
    this.historyStart = 0;
  }

  subscribe(s: Subscriber): () => void {
    this.subscribers.add(s);
    return () => this.subscribers.delete(s);
  }
}
