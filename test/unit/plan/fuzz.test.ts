/**
 * Seeded fuzzing of tracker + planner with malformed Services and EndpointSlices: nothing may
 * throw, and garbage must not change how a fixed set of valid services is planned.
 */
import t from 'tap';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { ChangeTracker } from '../../../src/model/tracker.js';
import type { IPFamily } from '../../../src/model/types.js';
import { planTables } from '../../../src/plan/planner.js';
import type { ProxyTables } from '../../../src/plan/types.js';
import { ip, slice, svc } from '../model/fixtures.js';
import { defaultNode, NODE, OPTS, quietLog } from './helpers.js';

const SEED = 0x5eed1234;
const GARBAGE_OBJECTS = 3000;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rnd: () => number) {}
  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }

  scalar(): unknown {
    return this.pick<() => unknown>([
      () => null,
      () => undefined,
      () => true,
      () => -1,
      () => 0,
      () => 65536,
      () => 2 ** 53,
      () => -(2 ** 31),
      () => 1e308,
      () => NaN,
      () => Infinity,
      () => 3.5,
      () => this.int(70000),
      () => '',
      () => 'None',
      () => 'TCP',
      () => 'IPv4',
      () => 'IPv6',
      () => 'Local',
      () => 'ClientIP',
      () => '198.18.300.1',
      () => '::ffff:198.18.0.1',
      () => 'fe80::1%eth0',
      () => '2001:db8::zz',
      () => '010.1.2.3',
      () => '198.18.0.1/99',
      () => '198.18.0.1',
      () => '2001:db8::1',
      () => 'x'.repeat(this.int(5000)),
      () => String.fromCharCode(...Array.from({ length: 8 }, () => this.int(0x10000))),
    ])();
  }

  value(depth = 0, huge = true): unknown {
    const r = this.rnd();
    if (depth > 3 || r < 0.5) return this.scalar();
    if (r < 0.7) {
      // Occasionally a huge array (of one shared element, so the generator stays cheap): the
      // model must handle it linearly.
      if (huge && this.chance(0.02)) {
        const one = this.value(depth + 1, false);
        return new Array<unknown>(10000).fill(one);
      }
      return Array.from({ length: this.int(5) }, () => this.value(depth + 1, huge));
    }
    if (r < 0.75) return JSON.parse('{"__proto__": {"polluted": true}, "constructor": 1}');
    const o: Record<string, unknown> = {};
    const keys = ['metadata', 'spec', 'status', 'ports', 'endpoints', 'name', 'port', 'ip', 'addresses', 'conditions', 'hints', 'labels'];
    for (let i = this.int(4); i > 0; i--) o[this.pick(keys)] = this.value(depth + 1, huge);
    return o;
  }

  /** Replace a few random paths of a clone of `base` with garbage. */
  mutate<T>(base: T): T {
    const root = structuredClone(base) as unknown;
    for (let m = 1 + this.int(4); m > 0; m--) {
      let cur = root;
      for (let d = 0; d < 6; d++) {
        if (typeof cur !== 'object' || cur === null) break;
        const keys = Object.keys(cur);
        if (keys.length === 0) break;
        const k = this.pick(keys);
        const child = (cur as Record<string, unknown>)[k];
        if (typeof child !== 'object' || child === null || this.chance(0.3)) {
          (cur as Record<string, unknown>)[k] = this.value();
          break;
        }
        cur = child;
      }
    }
    return root as T;
  }
}

/** The garbage must never live in the namespace of the valid set. */
function quarantine(obj: unknown, i: number): void {
  if (typeof obj !== 'object' || obj === null) return;
  const meta = (obj as Record<string, unknown>).metadata;
  if (typeof meta === 'object' && meta !== null && (meta as Record<string, unknown>).namespace === 'stable') {
    (meta as Record<string, unknown>).namespace = `fuzz${i}`;
  }
}

function stableObjects(): { services: V1Service[]; slices: V1EndpointSlice[] } {
  const services: V1Service[] = [];
  const slices: V1EndpointSlice[] = [];
  const types = ['ClusterIP', 'NodePort', 'LoadBalancer'];
  for (let i = 0; i < 12; i++) {
    const type = types[i % 3];
    const families: IPFamily[] = i % 4 === 0 ? [6] : i % 4 === 1 ? [4] : [4, 6];
    services.push(
      svc({
        ns: 'stable',
        name: `s${i}`,
        type,
        families,
        etp: i % 2 ? 'Local' : undefined,
        itp: i % 5 === 0 ? 'Local' : undefined,
        hcPort: type === 'LoadBalancer' && i % 2 ? 32000 + i : undefined,
        externalIPs: i % 3 === 0 ? ['192.0.2.7', '2001:db8:7::7'] : undefined,
        ingress: type === 'LoadBalancer' ? [{ ip: `192.0.2.${100 + i}` }, { ip: `2001:db8:64::${i + 1}` }] : undefined,
        affinity: i % 4 === 3 ? 300 : undefined,
        ports: [
          { name: 'http', port: 80, nodePort: type === 'ClusterIP' ? undefined : 30000 + i },
          { name: 'dns', port: 53, protocol: 'UDP', nodePort: type === 'ClusterIP' ? undefined : 31000 + i },
        ],
      }),
    );
    for (const f of families) {
      slices.push(
        slice({
          ns: 'stable',
          service: `s${i}`,
          family: f,
          ports: [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }],
          endpoints: [
            { ip: ip(f, i + 1), node: NODE, zoneHints: i % 2 ? ['z1'] : undefined },
            { ip: ip(f, i + 50), node: 'n2', zoneHints: i % 2 ? ['z2'] : undefined },
            { ip: ip(f, i + 100), node: 'n3', ready: false, serving: true, terminating: true },
          ],
        }),
      );
    }
  }
  return { services, slices };
}

