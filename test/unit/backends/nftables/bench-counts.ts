/**
 * Kernel time of an endpoint change that brings an endpoint count into use or out of use, in
 * the endpoint-count layout (not a test; timings are never asserted). The benchmark's synthetic
 * cluster gives every Service the same count, which hides this: here Service i gets 1 + i % K
 * endpoints, so K counts are in use, as in a real cluster. Root; run in a fresh network namespace:
 *   ip netns add fybc && ip netns exec fybc node dist/test/unit/backends/nftables/bench-counts.js [services] [K]; ip netns del fybc
 * Prints the wall time of each transaction through the daemon's netlink runner (the chain's dump
 * where a count comes or goes, the encoding, the sendmsg and its answers) with its op count.
 */
import { loadNative } from '../../../../src/native/index.js';
import { buildCluster, PLAN_OPTIONS, sliceObject, type SyntheticCluster } from '../../../../src/bench/synthetic.js';
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import { addonNft } from '../../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import type { Transaction } from '../../../../src/backends/nftables/transaction.js';
import { diffTables } from '../../../../src/plan/diff.js';
import { planTables } from '../../../../src/plan/planner.js';

const n = Number(process.argv[2] ?? 10000);
const k = Number(process.argv[3] ?? 20);
const addon = loadNative();
if (!addon?.nfnlBatch) throw new Error('native addon without nf_tables netlink support');
const nft = netlinkNft(addon, { fallback: addonNft(addon) });
const c: SyntheticCluster = buildCluster(n, 10);
const state = new CompileState();
const opts = { families: [4] as const, masqueradeMark: 0x4000, state };
const replan = (): Transaction => {
  const prev = c.tables;
  const { snapshots, changes } = c.tracker.takeSnapshot();
  c.tables = planTables(snapshots, PLAN_OPTIONS, prev, changes);
  return compilePartial(prev, c.tables, { ...diffTables(prev, c.tables), full: false }, opts);
};
for (let i = 0; i < n; i++) c.tracker.upsertEndpointSlice(sliceObject(i, 1 + (i % k)));
replan();

async function send(label: string, tx: Transaction): Promise<void> {
  const t0 = performance.now();
  await nft.applyTransaction!(tx);
  const ms = performance.now() - t0;
  console.log(`${label.padEnd(52)} ${String(tx.size).padStart(7)} ops ${ms.toFixed(2).padStart(9)} ms`);
}

/** Service i's slice with `count` endpoints (generation > 0: its first endpoint replaced). */
const slice = (i: number, count: number, generation = 0): Transaction => {
  c.tracker.upsertEndpointSlice(sliceObject(i, count, generation));
  return replan();
};

await send(`full sync, ${n} Services, counts 1..${k}`, compileFull(c.tables, opts));
for (let r = 0; r < 3; r++) {
  // Service i has 1 + i % k endpoints: base has 1, base + 1 has 2, …
  const base = 1 + (r + 1) * 7 * k - 1;
  await send(`count ${k + 1} comes into use (1 -> ${k + 1})`, slice(base, k + 1));
  await send(`count ${k + 1} in use already (2 -> ${k + 1})`, slice(base + 1, k + 1));
  await send('an endpoint replaced, same count (3)', slice(base + 2, 3, r + 1));
  await send(`count ${k + 1} still in use (${k + 1} -> 1)`, slice(base, 1));
  await send(`count ${k + 1} goes out of use (${k + 1} -> 2)`, slice(base + 1, 2));
}
