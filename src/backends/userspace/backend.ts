/**
 * `--proxy-mode userspace`: ferry forwards Service traffic itself. Each sync lays the IR out as
 * addresses on ferry0 and listening sockets (frontends.ts), diffs that against what is held
 * (reconcile.ts) and applies only the difference, in an order that never strands a socket:
 * add addresses → open sockets → re-point → close sockets → remove addresses. Endpoint changes
 * only swap the pickers' sets; sockets and their connections stay.
 *
 * Policy comes from the IR (route.ts); this module never decides which endpoints apply. A socket
 * that cannot be opened (port taken by another process) is logged and retried on the next sync;
 * it does not fail the sync, so one bad Service cannot hold every other one back.
 */
import type { Backend, IPFamily, ProxyTables, ServicePortKey, SyncChanges } from '../../plan/types.js';
import { logger, type Logger } from '../../util/log.js';
import {
  formatOpenFilesLimit,
  isOutOfDescriptors,
  parseOpenFilesLimit,
  readLimits,
  udpSessionBudget,
  type OpenFilesLimit,
} from './descriptors.js';
import { planFrontends, type Frontend, type LocalAddresses } from './frontends.js';
import { holderAddress, readPortHolders, type ProcNetReader } from './holders.js';
import { DEFAULT_INTERFACE, ipAddressHolder, removeInterface, type AddressHolder } from './iface.js';
import type { Clock } from './picker.js';
import { planReconcile } from './reconcile.js';
import { interfaceMatches, isInterfaceDetector, LocalSourceDetector, ServiceRuntime, type Route } from './route.js';

/** How often the routes behind the local-traffic interfaces are re-read between syncs. */
const INTERFACE_ROUTES_REFRESH_MS = 2000;
import { SessionTable } from './sessions.js';
import { newStats, type ForwarderStats } from './stats.js';
import { ListenError, TcpListener, type DescriptorShortage, type ForwardContext } from './tcp.js';
import { closeUdpSession, UdpListener, type UdpContext, type UdpSession } from './udp.js';
import { scaledMs } from '../../util/timescale.js';

export interface UserspaceOptions {
  families?: IPFamily[];
  log?: Logger;
  /** Accept NodePorts on 127.0.0.1 (with nodePortAddresses 'all'); default true, like kube-proxy. */
  localhostNodePorts?: boolean;
  /** A UDP session idle this long is closed; default 30 s. */
  udpIdleTimeoutMs?: number;
  /**
   * At most this many UDP sessions (all frontends together); the oldest is evicted. Default 65536;
   * lowered further to what the open-files limit leaves for them (descriptors.ts).
   */
  maxUdpSessions?: number;
  /** Default ferry0. */
  interfaceName?: string;
}

/** Seams for tests and benchmarks; not part of the CLI surface. */
export interface UserspaceInternals {
  holder?: AddressHolder;
  /** Connect attempts and their timeouts; default kube-proxy userspace's 250/500/1000/2000 ms. */
  connectTimeoutsMs?: readonly number[];
  now?: Clock;
  /** /proc/self/limits' text; read on construction and on full syncs. */
  readLimits?: () => string;
  /** Reads a /proc/net socket table, to name who holds a port ferry cannot bind. */
  readProcNet?: ProcNetReader;
}

export interface UserspaceStats extends ForwarderStats {
  readonly frontends: number;
  readonly addresses: number;
  /** Frontends the last sync could not open (retried next sync). */
  readonly failedFrontends: readonly string[];
}

export interface UserspaceBackend extends Backend {
  readonly name: 'userspace';
  intact(): Promise<boolean>;
  stats(): UserspaceStats;
  /** Keys of the open sockets, sorted (`TCP 198.19.0.10:80`). */
  frontends(): string[];
}

/** The userspace backend behind a plain Backend (its name is 'userspace' only if it is one). */
export function isUserspaceBackend(b: Backend): b is UserspaceBackend {
  return b.name === 'userspace' && typeof (b as Partial<UserspaceBackend>).stats === 'function';
}

