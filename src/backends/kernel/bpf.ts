/**
 * The ebpf mode's applier: the only code that touches bpffs, cgroup v2 and BPF maps for it.
 * Thin: it mounts what is missing, loads and attaches the programs through the addon (libbpf),
 * dumps and writes map elements in the order the compiler gave, and removes the pins on
 * cleanup. It decides nothing. `FakeBpfMaps` is the in-memory twin for unit tests.
 *
 * Safety: it attaches only to the cgroup it is given and to the interfaces of the network
 * namespace it runs in (listed through netlink, never /sys, which may be the host's); removing
 * the pin directory detaches ferry's links and tc filters and frees its maps, and nothing else.
 */
import { existsSync } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative, nativeLoadError, type NativeAddon } from '../../native/index.js';
import { run } from '../../util/exec.js';
import { contentsOf, emptyState, type EbpfDiff, type MapContents, type MapOps, type MapState } from '../ebpf/compiler.js';
import { Elements } from '../ebpf/elements.js';
import { MAP_SIZES, WRITTEN_MAPS, type MapName } from '../ebpf/layout.js';
import { parsePortRange, snatPortPlan, type SnatPortPlan } from '../ebpf/snat-ports.js';
import { CT_TIMEOUT_SYSCTLS, ctTimeoutsOf, type CtTimeouts, type CtTimeoutSettings } from '../ebpf/ct-timeouts.js';

const BPF_FS_MAGIC = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** Where ferry mounts cgroup2 when the host has none. */
export const OWN_CGROUP2_MOUNT = '/run/ferry/cgroup2';
export const BPFFS_MOUNT = '/sys/fs/bpf';
/** The tc program (native/bpf/tc_lb.c), pinned as prog_<name>. */
export const TC_PROGRAM = 'ferry_tc_ingress';
/** Its egress twin (the replies of an endpoint on a node address), on every interface the first is on. */
export const TC_EGRESS_PROGRAM = 'ferry_tc_egress';
/** The links ferry pins, one per program of native/bpf/sock_lb.c. */
export const PROGRAMS = [
  'ferry_connect4',
  'ferry_connect6',
  'ferry_sendmsg4',
  'ferry_sendmsg6',
  'ferry_recvmsg4',
  'ferry_recvmsg6',
  'ferry_getpeername4',
  'ferry_getpeername6',
] as const;

export class BpfError extends Error {
  readonly code = 'FERRY_ERR_BPF';
  constructor(
    readonly step: string,
    message: string,
    readonly errno?: number,
  ) {
    super(`${step}: ${message}`);
    this.name = 'BpfError';
  }
}

export interface AttachResult {
  readonly attached: string[];
  readonly replaced: string[];
  readonly interfaces: string[];
  readonly snatPorts: SnatPortPlan;
  /** Maps pinned by an older ferry with another layout: removed and created anew (entries lost). */
  readonly unpinned: string[];
  /** The tc program's connection-tracking timeouts, when the caller set them (ctTimeouts). */
  readonly ctTimeouts?: CtTimeouts;
  /**
   * The cgroup the socket-level programs went on when --ebpf-cgroup-root was not given and the
   * cgroup2 mount found is not its hierarchy's root — a container's cgroup namespace: only the
   * processes below it are balanced. Absent otherwise.
   */
  readonly narrowCgroup?: string;
}

/** What the ebpf backend needs from the kernel. */
export interface BpfMaps {
  /**
   * Loads the programs and attaches them (or swaps them into links a previous run pinned); the
   * tc program goes onto every selected interface (replacing a previous run's atomically), its
   * SNAT ports (snatPorts) chosen from the namespace's ephemeral port range.
   */
  attach(): Promise<AttachResult>;
  /** Attaches the tc program to selected interfaces that appeared since; returns their names. */
  syncInterfaces(): Promise<string[]>;
  /**
   * Calls onChange when links (or addresses) of this namespace change, so a new interface gets
   * the tc program without waiting for a sync; undefined where no subscription can be made.
   */
  watchLinks?(onChange: () => void): { close(): void } | undefined;
  /** What the pinned maps ferry writes hold now. */
  dump(): Promise<MapContents>;
  /** Writes one diff, phase by phase; on a failure, throws the first error once every write of that phase has ended. */
  apply(diff: EbpfDiff): Promise<void>;
  /** Every link and map pin is still there. */
  intact(): Promise<boolean>;
  /** Detaches and frees everything: removes every pin under the directory. */
  cleanup(): Promise<void>;
}

