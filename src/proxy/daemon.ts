/**
 * The proxy daemon: wires the pipeline for one node. API watches feed the change tracker; the
 * syncer plans and hands tables to the backend; the servers report health, metrics and
 * per-service health checks. On SIGINT/SIGTERM it stops watching and serving and exits 0,
 * leaving the installed rules in place (as kube-proxy does) so traffic keeps flowing across a
 * restart. Owns the process lifecycle; holds no Kubernetes semantics of its own.
 */
import { existsSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ProxyConfig, ProxyMode } from '../config/types.js';
import { formatDuration } from '../config/duration.js';
import { loadKubeConfig } from '../kube/client.js';
import { ClusterWatches, type ClusterSink } from '../kube/watches.js';
import type { Backoff } from '../kube/informer.js';
import { ChangeTracker } from '../model/tracker.js';
import type { IPFamily } from '../model/types.js';
import { diffTables, planTables, type PlanOptions } from '../plan/planner.js';
import type { Backend } from '../plan/types.js';
import { DryRunBackend } from '../backends/dryrun/index.js';
import { DEFAULT_INTERFACE as USERSPACE_INTERFACE, isUserspaceBackend } from '../backends/userspace/index.js';
import { isTamperWatchable } from '../backends/kernel/nft-monitor.js';
import { addonRouteWatch, listLocalAddresses, LocalAddressWatch, type RouteWatchSource } from '../backends/kernel/local-addresses.js';
import { loadNative } from '../native/index.js';
import { ProxyHealth, startHealthzServer, type HealthzServer } from '../servers/health.js';
import { ProxyMetrics, startMetricsServer, type MetricsServer } from '../servers/metrics.js';
import { ServiceHealthServers } from '../servers/healthcheck.js';
import { Syncer, type SnapshotSource } from '../sync/syncer.js';
import { realClock } from '../sync/clock.js';
import { fullCollection } from '../util/gc.js';
import { IdleCollector } from './idle-collect.js';
import { logger, setVerbosity } from '../util/log.js';
import { BACKENDS, BackendNotImplementedError, type BackendEntry } from './backends.js';
import { detectLocalSpec } from './startup.js';
import { fixMallocThresholds } from '../native/malloc.js';
import { DaemonIntrospection } from './introspect.js';

const log = logger('proxy');

/** Test and embedding hooks; production uses the defaults. */
export interface DaemonDeps {
  readonly kubeConfig?: KubeConfig;
  readonly backend?: Backend;
  /** The mode table; tests substitute entries. */
  readonly backends?: Record<ProxyMode, BackendEntry>;
  /** How long to wait for this node's Node object before the first sync. Default 30s. */
  readonly nodeWaitMs?: number;
  readonly intactCheckMs?: number;
  readonly watchBackoff?: Backoff;
  /** Address and link change notifications; default the addon's (tests substitute a fake). */
  readonly routeWatch?: RouteWatchSource;
  /** Lists the host's addresses; default listLocalAddresses (tests substitute a fake host). */
  readonly listLocalAddresses?: () => string[];
  /** One full garbage collection (src/util/gc.ts); tests count the calls. */
  readonly collectGarbage?: () => boolean;
}

export interface ProxyDaemon {
  readonly syncer: Syncer;
  readonly health: ProxyHealth;
  readonly metrics: ProxyMetrics;
  readonly healthChecks: ServiceHealthServers;
  readonly healthzServer: HealthzServer | undefined;
  readonly metricsServer: MetricsServer | undefined;
  /** `ferry trace` / `ferry status` answers. */
  readonly introspection: DaemonIntrospection;
  /** Stops watches, syncer and servers. Installed rules stay. */
  stop(): Promise<void>;
}

/**
 * Whether NodePorts follow the host's own addresses, which ferry must then list (and watch):
 * CIDR-valued --nodeport-addresses select among them in every mode; unset, the modes whose data
 * path cannot ask the kernel per packet whether an address is local take them as the list.
 */
export function nodePortsFollowAddresses(config: Pick<ProxyConfig, 'nodePortAddresses' | 'dryRun'>, mode: ProxyMode): { list: boolean; all: boolean } {
  // A dry run shows the IR, whose 'all' needs no listing to be read.
  const all = !config.dryRun && config.nodePortAddresses.kind === 'all' && (mode === 'ebpf' || mode === 'userspace');
  return { list: all || config.nodePortAddresses.kind === 'cidrs', all };
}

