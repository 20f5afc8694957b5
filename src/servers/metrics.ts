/**
 * The proxy's Prometheus metrics, under kube-proxy's names where the meaning is the same, and
 * the metrics server (/metrics, plus the ferry extensions /debug/plan with the current IR as
 * JSON and /debug/memory with process.memoryUsage()). kube-proxy serves /metrics only on the metrics address; so does ferry.
 * Records what the syncer reports; never influences it.
 */
import type { Server, ServerResponse } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from 'prom-client';
import type { HostPort } from '../config/types.js';
import { EntryFollower } from '../plan/follow.js';
import type { ProxyTables, ServiceEntry, SyncChanges } from '../plan/types.js';
import type { SyncResult } from '../sync/syncer.js';
import { serializeTables } from '../backends/dryrun/serialize.js';
import { closeServer, listen, sendJSON } from './http.js';
import type { ForwarderStats } from '../backends/userspace/stats.js';
import { logger, type Logger } from '../util/log.js';

const internalNoLocal = (e: ServiceEntry): boolean => e.internalPolicyLocal && e.internal.verdict === 'drop';
const externalNoLocal = (e: ServiceEntry): boolean => e.externalPolicyLocal && e.external.verdict === 'drop';

/** kube-proxy's sync-duration buckets: 1ms doubling to ~16s. */
const SYNC_BUCKETS = exponentialBuckets(0.001, 2, 15);
/**
 * ferry's own side of programming latency: 0.25 ms to ~12 s in steps of √2, not 2 — its
 * percentiles are read by interpolating within a bucket, and around the milliseconds that
 * matter a (2, 4] ms bucket said little about a p99 near 2 ms.
 */
