// serviceContribution's fast path (the ClusterIP-only, endpoint-count port that makes most of a
// big cluster) must claim exactly what the general path claims, in the same order; and a claim
// sink must see the same claims the returned list would hold. A full compile relies on both.
import t from 'tap';
import { endpointShardProtocol, GROUPED_MAX_ENDPOINTS } from '../../../../src/backends/nftables/names.js';
import * as R from '../../../../src/backends/nftables/rules.js';
import { V4, V6 } from '../../../../src/backends/nftables/rules.js';
import { FirstAddresses } from '../../../../src/backends/nftables/distinct.js';
import { generalContribution, groupedClusterIPOnly, hairpinClaims, hairpinInto, serviceContribution, type ElementClaim, type ServiceContext } from '../../../../src/backends/nftables/service.js';
import { Sets } from '../../../../src/backends/nftables/names.js';
import { randomWalk } from './fixtures.js';
import { SlotTable } from '../../../../src/backends/nftables/slots.js';
import type { EndpointSet, ServiceEntry } from '../../../../src/plan/types.js';
import { canonicalIPv4 } from '../../../../src/util/ipv4.js';
import { ep, fwd, REJECT, svc } from '../ir-builders.js';

const ctxOf = (detector: boolean, fs = V4): ServiceContext => ({ fs, detector, slots: new SlotTable() });

const many = fwd(...Array.from({ length: GROUPED_MAX_ENDPOINTS + 1 }, (_, i) => ep(`10.1.${i >> 8}.${i & 255}`, 8080)));
const three = fwd(ep('10.0.0.2', 8080), ep('10.0.0.1', 8080), ep('10.0.0.1', 9090));

const eligible: [string, ServiceEntry][] = [
  ['one endpoint', svc({ namespace: 'a', name: 'one', internal: fwd(ep('10.0.0.1', 80)) })],
  ['one IP, two ports (hairpin claimed once)', svc({ namespace: 'a', name: 'three', internal: three })],
  ['masquerade all', svc({ namespace: 'a', name: 'all', internal: three, clusterIPMasquerade: 'all' })],
  ['no masquerade', svc({ namespace: 'a', name: 'none', internal: three, clusterIPMasquerade: 'none' })],
  ['UDP', svc({ namespace: 'a', name: 'udp', protocol: 'UDP', portName: 'dns', internal: three })],
  ['IPv6', svc({ namespace: 'a', name: 'six', family: 6, internal: fwd(ep('2001:db8::1', 80), ep('2001:db8::2', 80)) })],
  ['equal but distinct sets', svc({ namespace: 'a', name: 'eq', internal: three, external: REJECT, cluster: REJECT })],
];
const ineligible: [string, ServiceEntry][] = [
  ['NodePort', svc({ namespace: 'b', name: 'np', internal: three, nodePort: 30080 })],
  ['externalIP', svc({ namespace: 'b', name: 'ext', internal: three, externalIPs: ['192.0.2.7'] })],
  ['LoadBalancer IP', svc({ namespace: 'b', name: 'lb', internal: three, loadBalancerIPs: ['192.0.2.8'] })],
  ['affinity', svc({ namespace: 'b', name: 'aff', internal: three, affinityTimeoutSeconds: 10800 })],
  ['internal policy Local (cluster set differs)', svc({ namespace: 'b', name: 'loc', internal: fwd(ep('10.0.0.1', 8080)), cluster: three })],
  ['more endpoints than the count layout takes', svc({ namespace: 'b', name: 'many', internal: many })],
  ['no endpoints', svc({ namespace: 'b', name: 'rej', internal: REJECT })],
];

function claims(f: (s: ServiceEntry, c: ServiceContext) => { elements: readonly ElementClaim[] }, s: ServiceEntry, detector: boolean): ElementClaim[] {
  return [...f(s, ctxOf(detector, s.family === 6 ? V6 : V4)).elements];
}

t.test('the fast path claims what the general path claims, in order', async (t) => {
  for (const [what, s] of eligible) {
    for (const detector of [true, false]) {
      const ctx = ctxOf(detector, s.family === 6 ? V6 : V4);
      const fast = groupedClusterIPOnly(s, ctx);
      t.ok(fast, `${what}: takes the fast path`);
      const general = claims(generalContribution, s, detector);
      t.same(fast!.elements, general, `${what} (detector ${detector})`);
      t.ok(general.length >= 3, `${what}: hairpin, cluster IP and frontend claimed`);
      t.equal(fast!.chains.size, 0, `${what}: owns no chain`);
      t.equal(fast!.slotRoles.size, 0, `${what}: uses no endpoint block`);
    }
  }
  for (const [what, s] of ineligible) t.equal(groupedClusterIPOnly(s, ctxOf(true)), undefined, `${what}: general path`);
});

t.test('a claim sink sees the claims the list would hold', async (t) => {
  for (const [what, s] of [...eligible, ...ineligible]) {
    const listed = claims(serviceContribution, s, true);
    const sunk: ElementClaim[] = [];
    const c = serviceContribution(s, ctxOf(true, s.family === 6 ? V6 : V4), { claim: (container, key, value) => void sunk.push({ container, key, value }) });
    t.same(sunk, listed, what);
    t.equal(c.elements.length, 0, `${what}: nothing listed when sunk`);
    t.ok(listed.length > 0, `${what}: claims something`);
  }
});

