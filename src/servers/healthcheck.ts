/**
 * healthCheckNodePort servers (kube-proxy's ServiceHealthServer): for every Service with
 * externalTrafficPolicy Local and a healthCheckNodePort, an HTTP server on that port telling
 * load balancers whether this node has a ready local endpoint: 200 when it has and the proxy
 * itself is healthy, 503 otherwise, with kube-proxy's JSON body and headers.
 *
 * Reconciled from the IR after every successful sync: new ports opened, removed ones closed,
 * counts updated in place. Ports bind the NodePort addresses (all addresses by default). A port
 * that cannot be bound is logged and retried on the next reconcile; it never fails a sync.
 */
import type { Server } from 'node:http';
import { EntryFollower } from '../plan/follow.js';
import type { ProxyTables, ServiceEntry, SyncChanges } from '../plan/types.js';
import { logger, type Logger } from '../util/log.js';
import { closeServer, listen, sendJSON } from './http.js';

interface PortState {
  namespace: string;
  name: string;
  localEndpoints: number;
  servers: Server[];
  /** The addresses this port is bound to, to notice a change of nodeport addresses. */
  hosts: string;
}

export interface HealthCheckTarget {
  readonly namespace: string;
  readonly name: string;
  readonly localEndpoints: number;
}

/** healthCheckNodePort → service and its ready local endpoints (max over ports and families). */
export function healthCheckTargets(tables: ProxyTables): Map<number, HealthCheckTarget> {
  return targetsOf([tables[4].services.values(), tables[6].services.values()]);
}

/** healthCheckTargets over entries in table order (family 4's, then 6's): the first Service to claim a port keeps it. */
function targetsOf(lists: Iterable<ServiceEntry>[]): Map<number, HealthCheckTarget> {
  const out = new Map<number, HealthCheckTarget>();
  for (const list of lists) {
    for (const e of list) {
      if (e.healthCheckNodePort <= 0) continue;
      const prev = out.get(e.healthCheckNodePort);
      if (prev && (prev.namespace !== e.namespace || prev.name !== e.name)) continue;
      out.set(e.healthCheckNodePort, {
        namespace: e.namespace,
        name: e.name,
        localEndpoints: Math.max(prev?.localEndpoints ?? 0, e.localReadyEndpoints),
      });
    }
  }
  return out;
}

/** Where healthcheck ports listen: everywhere unless every family restricts its NodePort addresses. */
export function healthCheckHosts(tables: ProxyTables): string[] {
  const hosts = new Set<string>();
  for (const t of [tables[4], tables[6]]) {
    if (t.nodePortAddresses.kind === 'all') return ['::'];
    for (const a of t.nodePortAddresses.addresses) hosts.add(a);
  }
  return hosts.size > 0 ? [...hosts].sort() : ['::'];
}

export class ServiceHealthServers {
  private readonly ports = new Map<number, PortState>();
  private readonly log: Logger;
  private reconciling: Promise<void> = Promise.resolve();
  private readonly withHealthCheck = new EntryFollower((e) => e.healthCheckNodePort > 0);

  constructor(
    /** Whether the proxy itself is healthy (kube-proxy ≥ 1.28 reports 503 otherwise). */
    private readonly proxyHealthy: () => boolean,
    log?: Logger,
  ) {
    this.log = log ?? logger('healthcheck');
  }

  /** Ports currently served. */
  openPorts(): number[] {
    return [...this.ports.entries()].filter(([, s]) => s.servers.length > 0).map(([p]) => p).sort((a, b) => a - b);
  }

  /**
   * Brings the servers in line with `tables`; calls are serialized. `changes` (relative to the
   * previous call's tables, as the syncer reports them) spares a walk over the whole table.
   */
  reconcile(tables: ProxyTables, changes?: SyncChanges): Promise<void> {
    this.withHealthCheck.update(tables, changes);
    const want = targetsOf([this.withHealthCheck.entries(4), this.withHealthCheck.entries(6)]);
    const hosts = healthCheckHosts(tables);
    this.reconciling = this.reconciling.then(() => this.doReconcile(want, hosts));
    return this.reconciling;
  }

  async closeAll(): Promise<void> {
    await this.reconciling;
    const all = [...this.ports.values()].flatMap((s) => s.servers);
    this.ports.clear();
    await Promise.all(all.map(closeServer));
  }

  private async doReconcile(want: ReadonlyMap<number, HealthCheckTarget>, hosts: readonly string[]): Promise<void> {
    const hostsKey = hosts.join(',');
    for (const [port, st] of [...this.ports]) {
      if (want.has(port) && st.hosts === hostsKey) continue;
      this.ports.delete(port);
      await Promise.all(st.servers.map(closeServer));
      if (!want.has(port)) this.log.v(2, 'closed healthcheck port', { port, service: `${st.namespace}/${st.name}` });
    }
    for (const [port, target] of want) {
      let st = this.ports.get(port);
      if (!st) {
        st = { ...target, servers: [], hosts: hostsKey };
        this.ports.set(port, st);
      }
      st.namespace = target.namespace;
      st.name = target.name;
      st.localEndpoints = target.localEndpoints;
      if (st.servers.length === 0) await this.open(port, st, hosts);
    }
  }

  private async open(port: number, st: PortState, hosts: readonly string[]): Promise<void> {
    const handler = this.handler(port);
    for (const host of hosts) {
      try {
        st.servers.push(await listen('healthcheck', host, port, handler));
      } catch (e) {
        if (host === '::') {
          // No IPv6 on this host: the IPv4 wildcard is all there is.
          try {
            st.servers.push(await listen('healthcheck', '0.0.0.0', port, handler));
            continue;
          } catch (e4) {
            e = e4;
          }
        }
        this.log.error('cannot open healthCheckNodePort; will retry after the next sync', {
          service: `${st.namespace}/${st.name}`,
          port,
          host,
          error: e instanceof Error ? e.message : String(e),
        });
      }
    }
    if (st.servers.length > 0) this.log.v(2, 'opened healthcheck port', { port, service: `${st.namespace}/${st.name}` });
  }

  private handler(port: number): Parameters<typeof listen>[3] {
    return (_req, res) => {
      const st = this.ports.get(port);
      if (!st) {
        res.writeHead(404).end();
        return;
      }
      const healthy = this.proxyHealthy();
      const body = JSON.stringify({
        service: { namespace: st.namespace, name: st.name },
        localEndpoints: st.localEndpoints,
        serviceProxyHealthy: healthy,
      });
      sendJSON(res, st.localEndpoints > 0 && healthy ? 200 : 503, body);
    };
  }
}
