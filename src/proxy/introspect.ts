/**
 * The daemon's answers to `ferry trace` and `ferry status` (served as JSON on the debug address,
 * /debug/trace and /debug/status): it remembers what the syncs, watches and tamper watch
 * reported, and runs the pure explanation (src/plan/explain.ts) over the last applied IR with
 * the active mode's facts and path (each backend's trace.ts). Holds no Kubernetes semantics.
 */
import type { ProxyConfig, ProxyMode } from '../config/types.js';
import type { ResilientInformer } from '../kube/informer.js';
import { TraceInputError, trace, validateQuery, type ModeFacts, type PathOf, type Trace } from '../plan/explain.js';
import type { Backend, IPFamily, ProxyTables } from '../plan/types.js';
import { NFTABLES_FACTS, nftablesPath } from '../backends/nftables/trace.js';
import { iptablesFacts, iptablesPath } from '../backends/iptables/trace.js';
import { userspaceFacts, userspacePath } from '../backends/userspace/trace.js';
import { ebpfFacts, ebpfPath } from '../backends/ebpf/trace.js';
import { localhostNodePortsServed } from '../config/resolve.js';
import type { SyncResult } from '../sync/syncer.js';
import type { TamperReport } from '../backends/kernel/nft-monitor.js';

/** The mode's facts and path for trace; a mode without its own description gets a neutral one. */
export function modeTrace(mode: string, config: Pick<ProxyConfig, 'localhostNodePorts' | 'nodePortAddresses'>): { facts: ModeFacts; pathOf: PathOf } {
  switch (mode) {
    case 'nftables':
      return { facts: NFTABLES_FACTS, pathOf: nftablesPath };
    case 'iptables':
      return { facts: iptablesFacts(localhostNodePortsServed(config)), pathOf: iptablesPath };
    case 'userspace':
      return { facts: userspaceFacts(localhostNodePortsServed(config)), pathOf: userspacePath };
    case 'ebpf':
      return { facts: ebpfFacts(localhostNodePortsServed(config)), pathOf: ebpfPath };
    default:
      return {
        facts: { mode, localhostNodePorts: false, rejectsUnknownClusterIPPorts: false, dropsUnallocatedServiceIPs: false, reoriginates: false },
        pathOf: () => [{ at: mode, does: 'this mode does not describe its objects yet' }],
      };
  }
}

export interface SyncRecord {
  readonly at: string;
  readonly durationMs: number;
  /** Service ports the sync rewrote (all of them for a full sync). */
  readonly servicePorts: number;
  /** What the backend reports it wrote: nft operations, iptables-restore lines; absent in userspace. */
  readonly backendOperations?: number;
  readonly reason?: string;
}

export interface StatusReport {
  readonly node: string;
  readonly mode: string;
  readonly configuredMode: string;
  /** The mode in use is --proxy-mode-fallback's, because the configured one could not be used. */
  readonly fallback: boolean;
  readonly families: readonly IPFamily[];
  readonly healthy: boolean;
  readonly apiServer: {
    readonly server: string;
    readonly watches: readonly { resource: string; synced: boolean; consecutiveFailures: number; notServed?: boolean; lastError?: { at: string; error: string } }[];
  };
  readonly syncs: {
    readonly total: number;
    readonly failures: number;
    readonly consecutiveFailures: number;
    readonly lastFull?: SyncRecord;
    readonly lastPartial?: SyncRecord;
  };
  readonly counts: {
    readonly servicePorts: number;
    readonly endpoints: number;
    /** Mode-specific size of what is programmed (see `what`). */
    readonly programmed?: { readonly what: string; readonly count: number };
  };
  readonly lastErrors: readonly { at: string; error: string }[];
  readonly tamperRepairs: number;
  /** The last repair's cause: what changed, who committed it, and how long the repair-loop guard held it back. */
  readonly lastTamper?: {
    readonly at: string;
    readonly what: readonly string[];
    readonly by: readonly string[];
    readonly cause: TamperReport['cause'];
    readonly heldBackMs?: number;
  };
  readonly healthCheckServers: readonly number[];
  readonly nftablesApplyPath?: string;
}

const ERRORS_KEPT = 5;

