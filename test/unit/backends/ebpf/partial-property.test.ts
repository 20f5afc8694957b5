/**
 * Property: any sequence of partial syncs leaves the maps equal (up to set id numbering) to one
 * full build of the final IR — including frontends two Services fight over, Services that come
 * and go, endpoint sets that grow, shrink and empty, and node address changes.
 */
import t from 'tap';
import { contentsOf, EbpfCompiler, emptyContents, emptyState, type EbpfDiff, type MapState } from '../../../../src/backends/ebpf/compiler.js';
import { decodeSetName, describeSvcKey } from '../../../../src/backends/ebpf/layout.js';
import type { ServiceEntry } from '../../../../src/plan/types.js';
import { changesOf, ep, fwd, REJECT, svc, table, tables } from '../ir-builders.js';

function apply(state: MapState, diff: EbpfDiff): void {
  for (const phase of diff.phases) for (const op of phase) {
    for (const [k, v] of op.upserts) state[op.map].set(k, v);
    for (const k of op.deletes) state[op.map].delete(k);
  }
}

/** The maps with set ids replaced by set names: comparable across id numberings. */
function normalize(state: MapState): string[] {
  const names = new Map<number, string>();
  for (const [k, v] of state.ferry_setname) names.set(Buffer.from(k, 'latin1').readUInt32LE(0), decodeSetName(v));
  const out: string[] = [];
  for (const [k, v] of state.ferry_svc) {
    const b = Buffer.from(v, 'latin1');
    out.push(`svc ${describeSvcKey(k)} ${names.get(b.readUInt32LE(0))} ${b.subarray(4).toString('hex')}`);
  }
  for (const [k, v] of state.ferry_backend) {
    const b = Buffer.from(k, 'latin1');
    out.push(`backend ${names.get(b.readUInt32LE(0))} ${b.readUInt32LE(4)} ${Buffer.from(v, 'latin1').toString('hex')}`);
  }
  for (const [k, v] of state.ferry_member) {
    const b = Buffer.from(k, 'latin1');
    out.push(`member ${names.get(b.readUInt32LE(0))} ${b.subarray(4).toString('hex')} ${Buffer.from(v, 'latin1').toString('hex')}`);
  }
  for (const k of state.ferry_nodeaddr.keys()) out.push(`nodeaddr ${Buffer.from(k, 'latin1').toString('hex')}`);
  for (const k of state.ferry_svcip.keys()) out.push(`svcip ${Buffer.from(k, 'latin1').toString('hex')}`);
  for (const [k, v] of state.ferry_srcrange) {
    const b = Buffer.from(k, 'latin1');
    const id = b.readUInt32BE(4);
    out.push(`srcrange ${id >= 0xf0000000 ? id.toString(16) : names.get(id)} ${b.readUInt32LE(0)} ${b.subarray(8).toString('hex')} ${Buffer.from(v, 'latin1').toString('hex')}`);
  }
  if (new Set(names.values()).size !== names.size) throw new Error('two set ids carry the same set name');
  return out.sort();
}

let seed = 12345;
function rnd(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}

/**
 * Service port `i` of Service s(i mod 8) — a Service has up to two ports (http, metrics), which
 * share its ClusterIP — whose ClusterIP may change (a Service deleted and created again).
 */
function randomService(i: number): ServiceEntry {
  const eps = Array.from({ length: rnd(4) }, (_, k) => ep(`10.0.${rnd(3)}.${k + 2}`, 8080 + rnd(2)));
  const uniq = [...new Map(eps.map((e) => [`${e.ip}:${e.port}`, e])).values()];
  const set = uniq.length ? fwd(...uniq) : REJECT;
  return svc({
    namespace: 'default',
    name: `s${i % 8}`,
    portName: i < 8 ? 'http' : 'metrics',
    port: i < 8 ? 80 : 9090,
    clusterIP: `198.19.${rnd(4) === 0 ? 1 : 0}.${10 + (i % 8)}`,
    nodePort: rnd(3) === 0 ? 30000 + i : 0,
    // A small pool of externalIPs so that Services collide on frontends.
    externalIPs: rnd(3) === 0 ? [`203.0.113.${rnd(3)}`] : [],
    affinityTimeoutSeconds: rnd(4) === 0 ? 60 : 0,
    internal: set,
    external: set,
    cluster: set,
  });
}

