/**
 * Kernel apply time, netlink batch vs libnftables, same IR, same process (not a test; timings are
 * never asserted). Root; acts on the network namespace it runs in, so run it in a fresh one:
 *   ip netns add fybn && ip netns exec fybn node dist/test/unit/backends/nftables/bench-netlink.js [services] [endpoints] [rounds] [paths]; ip netns del fybn
 * `paths`: `netlink,libnftables` (default) or one of them.
 * For each path: full cold apply (empty ruleset), full re-apply, one-endpoint partial syncs
 * (median of `rounds`: an endpoint added or removed, which rewrites the service's dispatch rule,
 * and an endpoint replaced, which changes elements only), one added service; plus the encode
 * time of the netlink batch.
 */
import { loadNative } from '../../../../src/native/index.js';
import { addonNft, type NftRunner } from '../../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import { encodeTransaction } from '../../../../src/backends/nftables/netlink.js';
import type { Transaction } from '../../../../src/backends/nftables/transaction.js';
import type { ProxyTables } from '../../../../src/plan/types.js';
import { run } from '../../../../src/util/exec.js';
import { bigTable, changesOf, ep, fwd, svc, tables } from './fixtures.js';

const n = Number(process.argv[2] ?? 10000);
const k = Number(process.argv[3] ?? 10);
const rounds = Number(process.argv[4] ?? 20);
const paths = (process.argv[5] ?? 'netlink,libnftables').split(',');
const addon = loadNative();
if (!addon) throw new Error('native addon not loaded');
const opts = { families: [4] as const, masqueradeMark: 0x4000 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function measure(name: string, nft: NftRunner, typed: boolean): Promise<void> {
  await run(['nft', 'flush', 'ruleset']);
  const apply = (tx: Transaction): Promise<void> => (typed ? nft.applyTransaction!(tx) : nft.apply(tx.render()));
  const state = new CompileState();
  const ir = tables(bigTable(4, n, k));
  const full = compileFull(ir, { ...opts, state });
  const cold = await timed(() => apply(full));
  const again = await timed(() => apply(compileFull(ir, { ...opts, state })));
  let prev: ProxyTables = ir;
  const svcs = [...ir[4].services.values()];
  const partial: number[] = [];
  const addedEp: number[] = [];
  const removedEp: number[] = [];
  // Services without a NodePort (two in three here): only their ClusterIP is programmed.
  const cip = { added: [] as number[], removed: [] as number[], replaced: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    const victim = prev[4].services.get(svcs[(r * 7919) % svcs.length]!.key)!;
    const eps = r % 2 ? [...victim.internal.endpoints, ep(`198.17.${r % 250}.${(r % 200) + 1}`, 8080)] : victim.internal.endpoints.slice(1);
    const services = new Map(prev[4].services);
    services.set(victim.key, { ...victim, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) });
    const next = tables({ ...prev[4], services });
    const tx = compilePartial(prev, next, changesOf([victim.key]), { ...opts, state });
    const ms = await timed(() => apply(tx));
    partial.push(ms);
    (r % 2 ? addedEp : removedEp).push(ms);
    if (victim.nodePort === 0) (r % 2 ? cip.added : cip.removed).push(ms);
    prev = next;
  }
  // The commonest change: one endpoint replaced (a pod restarted elsewhere), count unchanged.
  const replaced: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const victim = prev[4].services.get(svcs[(r * 104729 + 13) % svcs.length]!.key)!;
    const eps = [...victim.internal.endpoints];
    eps[0] = ep(`198.14.${r % 250}.${(r % 200) + 1}`, 8080);
    const services = new Map(prev[4].services);
    services.set(victim.key, { ...victim, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) });
    const next = tables({ ...prev[4], services });
    const tx = compilePartial(prev, next, changesOf([victim.key]), { ...opts, state });
    const ms = await timed(() => apply(tx));
    replaced.push(ms);
    if (victim.nodePort === 0) cip.replaced.push(ms);
    prev = next;
  }
  const added = svc({ namespace: 'bench', name: 'added', clusterIP: '198.16.0.1', nodePort: 0, internal: fwd(...Array.from({ length: k }, (_, j) => ep(`198.16.1.${j + 1}`, 8080))) });
  const services = new Map(prev[4].services);
  services.set(added.key, added);
  const next = tables({ ...prev[4], services });
  const addTx = compilePartial(prev, next, changesOf([added.key]), { ...opts, state });
  const add = await timed(() => apply(addTx));
  console.log(
    `${name.padEnd(11)} ${n}x${k}: full cold ${cold.toFixed(0)} ms, full again ${again.toFixed(0)} ms, ` +
      `one endpoint added/removed: median ${median(partial).toFixed(2)} ms (max ${Math.max(...partial).toFixed(2)}; ` +
      `added ${median(addedEp).toFixed(2)}, removed ${median(removedEp).toFixed(2)}), ` +
      `one endpoint replaced: median ${median(replaced).toFixed(2)} ms (max ${Math.max(...replaced).toFixed(2)}), add service ${add.toFixed(2)} ms; ` +
      `ClusterIP-only services: added ${median(cip.added).toFixed(2)} (${cip.added.length}), removed ${median(cip.removed).toFixed(2)} (${cip.removed.length}), replaced ${median(cip.replaced).toFixed(2)} ms (${cip.replaced.length})`,
  );
}

const full = compileFull(tables(bigTable(4, n, k)), opts);
let t0 = performance.now();
const enc = encodeTransaction(full);
console.log(`encode ${n}x${k}: ${(performance.now() - t0).toFixed(0)} ms, ${full.size} ops, ${(enc.bytes.length / 1e6).toFixed(1)} MB, ${enc.messages} messages`);
t0 = performance.now();
const text = full.render();
console.log(`render ${n}x${k}: ${(performance.now() - t0).toFixed(0)} ms, ${(text.length / 1e6).toFixed(1)} MB`);

if (paths.includes('netlink')) await measure('netlink', netlinkNft(addon, { fallback: addonNft(addon) }), true);
if (paths.includes('libnftables')) await measure('libnftables', addonNft(addon), false);
await run(['nft', 'flush', 'ruleset']);
