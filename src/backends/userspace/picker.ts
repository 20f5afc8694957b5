/**
 * Endpoint choice for one traffic path of one service port: round robin over the IR's endpoint
 * set, ClientIP affinity with the IR's timeout (measured from the client's last new connection,
 * as kube-proxy's `recent` match does), and fallbacks for a failed connect.
 *
 * No I/O; the clock is injectable. It never filters endpoints itself: the set is the IR's.
 */
import type { EndpointSet, PlannedEndpoint, PathVerdict } from '../../plan/types.js';

export type Clock = () => number;

export function endpointId(ep: PlannedEndpoint): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

interface Affinity {
  readonly id: string;
  last: number;
}

/** Sweep stale affinity entries after this many new ones, so the map cannot grow without bound. */
const SWEEP_EVERY = 1024;

export class EndpointPicker {
  private endpoints: readonly PlannedEndpoint[] = [];
  private ids: string[] = [];
  private byId = new Map<string, PlannedEndpoint>();
  private next = 0;
  private affinityMs = 0;
  private readonly affinity = new Map<string, Affinity>();
  private sinceSweep = 0;
  verdict: PathVerdict = 'reject';

  constructor(private readonly now: Clock = Date.now) {}

  /** Takes the IR's set. An unchanged set keeps the round-robin position. */
  update(set: EndpointSet, affinityTimeoutSeconds: number): void {
    this.verdict = set.verdict;
    const newMs = affinityTimeoutSeconds * 1000;
    if (newMs !== this.affinityMs) {
      this.affinity.clear();
      this.affinityMs = newMs;
    }
    const ids = set.endpoints.map(endpointId);
    if (ids.length === this.ids.length && ids.every((id, i) => id === this.ids[i])) {
      this.endpoints = set.endpoints;
      return;
    }
    this.endpoints = set.endpoints;
    this.ids = ids;
    this.byId = new Map(ids.map((id, i) => [id, set.endpoints[i] as PlannedEndpoint]));
    this.next = ids.length === 0 ? 0 : this.next % ids.length;
  }

  get size(): number {
    return this.endpoints.length;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /**
   * The endpoint for a new connection from `clientIP`, skipping `exclude` (endpoints that already
   * failed for this connection). Undefined when nothing is left.
   */
  pick(clientIP: string, exclude?: ReadonlySet<string>): PlannedEndpoint | undefined {
    const n = this.endpoints.length;
    if (n === 0) return undefined;
    if (this.affinityMs > 0) {
      const a = this.affinity.get(clientIP);
      if (a) {
        const ep = this.byId.get(a.id);
        if (ep && this.now() - a.last <= this.affinityMs && !exclude?.has(a.id)) return ep;
        if (!ep || this.now() - a.last > this.affinityMs) this.affinity.delete(clientIP);
      }
    }
    for (let i = 0; i < n; i++) {
      const idx = (this.next + i) % n;
      const id = this.ids[idx] as string;
      if (exclude?.has(id)) continue;
      this.next = (idx + 1) % n;
      return this.endpoints[idx];
    }
    return undefined;
  }

  /** A connection to `ep` worked: with affinity, `clientIP` sticks to it from now on. */
  confirm(clientIP: string, ep: PlannedEndpoint): void {
    if (this.affinityMs <= 0) return;
    const id = endpointId(ep);
    const a = this.affinity.get(clientIP);
    if (a && a.id === id) {
      a.last = this.now();
      return;
    }
    this.affinity.set(clientIP, { id, last: this.now() });
    if (++this.sinceSweep >= SWEEP_EVERY) this.sweep();
  }

  /** Drops expired affinity entries and entries for endpoints no longer in the set. */
  sweep(): void {
    this.sinceSweep = 0;
    const now = this.now();
    for (const [client, a] of this.affinity) {
      if (now - a.last > this.affinityMs || !this.byId.has(a.id)) this.affinity.delete(client);
    }
  }

  /** Clients with a live affinity entry (for tests and stats). */
  affinityEntries(): number {
    return this.affinity.size;
  }
}