/** The nftables backend's apply path of its last sync (netlink or a fallback); undefined in other modes. */
function nftablesVia(b: Backend): string | undefined {
  if (b.name !== 'nftables') return undefined;
  const last = (b as Backend & { lastSync?: () => { via?: string } | undefined }).lastSync?.();
  return last?.via;
}

/** The families this node serves, primary first: IPv6 only when the kernel has it. */
export function servedFamilies(primary: IPFamily | undefined): IPFamily[] {
  const v6 = existsSync('/proc/net/if_inet6');
  if (primary === 6) {
    if (!v6) throw new Error('--bind-address is IPv6 but this kernel has no IPv6 support');
    return [6, 4];
  }
  return v6 ? [4, 6] : [4];
}

/** A proxy mode that cannot program this node, and no fallback was allowed. */
export class ModeUnavailableError extends Error {
  readonly code = 'FERRY_ERR_MODE_UNAVAILABLE';
  constructor(
    readonly mode: ProxyMode,
    readonly reason: unknown,
  ) {
    super(
      `the ${mode} proxy mode cannot be used on this node: ${reason instanceof Error ? reason.message : String(reason)}` +
        (mode === 'userspace' ? '' : ' (set --proxy-mode-fallback userspace to forward in userspace instead)'),
    );
    this.name = 'ModeUnavailableError';
  }
}

/**
 * The mode this daemon runs: the configured one when its probe succeeds; otherwise the
 * --proxy-mode-fallback mode, loudly; otherwise a ModeUnavailableError.
 */
export async function chooseMode(config: ProxyConfig, families: readonly IPFamily[], backends: Record<ProxyMode, BackendEntry>): Promise<ProxyMode> {
  try {
    await backends[config.mode].probe(families);
    return config.mode;
  } catch (e) {
    const fallback = config.modeFallback;
    if (!fallback || fallback === config.mode) throw new ModeUnavailableError(config.mode, e);
    log.error(`the ${config.mode} proxy mode cannot be used on this node; falling back to ${fallback} mode as --proxy-mode-fallback allows`, {
      error: e,
    });
    await backends[fallback].probe(families);
    return fallback;
  }
}

/**
 * What other modes (or kube-proxy) left that would still catch this mode's traffic, removed at
 * every start as kube-proxy's platformCleanup does: after a switch of modes, or where ferry
 * replaces kube-proxy. The daemon calls it once its own first sync has succeeded, so the node
 * is never without rules in between (kube-proxy's rules keep serving until ferry's are in). A
 * step that fails is logged and does not stop anything.
 */
export async function removeForeign(mode: ProxyMode, config: ProxyConfig, backends: Record<ProxyMode, BackendEntry>): Promise<void> {
  for (const [owner, entry] of Object.entries(backends) as [ProxyMode, BackendEntry][]) {
    if (!entry.removeForeign) continue;
    try {
      const removed = await entry.removeForeign(mode, config);
      if (removed.length > 0) log.info(`removed what the ${owner} mode (or kube-proxy) left behind`, { removed: removed.join(', ') });
    } catch (e) {
      log.warn(`could not check for or remove what the ${owner} mode left behind; its rules may still catch traffic`, { err: e });
    }
  }
}