export const DEFAULT_UDP_IDLE_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_UDP_SESSIONS = 65_536;
export const DEFAULT_CONNECT_TIMEOUTS_MS: readonly number[] = [250, 500, 1000, 2000];

type Listener = TcpListener | UdpListener;

const REJECT: Route = { verdict: 'reject' };

/** Out of descriptors on the data path: at most one line this often, with the count since the last. */
const OUT_OF_DESCRIPTORS_LOG_MS = 10_000;

function frontendAddress(f: Frontend): string {
  return f.ip.includes(':') ? `[${f.ip}]:${f.port}/${f.protocol}` : `${f.ip}:${f.port}/${f.protocol}`;
}

function runtimeKey(family: IPFamily, service: ServicePortKey): string {
  return `${family}|${service}`;
}

class Userspace implements UserspaceBackend {
  readonly name = 'userspace' as const;
  private readonly log: Logger;
  private readonly holder: AddressHolder;
  private readonly families: readonly IPFamily[];
  private readonly localhostNodePorts: boolean;
  private readonly now: Clock | undefined;
  private readonly counters = newStats();
  private readonly sessions: SessionTable<UdpSession>;
  private readonly ctx: UdpContext;
  private readonly udpIdleMs: number;

  /** What is in force: addresses on the interface, open sockets, live services. */
  private held = new Set<string>();
  private readonly listeners = new Map<string, Listener>();
  /** Keyed `family|service`: a dual-stack service port has one entry (and endpoint set) per family. */
  private readonly runtimes = new Map<string, ServiceRuntime>();
  private local: LocalAddresses | undefined;
  private detector = new LocalSourceDetector(new Set(), []);
  private interfaceRoutes: string[] = [];
  private routeTimer: NodeJS.Timeout | undefined;
  private lastTables: ProxyTables | undefined;
  /** False until the interface is known to exist and `held` was read from it. */
  private ready = false;
  private sweeper: NodeJS.Timeout | undefined;
  private failed: string[] = [];

  /** Once-per-service log lines already written. */
  private readonly loggedUnsupported = new Set<ServicePortKey>();
  private readonly loggedSourceIP = new Set<ServicePortKey>();
  private readonly loggedConflicts = new Set<string>();
  /**
   * Frontends that could not open, with the reason last logged: each sync retries them, but a
   * port that stays taken (another program's, or ferry's own /healthz) is logged once, not on
   * every sync — while a huge Service goes in pieces that is several times a second.
   */
  private readonly reportedFailures = new Map<string, string>();
  /**
   * Frontends that could not open because the process is out of file descriptors, as last
   * logged: one line for all of them (at 44k Services there were tens of thousands), and again
   * only when the number changes.
   */
  private reportedNoDescriptors = 0;
  private readonly readLimits: () => string;
  private readonly readProcNet: ProcNetReader | undefined;
  /** Read while a descriptor is still free (out of them, /proc/self/limits cannot be opened); kept when a re-read fails. */
  private fileLimit: OpenFilesLimit | undefined;
  private readonly maxUdpSessions: number;
  /** Sessions evicted at the descriptor budget since the episode began; 0: no episode. */
  private budgetEpisode = 0;
  private budgetEvictedSinceSweep = false;
  /** Data-path EMFILE/ENFILE failures not logged yet, and when the last line was written. */
  private descriptorFailuresUnlogged = 0;
  private descriptorFailureLoggedAt = -Infinity;
  /**
   * UDP endpoints a session could not connect to, as logged (`family|service` + endpoint → the
   * error code): a client retrying a query opens a session per datagram, so one line per
   * endpoint and reason. Entries go when the endpoint leaves the Service's sets.
   */
  private readonly loggedUdpConnect = new Map<string, { rk: string; endpoint: string; code: string }>();

