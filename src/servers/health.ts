/**
 * kube-proxy's ProxyHealthServer: /healthz and /livez.
 *
 * Health is about lag, not activity: when a change is queued and no successful sync follows
 * within healthTimeout (2 × syncPeriod, as kube-proxy), the proxy is unhealthy. With nothing
 * queued it is healthy however long ago it last synced — also before the first sync, as
 * kube-proxy: the first objects listed are the first queued change, so a proxy that has them
 * and never manages a sync turns unhealthy, while one whose API server is unreachable stays
 * live (a liveness probe restarting it would not bring the API server back; until 2026-12-07
 * ferry counted its own start as a queued change, and its DaemonSet's probe then restarted it
 * in a loop through an API server outage at start).
 * /healthz additionally reports 503 when this node is not eligible for traffic: its Node object
 * is unknown, being deleted (deletionTimestamp) or tainted ToBeDeletedByClusterAutoscaler;
 * /livez ignores node eligibility.
 *
 * Serves and reports; never triggers syncs.
 */
import type { Server } from 'node:http';
import { arr, field, str } from '../model/untrusted.js';
import { realClock, type Clock } from '../sync/clock.js';
import { closeServer, listen, sendJSON } from './http.js';
import type { HostPort } from '../config/types.js';
import type { IPFamily } from '../model/types.js';

export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';
/** Go's zero time.Time, which kube-proxy reports before the first update. */
const ZERO_TIME = '0001-01-01T00:00:00Z';

export interface HealthReport {
  readonly healthy: boolean;
  readonly lastUpdated: number | null;
  readonly currentTime: number;
}

function isoOrZero(ms: number | null): string {
  return ms === null ? ZERO_TIME : new Date(ms).toISOString();
}

export class ProxyHealth {
  private readonly clock: Clock;
  private lastUpdated: number | null = null;
  private oldestPending: number | null;
  /** Decoded once from the Node object (untrusted JSON); undefined while there is no Node. */
  private nodeEligibility: boolean | undefined;

  constructor(
    private readonly healthTimeoutMs: number,
    private readonly families: readonly IPFamily[] = [4, 6],
    clock?: Clock,
  ) {
    this.clock = clock ?? realClock;
    this.oldestPending = null;
  }

  /** A change arrived that a sync must apply. */
  queuedUpdate(): void {
    if (this.oldestPending === null) this.oldestPending = this.clock.now();
  }

  /** A sync succeeded. */
  updated(): void {
    this.oldestPending = null;
    this.lastUpdated = this.clock.now();
  }

  setNode(node: unknown): void {
    if (node === undefined || node === null) {
      this.nodeEligibility = undefined;
      return;
    }
    const deleting = field(field(node, 'metadata'), 'deletionTimestamp');
    const taints = arr(field(node, 'spec'), 'taints') ?? [];
    this.nodeEligibility = !deleting && !taints.some((t) => str(t, 'key') === TO_BE_DELETED_TAINT);
  }

  nodeEligible(): boolean {
    return this.nodeEligibility ?? false;
  }

  health(): HealthReport {
    const now = this.clock.now();
    const healthy = this.oldestPending === null || now - this.oldestPending < this.healthTimeoutMs;
    return { healthy, lastUpdated: this.lastUpdated, currentTime: now };
  }

  /** Status code and JSON body of /healthz (withNode) or /livez, shaped as kube-proxy's. */
  response(withNode: boolean): { status: number; body: string } {
    const h = this.health();
    const eligible = withNode ? this.nodeEligible() : true;
    const ok = h.healthy && eligible;
    // kube-proxy reports "now" as lastUpdated while healthy (older clients read it as liveness).
    const lastUpdated = ok ? h.currentTime : h.lastUpdated;
    const status: Record<string, { lastUpdated: string; healthy: boolean }> = {};
    for (const f of this.families) status[f === 4 ? 'IPv4' : 'IPv6'] = { lastUpdated: isoOrZero(h.lastUpdated), healthy: h.healthy };
    const body: Record<string, unknown> = {
      lastUpdated: isoOrZero(lastUpdated),
      currentTime: new Date(h.currentTime).toISOString(),
    };
    if (withNode) body.nodeEligible = eligible;
    body.healthy = h.healthy;
    body.status = status;
    return { status: ok ? 200 : 503, body: JSON.stringify(body) };
  }
}

export interface HealthzServer {
  readonly server: Server;
  close(): Promise<void>;
}

export async function startHealthzServer(
  addr: HostPort,
  health: ProxyHealth,
  onServe?: (path: '/healthz' | '/livez', status: number) => void,
): Promise<HealthzServer> {
  const server = await listen('healthz', addr.host, addr.port, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/livez') {
      const { status, body } = health.response(path === '/healthz');
      onServe?.(path, status);
      sendJSON(res, status, body);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('404 page not found\n');
  });
  return { server, close: () => closeServer(server) };
}