/** The compiled object: native/bpf/out/sock_lb.bpf.o in the package (FERRY_BPF_OBJECT overrides). */
export function defaultBpfObject(): string {
  const env = process.env['FERRY_BPF_OBJECT'];
  if (env) return resolve(env);
  return join(packageRoot(), 'native', 'bpf', 'out', 'sock_lb.bpf.o');
}

/** The tc object: native/bpf/out/tc_lb.bpf.o in the package (FERRY_BPF_TC_OBJECT overrides). */
export function defaultTcObject(): string {
  const env = process.env['FERRY_BPF_TC_OBJECT'];
  if (env) return resolve(env);
  return join(packageRoot(), 'native', 'bpf', 'out', 'tc_lb.bpf.o');
}

/** The UDP socket iterators: native/bpf/out/sock_term.bpf.o in the package (FERRY_BPF_TERM_OBJECT overrides). */
export function defaultSockTermObject(): string {
  const env = process.env['FERRY_BPF_TERM_OBJECT'];
  if (env) return resolve(env);
  return join(packageRoot(), 'native', 'bpf', 'out', 'sock_term.bpf.o');
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) break;
    const up = dirname(dir);
    if (up === dir) throw new BpfError('find the BPF object', 'no package root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

type BpfAddon = Required<
  Pick<
    NativeAddon,
    | 'bpfLoadAsync'
    | 'bpfProbe'
    | 'bpfMapUpdate'
    | 'bpfMapDelete'
    | 'bpfMapUpdateAsync'
    | 'bpfMapDeleteAsync'
    | 'bpfMapDumpAsync'
    | 'bpfTcLoadAsync'
    | 'bpfTcAttach'
    | 'bpfTcDetach'
    | 'bpfInterfaces'
  >
>;

function addonWithBpf(): BpfAddon {
  const a = loadNative();
  if (!a) throw new BpfError('load the native addon', nativeLoadError()?.message ?? 'not built (run scripts/setup)');
  const { bpfLoadAsync, bpfProbe, bpfMapUpdate, bpfMapDelete, bpfMapUpdateAsync, bpfMapDeleteAsync, bpfMapDumpAsync, bpfTcLoadAsync, bpfTcAttach, bpfTcDetach, bpfInterfaces } = a;
  if (
    !bpfLoadAsync ||
    !bpfTcLoadAsync ||
    !bpfProbe ||
    !bpfMapUpdate ||
    !bpfMapDelete ||
    !bpfMapUpdateAsync ||
    !bpfMapDeleteAsync ||
    !bpfMapDumpAsync ||
    !bpfTcAttach ||
    !bpfTcDetach ||
    !bpfInterfaces
  ) {
    throw new BpfError('load the native addon', 'this build has no (or an older) BPF support (rebuild native/ with libbpf-dev installed: scripts/setup)');
  }
  return { bpfLoadAsync, bpfProbe, bpfMapUpdate, bpfMapDelete, bpfMapUpdateAsync, bpfMapDeleteAsync, bpfMapDumpAsync, bpfTcLoadAsync, bpfTcAttach, bpfTcDetach, bpfInterfaces };
}

/**
 * Which interfaces get the tc program (--ebpf-interfaces): names, or prefixes ending in '*'
 * ([] = none: the program is loaded and pinned, attached nowhere — tests and benchmarks in the
 * host's namespace). 'all': every interface of the network namespace except loopback — replies
 * from endpoints on this node arrive on their pods' interfaces, so those need the program as
 * much as the uplink does.
 */
export type InterfaceSelector = readonly string[] | 'all';

export function selectInterfaces(all: readonly { name: string; index: number }[], sel: InterfaceSelector): string[] {
  const out: string[] = [];
  for (const i of all) {
    if (sel === 'all' ? i.name !== 'lo' : sel.some((p) => (p.endsWith('*') ? i.name.startsWith(p.slice(0, -1)) : i.name === p))) out.push(i.name);
  }
  return out;
}

/**
 * Promise.all that waits for every promise before it throws (the first error): a failed write
 * must not leave others still running into the next sync's dump.
 */
async function settled<T>(all: readonly Promise<T>[]): Promise<T[]> {
  const rs = await Promise.allSettled(all);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** Up to this many elements per map, a phase is written synchronously (see apply()). */
const INLINE_ELEMENTS = 1024;

function rethrow(step: string, e: unknown): never {
  if (e instanceof BpfError) throw e;
  const err = e as { message?: string; errno?: number };
  throw new BpfError(step, err.message ?? String(e), err.errno);
}

async function fsType(path: string): Promise<number | undefined> {
  try {
    return (await statfs(path)).type;
  } catch {
    return undefined;
  }
}

/** The host's cgroup2 mount point from /proc/self/mounts, if any. */
export async function findCgroup2Mount(): Promise<string | undefined> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  for (const line of mounts.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2' && mnt) return mnt.replace(/\\040/g, ' ');
  }
  return undefined;
}

/** The cgroup to attach to: the given directory (must be on cgroup2), else the host's cgroup2 mount (mounted if absent). */
/**
 * Whether `dir` is the root of its cgroup v2 hierarchy: the kernel gives every cgroup but the
 * root a `cgroup.type` file, also the root of a cgroup namespace (which a container sees as its
 * /sys/fs/cgroup).
 */
export function isHierarchyRoot(dir: string): boolean {
  return !existsSync(join(dir, 'cgroup.type'));
}

export async function resolveCgroupRoot(configured: string | undefined): Promise<string> {
  if (configured !== undefined) {
    if ((await fsType(configured)) !== CGROUP2_SUPER_MAGIC) throw new BpfError('check --ebpf-cgroup-root', `${configured} is not a directory on a cgroup v2 file system`);
    return configured;
  }
  const found = await findCgroup2Mount();
  if (found) return found;
  await mkdir(OWN_CGROUP2_MOUNT, { recursive: true });
  const r = await run(['mount', '-t', 'cgroup2', 'none', OWN_CGROUP2_MOUNT], { allowFailure: true });
  if (r.exitCode !== 0) throw new BpfError('mount cgroup2', `mount -t cgroup2 none ${OWN_CGROUP2_MOUNT}: ${r.stderr.trim()}`);
  return OWN_CGROUP2_MOUNT;
}

/** Makes `dir` exist on a bpffs, mounting bpffs on /sys/fs/bpf when the directory is under it and none is there. */
export async function ensureBpffsDir(dir: string): Promise<void> {
  const parent = dirname(dir);
  if ((await fsType(parent)) !== BPF_FS_MAGIC && (await fsType(dir)) !== BPF_FS_MAGIC) {
    if (dir.startsWith(BPFFS_MOUNT + '/') && (await fsType(BPFFS_MOUNT)) !== BPF_FS_MAGIC) {
      const r = await run(['mount', '-t', 'bpf', 'bpf', BPFFS_MOUNT], { allowFailure: true });
      if (r.exitCode !== 0) throw new BpfError('mount bpffs', `mount -t bpf bpf ${BPFFS_MOUNT}: ${r.stderr.trim()}`);
    }
  }
  await mkdir(dir, { recursive: true });
  if ((await fsType(dir)) !== BPF_FS_MAGIC) throw new BpfError('check --ebpf-bpffs-dir', `${dir} is not on a bpf file system`);
}

export interface KernelBpfOptions {
  readonly pinDir: string;
  /** undefined = the host's cgroup2 mount. */
  readonly cgroupRoot: string | undefined;
  readonly object?: string;
  readonly tcObject?: string;
  /**
   * --ebpf-interfaces; 'all' = every interface but lo. Required, so that no caller attaches to
   * the interfaces of whatever namespace it runs in by default (tests in the host's: []).
   */
  readonly interfaces: InterfaceSelector;
  /**
   * Connections the tc program tracks (--ebpf-ct-max): ferry_ct holds two entries each, allocated
   * at load. undefined = the objects' compiled size (65,536; native/bpf/maps.h).
   */
  readonly ctConnections?: number;
  /** kube-proxy's conntrack timeouts for the tc program's tracking; undefined = the object's defaults. */
  readonly ctTimeouts?: CtTimeoutSettings;
}

/** The node's conntrack timeout sysctls (this process's network namespace), as far as readable. */
async function readCtTimeoutSysctls(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const [name] of CT_TIMEOUT_SYSCTLS) {
    try {
      const v = Number((await readFile(`/proc/sys/net/netfilter/${name}`, 'utf8')).trim());
      if (Number.isInteger(v)) out.set(name, v);
    } catch {
      // nf_conntrack not loaded: the kernel's default applies.
    }
  }
  return out;
}