  constructor(opts: UserspaceOptions, internals: UserspaceInternals) {
    this.log = opts.log ?? logger('userspace');
    this.families = opts.families ?? [4, 6];
    this.localhostNodePorts = opts.localhostNodePorts ?? true;
    this.now = internals.now;
    this.holder = internals.holder ?? ipAddressHolder(opts.interfaceName ?? DEFAULT_INTERFACE, this.log);
    this.udpIdleMs = opts.udpIdleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS;
    this.readLimits = internals.readLimits ?? readLimits;
    this.readProcNet = internals.readProcNet;
    this.fileLimit = parseOpenFilesLimit(this.readLimits());
    this.maxUdpSessions = opts.maxUdpSessions ?? DEFAULT_MAX_UDP_SESSIONS;
    this.sessions = new SessionTable<UdpSession>({
      idleTimeoutMs: this.udpIdleMs,
      maxSessions: udpSessionBudget(this.fileLimit, 0, this.maxUdpSessions),
      now: internals.now,
      onClose: (_key, s, reason) => {
        closeUdpSession(s);
        if (reason === 'evicted' && this.sessions.maxSessions < this.maxUdpSessions) this.evictedAtBudget();
      },
    });
    // Per-attempt limits before the next endpoint is tried; stretched on emulated machines.
    const connectTimeoutsMs = internals.connectTimeoutsMs ?? DEFAULT_CONNECT_TIMEOUTS_MS.map(scaledMs);
    if (connectTimeoutsMs.length === 0) throw new RangeError('connectTimeoutsMs must hold at least one attempt');
    const route = (f: Frontend, clientIP: string): Route =>
      this.runtimes.get(runtimeKey(f.family, f.service))?.route(f.role, clientIP, this.detector) ?? REJECT;
    const ctx: ForwardContext = {
      route,
      stats: this.counters,
      log: this.log,
      connectTimeoutsMs,
      outOfDescriptors: (what, err, f) => this.outOfDescriptors(what, err, f),
    };
    this.ctx = { ...ctx, sessions: this.sessions, udpConnectFailed: (f, endpoint, err) => this.udpConnectFailed(f, endpoint, err) };
  }

