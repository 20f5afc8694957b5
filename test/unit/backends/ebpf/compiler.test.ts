/**
 * The ebpf compiler and backend against the in-memory applier: which frontends and endpoint sets
 * the IR becomes, that partial syncs are element diffs of what changed, the write order that keeps
 * connects consistent, and that a restart over the same pins writes nothing.
 */
import t from 'tap';
import { createEbpfBackend } from '../../../../src/backends/ebpf/backend.js';
import { contentsOf, EbpfCompiler, emptyContents, emptyState, type EbpfDiff, type MapState } from '../../../../src/backends/ebpf/compiler.js';
import { addrBytes, decodeSetName, describeSvcKey, localSet, MAP_SIZES, serviceCIDRSet, SF_NOSOCK, srcRangeKey, WRITTEN_MAPS, XF_LOCAL, XF_MASQ, XF_SRCRANGE } from '../../../../src/backends/ebpf/layout.js';
import { FakeBpfMaps } from '../../../../src/backends/kernel/bpf.js';
import type { ProxyTables, ServiceEntry } from '../../../../src/plan/types.js';
import { changesOf, DROP, ep, FULL, fwd, REJECT, svc, table, tables } from '../ir-builders.js';

/** The svc map as readable lines: "TCP 198.19.0.10:80 → set <name> count N verdict V affinity A". */
function frontends(state: MapState): string[] {
  const names = new Map<number, string>();
  for (const [k, v] of state.ferry_setname) names.set(Buffer.from(k, 'latin1').readUInt32LE(0), decodeSetName(v));
  const out: string[] = [];
  for (const [k, v] of state.ferry_svc) {
    const b = Buffer.from(v, 'latin1');
    const verdict = ['forward', 'reject', 'drop'][b.readUInt8(12)];
    out.push(`${describeSvcKey(k)} → ${names.get(b.readUInt32LE(0))} count ${b.readUInt32LE(4)} ${verdict} affinity ${b.readUInt32LE(8)}`);
  }
  return out.sort();
}

/** Backends of a set as "ip:port" in slot order. */
function backendsOf(state: MapState, setName: string): string[] {
  let id = -1;
  for (const [k, v] of state.ferry_setname) if (decodeSetName(v) === setName) id = Buffer.from(k, 'latin1').readUInt32LE(0);
  const slots: [number, string][] = [];
  for (const [k, v] of state.ferry_backend) {
    const kb = Buffer.from(k, 'latin1');
    if (kb.readUInt32LE(0) !== id) continue;
    const vb = Buffer.from(v, 'latin1');
    const fam = vb.readUInt8(18);
    const ip = fam === 4 ? [...vb.subarray(0, 4)].join('.') : vb.subarray(0, 16).toString('hex');
    slots.push([kb.readUInt32LE(4), `${ip}:${vb.readUInt16BE(16)}`]);
  }
  return slots.sort((a, b) => a[0] - b[0]).map((s) => s[1]);
}

/** Membership elements of a set as "ip:port slot n", sorted. */
function membersOf(state: MapState, setName: string): string[] {
  let id = -1;
  for (const [k, v] of state.ferry_setname) if (decodeSetName(v) === setName) id = Buffer.from(k, 'latin1').readUInt32LE(0);
  if (id < 0) throw new Error(`no set ${setName}`);
  const out: string[] = [];
  for (const [k, v] of state.ferry_member) {
    const kb = Buffer.from(k, 'latin1');
    if (kb.readUInt32LE(0) !== id) continue;
    const ip = kb.readUInt8(22) === 4 ? [...kb.subarray(4, 8)].join('.') : kb.subarray(4, 20).toString('hex');
    out.push(`${ip}:${kb.readUInt16BE(20)} slot ${Buffer.from(v, 'latin1').readUInt32LE(0)}`);
  }
  return out.sort();
}

function apply(state: MapState, diff: EbpfDiff): void {
  for (const phase of diff.phases) for (const op of phase) {
    for (const [k, v] of op.upserts) state[op.map].set(k, v);
    for (const k of op.deletes) state[op.map].delete(k);
  }
}

function sizesAreRight(t: { fail(m: string): void; pass(m: string): void }, state: MapState): void {
  for (const m of WRITTEN_MAPS) {
    for (const [k, v] of state[m]) {
      if (k.length !== MAP_SIZES[m].key || v.length !== MAP_SIZES[m].value) {
        t.fail(`${m}: element of ${k.length}/${v.length} bytes, want ${MAP_SIZES[m].key}/${MAP_SIZES[m].value}`);
        return;
      }
    }
  }
  t.pass('every element has the size maps.h declares');
}

const web = svc({
  namespace: 'default',
  name: 'web',
  clusterIP: '198.19.0.10',
  port: 80,
  nodePort: 30080,
  externalIPs: ['203.0.113.20'],
  loadBalancerIPs: ['203.0.113.10'],
  internal: fwd(ep('10.0.1.2', 8080, true), ep('10.0.2.2', 8080)),
});

t.test('a Service becomes frontends pointing at its endpoint sets; NodePorts are wildcard entries on node addresses', async (t) => {
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [web], { nodeIPs: ['192.0.2.10'] })), emptyContents()));
  t.same(frontends(state), [
    'TCP *:30080 (NodePort, IPv4) → default/web:http/TCP|external|4 count 2 forward affinity 0',
    'TCP 198.19.0.10:80 → default/web:http/TCP|internal|4 count 2 forward affinity 0',
    'TCP 203.0.113.10:80 → default/web:http/TCP|external|4 count 2 forward affinity 0',
    'TCP 203.0.113.20:80 → default/web:http/TCP|external|4 count 2 forward affinity 0',
  ]);
  t.same(backendsOf(state, 'default/web:http/TCP|internal|4'), ['10.0.1.2:8080', '10.0.2.2:8080']);
  t.same(membersOf(state, 'default/web:http/TCP|external|4'), ['10.0.1.2:8080 slot 0', '10.0.2.2:8080 slot 1'], 'the set tc reads has its membership elements');
  t.same(membersOf(state, 'default/web:http/TCP|internal|4'), [], 'the ClusterIP\'s (TCP, no affinity) has none: nothing checks them');
  const nodeAddrs = [...state.ferry_nodeaddr.keys()].map((k) => [...Buffer.from(k, 'latin1').subarray(0, 4)].join('.')).sort();
  t.same(nodeAddrs, ['127.0.0.1', '192.0.2.10'], 'NodePorts on the node IP and on 127.0.0.1 (localhost NodePorts)');
  sizesAreRight(t, state);

  const c2 = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const s2 = emptyState();
  apply(s2, c2.full(tables(table(4, [web], { nodeIPs: ['192.0.2.10'], nodePortAddresses: { kind: 'list', addresses: ['192.0.2.99'] } })), emptyContents()));
  const listed = [...s2.ferry_nodeaddr.keys()].map((k) => [...Buffer.from(k, 'latin1').subarray(0, 4)].join('.'));
  t.same(listed, ['192.0.2.99'], '--nodeport-addresses: exactly the listed addresses, no loopback');
});

