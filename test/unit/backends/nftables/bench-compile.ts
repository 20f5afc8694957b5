/**
 * Quick compile-time measurement (not a test; timings are never asserted):
 *   node dist/test/unit/backends/nftables/bench-compile.js [services] [endpointsPerService]
 * Prints full-compile and render time, script size, and one-endpoint partial-compile time.
 */
import { CompileState, compileFull, compilePartial } from '../../../../src/backends/nftables/compiler.js';
import { bigTable, changesOf, fwd, tables } from './fixtures.js';

const n = Number(process.argv[2] ?? 10000);
const k = Number(process.argv[3] ?? 10);
const ir = tables(bigTable(4, n, k));
const opts = { families: [4] as const, masqueradeMark: 0x4000 };

for (let round = 0; round < 3; round++) {
  let t0 = performance.now();
  const state = new CompileState();
  const tx = compileFull(ir, { ...opts, state });
  const tCompile = performance.now() - t0;
  t0 = performance.now();
  const script = tx.render();
  const tRender = performance.now() - t0;

  const victim = [...ir[4].services.values()][Math.floor(n / 2)]!;
  const eps = victim.internal.endpoints.slice(1);
  const services = new Map(ir[4].services);
  services.set(victim.key, { ...victim, internal: fwd(...eps), external: fwd(...eps), cluster: fwd(...eps) });
  const next = tables({ ...ir[4], services });
  t0 = performance.now();
  const partial = compilePartial(ir, next, changesOf([victim.key]), { ...opts, state }).render();
  const tPartial = performance.now() - t0;
  console.log(
    `${n} services x ${k} endpoints: full compile ${tCompile.toFixed(0)} ms + render ${tRender.toFixed(0)} ms, ` +
      `${tx.size} ops, ${(script.length / 1e6).toFixed(1)} MB, ${script.split('\n').length - 1} lines; ` +
      `one-endpoint partial ${tPartial.toFixed(2)} ms, ${partial.trim().split('\n').length} lines`,
  );
}