  async sync(_prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
    if (changes.full) this.fileLimit = parseOpenFilesLimit(this.readLimits()) ?? this.fileLimit;
    if (!this.ready || changes.full) {
      await this.holder.ensure();
      this.held = await this.holder.addresses();
      this.ready = true;
    }
    if (!this.local || changes.full || changes.tableChanged) this.local = await this.holder.localAddresses();
    const want = planFrontends(next, this.local, { families: this.families, localhostNodePorts: this.localhostNodePorts });
    this.logOnce(next, want.unsupported, want.conflicts);
    for (const bad of want.invalid) this.log.warn('address in the IR does not parse; skipped', bad);
    const plan = planReconcile({ addresses: this.held, frontends: this.frontendMap() }, want);

    // Addresses first: a socket can only bind an address that is local already.
    if (plan.addAddresses.length > 0) {
      try {
        await this.holder.apply(plan.addAddresses, []);
      } catch (e) {
        this.ready = false; // re-read the interface on the next sync
        throw e;
      }
      for (const a of plan.addAddresses) this.held.add(a);
    }

    // Services: new sets before new sockets, so the first connection already routes right.
    for (const family of this.families) {
      for (const [key, entry] of next[family].services) {
        const rk = runtimeKey(family, key);
        const rt = this.runtimes.get(rk);
        if (rt) rt.update(entry);
        else this.runtimes.set(rk, new ServiceRuntime(entry, this.now));
      }
    }
    this.lastTables = next;
    await this.refreshInterfaceRoutes(next);
    this.detector = this.buildDetector(next);

    // Closing first frees the descriptors (and ports) the frontends that are no longer wanted
    // hold, for the new ones.
    for (const key of plan.close) {
      this.listeners.get(key)?.close();
      this.listeners.delete(key);
    }
    const failed: string[] = [];
    let noDescriptors = 0;
    const opened = await Promise.all(
      plan.open.map(async (f) => {
        const l: Listener = f.protocol === 'TCP' ? new TcpListener(f, this.ctx) : new UdpListener(f, this.ctx);
        try {
          await l.open();
          return l;
        } catch (e) {
          l.close();
          failed.push(f.key);
          const cause = e instanceof ListenError ? e.cause : e;
          if (isOutOfDescriptors(cause)) {
            noDescriptors++;
            return undefined;
          }
          const reason = cause instanceof Error ? cause.message : String(cause);
          if (this.reportedFailures.get(f.key) !== reason) {
            this.reportedFailures.set(f.key, reason);
            this.reportOpenFailure(f, cause);
          }
          return undefined;
        }
      }),
    );
    for (const l of opened) if (l) this.listeners.set(l.frontend.key, l);
    if (noDescriptors !== this.reportedNoDescriptors) {
      if (noDescriptors > 0) {
        this.log.error('out of file descriptors: frontends not opened; retrying on every sync. userspace mode holds a socket per frontend: raise the open-files limit (RLIMIT_NOFILE)', {
          notOpened: noDescriptors,
          open: this.listeners.size,
          limit: formatOpenFilesLimit(this.fileLimit),
        });
      } else {
        this.log.info('frontends open again after running out of file descriptors', { open: this.listeners.size });
      }
      this.reportedNoDescriptors = noDescriptors;
    }
    // The frontends' descriptors are spoken for now; UDP sessions get their share of the rest.
    this.sessions.maxSessions = udpSessionBudget(this.fileLimit, this.listeners.size, this.maxUdpSessions);
    for (const f of plan.retarget) {
      const l = this.listeners.get(f.key);
      if (l) l.frontend = f;
    }
    for (const [rk, rt] of [...this.runtimes]) {
      const family = rt.entry.family;
      if (!this.families.includes(family) || !next[family].services.has(rt.entry.key)) this.runtimes.delete(rk);
    }

    if (plan.removeAddresses.length > 0) {
      try {
        await this.holder.apply([], plan.removeAddresses);
      } catch (e) {
        this.ready = false;
        throw e;
      }
      for (const a of plan.removeAddresses) this.held.delete(a);
    }
    this.failed = failed.sort();
    if (this.loggedUdpConnect.size > 0) this.pruneUdpConnectLog();
    if (this.reportedFailures.size > 0) {
      const still = new Set(failed);
      for (const key of [...this.reportedFailures.keys()]) {
        if (still.has(key)) continue;
        this.reportedFailures.delete(key);
        if (this.listeners.has(key)) this.log.info('frontend open after earlier failures', { frontend: key });
      }
    }
    this.startSweeper();
    this.log.v(2, 'userspace sync done', {
      full: changes.full,
      addrAdded: plan.addAddresses.length,
      addrRemoved: plan.removeAddresses.length,
      opened: plan.open.length - failed.length,
      closed: plan.close.length,
      failed: failed.length,
    });
  }

  async intact(): Promise<boolean> {
    if (!this.ready) return false;
    try {
      const now = await this.holder.addresses();
      for (const a of this.held) if (!now.has(a)) return false;
      return true;
    } catch {
      return false;
    }
  }

  async cleanup(): Promise<void> {
    for (const l of this.listeners.values()) l.close();
    this.listeners.clear();
    this.sessions.deleteWhere(() => true);
    this.runtimes.clear();
    this.loggedUdpConnect.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    if (this.routeTimer) clearInterval(this.routeTimer);
    this.routeTimer = undefined;
    this.lastTables = undefined;
    this.held.clear();
    this.ready = false;
    await this.holder.remove();
  }

  stats(): UserspaceStats {
    return {
      ...this.counters,
      udpSessionsActive: this.sessions.size,
      udpEvictions: this.sessions.evictions,
      udpExpirations: this.sessions.expirations,
      udpSessionLimit: this.sessions.maxSessions,
      frontends: this.listeners.size,
      addresses: this.held.size,
      failedFrontends: this.failed,
    };
  }

  frontends(): string[] {
    return [...this.listeners.keys()].sort();
  }

  private frontendMap(): Map<string, Frontend> {
    const m = new Map<string, Frontend>();
    for (const [k, l] of this.listeners) m.set(k, l.frontend);
    return m;
  }

  private buildDetector(next: ProxyTables): LocalSourceDetector {
    const node = new Set<string>(this.held);
    if (this.local) for (const f of [4, 6] as const) for (const a of this.local[f]) node.add(a);
    return new LocalSourceDetector(
      node,
      this.families.map((f) => next[f].localTraffic),
      this.interfaceRoutes,
    );
  }