/** The SNAT ports for this network namespace's ephemeral range (this process's namespace). */
async function readSnatPortPlan(): Promise<SnatPortPlan> {
  const file = '/proc/sys/net/ipv4/ip_local_port_range';
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new BpfError(`read ${file}`, (e as Error).message);
  }
  const range = parsePortRange(text);
  if (!range) throw new BpfError(`read ${file}`, `unexpected content ${JSON.stringify(text.trim())}`);
  return snatPortPlan(range[0], range[1]);
}

/** The real applier, through the addon. */
export class KernelBpfMaps implements BpfMaps {
  constructor(private readonly opts: KernelBpfOptions) {}

  private path(map: MapName): string {
    return join(this.opts.pinDir, map);
  }

  /** Interfaces (name → index) the tc program is on, as far as this process attached it. */
  private readonly onInterfaces = new Map<string, number>();
  /**
   * One route-netlink subscription (link and address changes) for both uses: a sync lists the
   * interfaces only when it reported something since the last listing (listing them all, a
   * netlink dump, was a fifth of a one-Service sync), and watchLinks' subscribers hear of it
   * between syncs. Opened before the first listing, so no change falls between the two;
   * undefined (list at every sync) where it could not be opened or has failed.
   */
  private routes: { close(): void } | undefined;
  private routesChanged = false;
  private readonly linkListeners = new Set<() => void>();
  /** The interfaces were listed and every selected one attached: only a link change asks again. */
  private listed = false;

