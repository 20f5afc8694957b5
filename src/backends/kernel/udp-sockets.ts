/**
 * ebpf mode's counterpart of the NAT modes' conntrack cleanup: connected UDP sockets that socket
 * LB pointed at an endpoint which no longer serves. A translated connect() fixes the socket's
 * destination for good (no hook sees its later datagrams), so where kube-proxy deletes the flow's
 * conntrack entry, ferry destroys the socket (native/bpf/sock_term.c, bpf_sock_destroy, Linux
 * 6.5+): the application's next send or receive fails and it connects again, through socket LB.
 *
 * It speaks the conntrack cleanup's language (list entries, delete by filters), so the same pure
 * code decides what is stale (conntrack-cleanup.ts, kube-proxy's rules): a listed socket is an
 * entry whose original destination is the frontend it asked for and whose reply source is the
 * backend it sends to. The iterators walk the network namespaces of the processes under the
 * cgroup socket LB is attached to (and ferry's own), read from cgroup.procs and /proc/PID/ns/net.
 * Thin: it decides nothing.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadNative, type NativeAddon } from '../../native/index.js';
import { logger, type Logger } from '../../util/log.js';
import { readSockRecords, SOCKTERM_KEY_SIZE, writeSockTermKey, type SockRecord } from '../ebpf/layout.js';
import type { Conntrack, ConntrackEntry, ConntrackFilter, ConntrackProtocol, StaleFlowWords } from './conntrack.js';
import { BpfError, defaultSockTermObject } from './bpf.js';

export const UDP_SOCKET_WORDS: StaleFlowWords = {
  deleteFailed:
    'destroying connected UDP sockets of removed endpoints failed; the next sync lists the sockets and destroys what is stale (until then they keep sending to removed endpoints)',
  listFailed: 'listing connected UDP sockets failed; tried again at the next sync (until then sockets connected to endpoints replaced while ferry was not running keep sending to them)',
  deleted: 'connected UDP sockets of removed endpoints destroyed',
  listed: 'connected UDP sockets listed',
};

/** How deep a cgroup tree is walked for processes (cgroup v2 allows any depth; real trees are shallow). */
const MAX_CGROUP_DEPTH = 32;

/**
 * The network namespaces of the processes in `cgroupRoot`'s subtree, plus this process's: one
 * nsfs path (/proc/PID/ns/net) per namespace. Processes that exit meanwhile are skipped.
 */
export async function namespacesUnder(cgroupRoot: string, procRoot = '/proc'): Promise<string[]> {
  const seen = new Map<string, string>();
  const add = async (pid: string): Promise<void> => {
    const path = `${procRoot}/${pid}/ns/net`;
    try {
      const st = await stat(path);
      const id = `${st.dev}:${st.ino}`;
      if (!seen.has(id)) seen.set(id, path);
    } catch {
      // The process exited, or is not visible from this PID namespace.
    }
  };
  await add(String(process.pid));
  const walk = async (dir: string, depth: number): Promise<void> => {
    let procs = '';
    try {
      procs = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      return; // removed meanwhile
    }
    for (const pid of procs.split('\n')) if (/^[1-9][0-9]*$/.test(pid)) await add(pid);
    if (depth >= MAX_CGROUP_DEPTH) return;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name), depth + 1);
  };
  await walk(cgroupRoot, 0);
  return [...seen.values()];
}

/** The sockterm keys of the UDP filters that name a frontend port and a backend (what sock_term.c can match). */
export function sockTermKeys(filters: readonly ConntrackFilter[]): { keys: Uint8Array; count: number } {
  const keys = new Uint8Array(filters.length * SOCKTERM_KEY_SIZE);
  let count = 0;
  for (const f of filters) {
    if (f.protocol !== 'udp' || f.origDstPort === undefined || f.replySrcPort === undefined) continue;
    // A backend without an address is matched only for a NodePort (no frontend address either).
    if (f.replySrc === undefined && f.origDst !== undefined) continue;
    if (writeSockTermKey(keys, count * SOCKTERM_KEY_SIZE, f.origDst, f.origDstPort, f.replySrc, f.replySrcPort, f.family)) count++;
  }
  return { keys: keys.subarray(0, count * SOCKTERM_KEY_SIZE), count };
}