  /**
   * With an interface detector: re-reads the routes out of the matching interfaces, at each sync
   * and every few seconds between them (pods come and go without a Service changing).
   */
  private async refreshInterfaceRoutes(next: ProxyTables): Promise<void> {
    const detectors = this.families.map((f) => next[f].localTraffic).filter(isInterfaceDetector);
    if (detectors.length === 0 || !this.holder.routesVia) {
      this.interfaceRoutes = [];
      if (this.routeTimer) clearInterval(this.routeTimer);
      this.routeTimer = undefined;
      return;
    }
    try {
      this.interfaceRoutes = await this.holder.routesVia((ifname) => detectors.some((d) => interfaceMatches(d, ifname)));
    } catch (e) {
      this.log.warn('cannot read the routes of the local-traffic interfaces; keeping the last ones', { error: String(e) });
    }
    if (!this.routeTimer) {
      this.routeTimer = setInterval(() => {
        const t = this.lastTables;
        if (!t) return;
        void this.refreshInterfaceRoutes(t).then(() => {
          if (this.lastTables === t) this.detector = this.buildDetector(t);
        });
      }, INTERFACE_ROUTES_REFRESH_MS);
      this.routeTimer.unref();
    }
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    const every = Math.max(100, Math.min(this.udpIdleMs / 2, 5000));
    this.sweeper = setInterval(() => {
      this.sessions.sweep();
      this.endBudgetEpisode();
    }, every);
    this.sweeper.unref();
  }

  /** A session made room for a new one because the descriptor budget, not maxUdpSessions, bounds the table. */
  private evictedAtBudget(): void {
    this.counters.udpDescriptorEvictions++;
    this.budgetEvictedSinceSweep = true;
    if (this.budgetEpisode++ > 0) return;
    this.log.warn('UDP sessions at the descriptor budget: each new client evicts the least recently used session; raise the open-files limit (RLIMIT_NOFILE)', {
      budget: this.sessions.maxSessions,
      maxUdpSessions: this.maxUdpSessions,
      limit: formatOpenFilesLimit(this.fileLimit),
      frontends: this.listeners.size,
      tcpActive: this.counters.tcpActive,
    });
  }

  /** Called per sweep: a sweep interval without such an eviction ends the episode. */
  private endBudgetEpisode(): void {
    if (this.budgetEvictedSinceSweep) {
      this.budgetEvictedSinceSweep = false;
      return;
    }
    if (this.budgetEpisode === 0) return;
    this.log.info('UDP sessions below the descriptor budget again', { evicted: this.budgetEpisode, active: this.sessions.size });
    this.budgetEpisode = 0;
  }

  private outOfDescriptors(what: DescriptorShortage, err: unknown, f: Frontend): void {
    const c = this.counters;
    if (what === 'accept') c.tcpAcceptOutOfDescriptors++;
    else if (what === 'connect') c.tcpConnectOutOfDescriptors++;
    else c.udpSessionOutOfDescriptors++;
    this.descriptorFailuresUnlogged++;
    const now = (this.now ?? Date.now)();
    if (now - this.descriptorFailureLoggedAt < OUT_OF_DESCRIPTORS_LOG_MS) return;
    this.log.error('out of file descriptors on the data path: connections and sessions fail; raise the open-files limit (RLIMIT_NOFILE)', {
      failed: what,
      frontend: f.key,
      err,
      failuresSinceLastLine: this.descriptorFailuresUnlogged,
      limit: formatOpenFilesLimit(this.fileLimit),
      frontends: this.listeners.size,
      tcpActive: c.tcpActive,
      udpSessions: this.sessions.size,
    });
    this.descriptorFailuresUnlogged = 0;
    this.descriptorFailureLoggedAt = now;
  }