  async attach(): Promise<AttachResult> {
    const addon = addonWithBpf();
    const cgroup = await resolveCgroupRoot(this.opts.cgroupRoot);
    await ensureBpffsDir(this.opts.pinDir);
    let r: { attached: string[]; replaced: string[]; unpinned?: string[] };
    // On the thread pool: loading and verifying is kernel time that the event loop need not
    // wait out (a daemon prepares this while its initial lists arrive).
    // Both objects declare ferry_ct: both are told its size, or each would replace the other's pin.
    const ctEntries = this.opts.ctConnections === undefined ? undefined : 2 * this.opts.ctConnections;
    const load = { object: this.opts.object ?? defaultBpfObject(), pinDir: this.opts.pinDir, cgroup, ...(ctEntries ? { ctEntries } : {}) };
    try {
      r = await addon.bpfLoadAsync(load);
    } catch (e) {
      rethrow(`attach to cgroup ${cgroup}`, e);
    }
    const tcObject = this.opts.tcObject ?? defaultTcObject();
    const snatPorts = await readSnatPortPlan();
    const unpinned = [...(r.unpinned ?? [])];
    const ports: [number, number, number, number] = [...snatPorts.lo, ...snatPorts.hi];
    let ctTimeouts: CtTimeouts | undefined;
    if (this.opts.ctTimeouts) {
      const sysctls = await readCtTimeoutSysctls();
      ctTimeouts = ctTimeoutsOf(this.opts.ctTimeouts, (name) => sysctls.get(name));
    }
    try {
      unpinned.push(...(await addon.bpfTcLoadAsync(tcObject, this.opts.pinDir, ports, ctEntries, ctTimeouts)));
    } catch (e) {
      rethrow(`load the tc program ${tcObject}`, e);
    }
    // Every selected interface, also those a previous run attached to: the new program replaces
    // the old one in place (same filter handle), so packets never go without one.
    this.onInterfaces.clear();
    this.listed = false;
    const interfaces = await this.syncInterfaces();
    const narrow = this.opts.cgroupRoot === undefined && !isHierarchyRoot(cgroup);
    return { attached: r.attached, replaced: r.replaced, interfaces, snatPorts, unpinned, ...(ctTimeouts ? { ctTimeouts } : {}), ...(narrow ? { narrowCgroup: cgroup } : {}) };
  }

  async syncInterfaces(): Promise<string[]> {
    const addon = addonWithBpf();
    if (this.opts.interfaces !== 'all' && this.opts.interfaces.length === 0) return [];
    this.subscribe();
    if (this.listed && this.routes && !this.routesChanged) return [];
    // The notification is consumed: until this listing and attach succeed, every call lists.
    this.routesChanged = false;
    this.listed = false;
    let all: { name: string; index: number }[];
    try {
      all = addon.bpfInterfaces();
    } catch (e) {
      rethrow('list network interfaces', e);
    }
    const present = new Map(all.map((i) => [i.name, i.index]));
    for (const [name, index] of this.onInterfaces) if (present.get(name) !== index) this.onInterfaces.delete(name);
    const fresh = selectInterfaces(all, this.opts.interfaces).filter((n) => !this.onInterfaces.has(n));
    if (fresh.length === 0) {
      this.listed = true;
      return [];
    }
    let done: string[];
    try {
      done = addon.bpfTcAttach(this.opts.pinDir, fresh);
    } catch (e) {
      rethrow(`attach the tc program to ${fresh.join(', ')}`, e);
    }
    for (const n of done) this.onInterfaces.set(n, present.get(n) ?? 0);
    // One not attached (gone meanwhile) is looked at again by the next sync.
    this.listed = done.length === fresh.length;
    return done;
  }