export async function startProxy(config: ProxyConfig, deps: DaemonDeps = {}): Promise<ProxyDaemon> {
  setVerbosity(config.verbosity);
  // Before the first large buffer is freed (src/native/malloc.ts).
  const malloc = fixMallocThresholds();
  const families = servedFamilies(config.primaryFamily);
  const kubeConfig = deps.kubeConfig ?? loadKubeConfig({ kubeconfig: config.kubeconfig, master: config.master });
  const mode = deps.backend || config.dryRun ? config.mode : await chooseMode(config, families, deps.backends ?? BACKENDS);
  let foreignPending = !deps.backend && !config.dryRun;
  /** The removal of other modes' leftovers once started: stop() lets it finish (bounded). */
  let foreignRemoval: Promise<void> | undefined;
  let stopped = false;
  const backend: Backend = deps.backend ?? (config.dryRun ? new DryRunBackend() : await (deps.backends ?? BACKENDS)[mode].create(config, families));
  log.info('starting ferry', {
    node: config.nodeName,
    mode,
    backend: backend.name,
    families: families.join(','),
    server: kubeConfig.getCurrentCluster()?.server,
    syncPeriod: formatDuration(config.syncPeriodMs),
    minSyncPeriod: config.minSyncPeriodExplicit ? formatDuration(config.minSyncPeriodMs) : `cost-aware, at most ${formatDuration(config.minSyncPeriodMs)}`,
    mallocThresholds: malloc,
  });

  // The mode running, which --proxy-mode-fallback may have changed.
  const metrics = new ProxyMetrics(config.dryRun ? 'dry-run' : mode);
  const tracker = new ChangeTracker({
    nodeName: config.nodeName,
    families,
    serviceProxyName: config.serviceProxyName,
    onInvalid: (resource) => metrics.invalidObjects.inc({ resource }),
  });
  const health = new ProxyHealth(2 * config.syncPeriodMs, families);
  if (isUserspaceBackend(backend)) metrics.watchUserspace(() => backend.stats());
  const healthChecks = new ServiceHealthServers(() => health.health().healthy, { families });
  // The host's addresses, listed only where NodePorts follow them, and watched: an address the
  // node gains or loses is a table-level change, synced at once (docs/ir.md, nodePortAddresses).
  const follow = nodePortsFollowAddresses(config, mode);
  let syncerRef: Syncer | undefined;
  const ownInterface = mode === 'userspace' ? USERSPACE_INTERFACE : undefined;
  const addresses = follow.list
    ? new LocalAddressWatch({
        watch: deps.routeWatch ?? addonRouteWatch(loadNative()),
        list: deps.listLocalAddresses ?? (() => listLocalAddresses(ownInterface)),
        onChange: () => syncerRef?.requestSync(),
      })
    : undefined;
  const planOptions = (): PlanOptions => ({
    masqueradeAll: config.masqueradeAll,
    clusterCIDRs: config.clusterCIDRs,
    detectLocal: detectLocalSpec(config.detectLocal),
    nodePortAddresses: config.nodePortAddresses,
    localAddresses: addresses?.current() ?? [],
    listAllNodePortAddresses: follow.all,
    bindAddress: config.primaryFamily !== undefined ? config.bindAddress : undefined,
  });
  // ferry's own programming latency: the oldest event a sync carries (received after the first
  // sync) to that sync's success. The snapshot hands the pending events to the sync.
  let firstEventAt: number | undefined;
  let eventsInSync: number | undefined;
  let live = false;
  const source: SnapshotSource = {
    pending: () => tracker.pending(),
    takeSnapshot: () => {
      if (firstEventAt !== undefined) eventsInSync = Math.min(eventsInSync ?? firstEventAt, firstEventAt);
      firstEventAt = undefined;
      return tracker.takeSnapshot();
    },
  };
  const syncer = new Syncer({
    source,
    backend,
    planner: { planTables, diffTables },
    planOptions,
    minSyncPeriodMs: config.minSyncPeriodMs,
    // Unset by the operator: coalesce by what syncs cost, never waiting longer than the default.
    ...(config.minSyncPeriodExplicit ? {} : { adaptive: { maxMs: config.minSyncPeriodMs } }),
    syncPeriodMs: config.syncPeriodMs,
    // As kube-proxy: periodic syncs are partial (free when nothing changed); a full one hourly.
    // External flushes are caught sooner by the backend's intact() check.
    fullSyncPeriodMs: Math.max(config.syncPeriodMs, FULL_SYNC_PERIOD_MS),
    intactCheckMs: deps.intactCheckMs,
    // A Service too big for one quick transaction goes in pieces of about this many ms, so a
    // normal change never waits behind it for long (docs/sync.md, "Bounded cost per Service").
    // An nftables piece costs about what it holds, so pieces may get small; an iptables-restore
    // pays for every Service's KUBE-SERVICES line each time, so small pieces would only repeat that.
    bound: { targetMs: BOUNDED_PIECE_MS, minBudget: backend.name === 'nftables' ? 200 : 2000 },
  });
  syncerRef = syncer;
  const collector = new IdleCollector({
    clock: realClock,
    busy: () => tracker.pending() || !syncer.idle(),
    collect: deps.collectGarbage ?? fullCollection,
  });
  let watchesRef: ClusterWatches | undefined;
  const introspection = new DaemonIntrospection({
    config,
    mode: config.dryRun ? 'dry-run' : mode,
    families,
    backend,
    server: kubeConfig.getCurrentCluster()?.server ?? '',
    informers: () =>
      watchesRef
        ? [
            { resource: 'services', informer: watchesRef.services },
            { resource: 'endpointslices', informer: watchesRef.endpointSlices },
            { resource: 'nodes', informer: watchesRef.node },
            { resource: 'servicecidrs', informer: watchesRef.serviceCIDRs },
          ]
        : [],
    healthy: () => health.health().healthy,
    healthCheckPorts: () => healthChecks.openPorts(),
    consecutiveFailures: () => syncer.consecutiveFailures(),
    nftablesVia: () => nftablesVia(backend),
    localAddresses: () => addresses?.current() ?? (deps.listLocalAddresses ?? (() => listLocalAddresses(ownInterface)))(),
  });
  syncer.onSync((r) => {
    // Read the clock before the bookkeeping below: what it measures ends in the kernel.
    if (r.ok && eventsInSync !== undefined && live) metrics.eventToProgrammed.observe((performance.now() - eventsInSync) / 1000);
    introspection.onSync(r);
    metrics.observeSync(r);
    if (!r.ok) return;
    eventsInSync = undefined;
    live = true;
    // Only once ferry serves every Service itself: a first sync that held back part of an
    // oversized Service (bound.ts) leaves those ports to the old rules until a later one adds
    // them. Never once stop() began: exiting would cut the removal off half way.
    if (foreignPending && !stopped && (r.deferredKeys ?? 0) === 0) {
      foreignPending = false;
      // Other tables, chains and pins than the running backend's: no sync waits for it.
      foreignRemoval = removeForeign(mode, config, deps.backends ?? BACKENDS).catch(() => undefined);
    }
    const via = nftablesVia(backend);
    if (via) metrics.nftablesVia(via);
    // A full sync's transaction and the plan it replaced are garbage now: return them soon,
    // in idle moments, instead of carrying them until V8 next decides to collect
    // (src/util/gc.ts, src/proxy/idle-collect.ts).
    if (r.full && !r.noop) collector.owe();
    health.updated();
    // Changes that arrived while this sync ran are still waiting.
    if (tracker.pending()) health.queuedUpdate();
    if (r.tables) {
      healthChecks.reconcile(r.tables, r.changes).catch((e: unknown) => {
        log.error('healthcheck servers failed to reconcile', { error: e });
        introspection.recordError(`healthcheck servers failed to reconcile: ${e instanceof Error ? e.message : String(e)}`);
      });
    }
  });

  const afterEvent = () => {
    if (!tracker.pending()) return;
    if (live) firstEventAt ??= performance.now();
    health.queuedUpdate();
    metrics.queued();
    syncer.requestSync();
  };
  const sink: ClusterSink = {
    upsertService: (s: unknown) => {
      metrics.serviceChanges.inc();
      tracker.upsertService(s);
      afterEvent();
    },
    deleteService: (s: unknown) => {
      metrics.serviceChanges.inc();
      tracker.deleteService(s);
      afterEvent();
    },
    upsertEndpointSlice: (s: unknown) => {
      metrics.endpointChanges.inc();
      tracker.upsertEndpointSlice(s);
      afterEvent();
    },
    deleteEndpointSlice: (s: unknown) => {
      metrics.endpointChanges.inc();
      tracker.deleteEndpointSlice(s);
      afterEvent();
    },
    setNode: (n: unknown) => {
      health.setNode(n);
      tracker.setNode(n);
      afterEvent();
    },
    upsertServiceCIDR: (c: unknown) => {
      tracker.upsertServiceCIDR(c);
      afterEvent();
    },
    deleteServiceCIDR: (c: unknown) => {
      tracker.deleteServiceCIDR(c);
      afterEvent();
    },
  };

  let healthzServer: HealthzServer | undefined;
  let metricsServer: MetricsServer | undefined;
  try {
    if (config.healthzBindAddress) {
      healthzServer = await startHealthzServer(config.healthzBindAddress, health, (path, code) =>
        (path === '/healthz' ? metrics.healthz : metrics.livez).inc({ code: String(code) }),
      );
    }
    if (config.metricsBindAddress) {
      metricsServer = await startMetricsServer(config.metricsBindAddress, metrics, () => syncer.current(), {
        trace: (p) => introspection.trace(p),
        status: () => introspection.status(),
      });
    }
  } catch (e) {
    await healthzServer?.close();
    throw e;
  }

  const watches = new ClusterWatches({
    kubeConfig,
    nodeName: config.nodeName,
    sink,
    serviceProxyName: config.serviceProxyName,
    backoff: deps.watchBackoff,
    onBadItem: (resource) => metrics.invalidObjects.inc({ resource }),
  });
  watchesRef = watches;
  watches.start();
  backend.prepare?.();
  // nftables: another program changing ferry's table is repaired at once (a full sync), not at
  // the next canary check or hourly resync. Started with the syncer: before the first (full)
  // sync there is nothing to repair.
  let tamperWatch: { stop(): void } | undefined;
  void watches.waitForInitialSync(deps.nodeWaitMs ?? 30_000).then((r) => {
    if (stopped || !r.servicesAndSlices) return;
    log.info('initial lists received; starting to sync', { nodeFound: r.node });
    if (isTamperWatchable(backend)) {
      tamperWatch = backend.watchTamper((report) => {
        metrics.nftablesTamperRepairs.inc();
        introspection.tamperRepaired(report);
        syncer.requestFullSync('tampered');
      });
    }
    syncer.start();
  }).catch((e: unknown) => {
    // Nothing would ever sync, and /healthz would say so only minutes later: fail at once, as
    // any other fatal start-up error.
    log.error('starting to sync failed; exiting', { error: e });
    process.exit(1);
  });

  return {
    syncer,
    health,
    metrics,
    healthChecks,
    healthzServer,
    metricsServer,
    introspection,
    async stop() {
      if (stopped) return;
      stopped = true;
      tamperWatch?.stop();
      addresses?.close();
      await watches.stop();
      await syncer.stop();
      // A removal that started finishes first (each step is whole; at most 5 s).
      if (foreignRemoval) await Promise.race([foreignRemoval, new Promise((r) => setTimeout(r, 5000).unref())]);
      collector.stop();
      await healthChecks.closeAll();
      await Promise.all([healthzServer?.close(), metricsServer?.close()]);
    },
  };
}