  /**
   * A frontend that did not open. When another socket holds its port, that socket gets the
   * Service's traffic: the address is local (ferry0's, or the node's), and a wildcard listener
   * takes every local address. Said plainly, with the holder, since nothing else shows it.
   */
  private reportOpenFailure(f: Frontend, cause: unknown): void {
    const holders = (cause as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE' ? readPortHolders(f, this.readProcNet) : [];
    if (holders.length === 0) {
      this.log.error('cannot open frontend; retrying on every sync (logged again only if the reason changes)', { frontend: f.key, service: f.service, err: cause });
      return;
    }
    const wildcard = holders.some((h) => h.wildcard);
    this.log.error(
      `cannot open frontend: another socket holds its port${wildcard ? ' on the wildcard address' : ''}, and traffic to ${frontendAddress(f)} goes to that program instead of the Service; retrying on every sync (logged again only if the reason changes)`,
      {
        frontend: f.key,
        service: f.service,
        holder: holders.map((h) => `${holderAddress(h)} uid=${h.uid} inode=${h.inode}`).join(', '),
        find: `ss -${f.protocol === 'TCP' ? 'ltnp' : 'uanp'} 'sport = :${f.port}'`,
        err: cause,
      },
    );
  }

  private udpConnectFailed(f: Frontend, endpoint: string, err: Error): void {
    this.counters.udpConnectFailures++;
    const rk = runtimeKey(f.family, f.service);
    const key = `${rk}|${endpoint}`;
    const code = (err as NodeJS.ErrnoException).code ?? err.message;
    if (this.loggedUdpConnect.get(key)?.code === code) return;
    this.loggedUdpConnect.set(key, { rk, endpoint, code });
    this.log.warn('cannot connect a UDP session to the endpoint (no route from this node?); its datagrams are dropped (logged once per endpoint)', {
      service: f.service,
      frontend: f.key,
      endpoint,
      err,
    });
  }

  /** Forgets logged UDP connect failures of endpoints that left their Service, so a return is logged again. */
  private pruneUdpConnectLog(): void {
    for (const [key, e] of this.loggedUdpConnect) {
      if (!this.runtimes.get(e.rk)?.has(e.endpoint)) this.loggedUdpConnect.delete(key);
    }
  }

  private logOnce(
    next: ProxyTables,
    unsupported: readonly ServicePortKey[],
    conflicts: readonly { key: string; kept: ServicePortKey; refused: ServicePortKey }[],
  ): void {
    const present = new Set<ServicePortKey>();
    for (const family of this.families) {
      for (const [key, s] of next[family].services) {
        present.add(key);
        if (s.externalPolicyLocal && s.protocol !== 'SCTP' && !this.loggedSourceIP.has(key)) {
          this.loggedSourceIP.add(key);
          this.log.warn(
            'externalTrafficPolicy Local: userspace mode cannot preserve the client source IP; endpoints see the node address',
            { service: key },
          );
        }
      }
    }
    for (const key of unsupported) {
      if (this.loggedUnsupported.has(key)) continue;
      this.loggedUnsupported.add(key);
      this.log.warn('SCTP is not supported in userspace mode; service port not served', { service: key });
    }
    const seen = new Set<string>();
    for (const c of conflicts) {
      const id = `${c.key}|${c.refused}`;
      seen.add(id);
      if (this.loggedConflicts.has(id)) continue;
      this.loggedConflicts.add(id);
      this.log.warn('two service ports want the same socket; the first keeps it', { ...c });
    }
    for (const id of this.loggedConflicts) if (!seen.has(id)) this.loggedConflicts.delete(id);
    for (const key of this.loggedUnsupported) if (!present.has(key)) this.loggedUnsupported.delete(key);
    for (const key of this.loggedSourceIP) {
      if (!present.has(key)) this.loggedSourceIP.delete(key);
    }
  }
}

export function createUserspaceBackend(opts: UserspaceOptions = {}, internals: UserspaceInternals = {}): UserspaceBackend {
  return new Userspace(opts, internals);
}

/** `--cleanup`: removes ferry0 and with it every service address (sockets die with the process). */
export async function cleanupUserspace(interfaceName: string = DEFAULT_INTERFACE): Promise<void> {
  await removeInterface(interfaceName);
}
