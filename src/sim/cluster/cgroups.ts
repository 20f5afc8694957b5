/**
 * Per-node cgroup v2 subtrees of a simulated cluster, so that a node's ferry in ebpf mode
 * load-balances exactly the processes of that node and its pods (socket-level LB attaches to a
 * cgroup, not to a network namespace). Layout, under the host's cgroup2 mount:
 *   <prefix>/                  the run
 *   <prefix>/<node netns>/     a node's processes (probes "from the node"), its ferry's attach point
 *   <prefix>/<node netns>/<pod netns>/   a pod's processes (echo server, probes "from the pod")
 * Names are the namespaces' names, so every cgroup a run creates starts with its prefix.
 * Removal kills what is left inside (cgroup.kill) and removes the directories bottom-up; it
 * never touches a cgroup whose name does not start with the given prefix.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NAME_ROOT } from './addressing.js';

/** The host's cgroup2 mount point, or undefined when there is none (then nothing is placed). */
export function cgroup2Root(): string | undefined {
  let mounts: string;
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of mounts.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2' && mnt) return mnt;
  }
  return undefined;
}

/** The cgroup of a namespace of this run (node or pod), or undefined for the LAN and the client. */
export function cgroupOfNetns(root: string, prefix: string, netns: string): string | undefined {
  const m = new RegExp(`^${prefix}-n(\\d+)(p\\d+)?$`).exec(netns);
  if (!m) return undefined;
  const node = `${prefix}-n${m[1]}`;
  return m[2] ? join(root, prefix, node, netns) : join(root, prefix, node);
}

/** argv that first moves itself into `cgroup`, then execs `argv` (nothing runs outside it). */
export function inCgroup(cgroup: string | undefined, argv: readonly string[]): string[] {
  if (!cgroup) return [...argv];
  return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...argv];
}

export async function makeCgroup(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
}

async function killAndRemove(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return;
  }
  for (const e of entries) await killAndRemove(join(dir, e));
  await writeFile(join(dir, 'cgroup.kill'), '1').catch(() => undefined);
  for (let i = 0; i < 50; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  await rmdir(dir);
}

/** Removes one cgroup subtree of the simulator (its name must start with "fy"). */
export async function removeCgroup(dir: string): Promise<void> {
  const base = dir.split('/').pop() ?? '';
  if (!base.startsWith(NAME_ROOT)) throw new Error(`refusing to remove cgroup ${dir}: not the simulator's`);
  await killAndRemove(dir);
}

/** Top-level cgroups whose names start with prefix (leak check). */
export function listCgroupLeftovers(prefix: string = NAME_ROOT): string[] {
  const root = cgroup2Root();
  if (!root || !existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && d.name.startsWith(prefix))
    .map((d) => join(root, d.name));
}

/** Removes every cgroup subtree of runs with this prefix. */
export async function cleanupCgroups(prefix: string): Promise<void> {
  if (!prefix.startsWith(NAME_ROOT)) return;
  for (const dir of listCgroupLeftovers(prefix)) await removeCgroup(dir);
}

/** Synchronous variant for a process 'exit' handler. */
export function cleanupCgroupsSync(prefix: string): void {
  if (!prefix.startsWith(NAME_ROOT) || prefix.length <= NAME_ROOT.length) return;
  const walk = (dir: string): void => {
    let entries: string[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(dir, e));
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      /* older kernel or already gone */
    }
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        spawnSync('sleep', ['0.02']);
      }
    }
  };
  for (const dir of listCgroupLeftovers(prefix)) walk(dir);
}

/** bpffs directories a run's ferries pin under: /sys/fs/bpf/<node netns>. */
export const BPFFS_ROOT = '/sys/fs/bpf';

export function bpffsDirOfNetns(netns: string): string {
  return join(BPFFS_ROOT, netns);
}

/** Pin directories left by runs with this prefix (leak check). */
export function listBpffsLeftovers(prefix: string = NAME_ROOT): string[] {
  try {
    return readdirSync(BPFFS_ROOT)
      .filter((n) => n.startsWith(prefix))
      .map((n) => join(BPFFS_ROOT, n));
  } catch {
    return [];
  }
}