/** `ferry [flags]`: runs until SIGINT/SIGTERM, then exits 0 leaving the rules installed (1 if stopping failed). */
export async function runProxy(config: ProxyConfig): Promise<void> {
  const daemon = await startProxy(config);
  // 1 when stopping failed (a server that would not close, a sync that threw): a supervisor sees it.
  let code = 0;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        log.warn(`second ${sig}; exiting now`);
        process.exit(1);
      }
      stopping = true;
      log.info(`received ${sig}; stopping (installed rules stay in place)`);
      daemon.stop().then(resolve, (e: unknown) => {
        log.error('error while stopping', { error: e });
        code = 1;
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  // Keep-alive sockets of the API client would otherwise hold the event loop open.
  process.exit(code);
}

/** kube-proxy's FullSyncPeriod. */
const FULL_SYNC_PERIOD_MS = 60 * 60 * 1000;
/** The target duration of one piece of an oversized Service (bounded cost per Service). */
const BOUNDED_PIECE_MS = 250;

/** `ferry --cleanup`: removes whatever any kernel backend may have installed. Returns the exit code. */
export async function runCleanup(config: ProxyConfig): Promise<number> {
  setVerbosity(config.verbosity);
  let failed = false;
  for (const [mode, entry] of Object.entries(BACKENDS)) {
    try {
      await entry.cleanup(config);
      log.info('cleaned up', { mode });
    } catch (e) {
      if (e instanceof BackendNotImplementedError) {
        log.v(1, 'nothing to clean up: mode not implemented', { mode });
        continue;
      }
      failed = true;
      log.error('cleanup failed', { mode, error: e });
    }
  }
  return failed ? 1 : 0;
}
