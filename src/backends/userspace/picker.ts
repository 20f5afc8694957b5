/**
 * Endpoint choice for one traffic path of one service port: round robin over the IR's endpoint
 * set, ClientIP affinity with the IR's timeout (measured from the client's last new connection,
 * as kube-proxy's `recent` match does; at most AFFINITY_MAX_CLIENTS clients, the least recently
 * seen evicted), and fallbacks for a failed connect.
 *
 * No I/O; the clock is injectable. It never filters endpoints itself: the set is the IR's.
 */
import type { EndpointSet, PlannedEndpoint, PathVerdict } from '../../plan/types.js';

export type Clock = () => number;

export function endpointId(ep: PlannedEndpoint): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

interface Affinity {
  /** The set's own id string (shared by every client of the endpoint, not one per entry). */
  readonly id: string;
  last: number;
}

/** Sweep expired affinity entries after this many new ones, so they do not wait for eviction. */
const SWEEP_EVERY = 1024;

/**
 * Clients with affinity per picker (one traffic path of one service port). Without a bound, a
 * spoofed-source UDP flood on a NodePort with ClientIP affinity added an entry per datagram
 * (about 200 B, with a fresh endpoint id string each) and none expired for the 3 h default
 * timeout. kube-proxy's nftables mode gives
 * each endpoint's affinity set nft's default size of 65,535 and its iptables mode uses `recent`
 * lists of bounded length; ferry's nftables mode one set of 2^20 per family (AFFINITY_SET_SIZE),
 * shared by every Service. Per path, 65,536 is as many as nft allowed kube-proxy per endpoint and
 * as many as userspace mode's UDP sessions (DEFAULT_MAX_UDP_SESSIONS): about 7 MiB when full
 * (117 B a client, measured with IPv4 clients).
 * The client seen least recently is evicted: like a kernel set that is full, it only loses its
 * stickiness, never its connection.
 */
export const AFFINITY_MAX_CLIENTS = 65_536;

export class EndpointPicker {
  private endpoints: readonly PlannedEndpoint[] = [];
  private ids: string[] = [];
  private byId = new Map<string, { readonly ep: PlannedEndpoint; readonly id: string }>();
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
    this.byId = new Map(ids.map((id, i) => [id, { ep: set.endpoints[i] as PlannedEndpoint, id }]));
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
        const e = this.byId.get(a.id);
        if (e && this.now() - a.last <= this.affinityMs && !exclude?.has(a.id)) return e.ep;
        if (!e || this.now() - a.last > this.affinityMs) this.affinity.delete(clientIP);
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
    const fresh = endpointId(ep);
    const id = this.byId.get(fresh)?.id ?? fresh;
    const a = this.affinity.get(clientIP);
    // Re-inserted on every use: the Map's first entry is then the client seen least recently.
    this.affinity.delete(clientIP);
    if (a && a.id === id) {
      a.last = this.now();
      this.affinity.set(clientIP, a);
      return;
    }
    this.affinity.set(clientIP, { id, last: this.now() });
    if (++this.sinceSweep >= SWEEP_EVERY) this.sweep();
    while (this.affinity.size > AFFINITY_MAX_CLIENTS) {
      const oldest = this.affinity.keys().next();
      if (oldest.done) break;
      this.affinity.delete(oldest.value);
    }
  }

  /** Drops expired affinity entries and entries for endpoints no longer in the set. */
  sweep(): void {
    this.sinceSweep = 0;
    const now = this.now();
    for (const [client, a] of this.affinity) {
      if (now - a.last > this.affinityMs || !this.byId.has(a.id)) this.affinity.delete(client);
    }
  }

  /** The endpoint `clientIP` has an affinity entry for, expired or not (for tests). */
  stickyEndpoint(clientIP: string): string | undefined {
    return this.affinity.get(clientIP)?.id;
  }

  /** Clients with a live affinity entry (for tests and stats). */
  affinityEntries(): number {
    return this.affinity.size;
  }
}
