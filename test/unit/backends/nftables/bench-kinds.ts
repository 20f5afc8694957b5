/**
 * Kernel time per kind of one-service change (not a test; timings are never asserted). On a
 * loaded machine the wall time of an apply is mostly waiting (thread pool, GC, other processes),
 * so the kernel's share is read from `strace -T` of the batches' sendmsg. Root; run in a fresh
 * network namespace:
 *   ip netns add fybk && ip netns exec fybk strace -f -T -e trace=sendmsg,write -e signal=none \
 *     -o /tmp/kinds.strace node dist/test/unit/backends/nftables/bench-kinds.js [services] [endpoints]
 *   ip netns del fybk; node dist/test/unit/backends/nftables/bench-kinds.js summarize /tmp/kinds.strace
 * Changes go to services without a NodePort (only their ClusterIP is programmed): one endpoint
 * removed, added, replaced, and a service of `endpoints` endpoints added, 8 of each after one
 * warm-up removal and addition (in the endpoint-count layout these bring counts N-1 and N+1 into
 * use, which rewrites the count rules once). Each batch is announced by a `MARK kind` line on
 * stdout, which the summary pairs with the next sendmsg.
 */
import { readFileSync } from 'node:fs';
import { loadNative } from '../../../../src/native/index.js';
import { addonNft } from '../../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import type { PlannedEndpoint, ProxyTables, ServiceEntry, ServicePortKey } from '../../../../src/plan/types.js';
import { bigTable, changesOf, ep, fwd, svc, tables } from './fixtures.js';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
}

if (process.argv[2] === 'summarize') {
  const byKind = new Map<string, number[]>();
  let kind: string | undefined;
  for (const line of readFileSync(process.argv[3]!, 'utf8').split('\n')) {
    const m = /write\(1, "MARK (\S+)\\n"/.exec(line);
    if (m) {
      kind = m[1];
      continue;
    }
    const s = /sendmsg\(.*<([0-9.]+)>$/.exec(line);
    if (s && kind) {
      let l = byKind.get(kind);
      if (!l) byKind.set(kind, (l = []));
      l.push(Number(s[1]) * 1000);
      kind = undefined;
    }
  }
  for (const [k, v] of byKind) console.log(`${k}: n=${v.length} median ${median(v).toFixed(2)} ms, range ${Math.min(...v).toFixed(2)}-${Math.max(...v).toFixed(2)}`);
} else {
  const n = Number(process.argv[2] ?? 44000);
  const k = Number(process.argv[3] ?? 10);
  const addon = loadNative();
  if (!addon) throw new Error('native addon not loaded');
  const nft = netlinkNft(addon, { fallback: addonNft(addon) });
  const opts = { families: [4] as const, masqueradeMark: 0x4000 };
  const state = new CompileState();
  let prev: ProxyTables = tables(bigTable(4, n, k));
  await nft.applyTransaction!(compileFull(prev, { ...opts, state }));
  await new Promise((r) => setTimeout(r, 3000));
  const svcs = [...prev[4].services.values()].filter((s) => s.nodePort === 0);
  const apply = async (kind: string, next: ProxyTables, key: ServicePortKey): Promise<void> => {
    const tx = compilePartial(prev, next, changesOf([key]), { ...opts, state });
    process.stdout.write(`MARK ${kind}\n`);
    await nft.applyTransaction!(tx);
    prev = next;
  };
  const change = (kind: string, s: ServiceEntry, eps: (v: ServiceEntry) => PlannedEndpoint[]): Promise<void> => {
    const v = prev[4].services.get(s.key)!;
    const e = eps(v);
    const services = new Map(prev[4].services);
    services.set(s.key, { ...v, internal: fwd(...e), external: fwd(...e), cluster: fwd(...e) });
    return apply(kind, tables({ ...prev[4], services }), s.key);
  };
  await change('warm-remove', svcs[0]!, (v) => v.internal.endpoints.slice(1));
  await change('warm-add', svcs[1]!, (v) => [...v.internal.endpoints, ep('198.17.0.1', 8080)]);
  for (let r = 2; r < 10; r++) {
    await change('removed', svcs[(r * 7919) % svcs.length]!, (v) => v.internal.endpoints.slice(1));
    await change('added', svcs[(r * 104729 + 13) % svcs.length]!, (v) => [...v.internal.endpoints, ep(`198.17.${r}.1`, 8080)]);
    await change('replaced', svcs[(r * 3571 + 7) % svcs.length]!, (v) => {
      const e = [...v.internal.endpoints];
      e[0] = ep(`198.14.${r}.1`, 8080);
      return e;
    });
    const added = svc({ namespace: 'bench', name: `added${r}`, clusterIP: `198.16.0.${r}`, nodePort: 0, internal: fwd(...Array.from({ length: k }, (_, j) => ep(`198.16.${r}.${j + 1}`, 8080))) });
    const services = new Map(prev[4].services);
    services.set(added.key, added);
    await apply('add-service', tables({ ...prev[4], services }), added.key);
  }
}