  watchLinks(onChange: () => void): { close(): void } | undefined {
    if (this.opts.interfaces !== 'all' && this.opts.interfaces.length === 0) return undefined;
    if (!this.subscribe()) return undefined;
    this.linkListeners.add(onChange);
    return { close: () => this.linkListeners.delete(onChange) };
  }

  /** Opens the route subscription if it is not open; whether it is. */
  private subscribe(): boolean {
    if (this.routes) return true;
    const watch = loadNative()?.routeWatch;
    if (!watch) return false;
    try {
      const sub = watch((error) => {
        if (error !== undefined) {
          // Failed and stopped (its socket closed): every sync lists again; subscribers hear
          // nothing more, and each sync's own check covers them.
          if (this.routes === sub) this.routes = undefined;
          return;
        }
        this.routesChanged = true;
        for (const l of [...this.linkListeners]) l();
      });
      this.routes = sub;
    } catch {
      this.routes = undefined;
    }
    return this.routes !== undefined;
  }

  async dump(): Promise<MapContents> {
    const addon = addonWithBpf();
    // Every map at once (on the addon's threads): a dump of a million elements is kernel time.
    const dumps = await settled(
      WRITTEN_MAPS.map(async (m) => {
        const { key, value } = MAP_SIZES[m];
        try {
          const d = await addon.bpfMapDumpAsync(this.path(m), key, value);
          return Elements.of(m, d.keys, d.values, d.count);
        } catch (e) {
          rethrow(`dump ${m}`, e);
        }
      }),
    );
    const out = {} as Record<MapName, Elements>;
    for (const d of dumps) out[d.map] = d;
    return out;
  }

  async apply(diff: EbpfDiff): Promise<void> {
    const addon = addonWithBpf();
    for (const phase of diff.phases) {
      const what = (op: MapOps): string => `write ${op.upserts.length} and delete ${op.deletes.length} elements of ${op.map}`;
      if (phase.every((op) => op.upserts.length + op.deletes.length <= INLINE_ELEMENTS)) {
        // A partial sync's few elements: a trip through the thread pool would cost more than the syscalls.
        for (const op of phase) {
          const { key, value } = MAP_SIZES[op.map];
          try {
            if (op.upserts.length > 0) addon.bpfMapUpdate(this.path(op.map), op.upserts.keyBytes(), op.upserts.valueBytes(), key, value);
            if (op.deletes.length > 0) addon.bpfMapDelete(this.path(op.map), op.deletes.keyBytes(), key);
          } catch (e) {
            rethrow(what(op), e);
          }
        }
        continue;
      }
      // The maps of one phase are independent of each other: written at once, each on one of
      // the addon's threads; the next phase starts when every one of them is done.
      await settled(
        phase.map(async (op) => {
          const { key, value } = MAP_SIZES[op.map];
          try {
            if (op.upserts.length > 0) await addon.bpfMapUpdateAsync(this.path(op.map), op.upserts.keyBytes(), op.upserts.valueBytes(), key, value);
            if (op.deletes.length > 0) await addon.bpfMapDeleteAsync(this.path(op.map), op.deletes.keyBytes(), key);
          } catch (e) {
            rethrow(what(op), e);
          }
        }),
      );
    }
  }

  async intact(): Promise<boolean> {
    try {
      await Promise.all([
        ...PROGRAMS.map((p) => access(join(this.opts.pinDir, `link_${p}`))),
        access(join(this.opts.pinDir, `prog_${TC_PROGRAM}`)),
        access(join(this.opts.pinDir, `prog_${TC_EGRESS_PROGRAM}`)),
        ...WRITTEN_MAPS.map((m) => access(this.path(m))),
      ]);
      return true;
    } catch {
      return false;
    }
  }

  async cleanup(): Promise<void> {
    this.routes?.close();
    this.routes = undefined;
    this.linkListeners.clear();
    this.listed = false;
    await removePins(this.opts.pinDir);
  }
}

/**
 * Removes ferry's pin directory: first ferry's tc filters (and the clsact qdiscs ferry made) on
 * the interfaces the pinned ferry_tcif records, in this network namespace; then unpinning the
 * links detaches the cgroup programs, unpinning the maps frees them (no process holds them).
 * Refuses a directory that is not on bpffs.
 */
