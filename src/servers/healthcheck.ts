/**
 * healthCheckNodePort servers (kube-proxy's ServiceHealthServer): for every Service with
 * externalTrafficPolicy Local and a healthCheckNodePort, an HTTP server on that port telling
 * load balancers whether this node has a ready local endpoint: 200 when it has and the proxy
 * itself is healthy, 503 otherwise, with kube-proxy's JSON body and headers (the count also as
 * X-Load-Balancing-Endpoint-Weight).
 *
 * Reconciled from the IR after every successful sync: new ports opened, removed ones closed,
 * counts updated in place. Ports listen per family where that family accepts NodePorts, as
 * kube-proxy's per-family servers (healthCheckHosts). An
 * address that cannot be bound is retried on every reconcile, on its own: the addresses already
 * bound keep serving (kube-proxy closes them all and starts over, but ferry reconciles many times
 * a second, so that would make a working address refuse load balancer probes over and over).
 * Failures are logged once per situation, not per sync, and never fail a sync.
 */
import type { Server } from 'node:http';
import { EntryFollower } from '../plan/follow.js';
import type { IPFamily, ProxyTables, ServiceEntry, SyncChanges } from '../plan/types.js';
import { logger, type Logger } from '../util/log.js';
import { closeServer, listen, sendJSON } from './http.js';

interface PortState {
  namespace: string;
  name: string;
  localEndpoints: number;
  /** Wanted host (by hostKey) → its server; a host missing here failed and is retried next reconcile. */
  servers: Map<string, Server>;
  /** The addresses this port is bound to, to notice a change of nodeport addresses. */
  hosts: string;
  /** Wanted address → why it last failed, as logged: logged again only when the reason changes. */
  failures: Map<string, string>;
}

export interface HealthCheckTarget {
  readonly namespace: string;
  readonly name: string;
  readonly localEndpoints: number;
}

/** A second Service wants a healthCheckNodePort another Service already has. */
export interface HealthCheckConflict {
  readonly port: number;
  /** `namespace/name` of the Service that keeps the port. */
  readonly kept: string;
  /** `namespace/name` of the Service left without a health check. */
  readonly refused: string;
}

/** healthCheckNodePort → service and its ready local endpoints (max over ports and families). */
export function healthCheckTargets(tables: ProxyTables): Map<number, HealthCheckTarget> {
  return targetsOf([tables[4].services.values(), tables[6].services.values()]).targets;
}

/** healthCheckTargets over entries in table order (family 4's, then 6's): the first Service to claim a port keeps it. */
function targetsOf(lists: Iterable<ServiceEntry>[]): { targets: Map<number, HealthCheckTarget>; conflicts: HealthCheckConflict[] } {
  const targets = new Map<number, HealthCheckTarget>();
  const conflicts = new Map<string, HealthCheckConflict>();
  for (const list of lists) {
    for (const e of list) {
      if (e.healthCheckNodePort <= 0) continue;
      const prev = targets.get(e.healthCheckNodePort);
      if (prev && (prev.namespace !== e.namespace || prev.name !== e.name)) {
        const c = { port: e.healthCheckNodePort, kept: `${prev.namespace}/${prev.name}`, refused: `${e.namespace}/${e.name}` };
        // One per Service, not per service port or family.
        conflicts.set(conflictId(c), c);
        continue;
      }
      targets.set(e.healthCheckNodePort, {
        namespace: e.namespace,
        name: e.name,
        localEndpoints: Math.max(prev?.localEndpoints ?? 0, e.localReadyEndpoints),
      });
    }
  }
  return { targets, conflicts: [...conflicts.values()] };
}

function conflictId(c: HealthCheckConflict): string {
  return `${c.port}|${c.kept}|${c.refused}`;
}

/** Where a healthcheck port listens: one address, or a wildcard. */
export interface HealthCheckHost {
  readonly address: string;
  /** The wildcard takes its own family only (`0.0.0.0` IPv4, `::` IPv6), not both as `::` otherwise does. */
  readonly familyOnly: boolean;
}

