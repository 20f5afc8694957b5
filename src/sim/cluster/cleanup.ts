/**
 * Finding and removing what simulator runs created: network namespaces, host interfaces, cgroups
 * (cgroups.ts) and the bpffs pin directories of its nodes' ferries, whose names start with a run
 * prefix (or with "fy" for any run). Removal first kills whatever still
 * runs inside a namespace (`ip netns pids`) so deleting it cannot leave orphans bound to it.
 * Must never touch a name that does not start with the given prefix.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { cleanupCgroups, cleanupCgroupsSync, listBpffsLeftovers, listCgroupLeftovers } from './cgroups.js';
import { run } from '../../util/exec.js';
import { logger } from '../../util/log.js';
import { NAME_ROOT } from './addressing.js';

const log = logger('sim-cluster');

export async function listNetns(prefix: string): Promise<string[]> {
  const res = await run(['ip', 'netns', 'list']);
  const out: string[] = [];
  for (const line of res.stdout.split('\n')) {
    const name = line.split(' ')[0];
    if (name && name.startsWith(prefix)) out.push(name);
  }
  return out;
}

/** Links in the host namespace only. */
export async function listHostLinks(prefix: string): Promise<string[]> {
  const res = await run(['ip', '-o', 'link', 'show']);
  const out: string[] = [];
  for (const line of res.stdout.split('\n')) {
    // "12: fyab12h@if3: <BROADCAST,...>"
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && m[1] && m[1].startsWith(prefix)) out.push(m[1]);
  }
  return out;
}

/**
 * Host interfaces carrying ferry's tc program (ebpf mode): ferry in a simulated node attaches
 * only to that node's interfaces, so any hit here is a leak onto the host's own interfaces.
 * One `bpftool net show` of the host namespace; bpftool missing means no BPF tests ran here.
 */
export async function listHostTcLeftovers(): Promise<string[]> {
  const res = await run(['bpftool', '-j', 'net', 'show'], { allowFailure: true });
  if (res.exitCode !== 0) return [];
  const out: string[] = [];
  try {
    const parsed = JSON.parse(res.stdout) as { tc?: { devname?: string; kind?: string; name?: string }[] }[];
    for (const ns of parsed) for (const f of ns.tc ?? []) if (f.name?.startsWith('ferry_tc')) out.push(`${f.devname ?? '?'}/${f.kind ?? '?'}/${f.name}`);
  } catch {
    return [];
  }
  return out;
}

/** Every network namespace, host link, cgroup and bpffs pin directory left by any simulator run (or by the given prefix). */
export async function listLeftovers(prefixStart: string = NAME_ROOT): Promise<string[]> {
  const [ns, links, tc] = await Promise.all([listNetns(prefixStart), listHostLinks(prefixStart), listHostTcLeftovers()]);
  return [
    ...ns.map((n) => `netns/${n}`),
    ...links.map((l) => `link/${l}`),
    ...tc.map((f) => `host-tc/${f}`),
    ...listCgroupLeftovers(prefixStart).map((c) => `cgroup/${c}`),
    ...listBpffsLeftovers(prefixStart).map((b) => `bpffs/${b}`),
  ];
}

/** Removes the pin directories of a run's ferries: unpinning detaches their programs and frees their maps. */
async function cleanupBpffs(prefix: string): Promise<void> {
  for (const dir of listBpffsLeftovers(prefix)) {
    try {
      await rm(dir, { recursive: true, force: true });
    } catch (e) {
      log.warn('could not remove bpffs pins', { dir, err: e });
    }
  }
}

/** SIGKILL everything left inside a namespace; the namespace is about to disappear anyway. */
export async function killNetnsPids(netns: string): Promise<void> {
  const res = await run(['ip', 'netns', 'pids', netns], { allowFailure: true });
  for (const tok of res.stdout.split(/\s+/)) {
    const pid = Number(tok);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

export async function deleteNetns(netns: string): Promise<void> {
  await killNetnsPids(netns);
  const res = await run(['ip', 'netns', 'del', netns], { allowFailure: true });
  if (res.exitCode !== 0 && !/No such file/.test(res.stderr)) {
    log.warn('could not delete network namespace', { netns, stderr: res.stderr.trim() });
  }
}

/** Remove every netns and host link whose name starts with prefix. Idempotent. */
export async function cleanupPrefix(prefix: string): Promise<void> {
  if (!prefix.startsWith(NAME_ROOT)) throw new Error(`refusing to clean up names outside the simulator's "${NAME_ROOT}" space: ${prefix}`);
  const namespaces = await listNetns(prefix);
  // Pods first, then nodes, then the LAN: deleting a pod netns also removes its veth peer on the node.
  namespaces.sort((a, b) => b.length - a.length);
  const batch = 32;
  for (let i = 0; i < namespaces.length; i += batch) {
    await Promise.all(namespaces.slice(i, i + batch).map((n) => deleteNetns(n)));
  }
  for (const link of await listHostLinks(prefix)) {
    const res = await run(['ip', 'link', 'del', link], { allowFailure: true });
    if (res.exitCode !== 0 && !/Cannot find device/.test(res.stderr)) {
      log.warn('could not delete host link', { link, stderr: res.stderr.trim() });
    }
  }
  await cleanupBpffs(prefix);
  try {
    await cleanupCgroups(prefix);
  } catch (e) {
    log.warn('could not remove cgroups', { prefix, err: e });
  }
}

/**
 * Synchronous cleanup for a process 'exit' handler, where nothing asynchronous runs any more:
 * a run that ends without calling down() (a test that threw past its teardown, process.exit)
 * still leaves nothing behind.
 */
export function cleanupPrefixSync(prefix: string): void {
  if (!prefix.startsWith(NAME_ROOT) || prefix.length <= NAME_ROOT.length) return;
  const ip = (args: string[]): string => {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    return r.status === 0 ? r.stdout : '';
  };
  const namespaces = ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const ns of namespaces) {
    for (const tok of ip(['netns', 'pids', ns]).split(/\s+/)) {
      const pid = Number(tok);
      if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    ip(['netns', 'del', ns]);
  }
  for (const line of ip(['-o', 'link', 'show']).split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && m[1] && m[1].startsWith(prefix)) ip(['link', 'del', m[1]]);
  }
  for (const dir of listBpffsLeftovers(prefix)) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* reported by the leak check */
    }
  }
  cleanupCgroupsSync(prefix);
}
