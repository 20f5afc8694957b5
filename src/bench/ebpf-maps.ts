/**
 * Micro-benchmark of the ebpf mode's map writes: N elements of ferry_svc written in one batched
 * call through the addon, overwritten, then deleted, for several rounds, on a cgroup and a pin
 * directory of its own (prefix "fybm", removed at the end, also after a failure). Prints medians
 * and ranges as JSON; timings are never asserted anywhere.
 *   node dist/src/bench/ebpf-maps.js [N=10000] [rounds=9]
 */
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { KernelBpfMaps, removePins, resolveCgroupRoot } from '../backends/kernel/bpf.js';
import { addrBytes, MAP_SIZES, svcKey, svcValue } from '../backends/ebpf/layout.js';
import { loadNative } from '../native/index.js';

function summary(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 100) / 100;
  return { median: r(s[s.length >> 1] ?? NaN), min: r(s[0] ?? NaN), max: r(s[s.length - 1] ?? NaN) };
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 10000);
  const rounds = Number(process.argv[3] ?? 9);
  const tag = `fybm${Math.random().toString(36).slice(2, 6)}`;
  const cgroup = join(await resolveCgroupRoot(undefined), tag);
  const pinDir = `/sys/fs/bpf/${tag}`;
  mkdirSync(cgroup);
  try {
    await new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }).attach();
    const addon = loadNative();
    if (!addon?.bpfMapUpdate || !addon.bpfMapDelete) throw new Error('the addon has no BPF support');
    const path = join(pinDir, 'ferry_svc');
    const { key, value } = MAP_SIZES.ferry_svc;
    const t = { encodeMs: [] as number[], insertMs: [] as number[], overwriteMs: [] as number[], deleteMs: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      const ks: string[] = [];
      const vs: string[] = [];
      for (let i = 0; i < n; i++) {
        ks.push(svcKey(addrBytes(`10.${r & 255}.${(i >> 8) & 255}.${i & 255}`, 4), 80 + (i >> 16), 'TCP', 4));
        vs.push(svcValue(i + 1, 1, 0, 'forward'));
      }
      const keys = Buffer.from(ks.join(''), 'latin1');
      const values = Buffer.from(vs.join(''), 'latin1');
      const t1 = performance.now();
      addon.bpfMapUpdate(path, keys, values, key, value);
      const t2 = performance.now();
      addon.bpfMapUpdate(path, keys, values, key, value);
      const t3 = performance.now();
      addon.bpfMapDelete(path, keys, key);
      const t4 = performance.now();
      t.encodeMs.push(t1 - t0);
      t.insertMs.push(t2 - t1);
      t.overwriteMs.push(t3 - t2);
      t.deleteMs.push(t4 - t3);
    }
    const out = { elements: n, rounds, ...Object.fromEntries(Object.entries(t).map(([k, v]) => [k, summary(v)])) };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await removePins(pinDir);
    rmdirSync(cgroup);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`ebpf-maps bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
