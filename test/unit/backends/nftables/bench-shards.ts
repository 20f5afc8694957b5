/**
 * What sharding ferry's per-Service objects over K tables would buy (not a test; timings are never
 * asserted). Root; acts on the network namespace it runs in, so run it in a fresh one:
 *   ip netns add fysh && ip netns exec fysh node dist/test/unit/backends/nftables/bench-shards.js [services] [endpoints] [rounds] [K1,K2,...]; ip netns del fysh
 * For each K: K complete ferry tables (`ferry-s00`…), each compiled from the Services whose key
 * hashes to it, applied cold over netlink; after a pause (SETTLE seconds, default 15: the kernel
 * frees a big commit's objects afterwards, and a small commit measured at once pays for that
 * too), one-endpoint changes (added/removed: the dispatch rule changes; replaced: elements only)
 * and added Services, each in its shard. Each partial batch is sent by a small child process
 * (bench-apply-child.ts), so no garbage collection of this process lands in the timing; it
 * reports wall time and the CPU time of all its threads (the kernel's commit runs in the sending
 * thread). KEEP=1 leaves the last ruleset in place for further probing (perf, strace -T).
 * docs/nftables.md ("Where a partial sync's kernel time goes") has the figures and what they mean.
 */
import { fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../../../../src/native/index.js';
import { addonNft } from '../../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import { hash8 } from '../../../../src/backends/nftables/names.js';
import { encodeTransaction } from '../../../../src/backends/nftables/netlink.js';
import type { Transaction } from '../../../../src/backends/nftables/transaction.js';
import type { ProxyTables, ServiceEntry } from '../../../../src/plan/types.js';
import { run } from '../../../../src/util/exec.js';
import { bigTable, changesOf, ep, fwd, svc, tables } from './fixtures.js';

const n = Number(process.argv[2] ?? 44000);
const k = Number(process.argv[3] ?? 10);
const rounds = Number(process.argv[4] ?? 10);
const ks = (process.argv[5] ?? '1,16,32,64').split(',').map(Number);
const addon = loadNative();
if (!addon) throw new Error('native addon not loaded');
const nft = netlinkNft(addon, { fallback: addonNft(addon) });
const opts = { families: [4] as const, masqueradeMark: 0x4000 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
const child = fork(join(dirname(fileURLToPath(import.meta.url)), 'bench-apply-child.js'), { serialization: 'advanced' });
let nextId = 1;
const waiting = new Map<number, (r: { ok: boolean; err: string; wall: number; cpu: number }) => void>();
child.on('message', (m: { id: number; ok: boolean; err: string; wall: number; cpu: number }) => waiting.get(m.id)?.(m));
console.log(`apply child pid ${child.pid} (for perf record -p / strace -T -p)`);
await new Promise<void>((res) => child.once('message', () => res()));
/** [wall ms, CPU ms] of applying tx in the small child process. */
async function timed(tx: Transaction): Promise<[number, number]> {
  const bytes = encodeTransaction(tx).bytes;
  const id = nextId++;
  const r = await new Promise<{ ok: boolean; err: string; wall: number; cpu: number }>((res) => {
    waiting.set(id, res);
    child.send({ id, bytes: Buffer.from(bytes) });
  });
  waiting.delete(id);
  if (!r.ok) throw new Error(`batch refused: ${r.err}`);
  return [r.wall, r.cpu];
}
/** A Service's shard: a stable hash of its key. */
const shardOf = (key: string, K: number): number => parseInt(hash8(key), 16) % K;

const big = bigTable(4, n, k);
for (const K of ks) {
  await run(['nft', 'flush', 'ruleset']);
  const parts: Map<string, ServiceEntry>[] = Array.from({ length: K }, () => new Map());
  for (const [key, s] of big.services) parts[shardOf(key, K)]!.set(key, s);
  const states = parts.map(() => new CompileState());
  const prevs: ProxyTables[] = parts.map((p) => tables({ ...big, services: p }));
  const name = (i: number): string => `ferry-s${String(i).padStart(2, '0')}`;
  let t0 = performance.now();
  for (let i = 0; i < K; i++) await nft.applyTransaction!(compileFull(prevs[i]!, { ...opts, table: name(i), state: states[i] }));
  const cold = performance.now() - t0;
  // The kernel frees a big commit's objects afterwards (RCU, a work queue): measured at once, a
  // small commit pays for that too. Let it settle first.
  await new Promise((r) => setTimeout(r, Number(process.env.SETTLE ?? 15) * 1000));
  const svcs = [...big.services.values()];
  const addrm: [number, number][] = [];
  const repl: [number, number][] = [];
  for (let r = 0; r < rounds; r++) {
    for (const kind of ['addrm', 'repl'] as const) {
      const key = svcs[(r * 7919 + (kind === 'repl' ? 13 : 0)) % svcs.length]!.key;
      const i = shardOf(key, K);
      const prev = prevs[i]!;
      const victim = prev[4].services.get(key)!;
      let eps;
      if (kind === 'addrm') eps = r % 2 ? [...victim.internal.endpoints, ep(`198.17.${r % 250}.${(r % 200) + 1}`, 8080)] : victim.internal.endpoints.slice(1);
      else {
        eps = [...victim.internal.endpoints];
        eps[0] = ep(`198.14.${r % 250}.${(r % 200) + 1}`, 8080);
      }
      const services = new Map(prev[4].services);
      services.set(key, { ...victim, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) });
      const next = tables({ ...prev[4], services });
      const tx = compilePartial(prev, next, changesOf([key]), { ...opts, table: name(i), state: states[i] });
      (kind === 'addrm' ? addrm : repl).push(await timed(tx));
      prevs[i] = next;
    }
  }
  const adds: [number, number][] = [];
  for (let r = 0; r < Math.max(3, rounds / 2); r++) {
    const added = svc({ namespace: 'bench', name: `added${r}`, clusterIP: `198.16.0.${r + 1}`, nodePort: 0, internal: fwd(...Array.from({ length: k }, (_, j) => ep(`198.16.${r + 1}.${j + 1}`, 8080))) });
    const i = shardOf(added.key, K);
    const prev = prevs[i]!;
    const services = new Map(prev[4].services);
    services.set(added.key, added);
    const next = tables({ ...prev[4], services });
    const tx = compilePartial(prev, next, changesOf([added.key]), { ...opts, table: name(i), state: states[i] });
    adds.push(await timed(tx));
    prevs[i] = next;
  }
  const f = (xs: [number, number][]): string => {
    const w = xs.map((x) => x[0]);
    const c = xs.map((x) => x[1]);
    return `wall ${median(w).toFixed(2)} (${Math.min(...w).toFixed(2)}–${Math.max(...w).toFixed(2)}) cpu ${median(c).toFixed(2)} (${Math.min(...c).toFixed(2)}–${Math.max(...c).toFixed(2)})`;
  };
  console.log(`K=${K} ${n}x${k}: cold ${(cold / 1000).toFixed(1)} s; ep added/removed ${f(addrm)} ms; ep replaced ${f(repl)} ms; add service ${f(adds)} ms`);
}
if (!process.env.KEEP) await run(['nft', 'flush', 'ruleset']);
child.kill();