const EVENT_BUCKETS = exponentialBuckets(0.00025, Math.SQRT2, 32).map((b) => Number(b.toPrecision(3)));
/** Network programming latency spans ms to minutes. */
const NETWORK_PROGRAMMING_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 45, 60, 120, 180, 240, 300,
];

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly syncDuration: Histogram;
  readonly fullSyncDuration: Histogram;
  readonly partialSyncDuration: Histogram;
  readonly lastSync: Gauge;
  readonly lastQueued: Gauge;
  readonly networkProgramming: Histogram;
  readonly eventToProgrammed: Histogram;
  readonly serviceChanges: Counter;
  readonly endpointChanges: Counter;
  readonly noLocalEndpoints: Gauge<'traffic_policy'>;
  readonly syncFailures: Counter<'full'>;
  readonly backendInfo: Gauge<'mode'>;
  readonly nftablesApplyPath: Gauge<'via'>;
  readonly healthz: Counter<'code'>;
  readonly livez: Counter<'code'>;
  readonly invalidObjects: Counter<'resource'>;
  readonly nftablesTamperRepairs: Counter;
  readonly deferredServicePorts: Gauge;
  /** Service ports whose Local policy leaves them with no usable endpoint, followed sync by sync. */
  private readonly noLocal = new EntryFollower((e) => internalNoLocal(e) || externalNoLocal(e));

  constructor(
    /** The proxy mode running (`dry-run` without a kernel backend), as `/proxyMode` answers it. */
    readonly mode: string,
    opts: { processMetrics?: boolean } = {},
  ) {
    const registers = [this.registry];
    this.syncDuration = new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.fullSyncDuration = new Histogram({
      name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.partialSyncDuration = new Histogram({
      name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.lastSync = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      registers,
    });
    this.lastQueued = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      registers,
    });
    this.networkProgramming = new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: 'In Cluster Network Programming Latency in seconds',
      buckets: NETWORK_PROGRAMMING_BUCKETS,
      registers,
    });
    this.eventToProgrammed = new Histogram({
      name: 'ferry_sync_event_to_programmed_seconds',
      help: 'From the oldest API event a sync carries being received by ferry to that sync programmed in the kernel (ferry-side programming latency; events before the first sync are not counted)',
      buckets: EVENT_BUCKETS,
      registers,
    });
    this.serviceChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers,
    });
    this.endpointChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules Endpoint changes',
      registers,
    });
    this.noLocalEndpoints = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      help: 'Number of services with a Local traffic policy and no endpoints',
      labelNames: ['traffic_policy'],
      registers,
    });
    this.syncFailures = new Counter({
      name: 'ferry_sync_failures_total',
      help: 'Syncs that failed (the next sync is full); label full says whether the failed one was',
      labelNames: ['full'],
      registers,
    });
    this.backendInfo = new Gauge({
      name: 'ferry_backend_info',
      help: 'The backend ferry programs (always 1)',
      labelNames: ['mode'],
      registers,
    });
    this.nftablesApplyPath = new Gauge({
      name: 'ferry_nftables_apply_path',
      help: 'How nftables transactions reach the kernel: netlink (the default) or a fallback (addon = libnftables, exec = nft -f); 1 for the path of the last sync',
      labelNames: ['via'],
      registers,
    });
    this.nftablesTamperRepairs = new Counter({
      name: 'ferry_nftables_tamper_repairs_total',
      help: "Full syncs started because another program changed ferry's nftables table (seen by the tamper watch)",
      registers,
    });
    this.healthz = new Counter({
      name: 'kubeproxy_proxy_healthz_total',
      help: 'Cumulative proxy healthz HTTP status',
      labelNames: ['code'],
      registers,
    });
    this.livez = new Counter({
      name: 'kubeproxy_proxy_livez_total',
      help: 'Cumulative proxy livez HTTP status',
      labelNames: ['code'],
      registers,
    });
    this.invalidObjects = new Counter({
      name: 'ferry_invalid_objects_total',
      help: 'API objects (or object versions) with invalid fields: skipped whole when unnamed, otherwise what the fields affect is skipped; each is logged once',
      labelNames: ['resource'],
      registers,
    });
    for (const resource of ['services', 'endpointslices']) this.invalidObjects.inc({ resource }, 0);
    this.deferredServicePorts = new Gauge({
      name: 'ferry_sync_deferred_service_ports',
      help: 'Service ports of oversized Services not yet programmed: they are applied a piece per sync so that they delay no other change (docs/sync.md)',
      registers,
    });
    this.backendInfo.set({ mode }, 1);
    this.noLocalEndpoints.set({ traffic_policy: 'internal' }, 0);
    this.noLocalEndpoints.set({ traffic_policy: 'external' }, 0);
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * The userspace data path's counters (userspace mode only), read from `stats` at each scrape:
   * the forwarder keeps plain numbers on its hot path and never touches prom-client.
   */
  watchUserspace(stats: () => ForwarderStats): void {
    const registers = [this.registry];
    // Counters mirroring numbers kept by the forwarder: prom-client's collect hook resets and
    // re-adds them on each scrape.
    const mirror = (name: string, help: string, labelName: string | undefined, read: (s: ForwarderStats) => [string, number][]): void => {
      new Counter({
        name,
        help,
        labelNames: labelName ? [labelName] : [],
        registers,
        collect() {
          this.reset();
          for (const [label, v] of read(stats())) if (v > 0) this.inc(labelName ? { [labelName]: label } : {}, v);
        },
      });
    };
    mirror('ferry_userspace_tcp_connections_total', 'TCP connections on userspace frontends by outcome (accepted, forwarded, rejected: reset at once, dropped: closed without reply)', 'outcome', (s) => [
      ['accepted', s.tcpAccepted],
      ['forwarded', s.tcpForwarded],
      ['rejected', s.tcpRejected],
      ['dropped', s.tcpDropped],
    ]);
    mirror('ferry_userspace_tcp_endpoint_connect_failures_total', 'Failed connects to an endpoint (each retry counts)', undefined, (s) => [['', s.tcpConnectFailures]]);
    mirror('ferry_userspace_udp_sessions_total', 'UDP sessions by event (created, evicted: over the session limit, evicted_descriptors: those of them at the descriptor budget, expired: idle)', 'event', (s) => [
      ['created', s.udpSessionsCreated],
      ['evicted', s.udpEvictions],
      ['evicted_descriptors', s.udpDescriptorEvictions],
      ['expired', s.udpExpirations],
    ]);
    mirror('ferry_userspace_out_of_descriptors_total', 'Socket or accept failures with EMFILE/ENFILE, by socket (tcp_accept, tcp_upstream, udp_session)', 'socket', (s) => [
      ['tcp_accept', s.tcpAcceptOutOfDescriptors],
      ['tcp_upstream', s.tcpConnectOutOfDescriptors],
      ['udp_session', s.udpSessionOutOfDescriptors],
    ]);
    mirror('ferry_userspace_udp_dropped_datagrams_total', 'Datagrams discarded: verdict drop or reject, no endpoint, or queue overflow while connecting', undefined, (s) => [['', s.udpDropped]]);
    new Gauge({
      name: 'ferry_userspace_tcp_connections_active',
      help: 'TCP connections being forwarded now',
      registers,
      collect() {
        this.set(stats().tcpActive);
      },
    });
    new Gauge({
      name: 'ferry_userspace_udp_session_limit',
      help: 'The bound on UDP sessions in force: maxUdpSessions, or less under the open-files budget (docs/userspace.md)',
      registers,
      collect() {
        this.set(stats().udpSessionLimit);
      },
    });
    new Gauge({
      name: 'ferry_userspace_udp_sessions_active',
      help: 'UDP sessions open now',
      registers,
      collect() {
        this.set(stats().udpSessionsActive);
      },
    });
  }

  /** A change was queued for the next sync. */
  queued(nowMs: number = Date.now()): void {
    this.lastQueued.set(nowMs / 1000);
  }

  /** nftables mode: the path the last sync took (a fallback shows here and in the log). */
  nftablesVia(via: string): void {
    this.nftablesApplyPath.reset();
    this.nftablesApplyPath.set({ via }, 1);
  }

  /** Records one sync attempt. */
  observeSync(r: SyncResult, nowMs: number = Date.now()): void {
    // Every attempt's duration, failed ones too, as kube-proxy's deferred observation: a
    // dashboard of sync latency must not look healthy while syncs fail.
    const seconds = r.durationMs / 1000;
    this.syncDuration.observe(seconds);
    (r.full ? this.fullSyncDuration : this.partialSyncDuration).observe(seconds);
    if (!r.ok) {
      this.syncFailures.inc({ full: String(r.full) });
      return;
    }
    this.lastSync.set(nowMs / 1000);
    this.deferredServicePorts.set(r.deferredKeys ?? 0);
    for (const t of r.triggerTimes) {
      const lag = (nowMs - t.getTime()) / 1000;
      if (lag >= 0) this.networkProgramming.observe(lag);
    }
    if (r.tables) this.countNoLocalEndpoints(r.tables, r.changes);
  }

  /** kube-proxy counts service ports whose Local policy leaves them without a usable endpoint. */
  private countNoLocalEndpoints(tables: ProxyTables, changes: SyncChanges | undefined): void {
    this.noLocal.update(tables, changes);
    const count = (pred: (e: ServiceEntry) => boolean): number => this.noLocal.count(4, pred) + this.noLocal.count(6, pred);
    this.noLocalEndpoints.set({ traffic_policy: 'internal' }, count(internalNoLocal));
    this.noLocalEndpoints.set({ traffic_policy: 'external' }, count(externalNoLocal));
  }
}

