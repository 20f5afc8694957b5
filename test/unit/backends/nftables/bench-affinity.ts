/**
 * Kernel cost of adding ClientIP affinity ports to a table that already holds many (not a test;
 * timings are never asserted). The shape of the isolation test's hostile Services: one endpoint
 * per service port, ClusterIP only, affinity 10800 s. Root; acts on the network namespace it
 * runs in, so run it in a fresh one:
 *   ip netns add fyba && ip netns exec fyba node dist/test/unit/backends/nftables/bench-affinity.js [sizes] [piece] [rounds]; ip netns del fyba
 * `sizes`: comma list of affinity ports already in the table (default 1000,5000,10000); `piece`:
 * ports added per partial sync (default 500); `rounds`: pieces per size (default 3). For each
 * size: a full sync of that many ports over netlink, then `rounds` times: the piece added
 * (timed: encode + sendmsg, the kernel's commit being nearly all of it), then removed again
 * (timed too), so every round starts from the same table. Prints one line per size with
 * every round's figures, and the system CPU time the process spent during the add: the
 * kernel's share (the batch's sendmsg runs the whole commit in the sending thread).
 */
import { loadNative } from '../../../../src/native/index.js';
import { addonNft } from '../../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import { encodeTransaction } from '../../../../src/backends/nftables/netlink.js';
import type { ProxyTables, ServiceEntry } from '../../../../src/plan/types.js';
import { run } from '../../../../src/util/exec.js';
import { changesOf, ep, fwd, svc, table, tables } from './fixtures.js';

const sizes = (process.argv[2] ?? '1000,5000,10000').split(',').map(Number);
const piece = Number(process.argv[3] ?? 500);
const rounds = Number(process.argv[4] ?? 3);
const addon = loadNative();
if (!addon?.nfnlBatch) throw new Error('native addon with netlink support not loaded');
const nft = netlinkNft(addon, { fallback: addonNft(addon) });
const opts = { families: [4] as const, masqueradeMark: 0x4000 };

/** Affinity port number i: its own ClusterIP and endpoint (up to 65,536 ports). */
function port(i: number): ServiceEntry {
  const hi = (i >> 8) & 255;
  const lo = i & 255;
  return svc({
    namespace: 'hostile',
    name: `h${Math.floor(i / 5000)}`,
    portName: `p${i}`,
    clusterIP: `198.19.${hi}.${lo}`,
    port: 80,
    affinityTimeoutSeconds: 10800,
    internal: fwd(ep(`198.18.${hi}.${lo}`, 8080)),
  });
}

function tableOf(from: number, to: number): ProxyTables {
  const list: ServiceEntry[] = [];
  for (let i = from; i < to; i++) list.push(port(i));
  return tables(table(4, list));
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

for (const size of sizes) {
  await run(['nft', 'flush', 'ruleset']);
  const state = new CompileState();
  const base = tableOf(0, size);
  await nft.applyTransaction!(compileFull(base, { ...opts, state }));
  const grown = tableOf(0, size + piece);
  const added: string[] = [];
  for (let i = size; i < size + piece; i++) added.push(port(i).key);
  const add: number[] = [];
  const kernel: number[] = [];
  const remove: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const up = compilePartial(base, grown, changesOf(added), { ...opts, state });
    await timed(async () => void encodeTransaction(up)); // warm: the apply below encodes again
    const cpu0 = process.cpuUsage();
    const ms = await timed(() => nft.applyTransaction!(up));
    add.push(ms);
    kernel.push(process.cpuUsage(cpu0).system / 1000);
    const down = compilePartial(grown, base, changesOf(added), { ...opts, state });
    remove.push(await timed(() => nft.applyTransaction!(down)));
  }
  const sets = (await run(['nft', 'list', 'sets'])).stdout.split('\n').filter((l) => /^\s*set /.test(l)).length;
  const f = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(' / ');
  const chains = (await run(['nft', 'list', 'chains'])).stdout.split('\n').filter((l) => /^\s*chain /.test(l)).length;
  console.log(`${size} affinity ports (${chains} chains, ${sets} named sets): +${piece} ports ${f(add)} ms (system CPU, ≈ kernel: ${f(kernel)} ms); -${piece} ports ${f(remove)} ms`);
}