/** Names a host in maps and logs; `::` is two different hosts with and without familyOnly. */
export function hostKey(h: HealthCheckHost): string {
  return h.familyOnly && (h.address === '::' || h.address === '0.0.0.0') ? `${h.address} (${h.address === '::' ? 'IPv6' : 'IPv4'} only)` : h.address;
}

/**
 * Where healthcheck ports listen, per served family as kube-proxy's per-family servers: a family
 * with NodePort addresses on those addresses (none when its CIDRs match none), a family that takes
 * NodePorts everywhere on its own wildcard. One dual-stack `::` when both families take them
 * everywhere. A dual-stack socket for one such family would answer the other family's probes on
 * addresses where that family's NodePorts are not served (IPv4 on every address of a node with
 * `--nodeport-addresses primary` and no IPv6 node IP).
 */
export function healthCheckHosts(tables: ProxyTables, families: readonly IPFamily[] = [4, 6]): HealthCheckHost[] {
  const served = ([4, 6] as const).filter((f) => families.includes(f));
  if (served.length === 2 && served.every((f) => tables[f].nodePortAddresses.kind === 'all')) return [{ address: '::', familyOnly: false }];
  const hosts = new Map<string, HealthCheckHost>();
  const add = (h: HealthCheckHost): void => void hosts.set(hostKey(h), h);
  for (const f of served) {
    const np = tables[f].nodePortAddresses;
    if (np.kind === 'all') add({ address: f === 4 ? '0.0.0.0' : '::', familyOnly: true });
    else for (const address of [...np.addresses].sort()) add({ address, familyOnly: true });
  }
  return [...hosts.values()];
}

export class ServiceHealthServers {
  private readonly ports = new Map<number, PortState>();
  private readonly log: Logger;
  private reconciling: Promise<void> = Promise.resolve();
  private readonly withHealthCheck = new EntryFollower((e) => e.healthCheckNodePort > 0);
  /** Shared-port conflicts already logged; a conflict that ends and comes back is logged again. */
  private readonly loggedConflicts = new Set<string>();

  private readonly families: readonly IPFamily[];

  constructor(
    /** Whether the proxy itself is healthy (kube-proxy ≥ 1.28 reports 503 otherwise). */
    private readonly proxyHealthy: () => boolean,
    opts: {
      log?: Logger;
      /** The families this node serves (default both): an unserved family's table is not listened for. */
      families?: readonly IPFamily[];
    } = {},
  ) {
    this.log = opts.log ?? logger('healthcheck');
    this.families = opts.families ?? [4, 6];
  }

  /** Ports currently served. */
  openPorts(): number[] {
    return [...this.ports.entries()].filter(([, s]) => s.servers.size > 0).map(([p]) => p).sort((a, b) => a - b);
  }

  /**
   * Brings the servers in line with `tables`; calls are serialized. `changes` (relative to the
   * previous call's tables, as the syncer reports them) spares a walk over the whole table.
   */
  reconcile(tables: ProxyTables, changes?: SyncChanges): Promise<void> {
    this.withHealthCheck.update(tables, changes);
    const { targets, conflicts } = targetsOf([this.withHealthCheck.entries(4), this.withHealthCheck.entries(6)]);
    this.logConflicts(conflicts);
    const hosts = healthCheckHosts(tables, this.families);
    this.reconciling = this.reconciling.then(() => this.doReconcile(targets, hosts));
    return this.reconciling;
  }

  async closeAll(): Promise<void> {
    await this.reconciling;
    const all = [...this.ports.values()].flatMap((s) => [...s.servers.values()]);
    this.ports.clear();
    await Promise.all(all.map(closeServer));
  }

