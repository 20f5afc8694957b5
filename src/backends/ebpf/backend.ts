/**
 * The ebpf backend: compile (full: desired vs what the pinned maps hold; partial: the changed
 * service ports' element diff) → apply through a BpfMaps applier, phase by phase. The first sync
 * of a process loads the programs and attaches them to the cgroup root (or swaps them into the
 * links a previous ferry pinned) and the tc program to the node's interfaces (replacing a
 * previous ferry's in place), so a restart keeps the data path running throughout; the daemon
 * begins that while its initial lists arrive (prepare()), and the first sync waits for it. An
 * interface that appears later gets the tc program when the kernel's link notification arrives
 * (BpfMaps.watchLinks), and every sync checks again (a new pod's interface exists before the pod
 * can be a ready endpoint, so it has the program before traffic is sent to it).
 * After each sync, connected UDP sockets whose endpoint stopped serving are destroyed (`sockets`,
 * the NAT modes' conntrack cleanup over sockets: kernel/udp-sockets.ts).
 * Policy comes from the IR; this module never decides which endpoints or verdicts apply.
 */
import type { Backend, IPFamily, ProxyTables, SyncChanges } from '../../plan/types.js';
import { logger, type Logger } from '../../util/log.js';
import type { AttachResult, BpfMaps } from '../kernel/bpf.js';
import type { Conntrack, StaleFlowWords } from '../kernel/conntrack.js';
import { cleanConntrack, type ConntrackCleanupState } from '../conntrack-sync.js';
import { EbpfCompiler, type EbpfDiff } from './compiler.js';
import { describeSnatPorts } from './snat-ports.js';
import { describeCtTimeouts } from './ct-timeouts.js';

export interface EbpfBackendOptions {
  readonly maps: BpfMaps;
  readonly families: readonly IPFamily[];
  readonly localhostNodePorts: boolean;
  /**
   * Connected UDP sockets (kernel/udp-sockets.ts): after each sync, those socket LB pointed at an
   * endpoint that stopped serving are destroyed, as the NAT modes delete conntrack entries
   * (conntrack-cleanup.ts decides which); `words` name them in the cleanup's log lines. Absent:
   * left alone.
   */
  readonly sockets?: Pick<Conntrack, 'delete' | 'list'> & { readonly words?: StaleFlowWords };
  readonly log?: Logger;
}