/** A listed socket as the conntrack cleanup reads an entry: frontend → backend, from the socket's address. */
export function socketEntry(r: SockRecord): ConntrackEntry {
  return {
    family: r.family,
    protocol: 'udp',
    origSrc: r.src,
    origSrcPort: r.srcPort,
    origDst: r.frontend,
    origDstPort: r.frontendPort,
    replySrc: r.dst,
    replySrcPort: r.dstPort,
    replyDst: r.src,
    replyDstPort: r.srcPort,
  };
}

export interface UdpSocketsOptions {
  readonly pinDir: string;
  /** The cgroup socket LB is attached to (resolved: see KernelBpfMaps.attach). */
  readonly cgroupRoot: () => Promise<string>;
  readonly object?: string;
  readonly log?: Logger;
  /** Tests: where the namespaces come from. */
  readonly namespaces?: () => Promise<string[]>;
  /** Tests: the addon (default: the built one). */
  readonly addon?: () => Partial<UdpAddon> | undefined;
}

export type UdpAddon = Required<Pick<NativeAddon, 'bpfUdpSocketsAsync'>>;

/** Lists and destroys connected UDP sockets through the addon; `delete` resolves with how many it destroyed. */
export class KernelUdpSockets implements Pick<Conntrack, 'delete' | 'list'> {
  /** How the cleanup's log lines name what it cleans. */
  readonly words = UDP_SOCKET_WORDS;
  private readonly log: Logger;
  /** Why this kernel or build cannot do it, once found (then nothing is tried again). */
  private unsupported: string | undefined;

  constructor(private readonly opts: UdpSocketsOptions) {
    this.log = opts.log ?? logger('ebpf');
  }

  /** undefined while sockets can be destroyed here (or before the first try). */
  get unavailable(): string | undefined {
    return this.unsupported;
  }

  async list(family: 4 | 6, protocol: ConntrackProtocol): Promise<ConntrackEntry[]> {
    if (protocol !== 'udp') return []; // socket LB balances TCP and UDP only
    const r = await this.run(undefined);
    return r.filter((x) => x.family === family).map(socketEntry);
  }

  async delete(filters: readonly ConntrackFilter[]): Promise<number> {
    const { keys, count } = sockTermKeys(filters);
    if (count === 0) return 0;
    const destroyed = await this.run({ keys, count });
    if (destroyed.length > 0) {
      this.log.info('connected UDP sockets destroyed: their endpoint no longer serves the frontend they connected to', {
        sockets: destroyed.length,
        flows: [...new Set(destroyed.map((r) => `${r.frontend}:${r.frontendPort}->${r.dst}:${r.dstPort}`))].slice(0, 8).join(','),
      });
    }
    return destroyed.length;
  }

  private addon(): UdpAddon | undefined {
    const a = this.opts.addon ? this.opts.addon() : loadNative();
    return a?.bpfUdpSocketsAsync ? (a as UdpAddon) : undefined;
  }

  private async run(term: { keys: Uint8Array; count: number } | undefined): Promise<SockRecord[]> {
    if (this.unsupported !== undefined) return [];
    const addon = this.addon();
    if (!addon) return this.disable('the native addon has no bpfUdpSocketsAsync (rebuild it: scripts/setup)');
    const netns = await (this.opts.namespaces ?? (async () => namespacesUnder(await this.opts.cgroupRoot())))();
    try {
      const object = this.opts.object ?? defaultSockTermObject();
      const r = term ? await addon.bpfUdpSocketsAsync(object, this.opts.pinDir, netns, term.keys, SOCKTERM_KEY_SIZE) : await addon.bpfUdpSocketsAsync(object, this.opts.pinDir, netns);
      return readSockRecords(r.records);
    } catch (e) {
      const err = e as { message?: string; step?: string; errno?: number };
      // The verifier refusing the iterators means this kernel lacks them or bpf_sock_destroy
      // (before Linux 6.5): say so once, then leave connected sockets alone.
      if (typeof err.step === 'string' && err.step.startsWith('load BPF object')) return this.disable(`this kernel does not load the UDP socket iterators (bpf_sock_destroy needs Linux 6.5+): ${err.message ?? ''}`);
      const step = err.step ?? (term ? 'destroy connected UDP sockets' : 'list connected UDP sockets');
      const message = err.message ?? String(e);
      throw new BpfError(step, message.startsWith(`${step}: `) ? message.slice(step.length + 2) : message, err.errno);
    }
  }

  private disable(why: string): SockRecord[] {
    this.unsupported = why;
    this.log.warn('connected UDP sockets keep sending to an endpoint after it goes (kube-proxy would clear their conntrack entries)', { reason: why.split('\n')[0] });
    return [];
  }
}