export async function removePins(pinDir: string): Promise<void> {
  const type = await fsType(pinDir);
  if (type === undefined) return;
  if (type !== BPF_FS_MAGIC) throw new BpfError('remove pins', `${pinDir} is not on a bpf file system; not touching it`);
  if (existsSync(join(pinDir, 'ferry_tcif'))) {
    const addon = addonWithBpf();
    try {
      addon.bpfTcDetach(pinDir);
    } catch (e) {
      rethrow(`detach the tc program (interfaces recorded in ${pinDir}/ferry_tcif)`, e);
    }
  }
  for (const name of await readdir(pinDir)) await rm(join(pinDir, name), { recursive: true, force: true });
  await rm(pinDir, { recursive: true, force: true });
}

/** Does this kernel accept the programs? (--proxy-mode-fallback, start-up). */
export async function probeBpf(object?: string, tcObject?: string): Promise<void> {
  const addon = addonWithBpf();
  try {
    addon.bpfProbe(object ?? defaultBpfObject());
  } catch (e) {
    rethrow('load the socket-level BPF programs (probe: this kernel needs cgroup sock_addr hooks, BTF and bpf_set_retval)', e);
  }
  try {
    addon.bpfProbe(tcObject ?? defaultTcObject());
  } catch (e) {
    rethrow('load the tc BPF program (probe: this kernel needs clsact tc programs with bpf_fib_lookup and bpf_redirect_neigh, Linux 5.10 or later)', e);
  }
}

/** In-memory twin: holds the maps as the kernel would, records what was asked. */
export class FakeBpfMaps implements BpfMaps {
  readonly maps: MapState = emptyState();
  attached = false;
  applied: EbpfDiff[] = [];
  /** Fail the next apply() with this error (once). */
  failNext: Error | undefined;

  /** Interfaces the fake pretends the namespace has; syncInterfaces attaches to the new ones. */
  interfaces: string[] = ['eth0'];
  readonly tcOn = new Set<string>();

  /** The ephemeral port range the fake's namespace reports. */
  ephemeralPorts: [number, number] = [32768, 60999];

  /** How often attach() was called. */
  attachCalls = 0;
  /** Fail the next attach() with this error (once). */
  failAttach: Error | undefined;
  /** attach() reports this as the narrow default cgroup (AttachResult.narrowCgroup). */
  narrowCgroup: string | undefined;

  async attach(): Promise<AttachResult> {
    this.attachCalls++;
    if (this.failAttach) {
      const e = this.failAttach;
      this.failAttach = undefined;
      throw e;
    }
    const replaced = this.attached ? [...PROGRAMS] : [];
    const attached = this.attached ? [] : [...PROGRAMS];
    this.attached = true;
    this.tcOn.clear();
    const narrow = this.narrowCgroup !== undefined ? { narrowCgroup: this.narrowCgroup } : {};
    return { attached, replaced, interfaces: await this.syncInterfaces(), snatPorts: snatPortPlan(...this.ephemeralPorts), unpinned: [], ...narrow };
  }

  async syncInterfaces(): Promise<string[]> {
    const fresh = this.interfaces.filter((n) => !this.tcOn.has(n));
    for (const n of fresh) this.tcOn.add(n);
    return fresh;
  }

  /** The subscriber of watchLinks (undefined when none or closed). */
  linkListener: (() => void) | undefined;

  watchLinks(onChange: () => void): { close(): void } {
    this.linkListener = onChange;
    return { close: () => (this.linkListener = undefined) };
  }

  /** Adds an interface to the fake namespace and notifies as the kernel would. */
  addInterface(name: string): void {
    this.interfaces.push(name);
    this.linkListener?.();
  }

  async dump(): Promise<MapContents> {
    return contentsOf(this.maps);
  }

  async apply(diff: EbpfDiff): Promise<void> {
    if (this.failNext) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    this.applied.push(diff);
    for (const phase of diff.phases) {
      for (const op of phase) {
        for (const [k, v] of op.upserts) this.maps[op.map].set(k, v);
        for (const k of op.deletes) this.maps[op.map].delete(k);
      }
    }
  }

  async intact(): Promise<boolean> {
    return this.attached;
  }

  async cleanup(): Promise<void> {
    for (const m of WRITTEN_MAPS) this.maps[m].clear();
    this.attached = false;
    this.tcOn.clear();
  }
}