  private async doReconcile(want: ReadonlyMap<number, HealthCheckTarget>, hosts: readonly HealthCheckHost[]): Promise<void> {
    const hostsKey = hosts.map(hostKey).join(',');
    const wanted = new Set(hosts.map(hostKey));
    for (const [port, st] of [...this.ports]) {
      if (!want.has(port)) {
        this.ports.delete(port);
        await Promise.all([...st.servers.values()].map(closeServer));
        this.log.v(2, 'closed healthcheck port', { port, service: `${st.namespace}/${st.name}` });
        continue;
      }
      if (st.hosts === hostsKey) continue;
      // The node's NodePort addresses changed: only the hosts no longer wanted go. An address
      // that stays keeps its server, so load balancer probes to it are never refused meanwhile.
      st.hosts = hostsKey;
      for (const [host, server] of [...st.servers]) {
        if (wanted.has(host)) continue;
        st.servers.delete(host);
        await closeServer(server);
      }
      for (const host of [...st.failures.keys()]) if (!wanted.has(host)) st.failures.delete(host);
    }
    for (const [port, target] of want) {
      let st = this.ports.get(port);
      if (!st) {
        st = { ...target, servers: new Map(), hosts: hostsKey, failures: new Map() };
        this.ports.set(port, st);
      }
      // Another Service on the port is another situation: its failures deserve their own lines.
      if (st.namespace !== target.namespace || st.name !== target.name) st.failures.clear();
      st.namespace = target.namespace;
      st.name = target.name;
      st.localEndpoints = target.localEndpoints;
      if (st.servers.size < hosts.length) await this.open(port, st, hosts);
    }
  }

  /** Binds the hosts of `hosts` this port does not serve yet. */
  private async open(port: number, st: PortState, hosts: readonly HealthCheckHost[]): Promise<void> {
    const handler = this.handler(port);
    const service = `${st.namespace}/${st.name}`;
    const before = st.servers.size;
    for (const h of hosts) {
      const host = hostKey(h);
      if (st.servers.has(host)) continue;
      let error: unknown;
      try {
        st.servers.set(host, await listen('healthcheck', h.address, port, handler, { familyOnly: h.familyOnly }));
      } catch (e) {
        error = e;
        if (h.address === '::' && !h.familyOnly) {
          // No IPv6 on this host: the IPv4 wildcard is all there is.
          try {
            st.servers.set(host, await listen('healthcheck', '0.0.0.0', port, handler, { familyOnly: true }));
            error = undefined;
          } catch (e4) {
            error = e4;
          }
        }
      }
      if (error === undefined) {
        if (st.failures.delete(host)) this.log.info('healthcheck now serving after earlier failures', { port, host, service });
        continue;
      }
      // A port another program holds fails the same way on every sync, and ferry syncs far more
      // often than kube-proxy: one line until it succeeds or the reason changes.
      const reason = error instanceof Error ? error.message : String(error);
      if (st.failures.get(host) === reason) continue;
      st.failures.set(host, reason);
      this.log.error('failed to start healthcheck; retrying on every sync (logged again only if the reason changes)', {
        service,
        port,
        host,
        error: reason,
      });
    }
    if (before === 0 && st.servers.size > 0) this.log.v(2, 'opened healthcheck port', { port, service });
  }

  /** kube-proxy logs a Service that cannot have its port ("failed to start healthcheck"); once per conflict here. */
  private logConflicts(conflicts: readonly HealthCheckConflict[]): void {
    const seen = new Set<string>();
    for (const c of conflicts) {
      const id = conflictId(c);
      seen.add(id);
      if (this.loggedConflicts.has(id)) continue;
      this.loggedConflicts.add(id);
      this.log.error('failed to start healthcheck: healthCheckNodePort already serves another Service', {
        port: c.port,
        service: c.refused,
        servedFor: c.kept,
      });
    }
    for (const id of this.loggedConflicts) if (!seen.has(id)) this.loggedConflicts.delete(id);
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
      // As kube-proxy (since 1.28): load balancers that weight nodes read the local endpoint
      // count here, on 503 answers too.
      sendJSON(res, st.localEndpoints > 0 && healthy ? 200 : 503, body, { 'X-Load-Balancing-Endpoint-Weight': String(st.localEndpoints) });
    };
  }
}
