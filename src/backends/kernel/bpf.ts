/**
 * The ebpf mode's applier: the only code that touches bpffs, cgroup v2 and BPF maps for it.
 * Thin: it mounts what is missing, loads and attaches the programs through the addon (libbpf),
 * dumps and writes map elements in the order the compiler gave, and removes the pins on
 * cleanup. It decides nothing. `FakeBpfMaps` is the in-memory twin for unit tests.
 *
 * Safety: it attaches only to the cgroup it is given; removing the pin directory detaches ferry's
 * links and frees its maps, and nothing else.
 */
import { existsSync } from 'node:fs';
import { access, mkdir, readdir, readFile, rm, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative, nativeLoadError, type NativeAddon } from '../../native/index.js';
import { run } from '../../util/exec.js';
import { emptyState, type EbpfDiff, type MapState } from '../ebpf/compiler.js';
import { MAP_SIZES, WRITTEN_MAPS, type MapName } from '../ebpf/layout.js';

const BPF_FS_MAGIC = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC = 0x63677270;
/** Where ferry mounts cgroup2 when the host has none. */
export const OWN_CGROUP2_MOUNT = '/run/ferry/cgroup2';
export const BPFFS_MOUNT = '/sys/fs/bpf';
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

/** What the ebpf backend needs from the kernel. */
export interface BpfMaps {
  /** Loads the programs and attaches them (or swaps them into links a previous run pinned). */
  attach(): Promise<{ attached: string[]; replaced: string[] }>;
  /** What the pinned maps ferry writes hold now. */
  dump(): Promise<MapState>;
  /** Writes one diff, phase by phase; throws on the first failure. */
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
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) break;
    const up = dirname(dir);
    if (up === dir) throw new BpfError('find the BPF object', 'no package root above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return join(dir, 'native', 'bpf', 'out', 'sock_lb.bpf.o');
}

function addonWithBpf(): Required<Pick<NativeAddon, 'bpfLoad' | 'bpfProbe' | 'bpfMapUpdate' | 'bpfMapDelete' | 'bpfMapDump'>> {
  const a = loadNative();
  if (!a) throw new BpfError('load the native addon', nativeLoadError()?.message ?? 'not built (run scripts/setup)');
  const { bpfLoad, bpfProbe, bpfMapUpdate, bpfMapDelete, bpfMapDump } = a;
  if (!bpfLoad || !bpfProbe || !bpfMapUpdate || !bpfMapDelete || !bpfMapDump) {
    throw new BpfError('load the native addon', 'this build has no BPF support (rebuild native/ with libbpf-dev installed)');
  }
  return { bpfLoad, bpfProbe, bpfMapUpdate, bpfMapDelete, bpfMapDump };
}

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
}

/** The real applier, through the addon. */
export class KernelBpfMaps implements BpfMaps {
  constructor(private readonly opts: KernelBpfOptions) {}

  private path(map: MapName): string {
    return join(this.opts.pinDir, map);
  }

  async attach(): Promise<{ attached: string[]; replaced: string[] }> {
    const addon = addonWithBpf();
    const cgroup = await resolveCgroupRoot(this.opts.cgroupRoot);
    await ensureBpffsDir(this.opts.pinDir);
    try {
      return addon.bpfLoad({ object: this.opts.object ?? defaultBpfObject(), pinDir: this.opts.pinDir, cgroup });
    } catch (e) {
      rethrow(`attach to cgroup ${cgroup}`, e);
    }
  }

  async dump(): Promise<MapState> {
    const addon = addonWithBpf();
    const state = emptyState();
    for (const m of WRITTEN_MAPS) {
      const { key, value } = MAP_SIZES[m];
      let d: { keys: Buffer; values: Buffer; count: number };
      try {
        d = addon.bpfMapDump(this.path(m), key, value);
      } catch (e) {
        rethrow(`dump ${m}`, e);
      }
      const target = state[m];
      for (let i = 0; i < d.count; i++) {
        target.set(d.keys.toString('latin1', i * key, (i + 1) * key), d.values.toString('latin1', i * value, (i + 1) * value));
      }
    }
    return state;
  }

  async apply(diff: EbpfDiff): Promise<void> {
    const addon = addonWithBpf();
    for (const phase of diff.phases) {
      for (const op of phase) {
        const { key, value } = MAP_SIZES[op.map];
        try {
          if (op.upserts.length > 0) {
            const keys = Buffer.from(op.upserts.map((e) => e[0]).join(''), 'latin1');
            const values = Buffer.from(op.upserts.map((e) => e[1]).join(''), 'latin1');
            addon.bpfMapUpdate(this.path(op.map), keys, values, key, value);
          }
          if (op.deletes.length > 0) addon.bpfMapDelete(this.path(op.map), Buffer.from(op.deletes.join(''), 'latin1'), key);
        } catch (e) {
          rethrow(`write ${op.upserts.length} and delete ${op.deletes.length} elements of ${op.map}`, e);
        }
      }
    }
  }

  async intact(): Promise<boolean> {
    try {
      await Promise.all([...PROGRAMS.map((p) => access(join(this.opts.pinDir, `link_${p}`))), ...WRITTEN_MAPS.map((m) => access(this.path(m)))]);
      return true;
    } catch {
      return false;
    }
  }

  async cleanup(): Promise<void> {
    await removePins(this.opts.pinDir);
  }
}

/**
 * Removes ferry's pin directory: unpinning the links detaches the programs, unpinning the maps
 * frees them (no process holds them). Refuses a directory that is not on bpffs.
 */
export async function removePins(pinDir: string): Promise<void> {
  const type = await fsType(pinDir);
  if (type === undefined) return;
  if (type !== BPF_FS_MAGIC) throw new BpfError('remove pins', `${pinDir} is not on a bpf file system; not touching it`);
  for (const name of await readdir(pinDir)) await rm(join(pinDir, name), { recursive: true, force: true });
  await rm(pinDir, { recursive: true, force: true });
}

/** Does this kernel accept the programs? (--proxy-mode-fallback, start-up). */
export async function probeBpf(object?: string): Promise<void> {
  const addon = addonWithBpf();
  try {
    addon.bpfProbe(object ?? defaultBpfObject());
  } catch (e) {
    rethrow('load the BPF programs (probe)', e);
  }
}

/** In-memory twin: holds the maps as the kernel would, records what was asked. */
export class FakeBpfMaps implements BpfMaps {
  readonly maps: MapState = emptyState();
  attached = false;
  applied: EbpfDiff[] = [];
  /** Fail the next apply() with this error (once). */
  failNext: Error | undefined;

  async attach(): Promise<{ attached: string[]; replaced: string[] }> {
    const replaced = this.attached ? [...PROGRAMS] : [];
    const attached = this.attached ? [] : [...PROGRAMS];
    this.attached = true;
    return { attached, replaced };
  }

  async dump(): Promise<MapState> {
    const s = emptyState();
    for (const m of WRITTEN_MAPS) for (const [k, v] of this.maps[m]) s[m].set(k, v);
    return s;
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
  }
}
