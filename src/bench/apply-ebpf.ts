/**
 * The apply phase for ebpf mode: the same IR sequence the other modes replay (full, one-endpoint
 * changes, one Service added), synced by the real ebpf backend into BPF maps of its own. BPF maps
 * are not per network namespace, so instead of a fresh namespace each run gets a cgroup and a pin
 * directory of its own (prefix "fyap"; the programs attach to that empty cgroup only, never the
 * host's root) and removes both at the end, also after a failure.
 *
 * The programs are loaded and attached by a first sync of empty tables, outside the timings: what
 * is timed is what a sync costs once ferry runs — compile (the IR → map element diff) and the
 * batched map writes. "full cold" fills empty maps; "full re-apply" is a full sync over maps
 * that already hold everything (a dump, a compile and an empty diff).
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createEbpfBackend } from '../backends/ebpf/backend.js';
import { KernelBpfMaps, removePins, resolveCgroupRoot } from '../backends/kernel/bpf.js';
import type { ProxyTables, SyncChanges } from '../plan/types.js';
import { collectGarbage } from '../util/gc.js';
import { median, round } from './stats.js';
import type { Step } from './synthetic.js';
import type { ApplyRow, Size } from './types.js';

/** What the compile phase keeps for this phase: the tables and the steps after them. */
export interface EbpfApplyInput extends Size {
  readonly full: ProxyTables;
  readonly endpoint: readonly Step[];
  readonly add: Step;
}

function fullChanges(t: ProxyTables): SyncChanges {
  return { full: true, changed: new Set([...t[4].services.keys(), ...t[6].services.keys()]), tableChanged: true };
}

function emptyTables(t: ProxyTables): ProxyTables {
  return { 4: { ...t[4], services: new Map() }, 6: { ...t[6], services: new Map() } };
}

async function timed(fn: () => Promise<void>, settle = false): Promise<number> {
  // The bench process holds the compile phase's scripts and garbage: collected before a full
  // sync, so that it is not charged for collecting what came before it.
  if (settle) collectGarbage();
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export async function runEbpfApply(s: EbpfApplyInput, fullRounds: number): Promise<ApplyRow> {
  const tag = `fyap${Math.random().toString(36).slice(2, 6)}`;
  const cgroup = join(await resolveCgroupRoot(undefined), tag);
  const pinDir = `/sys/fs/bpf/${tag}`;
  mkdirSync(cgroup);
  try {
    const backend = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
    const empty = emptyTables(s.full);
    await backend.sync(null, empty, fullChanges(empty));
    const fullColdMs = await timed(() => backend.sync(null, s.full, fullChanges(s.full)), true);
    const again: number[] = [];
    for (let r = 0; r < fullRounds; r++) again.push(await timed(() => backend.sync(null, s.full, fullChanges(s.full)), true));
    const ep: number[] = [];
    for (const st of s.endpoint) ep.push(await timed(() => backend.sync(st.prev, st.next, st.changes)));
    const addMs = await timed(() => backend.sync(s.add.prev, s.add.next, s.add.changes));
    return {
      services: s.services,
      endpoints: s.endpoints,
      mode: 'ebpf',
      fullColdMs: round(fullColdMs),
      fullMs: round(median(again)),
      partialEndpointMs: round(median(ep)),
      partialAddMs: round(addMs),
    };
  } finally {
    await removePins(pinDir);
    rmdirSync(cgroup);
  }
}