/** A sync that did not apply completely; the next sync is full and repairs from a dump. */
export class EbpfSyncError extends Error {
  readonly code = 'FERRY_ERR_EBPF_SYNC';
  constructor(
    readonly full: boolean,
    readonly stage: 'attach' | 'dump' | 'apply',
    override readonly cause: unknown,
  ) {
    super(`ebpf ${full ? 'full' : 'partial'} sync failed (${stage}): ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'EbpfSyncError';
  }
}

export interface EbpfSyncStats {
  readonly full: boolean;
  /** Map elements written plus deleted. */
  readonly elements: number;
}

export interface EbpfBackend extends Backend {
  readonly name: 'ebpf';
  intact(): Promise<boolean>;
  lastSync(): EbpfSyncStats | undefined;
  /** The compiler's bookkeeping (tests). */
  readonly compiler: EbpfCompiler;
}

export function createEbpfBackend(opts: EbpfBackendOptions): EbpfBackend {
  const log = opts.log ?? logger('ebpf');
  const compiler = new EbpfCompiler({ families: opts.families, localhostNodePorts: opts.localhostNodePorts });
  let attached = false;
  /** An attach begun by prepare() before the first sync, which that sync takes over. */
  let preparing: Promise<AttachResult> | undefined;
  let last: EbpfSyncStats | undefined;
  /** The link subscription, made after the first attach. */
  let links: { close(): void } | undefined;
  /** The tables the maps hold since the last sync that applied (null: none yet in this process). */
  let applied: ProxyTables | null = null;
  const socketState: ConntrackCleanupState = { reconcile: false };

  /**
   * Between syncs: a new interface gets the tc program now, not with the next change of the
   * cluster (in a quiet cluster that is the hourly full sync). syncInterfaces() does nothing
   * when no link changed; what fails here is tried again by the next sync.
   */
  const onLinks = (): void => {
    if (!attached) return;
    opts.maps.syncInterfaces().then(
      (fresh) => {
        if (fresh.length > 0) log.v(1, 'tc program attached to new interfaces', { interfaces: fresh.join(','), on: 'link notification' });
      },
      (e: unknown) => log.warn('could not attach the tc program to new interfaces; the next sync tries again', { error: e instanceof Error ? e.message : String(e) }),
    );
  };
  let reported = '';

  const report = (): void => {
    const text = JSON.stringify([compiler.conflicts, compiler.skipped, compiler.refused]);
    if (text === reported) return;
    reported = text;
    for (const r of compiler.refused) log.error('service port not programmed: a BPF map is full', { what: r });
    for (const c of compiler.conflicts) log.warn('frontend wanted by two service ports; the first keeps it', { frontend: c.frontend, kept: c.kept, refused: c.refused });
    for (const s of compiler.skipped) log.v(1, 'not load-balanced at the socket level', { what: s });
  };

  return {
    name: 'ebpf',
    compiler,
    prepare(): void {
      if (attached || preparing) return;
      preparing = opts.maps.attach();
      // Its failure is the first sync's to report (and that sync's to retry).
      preparing.catch(() => undefined);
    },
    async sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
      const full = changes.full || !attached;
      // A full sync's parts, for its log line (ms): loading and attaching the programs, the
      // dump of the maps, and compiling and writing the elements (overlapped, so one figure).
      const t0 = performance.now();
      let attachMs = 0;
      let dumpMs = 0;
      if (!attached) {
        try {
          const pending = preparing ?? opts.maps.attach();
          preparing = undefined;
          const r = await pending;
          log.info('BPF programs in place', {
            attached: r.attached.length,
            replaced: r.replaced.length,
            interfaces: r.interfaces.join(','),
            snatPorts: describeSnatPorts(r.snatPorts),
            ...(r.ctTimeouts ? { ctTimeouts: describeCtTimeouts(r.ctTimeouts) } : {}),
          });
          if (r.unpinned.length > 0) {
            log.warn('BPF maps pinned by an older ferry with another layout were replaced; their entries (connection tracking, affinity) start empty', {
              maps: r.unpinned.join(','),
            });
          }
          if (r.narrowCgroup !== undefined) {
            log.warn(
              "the cgroup2 mount found is not the root of the node's cgroup hierarchy (a container's cgroup namespace?): only processes below it get socket-level load balancing; mount the host's cgroup2 and pass --ebpf-cgroup-root (deploy/ebpf does)",
              { cgroup: r.narrowCgroup },
            );
          }
          if (r.snatPorts.sharedWithNode) {
            log.warn(
              "fewer than 1024 ports lie outside this node's ephemeral range (net.ipv4.ip_local_port_range): masqueraded NodePort connections take source ports from 1024-65535 (but the NodePort range) and may then clash with a connection the node opens itself to the same endpoint",
              { snatPorts: describeSnatPorts(r.snatPorts) },
            );
          }
        } catch (e) {
          throw new EbpfSyncError(full, 'attach', e);
        }
        attached = true;
        attachMs = performance.now() - t0;
        try {
          links ??= opts.maps.watchLinks?.(onLinks);
        } catch (e) {
          log.warn('cannot watch for new interfaces; they get the tc program with the next sync', { error: e instanceof Error ? e.message : String(e) });
        }
      } else {
        try {
          const fresh = await opts.maps.syncInterfaces();
          if (fresh.length > 0) log.v(1, 'tc program attached to new interfaces', { interfaces: fresh.join(',') });
        } catch (e) {
          throw new EbpfSyncError(full, 'attach', e);
        }
      }
      let size = 0;
      // The compiler's view may be ahead of the kernel after a failed write: the syncer's next
      // (full) sync re-reads the maps, so nothing is assumed.
      const tDump = performance.now();
      if (full) {
        let kernel;
        try {
          kernel = await opts.maps.dump();
        } catch (e) {
          throw new EbpfSyncError(full, 'dump', e);
        }
        dumpMs = performance.now() - tDump;
        // Part by part: the next part is compiled while the addon's threads write this one.
        // Every write has ended before the sync returns or throws (nothing runs into the next).
        const parts = compiler.fullInParts(next, kernel);
        let writing: Promise<void> = Promise.resolve();
        let failed: { error: unknown } | undefined;
        for (;;) {
          let part: IteratorResult<EbpfDiff, void>;
          try {
            part = parts.next();
          } catch (e) {
            await writing;
            throw e;
          }
          await writing;
          if (failed) throw new EbpfSyncError(full, 'apply', failed.error);
          if (part.done) break;
          size += part.value.size;
          writing = opts.maps.apply(part.value).catch((e: unknown) => {
            failed = { error: e };
          });
        }
      } else {
        const diff = compiler.partial(next, changes);
        size = diff.size;
        try {
          await opts.maps.apply(diff);
        } catch (e) {
          throw new EbpfSyncError(full, 'apply', e);
        }
      }
      compiler.commit();
      last = { full, elements: size };
      report();
      const ms = (x: number): number => Math.round(x * 10) / 10;
      log.v(2, 'synced', { full, elements: size, ...(full ? { attachMs: ms(attachMs), dumpMs: ms(dumpMs), mapsMs: ms(performance.now() - tDump - dumpMs) } : {}) });
      // The maps are in; a failed cleanup is logged and made good by the next sync, never undoes
      // this one. Against what the maps held (sockets were balanced by those), also on a full sync.
      const held = full ? applied : prev;
      applied = next;
      if (opts.sockets) {
        await cleanConntrack(opts.sockets, held, next, full || changes.tableChanged ? undefined : changes.changed, opts.families, socketState, opts.sockets.words);
      }
    },
    async intact(): Promise<boolean> {
      if (!attached) return true;
      const ok = await opts.maps.intact();
      // Pins removed behind our back: the next (full) sync loads and attaches again.
      if (!ok) attached = false;
      return ok;
    },
    lastSync: () => last,
    async cleanup(): Promise<void> {
      links?.close();
      links = undefined;
      await opts.maps.cleanup();
      attached = false;
    },
  };
}