t.test('shard blocks hold the shard claims the sink would see, in order; the other claims still go to the sink', async (t) => {
  let withBlocks = 0;
  for (const [what, s] of [...eligible, ...ineligible]) {
    const sunk: ElementClaim[] = [];
    serviceContribution(s, ctxOf(true, s.family === 6 ? V6 : V4), { claim: (container, key, value) => void sunk.push({ container, key, value }) });
    const rest: ElementClaim[] = [];
    const fromBlocks: ElementClaim[] = [];
    serviceContribution(s, ctxOf(true, s.family === 6 ? V6 : V4), {
      claim: (container, key, value) => void rest.push({ container, key, value }),
      block: (map, base, endpoints) => {
        withBlocks++;
        endpoints.forEach((ep, i) => fromBlocks.push({ container: map, key: String(base + i), value: R.endpointValue(ep) }));
      },
    });
    const isShard = (c: ElementClaim): boolean => endpointShardProtocol(c.container) !== undefined;
    t.same(fromBlocks, sunk.filter(isShard), `${what}: shard claims`);
    t.same(rest, sunk.filter((c) => !isShard(c)), `${what}: the rest`);
  }
  t.ok(withBlocks > 0, `some ports claimed shard blocks (${withBlocks})`);
});

// Written out here, apart from hairpinClaims: every IP of every forwarding set (internal,
// external, cluster; each distinct set once), once, in that order.
function hairpinSpec(s: ServiceEntry): string[] {
  const out: string[] = [];
  const sets = [s.internal, s.external, s.cluster].filter((x, i, all) => x.verdict === 'forward' && x.endpoints.length > 0 && all.indexOf(x) === i);
  for (const set of sets) for (const e of set.endpoints) if (!out.includes(e.ip)) out.push(e.ip);
  return out;
}

/** `s` with every endpoint's v4 filled in as the model does (-1 for IPv6), sets that were one object still one. */
function withV4(s: ServiceEntry): ServiceEntry {
  const copies = new Map<EndpointSet, EndpointSet>();
  const copy = (set: EndpointSet): EndpointSet => {
    let c = copies.get(set);
    if (!c) copies.set(set, (c = { ...set, endpoints: set.endpoints.map((e) => ({ ...e, v4: canonicalIPv4(e.ip) })) }));
    return c;
  };
  return { ...s, internal: copy(s.internal), external: copy(s.external), cluster: copy(s.cluster) };
}

/** withV4, and each set carrying the addresses packed as the planner gives them (EndpointSet.v4; all -1 in IPv6). */
function withPackedV4(s: ServiceEntry): ServiceEntry {
  const copies = new Map<EndpointSet, EndpointSet>();
  const copy = (set: EndpointSet): EndpointSet => {
    let c = copies.get(set);
    if (!c) copies.set(set, (c = { ...set, v4: set.endpoints.map((e) => e.v4!) }));
    return c;
  };
  const v = withV4(s);
  return { ...v, internal: copy(v.internal), external: copy(v.external), cluster: copy(v.cluster) };
}

t.test('hairpinClaims: each IP of the forwarding sets once, in order; the contribution claims them; with hairpinApart it claims none', async (t) => {
  const entries: [string, ServiceEntry][] = [
    ...eligible,
    ...ineligible,
    ['external set of its own', svc({ namespace: 'c', name: 'etp', internal: fwd(ep('10.0.0.1', 80)), external: fwd(ep('10.0.0.9', 80), ep('10.0.0.1', 80)), externalPolicyLocal: true, nodePort: 30090 })],
    ['three distinct sets', svc({ namespace: 'c', name: 'three', internal: fwd(ep('10.0.0.3', 80)), cluster: fwd(ep('10.0.0.2', 80), ep('10.0.0.3', 81)), external: fwd(ep('10.0.0.1', 80)), nodePort: 30091 })],
  ];
  for (const seed of [1, 2, 3, 4]) {
    const walk = randomWalk(seed, 3, [4, 6]);
    for (const ir of [walk.initial, ...walk.steps.map((x) => x.next)]) for (const f of [4, 6] as const) for (const [k, e] of ir[f].services) entries.push([`walk ${seed} ${k}`, e]);
  }
  let withHairpins = 0;
  for (const [what, s] of entries) {
    for (const detector of [true, false]) {
      const ctx = ctxOf(detector, s.family === 6 ? V6 : V4);
      const want = hairpinSpec(s);
      const got: string[] = [];
      hairpinClaims(s, (ip) => void got.push(ip));
      t.same(got, want, `${what} (detector ${detector})`);
      // A full compile's walk, with the endpoints as the model makes them (v4 set) and without.
      for (const [e, how] of [[s, 'no v4'], [withV4(s), 'with v4'], [withPackedV4(s), 'packed v4']] as const) {
        const into = new FirstAddresses();
        hairpinInto(e, into);
        t.same(Array.from({ length: into.count }, (_, i) => into.key(i)), want, `${what}: hairpinInto (${how}), as a full compile takes them`);
        const called: string[] = [];
        hairpinClaims(e, (ip) => void called.push(ip));
        t.same(called, want, `${what}: hairpinClaims (${how})`);
      }
      t.same(serviceContribution(s, ctx).elements.filter((e) => e.container === Sets.hairpin).map((e) => e.key), want, `${what}: the contribution's hairpin claims`);
      if (want.length > 0) withHairpins++;
      const apart = serviceContribution(s, { ...ctxOf(detector, s.family === 6 ? V6 : V4), hairpinApart: true }).elements;
      t.same(apart, serviceContribution(s, ctxOf(detector, s.family === 6 ? V6 : V4)).elements.filter((e) => e.container !== Sets.hairpin), `${what}: the rest unchanged without the hairpins`);
    }
  }
  t.ok(withHairpins > 20, `services with hairpin claims were compared (${withHairpins})`);
});