t.test('nodePortAddresses unset: NodePorts on every address the host has, kept current by table-level changes', async (t) => {
  const ips = (state: MapState, fam: 4 | 6): string[] =>
    [...state.ferry_nodeaddr.keys()]
      .map((k) => Buffer.from(k, 'latin1'))
      .filter((b) => b.readUInt8(16) === fam)
      .map((b) => (fam === 4 ? [...b.subarray(0, 4)].join('.') : b.subarray(0, 16).toString('hex')))
      .sort();
  const at = (local4: string[], local6: string[]) =>
    tables(
      table(4, [web], { nodeIPs: ['192.0.2.10'], nodePortAddresses: { kind: 'all', local: local4 } }),
      table(6, [], { nodeIPs: ['2001:db8:2::10'], nodePortAddresses: { kind: 'all', local: local6 } }),
    );
  const c = new EbpfCompiler({ families: [4, 6], localhostNodePorts: true });
  const state = emptyState();
  apply(state, c.full(at(['192.0.2.10', '198.19.3.1', '198.18.0.200'], ['2001:db8:2::10', 'fe80::1']), emptyContents()));
  t.same(ips(state, 4), ['127.0.0.1', '192.0.2.10', '198.18.0.200', '198.19.3.1'], "the host's IPv4 addresses (a Node IP once), and 127.0.0.1");
  t.same(ips(state, 6), ['20010db8000200000000000000000010', 'fe800000000000000000000000000001'], "the host's IPv6 addresses, no loopback added");
  t.equal(c.skipped.length, 0, 'nothing skipped');
  // The node lost 198.18.0.200 and gained 198.18.0.201: the table-level part is rewritten, nothing else.
  const d = c.partial(at(['192.0.2.10', '198.19.3.1', '198.18.0.201'], ['2001:db8:2::10', 'fe80::1']), changesOf([], true));
  const touched = d.phases.flat().map((op) => `${op.map} +${op.upserts.length} -${op.deletes.length}`);
  t.same(touched, ['ferry_nodeaddr +1 -0', 'ferry_nodeaddr +0 -1'], 'one address written, then one deleted');
  apply(state, d);
  t.same(ips(state, 4), ['127.0.0.1', '192.0.2.10', '198.18.0.201', '198.19.3.1']);
  // A Node IP the host does not list (yet) still accepts NodePorts.
  apply(state, c.partial(at([], []), changesOf([], true)));
  t.same(ips(state, 4), ['127.0.0.1', '192.0.2.10'], "the Node's IP and 127.0.0.1 without a listing");
  t.same(ips(state, 6), ['20010db8000200000000000000000010']);

  const many = Array.from({ length: 3000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.1`);
  const c2 = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const s2 = emptyState();
  apply(s2, c2.full(tables(table(4, [web], { nodePortAddresses: { kind: 'all', local: many } })), emptyContents()));
  t.equal(s2.ferry_nodeaddr.size, 2048, 'at most half of the map per family');
  t.ok(ips(s2, 4).includes('192.0.2.10') && ips(s2, 4).includes('127.0.0.1'), 'the Node IP and 127.0.0.1 come first');
  t.match(c2.skipped.join('\n'), /NodePorts on \d+ more IPv4 addresses of the host/, 'the rest is reported as skipped');
});

t.test("ClusterIPs carry what the tc program needs to serve them (svc flags): ClusterIP, and the IR's masquerade", async (t) => {
  const flagsOf = (state: MapState): string[] =>
    [...state.ferry_svc].map(([k, v]) => `${describeSvcKey(k)} flags ${Buffer.from(v, 'latin1').readUInt8(13)}`).sort();
  const all = svc({ namespace: 'default', name: 'all', clusterIP: '198.19.0.21', internal: fwd(ep('10.0.1.2', 80)), clusterIPMasquerade: 'all' });
  const nonLocal = svc({ namespace: 'default', name: 'nonlocal', clusterIP: '198.19.0.22', internal: fwd(ep('10.0.1.2', 80)), clusterIPMasquerade: 'nonLocal', externalIPs: ['203.0.113.22'] });
  const none = svc({ namespace: 'default', name: 'none', clusterIP: '198.19.0.23', internal: REJECT, clusterIPMasquerade: 'none' });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [all, nonLocal, none])), emptyContents()));
  t.same(flagsOf(state), [
    'TCP 198.19.0.21:80 flags 3',
    'TCP 198.19.0.22:80 flags 5',
    'TCP 198.19.0.23:80 flags 1',
    'TCP 203.0.113.22:80 flags 0',
  ], 'ClusterIP (1) with MASQ_ALL (2) or MASQ_NONLOCAL (4); an externalIP (tc has it in ferry_xsvc) without');
  const noCIDR = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const s2 = emptyState();
  apply(s2, noCIDR.full(tables(table(4, [nonLocal], { localTraffic: { kind: 'interfaceNamePrefix', prefix: 'veth' } })), emptyContents()));
  t.equal(s2.ferry_srcrange.size, 0, 'an interface detector gives tc no local-traffic CIDRs (such traffic through tc is masqueraded)');
});

t.test('verdicts, affinity and which endpoint set each frontend uses come from the IR', async (t) => {
  const none = svc({ namespace: 'default', name: 'none', clusterIP: '198.19.0.11', internal: REJECT });
  const itl = svc({ namespace: 'default', name: 'itl', clusterIP: '198.19.0.12', internal: DROP, internalPolicyLocal: true });
  const sticky = svc({ namespace: 'default', name: 'sticky', clusterIP: '198.19.0.13', internal: fwd(ep('10.0.1.2', 80)), affinityTimeoutSeconds: 10800 });
  const local = svc({
    namespace: 'default',
    name: 'local',
    clusterIP: '198.19.0.14',
    nodePort: 30090,
    internal: fwd(ep('10.0.1.2', 80, true), ep('10.0.2.2', 80)),
    external: fwd(ep('10.0.1.2', 80, true)),
    cluster: fwd(ep('10.0.1.2', 80, true), ep('10.0.2.2', 80)),
    externalPolicyLocal: true,
  });
  const noLocal = svc({
    namespace: 'default',
    name: 'nolocal',
    clusterIP: '198.19.0.15',
    nodePort: 30091,
    internal: fwd(ep('10.0.2.2', 80)),
    external: DROP,
    cluster: fwd(ep('10.0.2.2', 80)),
    externalPolicyLocal: true,
  });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [none, itl, sticky, local, noLocal])), emptyContents()));
  t.same(frontends(state), [
    'TCP *:30090 (NodePort, IPv4) → default/local:http/TCP|external|4 count 2 forward affinity 0',
    'TCP *:30091 (NodePort, IPv4) → default/nolocal:http/TCP|external|4 count 1 forward affinity 0',
    'TCP 198.19.0.11:80 → default/none:http/TCP|internal|4 count 0 reject affinity 0',
    'TCP 198.19.0.12:80 → default/itl:http/TCP|internal|4 count 0 drop affinity 0',
    'TCP 198.19.0.13:80 → default/sticky:http/TCP|internal|4 count 1 forward affinity 10800',
    'TCP 198.19.0.14:80 → default/local:http/TCP|internal|4 count 2 forward affinity 0',
    'TCP 198.19.0.15:80 → default/nolocal:http/TCP|internal|4 count 1 forward affinity 0',
  ]);
  t.same(
    backendsOf(state, 'default/local:http/TCP|external|4'),
    ['10.0.1.2:80', '10.0.2.2:80'],
    'externalTrafficPolicy Local: local clients (all socket LB sees) use the IR\'s cluster set',
  );
});

t.test('membership elements exist for exactly the sets a program checks them in', async (t) => {
  const two = fwd(ep('10.0.1.2', 80, true), ep('10.0.2.2', 80));
  const plain = svc({ namespace: 'default', name: 'plain', clusterIP: '198.19.0.50', internal: two });
  const sticky = svc({ namespace: 'default', name: 'sticky', clusterIP: '198.19.0.51', internal: two, affinityTimeoutSeconds: 60 });
  const udp = svc({ namespace: 'default', name: 'dns', clusterIP: '198.19.0.52', protocol: 'UDP', internal: two });
  const np = svc({ namespace: 'default', name: 'np', clusterIP: '198.19.0.53', nodePort: 30053, internal: two });
  const local = svc({ namespace: 'default', name: 'local', clusterIP: '198.19.0.54', nodePort: 30054, internal: two, external: fwd(ep('10.0.1.2', 80, true)), externalPolicyLocal: true });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [plain, sticky, udp, np, local])), emptyContents()));
  const both = ['10.0.1.2:80 slot 0', '10.0.2.2:80 slot 1'];
  // sock_lb.c reads them for an affinity entry and an unconnected UDP flow; tc_lb.c for every packet.
  t.same(membersOf(state, 'default/plain:http/TCP|internal|4'), [], 'a TCP ClusterIP without affinity: none');
  t.same(membersOf(state, 'default/sticky:http/TCP|internal|4'), both, 'ClientIP affinity');
  t.same(membersOf(state, 'default/dns:http/UDP|internal|4'), both, 'UDP');
  t.same(membersOf(state, 'default/np:http/TCP|internal|4'), [], 'a NodePort Service\'s ClusterIP set: none');
  t.same(membersOf(state, 'default/np:http/TCP|external|4'), both, 'the NodePort\'s set, which tc also reads');
  t.same(membersOf(state, 'default/local:http/TCP|external|4'), both, 'externalTrafficPolicy Local: the socket\'s external set');
  t.same(membersOf(state, 'default/local:http/TCP|outside|4'), ['10.0.1.2:80 slot 0'], "and tc's own");
  c.commit();

  // Affinity switched on: the elements come with the backends, before the frontend that uses them…
  const sticky2: ServiceEntry = { ...plain, affinityTimeoutSeconds: 60 };
  const on = c.partial(tables(table(4, [sticky2, sticky, udp, np, local])), changesOf([plain.key]));
  const order = (d: EbpfDiff): string[] => d.phases.map((p) => p.map((o) => `${o.map}${o.upserts.length ? ` +${o.upserts.length}` : ''}${o.deletes.length ? ` -${o.deletes.length}` : ''}`).join(', '));
  t.same(order(on), ['ferry_member +2', 'ferry_svc +1'], 'members first, then the frontend with its affinity timeout');
  apply(state, on);
  t.same(membersOf(state, 'default/plain:http/TCP|internal|4'), both);
  c.commit();
  // …and switched off, they go after it.
  const off = c.partial(tables(table(4, [plain, sticky, udp, np, local])), changesOf([plain.key]));
  t.same(order(off), ['ferry_svc +1', 'ferry_member -2'], 'the frontend first, then the elements nothing checks any more');
  apply(state, off);
  t.same(membersOf(state, 'default/plain:http/TCP|internal|4'), []);
  sizesAreRight(t, state);
});

t.test('SCTP, unparsable addresses and LB IPs with source ranges are skipped and reported', async (t) => {
  const sctp = svc({ namespace: 'default', name: 'sctp', protocol: 'SCTP', internal: fwd(ep('10.0.1.2', 80)) });
  const ranged = svc({ namespace: 'default', name: 'ranged', clusterIP: '198.19.0.20', loadBalancerIPs: ['203.0.113.30'], loadBalancerSourceRanges: ['192.0.2.0/24'], internal: fwd(ep('10.0.1.2', 80)) });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [sctp, ranged])), emptyContents()));
  t.same(frontends(state), ['TCP 198.19.0.20:80 → default/ranged:http/TCP|internal|4 count 1 forward affinity 0']);
  t.equal(c.skipped.length, 2, `both reported: ${c.skipped.join('; ')}`);
});

t.test('two service ports wanting one frontend: the first in key order keeps it, the conflict is reported', async (t) => {
  const a = svc({ namespace: 'default', name: 'a', clusterIP: '198.19.0.30', externalIPs: ['203.0.113.5'], internal: fwd(ep('10.0.1.2', 80)) });
  const b = svc({ namespace: 'default', name: 'b', clusterIP: '198.19.0.31', externalIPs: ['203.0.113.5'], internal: fwd(ep('10.0.2.2', 80)) });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [a, b])), emptyContents()));
  t.match(frontends(state).find((l) => l.startsWith('TCP 203.0.113.5:80')), /default\/a:/);
  t.same(c.conflicts.map((x) => [x.kept, x.refused]), [['default/a:http/TCP', 'default/b:http/TCP']]);
  // a goes away: b must get the frontend (a partial sync falls back to a full build for this).
  const diff = c.partial(tables(table(4, [b])), changesOf([a.key]));
  apply(state, diff);
  t.match(frontends(state).find((l) => l.startsWith('TCP 203.0.113.5:80')), /default\/b:/, 'b took over the frontend');
});

t.test('a partial sync is the element diff of the changed service port, in the safe order', async (t) => {
  const other = svc({ namespace: 'default', name: 'other', clusterIP: '198.19.0.40', internal: fwd(ep('10.0.3.2', 80)) });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const state = emptyState();
  const t1 = tables(table(4, [web, other]));
  apply(state, c.full(t1, emptyContents()));
  c.commit();

  // One endpoint leaves web (both of its sets shrink from 2 to 1).
  const web2: ServiceEntry = { ...web, internal: fwd(ep('10.0.2.2', 8080)), external: fwd(ep('10.0.2.2', 8080)), cluster: fwd(ep('10.0.2.2', 8080)) };
  const diff = c.partial(tables(table(4, [web2, other])), changesOf([web.key]));
  const order = diff.phases.map((p) => p.map((o) => `${o.map}${o.upserts.length ? ` +${o.upserts.length}` : ''}${o.deletes.length ? ` -${o.deletes.length}` : ''}`).join(', '));
  t.same(order, ['ferry_backend +2, ferry_member +1', 'ferry_svc +4, ferry_xsvc +3', 'ferry_backend -2, ferry_member -1'], 'backends first, then the frontends that point at them, then what nothing points at');
  apply(state, diff);
  t.same(backendsOf(state, 'default/web:http/TCP|internal|4'), ['10.0.2.2:8080']);
  t.same(backendsOf(state, 'default/other:http/TCP|internal|4'), ['10.0.3.2:80'], 'the other Service untouched');

  // The Service goes: its frontends are deleted before its sets.
  const del = c.partial(tables(table(4, [other])), changesOf([web.key]));
  t.same(del.phases[0]?.map((o) => o.map), ['ferry_svc', 'ferry_xsvc'], 'frontends removed first');
  t.ok(del.phases[0]?.every((o) => o.upserts.length === 0), 'nothing written');
  apply(state, del);
  c.commit();
  t.same(frontends(state), ['TCP 198.19.0.40:80 → default/other:http/TCP|internal|4 count 1 forward affinity 0']);
  t.same(state, c.current(), 'the compiler\'s view equals what the maps hold');

  // An unchanged partial sync writes nothing.
  t.equal(c.partial(tables(table(4, [other])), changesOf([other.key])).size, 0);
});

t.test('full sync against a dump: only the difference is written; a restart over the same pins writes nothing', async (t) => {
  const c = new EbpfCompiler({ families: [4, 6], localhostNodePorts: true });
  const v6 = svc({ namespace: 'default', name: 'web6', family: 6, clusterIP: '2001:db8:19::10', internal: fwd(ep('2001:db8:1::2', 8080)) });
  const next = tables(table(4, [web]), table(6, [v6]));
  const state = emptyState();
  apply(state, c.full(next, contentsOf(state)));
  sizesAreRight(t, state);
  const restarted = new EbpfCompiler({ families: [4, 6], localhostNodePorts: true });
  t.equal(restarted.full(next, contentsOf(state)).size, 0, 'same IR, same pins: zero elements');
  // Someone deleted one frontend and added a stray one: the full sync repairs exactly that.
  const damaged = emptyState();
  for (const m of WRITTEN_MAPS) for (const [k, v] of state[m]) damaged[m].set(k, v);
  const gone = [...damaged.ferry_svc.keys()][0] as string;
  damaged.ferry_svc.delete(gone);
  damaged.ferry_backend.set(Buffer.alloc(8, 7).toString('latin1'), Buffer.alloc(20).toString('latin1'));
  const repair = new EbpfCompiler({ families: [4, 6], localhostNodePorts: true }).full(next, contentsOf(damaged));
  t.equal(repair.size, 2, 'one frontend restored, one stray backend removed');
  t.ok(addrBytes('2001:db8:19::10', 6), 'IPv6 addresses encode');
});

t.test('backend: prepare() attaches before the first sync, which takes it over; a failed one is the first sync\'s error', async (t) => {
  const maps = new FakeBpfMaps();
  const b = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  b.prepare?.();
  b.prepare?.();
  await new Promise((r) => setImmediate(r));
  t.ok(maps.attached, 'programs attached before any sync');
  t.equal(maps.attachCalls, 1, 'once, however often asked');
  await b.sync(null, tables(table(4, [web])), FULL);
  t.equal(maps.attachCalls, 1, 'the first sync used the prepared attach');
  t.same(backendsOf(maps.maps, 'default/web:http/TCP|internal|4'), ['10.0.1.2:8080', '10.0.2.2:8080']);

  const failing = new FakeBpfMaps();
  failing.failAttach = new Error('EPERM');
  const f = createEbpfBackend({ maps: failing, families: [4], localhostNodePorts: true });
  f.prepare?.();
  await t.rejects(f.sync(null, tables(table(4, [web])), FULL), { code: 'FERRY_ERR_EBPF_SYNC', stage: 'attach' }, 'reported by the first sync');
  await f.sync(null, tables(table(4, [web])), FULL);
  t.equal(failing.attachCalls, 2, 'the next sync attaches afresh');
  t.ok(failing.attached);
});

t.test('backend: an interface that appears between syncs gets the tc program on the link notification', async (t) => {
  const maps = new FakeBpfMaps();
  const b = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  t.equal(maps.linkListener, undefined, 'no subscription before the programs are attached');
  await b.sync(null, tables(table(4, [web])), FULL);
  t.same([...maps.tcOn], ['eth0'], 'the first sync attaches to what there is');
  t.type(maps.linkListener, 'function', 'subscribed after the first attach');
  maps.addInterface('veth9');
  await new Promise((r) => setImmediate(r));
  t.same([...maps.tcOn].sort(), ['eth0', 'veth9'], 'attached with no sync in between');
  await b.cleanup();
  t.equal(maps.linkListener, undefined, 'cleanup ends the subscription');
});

t.test('backend: first sync attaches, partial syncs write diffs, a failed apply surfaces as EbpfSyncError', async (t) => {
  const maps = new FakeBpfMaps();
  const b = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  const t1 = tables(table(4, [web]));
  await b.sync(null, t1, FULL);
  t.ok(maps.attached, 'programs attached on the first sync');
  t.equal(b.lastSync()?.full, true);
  const web2: ServiceEntry = { ...web, internal: fwd(ep('10.0.2.2', 8080)) };
  const t2 = tables(table(4, [web2]));
  await b.sync(t1, t2, changesOf([web.key]));
  t.equal(b.lastSync()?.full, false);
  t.same(backendsOf(maps.maps, 'default/web:http/TCP|internal|4'), ['10.0.2.2:8080']);
  maps.failNext = new Error('E2BIG');
  await t.rejects(b.sync(t2, tables(table(4, [])), changesOf([web.key])), { code: 'FERRY_ERR_EBPF_SYNC', stage: 'apply' });
  // The syncer's next sync after a failure is full: it reads the maps again and converges.
  await b.sync(null, tables(table(4, [])), FULL);
  t.same(frontends(maps.maps), [], 'converged to the empty table');
  t.equal(maps.maps.ferry_backend.size + maps.maps.ferry_member.size + maps.maps.ferry_setname.size, 0, 'no element left');
  await b.cleanup();
  t.notOk(maps.attached, 'cleanup detached');
  t.ok(await b.intact(), 'nothing to check before the next sync attaches again');
});

t.test('dual-stack: one service port key in both families gets a set per family, and partial syncs update both', async (t) => {
  const v4 = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', internal: fwd(ep('10.0.1.2', 8080)) });
  const v6 = svc({ namespace: 'default', name: 'web', family: 6, clusterIP: '2001:db8:19::10', internal: fwd(ep('2001:db8:1::2', 8080)) });
  t.equal(v4.key, v6.key, 'the IR keys both families\' entries alike');
  const c = new EbpfCompiler({ families: [4, 6], localhostNodePorts: false });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [v4]), table(6, [v6])), contentsOf(state)));
  t.same(frontends(state), [
    'TCP 198.19.0.10:80 → default/web:http/TCP|internal|4 count 1 forward affinity 0',
    'TCP [2001:db8:19::10]:80 → default/web:http/TCP|internal|6 count 1 forward affinity 0',
  ]);
  t.same(backendsOf(state, 'default/web:http/TCP|internal|4'), ['10.0.1.2:8080']);
  const v6b: ServiceEntry = { ...v6, internal: fwd(ep('2001:db8:1::3', 8080)) };
  apply(state, c.partial(tables(table(4, [v4]), table(6, [v6b])), changesOf([v4.key])));
  t.same(backendsOf(state, 'default/web:http/TCP|internal|4'), ['10.0.1.2:8080'], 'IPv4 set unchanged');
  t.equal(backendsOf(state, 'default/web:http/TCP|internal|6').length, 1, 'IPv6 set rewritten in place');
  t.match(backendsOf(state, 'default/web:http/TCP|internal|6')[0], /0003:8080$/, 'to the new IPv6 endpoint');
});

/** The tc frontends as readable lines: "TCP 203.0.113.20:80 → set <name> count N verdict V affinity A flags MASQ,SRCRANGE". */
function packetFrontends(state: MapState): string[] {
  const names = new Map<number, string>();
  for (const [k, v] of state.ferry_setname) names.set(Buffer.from(k, 'latin1').readUInt32LE(0), decodeSetName(v));
  const out: string[] = [];
  for (const [k, v] of state.ferry_xsvc) {
    const b = Buffer.from(v, 'latin1');
    const verdict = ['forward', 'reject', 'drop'][b.readUInt8(12)];
    const f = b.readUInt8(13);
    const flags = [f & XF_MASQ ? 'MASQ' : '', f & XF_SRCRANGE ? 'SRCRANGE' : '', f & XF_LOCAL ? 'LOCAL' : ''].filter((x) => x).join(',') || '-';
    out.push(`${describeSvcKey(k)} → ${names.get(b.readUInt32LE(0))} count ${b.readUInt32LE(4)} ${verdict} affinity ${b.readUInt32LE(8)} flags ${flags}`);
  }
  return out.sort();
}

t.test('every ClusterIP once, whatever its ports, and the service CIDRs: what no frontend takes is rejected or dropped (kube-proxy nftables)', async (t) => {
  const svcIPs = (state: MapState): string[] =>
    [...state.ferry_svcip.keys()].map((k) => {
      const b = Buffer.from(k, 'latin1');
      return b.readUInt8(16) === 4 ? [...b.subarray(0, 4)].join('.') : b.subarray(0, 16).toString('hex');
    }).sort();
  const cidrs = (state: MapState): string[] =>
    [...state.ferry_srcrange.keys()]
      .map((k) => Buffer.from(k, 'latin1'))
      .filter((b) => b.readUInt32BE(4) === serviceCIDRSet(4))
      .map((b) => `${[...b.subarray(8, 12)].join('.')}/${b.readUInt32LE(0) - 32}`)
      .sort();
  const http = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.30', internal: fwd(ep('10.0.1.2', 80)) });
  const metrics = svc({ namespace: 'default', name: 'web', portName: 'metrics', port: 9090, clusterIP: '198.19.0.30', internal: fwd(ep('10.0.1.2', 9090)) });
  const dns = svc({ namespace: 'kube-system', name: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.31', internal: REJECT });
  const sctp = svc({ namespace: 'default', name: 'sctp', protocol: 'SCTP', clusterIP: '198.19.0.32', internal: fwd(ep('10.0.1.3', 80)) });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: true });
  const state = emptyState();
  const cidr = { serviceCIDRs: ['198.19.0.0/16'] };
  apply(state, c.full(tables(table(4, [http, metrics, dns, sctp], cidr)), emptyContents()));
  c.commit();
  t.same(svcIPs(state), ['198.19.0.30', '198.19.0.31', '198.19.0.32'], 'one element per ClusterIP: two ports share one; one without endpoints and an SCTP one (not balanced; a TCP connect to it is still refused, as kube-proxy rejects) have theirs');
  t.same(cidrs(state), ['198.19.0.0/16'], 'the service CIDR, under its own set id');
  t.same([...c.current().ferry_svcip.keys()].sort(), [...state.ferry_svcip.keys()].sort(), 'current() re-derives them');

  apply(state, c.partial(tables(table(4, [metrics, dns, sctp], cidr)), changesOf([http.key])));
  c.commit();
  t.same(svcIPs(state), ['198.19.0.30', '198.19.0.31', '198.19.0.32'], 'one of two ports gone: its ClusterIP stays for the other');
  apply(state, c.partial(tables(table(4, [dns, sctp], cidr)), changesOf([metrics.key])));
  c.commit();
  t.same(svcIPs(state), ['198.19.0.31', '198.19.0.32'], 'the last port gone: so is the ClusterIP (an unallocated address now, dropped in the CIDR)');
  const moved = { ...dns, clusterIP: '198.19.0.41' };
  apply(state, c.partial(tables(table(4, [moved, sctp], { serviceCIDRs: ['198.19.0.0/16', '198.20.0.0/24'] })), changesOf([dns.key], true)));
  c.commit();
  t.same(svcIPs(state), ['198.19.0.32', '198.19.0.41'], 'a port whose ClusterIP changed moves its element');
  t.same(cidrs(state), ['198.19.0.0/16', '198.20.0.0/24'], 'a ServiceCIDR added');
});

/** Source ranges as "<set name> <cidr>". */
function sourceRanges(state: MapState): string[] {
  const names = new Map<number, string>();
  for (const [k, v] of state.ferry_setname) names.set(Buffer.from(k, 'latin1').readUInt32LE(0), decodeSetName(v));
  const out: string[] = [];
  for (const k of state.ferry_srcrange.keys()) {
    const b = Buffer.from(k, 'latin1');
    const bits = b.readUInt32LE(0) - 32;
    const id = b.readUInt32BE(4);
    const name = id === localSet(4) ? 'local|4' : id === localSet(6) ? 'local|6' : (names.get(id) ?? '?');
    const fam = name.endsWith('|6') ? 6 : 4;
    const ip = fam === 4 ? [...b.subarray(8, 12)].join('.') : b.subarray(8, 24).toString('hex');
    out.push(`${name} ${ip}/${bits}`);
  }
  return out.sort();
}

t.test('tc frontends: the external set, masquerade per the IR, source ranges for LB IPs, the SNAT address', async (t) => {
  const c = new EbpfCompiler({ families: [4, 6], localhostNodePorts: true });
  const state = emptyState();
  const local = svc({
    namespace: 'default',
    name: 'local',
    clusterIP: '198.19.0.14',
    nodePort: 30090,
    internal: fwd(ep('10.0.1.2', 80, true), ep('10.0.2.2', 80)),
    external: fwd(ep('10.0.1.2', 80, true)),
    cluster: fwd(ep('10.0.1.2', 80, true), ep('10.0.2.2', 80)),
    externalPolicyLocal: true,
  });
  const noLocal = svc({ namespace: 'default', name: 'nolocal', clusterIP: '198.19.0.15', nodePort: 30091, internal: fwd(ep('10.0.2.2', 80)), external: DROP, cluster: fwd(ep('10.0.2.2', 80)), externalPolicyLocal: true });
  const ranged = svc({
    namespace: 'default',
    name: 'ranged',
    clusterIP: '198.19.0.16',
    loadBalancerIPs: ['203.0.113.11'],
    loadBalancerSourceRanges: ['198.18.0.100/32', '10.1.2.3/8'],
    allowLoadBalancerIPSources: true,
    internal: fwd(ep('10.0.1.2', 80)),
    external: fwd(ep('10.0.1.2', 80)),
    cluster: fwd(ep('10.0.1.2', 80)),
  });
  const empty = svc({ namespace: 'default', name: 'empty', clusterIP: '198.19.0.17', nodePort: 30092, externalIPs: ['203.0.113.30'], internal: REJECT, external: REJECT, cluster: REJECT });
  const v6 = svc({ namespace: 'default', name: 'web6', family: 6, clusterIP: '2001:db8:19::10', nodePort: 30080, internal: fwd(ep('2001:db8:1::2', 8080)), external: fwd(ep('2001:db8:1::2', 8080)) });
  apply(
    state,
    c.full(tables(table(4, [web, local, noLocal, ranged, empty], { nodeIPs: ['192.0.2.10', '192.0.2.11'] }), table(6, [v6], { nodeIPs: ['2001:db8::10'] })), emptyContents()),
  );
  t.same(packetFrontends(state), [
    'TCP *:30080 (NodePort, IPv4) → default/web:http/TCP|external|4 count 2 forward affinity 0 flags MASQ',
    'TCP *:30080 (NodePort, IPv6) → default/web6:http/TCP|external|6 count 1 forward affinity 0 flags MASQ',
    'TCP *:30090 (NodePort, IPv4) → default/local:http/TCP|outside|4 count 1 forward affinity 0 flags LOCAL',
    'TCP *:30091 (NodePort, IPv4) → default/nolocal:http/TCP|outside|4 count 0 drop affinity 0 flags LOCAL',
    'TCP *:30092 (NodePort, IPv4) → default/empty:http/TCP|external|4 count 0 reject affinity 0 flags MASQ',
    'TCP 203.0.113.10:80 → default/web:http/TCP|external|4 count 2 forward affinity 0 flags MASQ',
    'TCP 203.0.113.11:80 → default/ranged:http/TCP|external|4 count 1 forward affinity 0 flags MASQ,SRCRANGE',
    'TCP 203.0.113.20:80 → default/web:http/TCP|external|4 count 2 forward affinity 0 flags MASQ',
    'TCP 203.0.113.30:80 → default/empty:http/TCP|external|4 count 0 reject affinity 0 flags MASQ',
  ]);
  t.same(backendsOf(state, 'default/local:http/TCP|outside|4'), ['10.0.1.2:80'], 'ETP Local: the tc path has the local endpoint only');
  t.same(backendsOf(state, 'default/local:http/TCP|external|4'), ['10.0.1.2:80', '10.0.2.2:80'], 'while local clients (socket LB) use the cluster-wide set');
  t.ok(frontends(state).includes('TCP *:30090 (NodePort, IPv4) → default/local:http/TCP|external|4 count 2 forward affinity 0'), 'which socket LB\'s entry of the same frontend holds, for tc\'s short-circuit (LOCAL) too');
  t.notOk(frontends(state).some((l) => l.startsWith('TCP 203.0.113.11')), 'LB IPs with source ranges stay off the socket path');
  t.same(
    sourceRanges(state),
    [
      'default/ranged:http/TCP|external|4 10.0.0.0/8',
      'default/ranged:http/TCP|external|4 198.18.0.100/32',
      'default/ranged:http/TCP|external|4 203.0.113.11/32',
      'local|4 198.18.0.0/16',
      'local|6 20010db8001800000000000000000000/64',
    ],
    'ranges (host bits cleared) and, as the IR allows, the LB IPs themselves; and each family\'s local-traffic CIDRs under a set id of their own',
  );
  const snat = [...state.ferry_snat].map(([k, v]) => `${Buffer.from(k, 'latin1').readUInt32LE(0)} ${Buffer.from(v, 'latin1').toString('hex')}`).sort();
  t.same(snat, ['4 c000020a000000000000000000000000', '6 20010db8000000000000000000000010'], 'masqueraded traffic leaves with the primary node address of each family');
  sizesAreRight(t, state);

  // A partial sync that removes the source ranges removes exactly their elements and the flag.
  const open = { ...ranged, loadBalancerSourceRanges: [], allowLoadBalancerIPSources: false };
  const d = c.partial(tables(table(4, [web, local, noLocal, open, empty], { nodeIPs: ['192.0.2.10', '192.0.2.11'] }), table(6, [v6], { nodeIPs: ['2001:db8::10'] })), changesOf([ranged.key]));
  apply(state, d);
  c.commit();
  t.same(sourceRanges(state), ['local|4 198.18.0.0/16', 'local|6 20010db8001800000000000000000000/64'], 'no ranges left but the local-traffic CIDRs');
  t.match(packetFrontends(state).find((l) => l.startsWith('TCP 203.0.113.11')), /flags MASQ$/, 'the LB IP is open to every source');
  t.ok(frontends(state).some((l) => l.startsWith('TCP 203.0.113.11')), 'and now socket-balanced too');

  // The node address changes: the SNAT address follows (a table-level change).
  const moved = c.partial(tables(table(4, [web, local, noLocal, open, empty], { nodeIPs: ['192.0.2.20'] }), table(6, [v6], { nodeIPs: ['2001:db8::10'] })), { full: false, changed: new Set(), tableChanged: true });
  apply(state, moved);
  t.match([...state.ferry_snat.values()].map((v) => Buffer.from(v, 'latin1').toString('hex')), ['c0000214000000000000000000000000', '20010db8000000000000000000000010']);
  t.same(state, c.current(), "the compiler's view equals what the maps hold");
});

t.test('an LB IP with source ranges and externalTrafficPolicy Local: a ferry_svc entry for tc\'s short-circuit alone (NOSOCK)', async (t) => {
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  const ranged = svc({
    namespace: 'default',
    name: 'rl',
    clusterIP: '198.19.0.18',
    loadBalancerIPs: ['203.0.113.12'],
    loadBalancerSourceRanges: ['10.244.0.0/24'],
    internal: fwd(ep('10.244.2.2', 80)),
    external: DROP,
    cluster: fwd(ep('10.244.2.2', 80)),
    externalPolicyLocal: true,
  });
  apply(state, c.full(tables(table(4, [ranged])), emptyContents()));
  t.same(packetFrontends(state), ['TCP 203.0.113.12:80 → default/rl:http/TCP|outside|4 count 0 drop affinity 0 flags SRCRANGE,LOCAL'], 'tc: the local set (none here), source ranges, Local');
  const lb = [...state.ferry_svc].filter(([k]) => describeSvcKey(k).startsWith('TCP 203.0.113.12:80'));
  t.equal(lb.length, 1, 'ferry_svc has the LB IP: the cluster-wide set a local pod is short-circuited to');
  const v = Buffer.from(lb[0]?.[1] ?? '', 'latin1');
  t.equal(v.readUInt8(13), SF_NOSOCK, 'flagged NOSOCK: socket LB leaves it alone (the source is unknown at connect time)');
  t.ok(frontends(state).includes('TCP 203.0.113.12:80 → default/rl:http/TCP|external|4 count 1 forward affinity 0'), 'pointing at the cluster-wide set');
  t.equal(c.skipped.length, 1, `still reported as not socket-balanced: ${c.skipped.join('; ')}`);
  sizesAreRight(t, state);
  // externalTrafficPolicy Cluster: no short-circuit, no entry.
  const cluster = c.partial(tables(table(4, [{ ...ranged, externalPolicyLocal: false, external: ranged.cluster }])), changesOf([ranged.key]));
  apply(state, cluster);
  c.commit();
  t.notOk(frontends(state).some((l) => l.startsWith('TCP 203.0.113.12')), 'with Cluster the LB IP stays off ferry_svc');
  t.same(state, c.current(), "the compiler's view equals what the maps hold");
});

t.test('srcRangeKey: LPM keys with the set id as a big-endian prefix; bad CIDRs refused', async (t) => {
  const k = srcRangeKey(0x01020304, '10.9.8.7/12', 4);
  t.ok(k);
  const b = Buffer.from(k ?? '', 'latin1');
  t.equal(b.readUInt32LE(0), 44, 'prefix length = 32 (set id) + 12');
  t.same([...b.subarray(4, 8)], [1, 2, 3, 4], 'set id big endian');
  t.same([...b.subarray(8, 12)], [10, 0, 0, 0], 'host bits cleared');
  t.equal(srcRangeKey(1, '10.0.0.0/33', 4), undefined);
  t.equal(srcRangeKey(1, '2001:db8::/32', 4), undefined, 'another family');
  t.equal(Buffer.from(srcRangeKey(1, '2001:db8::1/128', 6) ?? '', 'latin1').readUInt32LE(0), 160);
});

t.test('the backend attaches the tc program to interfaces that appeared since the last sync', async (t) => {
  const maps = new FakeBpfMaps();
  const backend = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  const tb = tables(table(4, [web]));
  await backend.sync(null, tb, FULL);
  t.same([...maps.tcOn], ['eth0'], 'the first sync: every interface there is');
  maps.interfaces = ['eth0', 'veth-pod1'];
  await backend.sync(tb, tb, changesOf([]));
  t.same([...maps.tcOn].sort(), ['eth0', 'veth-pod1'], 'a new pod interface gets the program on the next sync');
});

t.test('backend: a default cgroup root below its hierarchy\'s root (a container\'s cgroup namespace) is warned about once per attach', async (t) => {
  const warnings: { msg: string; fields?: Record<string, unknown> }[] = [];
  const log = { info: () => {}, v: () => {}, error: () => {}, warn: (msg: string, fields?: Record<string, unknown>) => warnings.push({ msg, fields }) };
  const maps = new FakeBpfMaps();
  maps.narrowCgroup = '/sys/fs/cgroup';
  await createEbpfBackend({ maps, families: [4], localhostNodePorts: true, log }).sync(null, tables(table(4, [web])), FULL);
  const w = warnings.filter((x) => /not the root of the node's cgroup hierarchy/.test(x.msg));
  t.equal(w.length, 1, 'one warning');
  t.equal(w[0]?.fields?.cgroup, '/sys/fs/cgroup', 'naming the cgroup');
  t.match(w[0]?.msg, /--ebpf-cgroup-root/, 'and the flag that fixes it');
  const quiet: string[] = [];
  const plain = new FakeBpfMaps();
  await createEbpfBackend({ maps: plain, families: [4], localhostNodePorts: true, log: { ...log, warn: (msg: string) => quiet.push(msg) } }).sync(null, tables(table(4, [web])), FULL);
  t.same(quiet.filter((m) => /cgroup hierarchy/.test(m)), [], 'nothing when the root is the hierarchy\'s');
});

/** The set id each named set has in ferry_setname. */
function setIdOf(state: MapState, setName: string): number {
  for (const [k, v] of state.ferry_setname) if (decodeSetName(v) === setName) return Buffer.from(k, 'latin1').readUInt32LE(0);
  return -1;
}

t.test('set ids are never reused while the space lasts: a UDP flow of a deleted Service cannot find itself a member of a new set', async (t) => {
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  const a = svc({ namespace: 'default', name: 'a', clusterIP: '198.19.0.50', protocol: 'UDP', internal: fwd(ep('10.0.5.2', 53)) });
  const b = svc({ namespace: 'default', name: 'b', clusterIP: '198.19.0.51', protocol: 'UDP', internal: fwd(ep('10.0.5.2', 53)) });
  apply(state, c.full(tables(table(4, [a])), emptyContents()));
  c.commit();
  const aId = setIdOf(state, 'default/a:http/UDP|internal|4');
  t.ok(aId > 0, `a's set has id ${aId}`);
  // a goes, b (the same pods) comes: b must not take a's id.
  apply(state, c.partial(tables(table(4, [])), changesOf([a.key])));
  c.commit();
  apply(state, c.partial(tables(table(4, [b])), changesOf([b.key])));
  c.commit();
  const bId = setIdOf(state, 'default/b:http/UDP|internal|4');
  t.ok(bId > aId, `b's set takes a new id (${bId}), not a's freed ${aId}`);

  // After a restart: on above every id the pins hold, also ids the setname map no longer names.
  const lost = emptyState();
  for (const m of WRITTEN_MAPS) for (const [k, v] of state[m]) if (m !== 'ferry_setname') lost[m].set(k, v);
  const restarted = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const fresh = svc({ namespace: 'default', name: 'c', clusterIP: '198.19.0.52', protocol: 'UDP', internal: fwd(ep('10.0.5.3', 53)) });
  const after = emptyState();
  for (const m of WRITTEN_MAPS) for (const [k, v] of lost[m]) after[m].set(k, v);
  apply(after, restarted.full(tables(table(4, [fresh])), contentsOf(lost)));
  const cId = setIdOf(after, 'default/c:http/UDP|internal|4');
  t.ok(cId > bId, `with ferry_setname lost, the new set's id ${cId} is above ${bId}, which ferry_svc and ferry_backend still used`);
});

t.test('an externalIP that is also an LB IP with source ranges: one tc frontend, ranges enforced, stable across restarts', async (t) => {
  const both = svc({
    namespace: 'default',
    name: 'both',
    clusterIP: '198.19.0.60',
    externalIPs: ['203.0.113.60'],
    loadBalancerIPs: ['203.0.113.60'],
    loadBalancerSourceRanges: ['10.244.0.0/24'],
    internal: fwd(ep('10.244.6.2', 80)),
  });
  const ir = tables(table(4, [both]));
  const state = emptyState();
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  apply(state, c.full(ir, emptyContents()));
  const tc = packetFrontends(state).filter((l) => l.startsWith('TCP 203.0.113.60:80'));
  t.equal(tc.length, 1, `one tc frontend: ${tc.join(' | ')}`);
  t.match(tc[0] ?? '', /flags .*SRCRANGE/, 'with the source-range check');
  t.notOk(frontends(state).some((l) => l.startsWith('TCP 203.0.113.60:80')), 'no socket-LB entry that would let local processes past the ranges');
  for (let i = 0; i < 3; i++) {
    const again = new EbpfCompiler({ families: [4], localhostNodePorts: false }).full(ir, contentsOf(state));
    t.equal(again.size, 0, `restart ${i + 1}: nothing to rewrite (the entry no longer flips between two values)`);
  }
});

t.test('a listed loopback NodePort address only with localhost NodePorts, IPv4 only', async (t) => {
  const np = svc({ namespace: 'default', name: 'np', clusterIP: '198.19.0.70', nodePort: 30070, internal: fwd(ep('10.0.7.2', 80)) });
  const list = { kind: 'list' as const, addresses: ['127.0.0.1', '192.0.2.10'] };
  const addrs = (localhostNodePorts: boolean): number => {
    const state = emptyState();
    apply(state, new EbpfCompiler({ families: [4], localhostNodePorts }).full(tables(table(4, [np], { nodePortAddresses: list })), emptyContents()));
    return state.ferry_nodeaddr.size;
  };
  t.equal(addrs(true), 2, 'with localhost NodePorts: 127.0.0.1 and the node address');
  t.equal(addrs(false), 1, 'without: the node address alone');
});

t.test('a service port that would overfill a map is refused by name; the others are written whole, and it follows once there is room', async (t) => {
  const ranges = (n: number, base: number): string[] => Array.from({ length: n }, (_, i) => `10.${base + (i >> 8)}.${i & 255}.0/24`);
  const lb = (name: string, ip: string, n: number, base: number): ServiceEntry =>
    svc({ namespace: 'default', name, clusterIP: `198.19.1.${base}`, loadBalancerIPs: [ip], loadBalancerSourceRanges: ranges(n, base), internal: fwd(ep('10.244.9.2', 80)) });
  // ferry_srcrange holds 65,536: 40,000 + 30,000 ranges do not both fit.
  const a = lb('a', '203.0.113.91', 40_000, 1);
  const b = lb('b', '203.0.113.92', 30_000, 200);
  const small = svc({ namespace: 'default', name: 'c', clusterIP: '198.19.1.250', internal: fwd(ep('10.244.9.3', 80)) });
  const c = new EbpfCompiler({ families: [4], localhostNodePorts: false });
  const state = emptyState();
  apply(state, c.full(tables(table(4, [a, b, small])), emptyContents()));
  c.commit();
  t.equal(c.refused.length, 1, `one refused: ${c.refused.join('; ')}`);
  t.match(c.refused[0] ?? '', /^default\/b:http\/TCP: not programmed: ferry_srcrange holds 65536 elements/, 'named, with the map and its size');
  t.ok(state.ferry_srcrange.size <= 65_536, `the map is not overfilled (${state.ferry_srcrange.size})`);
  t.ok(packetFrontends(state).some((l) => l.startsWith('TCP 203.0.113.91:80')), 'a, before it in key order, is written');
  t.notOk(packetFrontends(state).some((l) => l.startsWith('TCP 203.0.113.92:80')), 'b is not');
  t.ok(frontends(state).some((l) => l.startsWith('TCP 198.19.1.250:80')), 'a Service after it in key order is written too');
  // a goes: the partial sync is made as a full build, and b fits now.
  apply(state, c.partial(tables(table(4, [b, small])), changesOf([a.key])));
  c.commit();
  t.same(c.refused, [], 'nothing refused any more');
  t.ok(packetFrontends(state).some((l) => l.startsWith('TCP 203.0.113.92:80')), 'b is written');
  t.notOk(packetFrontends(state).some((l) => l.startsWith('TCP 203.0.113.91:80')), 'a is gone');
  t.same(state, c.current(), "the compiler's view equals what the maps hold");
  // A partial sync that would overfill: made as a full build, which refuses the newcomer.
  const d = lb('d', '203.0.113.93', 40_000, 100);
  apply(state, c.partial(tables(table(4, [b, d, small])), changesOf([d.key])));
  c.commit();
  t.equal(c.refused.length, 1, `d (after b in key order) refused: ${c.refused.join('; ')}`);
  t.match(c.refused[0] ?? '', /^default\/d:http\/TCP: not programmed/);
  t.ok(state.ferry_srcrange.size <= 65_536, `still not overfilled (${state.ferry_srcrange.size})`);
});

t.test('no Node address of a family: the SNAT address is one the host has (not loopback or link-local)', async (t) => {
  const np = svc({ namespace: 'default', name: 'np6', family: 6, clusterIP: '2001:db8:19::70', nodePort: 30071, internal: fwd(ep('2001:db8:1::7', 80)) });
  const state = emptyState();
  const host = { kind: 'all' as const, local: ['::1', 'fe80::1', '2001:db8:ff::5'] };
  apply(state, new EbpfCompiler({ families: [6], localhostNodePorts: false }).full(tables(table(4, []), table(6, [np], { nodeIPs: [], nodePortAddresses: host })), emptyContents()));
  t.same([...state.ferry_snat.values()].map((v) => Buffer.from(v, 'latin1').toString('hex')), ['20010db800ff00000000000000000005'], "the host's global address");
  const none = emptyState();
  apply(none, new EbpfCompiler({ families: [6], localhostNodePorts: false }).full(tables(table(4, []), table(6, [np], { nodeIPs: [], nodePortAddresses: { kind: 'all' as const, local: ['::1'] } })), emptyContents()));
  t.equal(none.ferry_snat.size, 0, 'none usable: none written');
});