t.test('random partial sync sequences equal a full build', async (t) => {
  for (let run = 0; run < 30; run++) {
    const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
    const state = emptyState();
    let current = new Map<string, ServiceEntry>();
    let nodeIPs = ['192.0.2.10'];
    let serviceCIDRs = ['198.19.0.0/24'];
    for (let i = 0; i < 12; i++) {
      const s = randomService(i);
      current.set(s.key, s);
    }
    apply(state, c.full(tables(table(4, [...current.values()], { nodeIPs, serviceCIDRs })), contentsOf(state)));
    c.commit();
    for (let step = 0; step < 25; step++) {
      const next = new Map(current);
      const changed: string[] = [];
      for (let k = 0; k < 1 + rnd(3); k++) {
        const i = rnd(16);
        const key = `default/s${i % 8}:${i < 8 ? 'http' : 'metrics'}/TCP`;
        if (next.has(key) && rnd(3) === 0) next.delete(key);
        else next.set(key, randomService(i));
        changed.push(key);
      }
      const tableChanged = rnd(6) === 0;
      if (tableChanged) {
        nodeIPs = rnd(2) ? ['192.0.2.10'] : ['192.0.2.11', '192.0.2.12'];
        serviceCIDRs = rnd(2) ? ['198.19.0.0/24'] : ['198.19.0.0/23'];
      }
      const nt = tables(table(4, [...next.values()], { nodeIPs, serviceCIDRs }));
      apply(state, c.partial(nt, changesOf(changed, tableChanged)));
      c.commit();
      current = next;
      const fresh = emptyState();
      apply(fresh, new EbpfCompiler({ families: [4], localhostNodePorts: true }).full(nt, contentsOf(fresh)));
      const a = normalize(state);
      const b = normalize(fresh);
      if (JSON.stringify(a) !== JSON.stringify(b)) {
        t.same(a, b, `run ${run} step ${step}: partial ≠ full`);
        return;
      }
    }
  }
  t.pass('30 runs × 25 partial syncs matched a full build after every step');
});

t.test('a full sync in parts ends where one diff does, and no phase leaves a frontend pointing at a set not written yet', async (t) => {
  for (let run = 0; run < 20; run++) {
    const before = new Map<string, ServiceEntry>();
    const after = new Map<string, ServiceEntry>();
    for (let i = 0; i < 12; i++) {
      const a = randomService(i);
      const b = randomService(i);
      if (rnd(4) > 0) before.set(a.key, a);
      if (rnd(4) > 0) after.set(b.key, b);
    }
    // What a previous ferry left in the pins.
    const pinned = emptyState();
    apply(pinned, new EbpfCompiler({ families: [4], localhostNodePorts: true }).full(tables(table(4, [...before.values()])), emptyContents()));
    const next = tables(table(4, [...after.values()]));
    const whole = emptyState();
    for (const m of Object.keys(pinned) as (keyof MapState)[]) for (const [k, v] of pinned[m]) whole[m].set(k, v);
    apply(whole, new EbpfCompiler({ families: [4], localhostNodePorts: true }).full(next, contentsOf(pinned)));
    const parted = emptyState();
    for (const m of Object.keys(pinned) as (keyof MapState)[]) for (const [k, v] of pinned[m]) parted[m].set(k, v);
    let parts = 0;
    for (const part of new EbpfCompiler({ families: [4], localhostNodePorts: true }).fullInParts(next, contentsOf(pinned), 2)) {
      parts++;
      for (const phase of part.phases) {
        apply(parted, { phases: [phase], size: 0 });
        for (const v of parted.ferry_svc.values()) {
          const set = Buffer.from(v, 'latin1').readUInt32LE(0);
          const key = Buffer.alloc(4);
          key.writeUInt32LE(set, 0);
          if (!parted.ferry_setname.has(key.toString('latin1'))) {
            t.fail(`run ${run}: a frontend points at set ${set}, which is not written`);
            return;
          }
        }
      }
    }
    if (after.size > 4 && parts < 3) t.fail(`run ${run}: ${after.size} ports in ${parts} parts of 2`);
    if (JSON.stringify(normalize(parted)) !== JSON.stringify(normalize(whole))) {
      t.same(normalize(parted), normalize(whole), `run ${run}: parts ≠ one diff`);
      return;
    }
  }
  t.pass('20 runs: the same maps, every frontend after its set');
});