export interface MetricsServer {
  readonly server: Server;
  close(): Promise<void>;
}

/** `ferry trace` and `ferry status` answers (src/proxy/introspect.ts), served under /debug/. */
export interface DebugAnswers {
  trace(params: URLSearchParams): { status: number; body: unknown };
  status(): unknown;
}

export async function startMetricsServer(
  addr: HostPort,
  metrics: ProxyMetrics,
  currentPlan: () => ProxyTables | null,
  debug?: DebugAnswers,
  opts: { log?: Logger } = {},
): Promise<MetricsServer> {
  const log = opts.log ?? logger('metrics');
  /**
   * Runs a /debug answer; one that throws is a 500 with the error, and logged. A throw out of a
   * request listener would be an uncaught exception, ending the daemon over a debugging aid.
   */
  const guarded = (path: string, res: ServerResponse, answer: () => void): void => {
    try {
      answer();
    } catch (e) {
      const error = e instanceof Error ? e.message : String(e);
      log.error('debug request failed', { path, error });
      if (res.headersSent) res.destroy();
      else sendJSON(res, 500, JSON.stringify({ error: `${path} failed: ${error}` }));
    }
  };
  // /debug/plan writes the whole IR (tens of MB at 44k Services): one response at a time, so
  // that concurrent or slow clients cannot make the daemon hold a copy each.
  let planWriting = false;
  const server = await listen('metrics', addr.host, addr.port, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
          res.end(text);
        },
        (e: unknown) => {
          res.writeHead(500, { 'Content-Type': 'text/plain' });
          res.end(`collecting metrics failed: ${e instanceof Error ? e.message : String(e)}\n`);
        },
      );
      return;
    }
    if (path === '/debug/plan') {
      if (planWriting) {
        sendJSON(res, 429, JSON.stringify({ error: '/debug/plan is being written to another client; retry once it is done' }), { 'Retry-After': '1' });
        return;
      }
      guarded(path, res, () => {
        const plan = currentPlan();
        if (!plan) {
          sendJSON(res, 503, JSON.stringify({ error: 'no successful sync yet' }));
          return;
        }
        const body = JSON.stringify(serializeTables(plan));
        planWriting = true;
        // 'close' comes once the response is written or the client went away.
        res.once('close', () => {
          planWriting = false;
        });
        sendJSON(res, 200, body);
      });
      return;
    }
    if (debug && path === '/debug/trace') {
      guarded(path, res, () => {
        const answer = debug.trace(new URL(req.url ?? '/', 'http://localhost').searchParams);
        sendJSON(res, answer.status, JSON.stringify(answer.body));
      });
      return;
    }
    if (debug && path === '/debug/status') {
      guarded(path, res, () => sendJSON(res, 200, JSON.stringify(debug.status())));
      return;
    }
    // kube-proxy's metrics server answers these two as well; scripts check a node with them.
    if (path === '/proxyMode') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' }).end(metrics.mode);
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' }).end('ok');
      return;
    }
    if (path === '/debug/memory') {
      // Where the process's memory is, as V8 sees it; the kernel's view is /proc/PID/status.
      guarded(path, res, () => sendJSON(res, 200, JSON.stringify(process.memoryUsage())));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('404 page not found\n');
  });
  return { server, close: () => closeServer(server) };
}