interface BackendStats {
  lastSync?: () => unknown;
  stats?: () => unknown;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** What the backend says its last sync wrote (nftables: ops; iptables: restore lines). */
function backendOperations(b: Backend): number | undefined {
  const last = (b as Backend & BackendStats).lastSync?.();
  if (typeof last !== 'object' || last === null) return undefined;
  const r = last as Record<string, unknown>;
  const ops = num(r.ops);
  if (ops !== undefined) return ops;
  if (Array.isArray(r.perFamily)) return r.perFamily.reduce((s: number, f: unknown) => s + (num((f as Record<string, unknown>).lines) ?? 0), 0);
  return undefined;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface IntrospectionDeps {
  readonly config: ProxyConfig;
  readonly mode: ProxyMode | string;
  readonly families: readonly IPFamily[];
  readonly backend: Backend;
  readonly server: string;
  readonly informers: () => readonly { resource: string; informer: ResilientInformer }[];
  readonly healthy: () => boolean;
  readonly healthCheckPorts: () => readonly number[];
  readonly consecutiveFailures: () => number;
  readonly nftablesVia: () => string | undefined;
  readonly localAddresses: () => readonly string[];
}

export class DaemonIntrospection {
  private total = 0;
  private failures = 0;
  private lastFull: SyncRecord | undefined;
  private lastPartial: SyncRecord | undefined;
  private tables: ProxyTables | null = null;
  private firstFullSeen = false;
  private errors: { at: string; error: string }[] = [];
  private tampers = 0;
  private lastTamper: StatusReport['lastTamper'];
  private readonly modeInfo: { facts: ModeFacts; pathOf: PathOf };

  constructor(private readonly deps: IntrospectionDeps) {
    this.modeInfo = modeTrace(deps.mode, deps.config);
  }

  /** Called with every sync result. */
  onSync(r: SyncResult): void {
    this.total++;
    if (!r.ok) {
      this.failures++;
      this.recordError(`sync ${r.n} (${r.full ? 'full' : 'partial'}) failed: ${errorText(r.error)}`);
      return;
    }
    if (r.tables) this.tables = r.tables;
    if (r.noop) return;
    const servicePorts = r.full && this.tables ? this.tables[4].services.size + this.tables[6].services.size : (r.changes?.changed.size ?? 0);
    const ops = backendOperations(this.deps.backend);
    const rec: SyncRecord = {
      at: new Date(r.startedAt).toISOString(),
      durationMs: Math.round(r.durationMs * 10) / 10,
      servicePorts,
      ...(ops !== undefined ? { backendOperations: ops } : {}),
      ...(r.fullReason ? { reason: r.fullReason } : {}),
    };
    if (r.full) {
      this.lastFull = rec;
      this.firstFullSeen = true;
    } else this.lastPartial = rec;
  }

  tamperRepaired(report: TamperReport): void {
    this.tampers++;
    this.lastTamper = {
      at: new Date().toISOString(),
      what: report.changes,
      by: report.by,
      cause: report.cause,
      ...(report.heldBackMs !== undefined ? { heldBackMs: report.heldBackMs } : {}),
    };
  }

  recordError(error: string): void {
    this.errors.push({ at: new Date().toISOString(), error });
    if (this.errors.length > ERRORS_KEPT) this.errors.shift();
  }

  status(): StatusReport {
    const d = this.deps;
    const t = this.tables;
    let servicePorts = 0;
    let endpoints = 0;
    if (t) {
      for (const table of [t[4], t[6]]) {
        servicePorts += table.services.size;
        for (const e of table.services.values()) {
          const seen = new Set<string>();
          for (const set of [e.internal, e.external, e.cluster]) for (const ep of set.endpoints) seen.add(`${ep.ip}|${ep.port}`);
          endpoints += seen.size;
        }
      }
    }
    const programmed = this.programmed();
    const via = d.nftablesVia();
    return {
      node: d.config.nodeName,
      mode: String(d.mode),
      configuredMode: d.config.mode,
      fallback: d.mode !== 'dry-run' && d.mode !== d.config.mode,
      families: d.families,
      healthy: d.healthy(),
      apiServer: {
        server: d.server,
        watches: d.informers().map(({ resource, informer }) => {
          const last = informer.lastFailure();
          return {
            resource,
            synced: informer.hasSynced(),
            consecutiveFailures: informer.failures(),
            ...(informer.notServed() ? { notServed: true } : {}),
            ...(last ? { lastError: { at: new Date(last.at).toISOString(), error: last.error } } : {}),
          };
        }),
      },
      syncs: {
        total: this.total,
        failures: this.failures,
        consecutiveFailures: d.consecutiveFailures(),
        ...(this.lastFull ? { lastFull: this.lastFull } : {}),
        ...(this.lastPartial ? { lastPartial: this.lastPartial } : {}),
      },
      counts: { servicePorts, endpoints, ...(programmed ? { programmed } : {}) },
      lastErrors: [...this.errors],
      tamperRepairs: this.tampers,
      ...(this.lastTamper ? { lastTamper: this.lastTamper } : {}),
      healthCheckServers: d.healthCheckPorts(),
      ...(via ? { nftablesApplyPath: via } : {}),
    };
  }

  private programmed(): { what: string; count: number } | undefined {
    const b = this.deps.backend as Backend & BackendStats;
    if (typeof b.stats === 'function') {
      const s = b.stats() as Record<string, unknown>;
      const f = num(s.frontends);
      if (f !== undefined) return { what: 'listeners', count: f };
    }
    if (!this.firstFullSeen || this.lastFull?.backendOperations === undefined) return undefined;
    return { what: b.name === 'iptables' ? 'iptables-restore lines in the last full sync' : 'nft operations (rules, elements, chains) in the last full sync', count: this.lastFull.backendOperations };
  }

  /**
   * /debug/trace?src=&dst=&port=&proto=&from=: 200 with the trace, 400 for bad input, 503 before
   * the first successful sync.
   */
  trace(params: URLSearchParams): { status: number; body: Trace | { error: string } } {
    const tables = this.tables;
    let q;
    try {
      q = validateQuery({ src: params.get('src') ?? '', dst: params.get('dst') ?? '', port: params.get('port') ?? '', protocol: params.get('proto') ?? 'TCP', from: params.get('from') ?? undefined });
    } catch (e) {
      if (e instanceof TraceInputError) return { status: 400, body: { error: e.message } };
      throw e;
    }
    if (!tables) return { status: 503, body: { error: 'no successful sync yet: nothing to trace' } };
    const fam = q.dst.includes(':') ? 6 : 4;
    if (!this.deps.families.includes(fam)) return { status: 400, body: { error: `this node does not serve IPv${fam}` } };
    return { status: 200, body: trace(tables, q, { localAddresses: this.deps.localAddresses() }, this.modeInfo.facts, this.modeInfo.pathOf) };
  }
}
