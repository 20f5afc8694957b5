import t from 'tap';
import { FAMILIES, ip, slice, svc, type EpOpts, type SvcOpts } from '../model/fixtures.js';
import { defaultNode, NODE, planWorld, summarize } from './helpers.js';

/** Endpoint n: local (on this node) or remote, with conditions and hints. */
interface Ep {
  n: number;
  local?: boolean;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zoneHints?: string[];
  nodeHints?: string[];
}

interface Case {
  name: string;
  svc?: SvcOpts;
  eps: Ep[];
  nodeLabels?: Record<string, string>;
  internal: string;
  external: string;
  cluster: string;
  externalPolicyLocal?: boolean;
}

const NP = { type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] };
const term = { ready: false, serving: true, terminating: true };

const cases: Case[] = [
  { name: 'ClusterIP, ready endpoints anywhere', eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2' },
  { name: 'no endpoints at all → reject', eps: [], internal: 'reject', external: 'reject', cluster: 'reject' },
  { name: 'only unready, non-terminating → reject', eps: [{ n: 1, ready: false }], internal: 'reject', external: 'reject', cluster: 'reject' },
  { name: 'cluster fallback to serving-terminating', eps: [{ n: 1, ...term }, { n: 2, ...term, local: true }, { n: 3, ready: false, serving: false, terminating: true }], internal: 'forward 1*,2*', external: 'forward 1*,2*', cluster: 'forward 1*,2*' },
  { name: 'ready wins over terminating', eps: [{ n: 1, ...term }, { n: 2 }], internal: 'forward 2', external: 'forward 2', cluster: 'forward 2' },
  { name: 'terminating but not serving → reject', eps: [{ n: 1, ready: false, serving: false, terminating: true }], internal: 'reject', external: 'reject', cluster: 'reject' },
  { name: 'internal Local: local ready only', svc: { itp: 'Local' }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1', external: 'forward 1,2', cluster: 'forward 1,2' },
  { name: 'internal Local, no local endpoint, remote ones exist → drop (not reject)', svc: { itp: 'Local' }, eps: [{ n: 2 }], internal: 'drop', external: 'forward 2', cluster: 'forward 2' },
  { name: 'internal Local, no endpoint anywhere → reject', svc: { itp: 'Local' }, eps: [{ n: 2, ready: false }], internal: 'reject', external: 'reject', cluster: 'reject' },
  { name: 'internal Local: local terminating fallback', svc: { itp: 'Local' }, eps: [{ n: 1, local: true, ...term }, { n: 2 }], internal: 'forward 1*', external: 'forward 2', cluster: 'forward 2' },
  { name: 'internal Local: only remote terminating → drop', svc: { itp: 'Local' }, eps: [{ n: 2, ...term }], internal: 'drop', external: 'forward 2*', cluster: 'forward 2*' },
  { name: 'NodePort external Local: local only externally', svc: { ...NP, etp: 'Local' }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1', cluster: 'forward 1,2', externalPolicyLocal: true },
  { name: 'NodePort external Local, no local → external drop', svc: { ...NP, etp: 'Local' }, eps: [{ n: 2 }], internal: 'forward 2', external: 'drop', cluster: 'forward 2', externalPolicyLocal: true },
  { name: 'NodePort external Local, nothing → reject', svc: { ...NP, etp: 'Local' }, eps: [], internal: 'reject', external: 'reject', cluster: 'reject', externalPolicyLocal: true },
  { name: 'NodePort external Local: local terminating fallback', svc: { ...NP, etp: 'Local' }, eps: [{ n: 1, local: true, ...term }, { n: 2 }], internal: 'forward 2', external: 'forward 1*', cluster: 'forward 2', externalPolicyLocal: true },
  { name: 'both Local, only remote → both drop, cluster kept for short-circuit', svc: { ...NP, etp: 'Local', itp: 'Local' }, eps: [{ n: 2 }], internal: 'drop', external: 'drop', cluster: 'forward 2', externalPolicyLocal: true },
  { name: 'external Local without external access is meaningless', svc: { etp: 'Local' }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2', externalPolicyLocal: false },
  { name: 'externalIPs make it externally accessible', svc: { etp: 'Local', externalIPs: ['192.0.2.50', '2001:db8:50::1'] }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1', cluster: 'forward 1,2', externalPolicyLocal: true },
  { name: 'Proxy-mode LB IP does not make it externally accessible', svc: { type: 'LoadBalancer', etp: 'Local', ports: [{ name: 'http', port: 80 }], ingress: [{ ip: '192.0.2.60', ipMode: 'Proxy' }, { ip: '2001:db8:60::1', ipMode: 'Proxy' }] }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2', externalPolicyLocal: false },
  { name: 'VIP-mode LB IP makes it externally accessible', svc: { type: 'LoadBalancer', etp: 'Local', ports: [{ name: 'http', port: 80 }], ingress: [{ ip: '192.0.2.60' }, { ip: '2001:db8:60::1' }] }, eps: [{ n: 1, local: true }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1', cluster: 'forward 1,2', externalPolicyLocal: true },
  // topology
  { name: 'zone hints: only same-zone endpoints', eps: [{ n: 1, zoneHints: ['z1'] }, { n: 2, zoneHints: ['z2'] }, { n: 3, zoneHints: ['z1', 'z2'] }], internal: 'forward 1,3', external: 'forward 1,3', cluster: 'forward 1,3' },
  { name: 'zone hints: one ready endpoint without hints disables topology', eps: [{ n: 1, zoneHints: ['z1'] }, { n: 2 }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2' },
  { name: 'zone hints: unready endpoint without hints does not matter', eps: [{ n: 1, zoneHints: ['z1'] }, { n: 2, zoneHints: ['z2'] }, { n: 3, ready: false }], internal: 'forward 1', external: 'forward 1', cluster: 'forward 1' },
  { name: 'zone hints: none for this zone → all', eps: [{ n: 1, zoneHints: ['z2'] }, { n: 2, zoneHints: ['z3'] }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2' },
  { name: 'zone hints: node has no zone label → all', nodeLabels: {}, eps: [{ n: 1, zoneHints: ['z1'] }, { n: 2, zoneHints: ['z2'] }], internal: 'forward 1,2', external: 'forward 1,2', cluster: 'forward 1,2' },
  { name: 'node hints beat zone hints', eps: [{ n: 1, zoneHints: ['z1'], nodeHints: ['n9'] }, { n: 2, zoneHints: ['z2'], nodeHints: [NODE] }], internal: 'forward 2', external: 'forward 2', cluster: 'forward 2' },
  { name: 'node hints incomplete → zone hints', eps: [{ n: 1, zoneHints: ['z1'], nodeHints: ['n9'] }, { n: 2, zoneHints: ['z2'] }], internal: 'forward 1', external: 'forward 1', cluster: 'forward 1' },
  { name: 'node hints for other nodes only → zone hints', eps: [{ n: 1, zoneHints: ['z1'], nodeHints: ['n9'] }, { n: 2, zoneHints: ['z2'], nodeHints: ['n8'] }], internal: 'forward 1', external: 'forward 1', cluster: 'forward 1' },
  { name: 'topology never filters the local set', svc: { itp: 'Local' }, eps: [{ n: 1, local: true, zoneHints: ['z2'] }, { n: 2, zoneHints: ['z1'] }], internal: 'forward 1', external: 'forward 2', cluster: 'forward 2' },
  { name: 'topology ignored for the terminating fallback', eps: [{ n: 1, ...term, zoneHints: ['z2'] }, { n: 2, ...term, zoneHints: ['z1'] }], internal: 'forward 1*,2*', external: 'forward 1*,2*', cluster: 'forward 1*,2*' },
];

for (const f of FAMILIES) {
  const num = (addr: string) => String(f === 4 ? Number(addr.split('.')[3]) : parseInt(addr.split(':').pop()!, 16));
  for (const c of cases) {
    t.test(`IPv${f}: ${c.name}`, async (t) => {
      const eps: EpOpts[] = c.eps.map((e) => ({
        ip: ip(f, e.n),
        node: e.local ? NODE : 'n2',
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        zoneHints: e.zoneHints,
        nodeHints: e.nodeHints,
      }));
      const { table, problems } = planWorld(f, {
        services: [svc({ families: [4, 6], ...c.svc })],
        slices: [slice({ family: f, endpoints: eps })],
        node: c.nodeLabels ? defaultNode(c.nodeLabels) : undefined,
      });
      t.same(problems, []);
      const e = table.services.get('default/web:http/TCP');
      if (!e) throw new Error(`no entry planned; table has ${[...table.services.keys()].join(', ') || 'nothing'}`);
      t.equal(summarize(e.internal, num), c.internal, 'internal path');
      t.equal(summarize(e.external, num), c.external, 'external path');
      t.equal(summarize(e.cluster, num), c.cluster, 'cluster set');
      t.equal(e.externalPolicyLocal, c.externalPolicyLocal ?? false, 'externalPolicyLocal');
      t.equal(e.externalMasquerade, !(c.externalPolicyLocal ?? false), 'externalMasquerade');
      t.equal(e.internalPolicyLocal, c.svc?.itp === 'Local', 'internalPolicyLocal');
      for (const s of [e.internal, e.external, e.cluster]) {
        t.equal(s.endpoints.length > 0, s.verdict === 'forward', 'endpoints non-empty exactly when forwarding');
      }
      const local = e.internal.endpoints.filter((x) => x.isLocal).map((x) => num(x.ip));
      const expectLocal = c.eps.filter((x) => x.local).map((x) => String(x.n));
      t.ok(local.every((n) => expectLocal.includes(n)), `isLocal carried through (got ${local})`);
    });
  }
}