function stableOnly(tables: ProxyTables): unknown {
  const out: Record<string, unknown> = {};
  for (const f of [4, 6] as const) {
    const { services, ...header } = tables[f];
    out[f] = { header, services: [...services].filter(([k]) => k.startsWith('stable/')) };
  }
  return out;
}

function newTracker(): ChangeTracker {
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: quietLog });
  tr.setNode(defaultNode());
  return tr;
}

t.test(`fuzz (seed ${SEED.toString(16)}): garbage never throws and never changes valid services`, async (t) => {
  const g = new Gen(mulberry32(SEED));
  const stable = stableObjects();

  const clean = newTracker();
  for (const s of stable.services) clean.upsertService(s);
  for (const s of stable.slices) clean.upsertEndpointSlice(s);
  const expected = planTables(clean.takeSnapshot().snapshots, OPTS);
  t.equal(expected[4].services.size + expected[6].services.size, 36, 'the valid set plans 36 entries');

  const dirty = newTracker();
  let tables: ProxyTables | null = null;
  const sync = () => {
    const snap = dirty.takeSnapshot();
    tables = planTables(snap.snapshots, OPTS, tables, snap.changes);
  };
  // Big but well-formed-looking objects: 10k endpoints, 10k ports, 10k externalIPs.
  const bigSlice = slice({ ns: 'fuzz-big', service: 'big', endpoints: Array.from({ length: 10000 }, (_, i) => ({ ip: `198.19.${i >> 8}.${i & 255}`, node: i % 3 ? 'n2' : NODE })) });
  dirty.upsertEndpointSlice(bigSlice);
  dirty.upsertService(svc({ ns: 'fuzz-big', name: 'big', ports: Array.from({ length: 10000 }, (_, i) => ({ name: `p${i}`, port: ((i * 7) % 70000) + 1 })), externalIPs: Array.from({ length: 10000 }, (_, i) => `192.0.2.${i % 300}`) }));
  sync();
  t.equal(tables![4].services.get('fuzz-big/big:p0/TCP')?.internal.verdict, 'reject', 'big service planned (no slice port named p0)');
  t.notOk(tables![4].services.has('fuzz-big/big:p9999/TCP'), 'port 69994 skipped');
  t.ok(tables![4].services.has('fuzz-big/big:p9362/TCP'), 'port 65535 kept');

  const templates = [...stable.services, ...stable.slices];
  let stableNext = 0;
  for (let i = 0; i < GARBAGE_OBJECTS; i++) {
    let obj: unknown;
    const r = g.rnd();
    if (r < 0.6) obj = g.mutate(g.pick(templates));
    else if (r < 0.8) obj = g.value();
    else obj = { metadata: { namespace: `fuzz${i % 7}`, name: `g${g.int(20)}`, labels: { 'kubernetes.io/service-name': `g${g.int(20)}` } }, spec: g.value(), addressType: g.pick(['IPv4', 'IPv6', 'FQDN', g.scalar()]), ports: g.value(), endpoints: g.value(), status: g.value() };
    quarantine(obj, i);
    const asSlice = g.chance(0.5);
    if (asSlice) dirty.upsertEndpointSlice(obj as V1EndpointSlice);
    else dirty.upsertService(obj as V1Service);
    if (g.chance(0.1)) {
      if (asSlice) dirty.deleteEndpointSlice(obj as V1EndpointSlice);
      else dirty.deleteService(obj as V1Service);
    }
    // Interleave the valid set, and sync now and then so incremental planning is exercised.
    if (i % (GARBAGE_OBJECTS / templates.length) === 0 && stableNext < templates.length) {
      const s = templates[stableNext++];
      if ('addressType' in s) dirty.upsertEndpointSlice(s);
      else dirty.upsertService(s as V1Service);
    }
    if (i % 250 === 0) sync();
    if (i % 500 === 0) dirty.problems();
  }
  while (stableNext < templates.length) {
    const s = templates[stableNext++];
    if ('addressType' in s) dirty.upsertEndpointSlice(s);
    else dirty.upsertService(s as V1Service);
  }
  sync();
  t.ok(dirty.problems().size > 100, `garbage was reported as problems (${dirty.problems().size} objects)`);
  t.same(stableOnly(tables!), stableOnly(expected), 'valid services plan identically with garbage present (incremental)');

  // And from scratch, once more, from the dirty tracker's current state.
  const snap = dirty.takeSnapshot();
  t.same(stableOnly(planTables(snap.snapshots, OPTS)), stableOnly(expected), 'and from scratch');
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
});
