import t from 'tap';
import { ChangeTracker } from '../../../src/model/tracker.js';
import type { Logger } from '../../../src/util/log.js';
import { FAMILIES, ip, node, slice, svc } from './fixtures.js';

function capture(): { log: Logger; warns: string[] } {
  const warns: string[] = [];
  const log: Logger = {
    info: () => {},
    v: () => {},
    warn: (msg, fields) => warns.push(`${msg} ${JSON.stringify(fields)}`),
    error: () => {},
  };
  return { log, warns };
}

function tracker(nodeName = 'n1') {
  const c = capture();
  return { tr: new ChangeTracker({ nodeName, families: [4, 6], log: c.log }), warns: c.warns };
}

const changedOf = (r: ReturnType<ChangeTracker['takeSnapshot']>, f: 4 | 6) => [...r.changes[f].changed].sort();

for (const f of FAMILIES) {
  t.test(`IPv${f}: add, update, delete produce exact change sets`, async (t) => {
    const { tr } = tracker();
    t.equal(tr.pending(), false);
    tr.upsertService(svc({ families: [f], ports: [{ name: 'http', port: 80 }, { name: 'dns', port: 53, protocol: 'UDP' }] }));
    tr.upsertEndpointSlice(slice({ family: f, ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: ip(f, 1), node: 'n1' }] }));
    t.equal(tr.pending(), true);
    let r = tr.takeSnapshot();
    t.same(changedOf(r, f), ['default/web:dns/UDP', 'default/web:http/TCP']);
    t.same(changedOf(r, f === 4 ? 6 : 4), [], 'other family untouched');
    t.equal(r.snapshots[f].services.size, 2);
    const eps = r.snapshots[f].endpoints.get('default/web:http/TCP')!;
    t.same(eps.map((e) => [e.ip, e.port, e.isLocal]), [[ip(f, 1), 8080, true]]);
    t.same(r.snapshots[f].endpoints.get('default/web:dns/UDP'), []);
    t.equal(tr.pending(), false);

    // endpoint change touches only the port it belongs to
    tr.upsertEndpointSlice(slice({ family: f, ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: ip(f, 1), node: 'n1' }, { ip: ip(f, 2) }], resourceVersion: '2' }));
    r = tr.takeSnapshot();
    t.same(changedOf(r, f), ['default/web:http/TCP']);

    tr.deleteService(svc({ families: [f] }));
    r = tr.takeSnapshot();
    t.same(changedOf(r, f), ['default/web:dns/UDP', 'default/web:http/TCP']);
    t.equal(r.snapshots[f].services.size, 0);
    t.equal(r.snapshots[f].endpoints.size, 0, 'endpoints of a deleted service are not kept');
  });

  t.test(`IPv${f}: add then delete between syncs reports nothing; unrelated update reports nothing`, async (t) => {
    const { tr } = tracker();
    tr.upsertService(svc({ families: [f] }));
    tr.takeSnapshot();
    tr.upsertService(svc({ name: 'tmp', families: [f] }));
    tr.upsertEndpointSlice(slice({ service: 'tmp', family: f, endpoints: [{ ip: ip(f, 3) }] }));
    t.equal(tr.pending(), true);
    tr.deleteEndpointSlice(slice({ service: 'tmp', family: f }));
    tr.deleteService(svc({ name: 'tmp', families: [f] }));
    t.equal(tr.pending(), false, 'add+delete cancels out');
    let r = tr.takeSnapshot();
    t.same(changedOf(r, f), []);

    tr.upsertService(svc({ families: [f], resourceVersion: '99', annotations: { unrelated: 'yes' }, labels: { team: 'x' } }));
    t.equal(tr.pending(), false, 'annotation/label/resourceVersion-only update is not a change');
    r = tr.takeSnapshot();
    t.same(changedOf(r, f), []);

    // a real change, then reverted before the sync, is no change either
    tr.upsertService(svc({ families: [f], ports: [{ name: 'http', port: 81 }] }));
    t.equal(tr.pending(), true);
    tr.upsertService(svc({ families: [f] }));
    t.equal(tr.pending(), false);
  });

  t.test(`IPv${f}: snapshots are immutable and share unchanged objects`, async (t) => {
    const { tr } = tracker();
    for (let i = 0; i < 5; i++) {
      tr.upsertService(svc({ name: `s${i}`, families: [f] }));
      tr.upsertEndpointSlice(slice({ service: `s${i}`, family: f, endpoints: [{ ip: ip(f, i + 1) }] }));
    }
    const r1 = tr.takeSnapshot();
    tr.upsertEndpointSlice(slice({ service: 's2', family: f, endpoints: [{ ip: ip(f, 3) }, { ip: ip(f, 30) }] }));
    const r2 = tr.takeSnapshot();
    const a = r1.snapshots[f];
    const b = r2.snapshots[f];
    t.equal(a.services, b.services, 'only endpoints changed: the services map is shared');
    t.not(a.endpoints, b.endpoints, 'a new endpoints map for the new snapshot');
    t.equal(a.endpoints.get('default/s2:http/TCP')!.length, 1, 'old snapshot unchanged');
    t.equal(b.endpoints.get('default/s2:http/TCP')!.length, 2);
    for (const k of a.services.keys()) t.equal(a.services.get(k), b.services.get(k), `ServicePort ${k} shared`);
    t.equal(a.endpoints.get('default/s1:http/TCP'), b.endpoints.get('default/s1:http/TCP'), 'unchanged endpoint list shared');
    t.ok(Object.isFrozen(b.services.get('default/s1:http/TCP')), 'ServicePort frozen');
    t.ok(Object.isFrozen(b.endpoints.get('default/s2:http/TCP')), 'endpoint list frozen');
    const r3 = tr.takeSnapshot();
    t.equal(r3.snapshots[f], b, 'no changes: the same snapshot object');
  });
}

t.test('slice moving between services updates both', async (t) => {
  const { tr } = tracker();
  tr.upsertService(svc({ name: 'a' }));
  tr.upsertService(svc({ name: 'b' }));
  tr.upsertEndpointSlice(slice({ name: 'sl', service: 'a', endpoints: [{ ip: ip(4, 1) }] }));
  tr.takeSnapshot();
  tr.upsertEndpointSlice(slice({ name: 'sl', service: 'b', endpoints: [{ ip: ip(4, 1) }] }));
  const r = tr.takeSnapshot();
  t.same(changedOf(r, 4), ['default/a:http/TCP', 'default/b:http/TCP']);
  t.same(r.snapshots[4].endpoints.get('default/a:http/TCP'), []);
  t.equal(r.snapshots[4].endpoints.get('default/b:http/TCP')!.length, 1);
  tr.upsertEndpointSlice(slice({ name: 'sl', service: 'b', labels: { 'service.kubernetes.io/headless': '' } }));
  t.same(changedOf(tr.takeSnapshot(), 4), ['default/b:http/TCP'], 'slice turning headless acts as a delete');
});

t.test('endpoints arriving before their service are kept', async (t) => {
  const { tr } = tracker();
  tr.upsertEndpointSlice(slice({ endpoints: [{ ip: ip(4, 1) }] }));
  t.same(changedOf(tr.takeSnapshot(), 4), [], 'no service, no service port');
  tr.upsertService(svc());
  const r = tr.takeSnapshot();
  t.same(changedOf(r, 4), ['default/web:http/TCP']);
  t.equal(r.snapshots[4].endpoints.get('default/web:http/TCP')!.length, 1);
});

/** How many Services the tracker holds state for (private; read to prove it is freed). */
const stateCount = (tr: ChangeTracker): number => (tr as unknown as { states: Map<string, unknown> }).states.size;

t.test('state of a Service that became skipped and was then deleted is freed; skipped Services hold none', async (t) => {
  const { tr } = tracker();
  tr.upsertService(svc());
  tr.takeSnapshot();
  tr.upsertService({ ...svc(), spec: { type: 'ExternalName', externalName: 'example.com' } });
  t.same(changedOf(tr.takeSnapshot(), 4), ['default/web:http/TCP'], 'turning ExternalName removes the port');
  tr.deleteService(svc());
  t.equal(tr.pending(), false, 'deleting a skipped Service changes nothing');
  tr.takeSnapshot();
  t.equal(stateCount(tr), 0, 'no state left after the delete');

  tr.upsertService({ ...svc({ name: 'ext' }), spec: { type: 'ExternalName', externalName: 'example.com' } });
  tr.upsertService({ ...svc({ name: 'headless' }), spec: { clusterIP: 'None', ports: [{ port: 80 }] } });
  t.equal(stateCount(tr), 0, 'ExternalName and headless Services keep no state');
  tr.upsertEndpointSlice(slice({ service: 'headless', endpoints: [{ ip: ip(4, 1) }] }));
  t.equal(stateCount(tr), 1, 'a slice of a skipped Service is kept, for when the Service is proxied');
  tr.upsertService(svc({ name: 'headless' }));
  const r = tr.takeSnapshot();
  t.same(r.snapshots[4].endpoints.get('default/headless:http/TCP')?.map((e) => e.ip), [ip(4, 1)], 'and used then');
  tr.deleteEndpointSlice(slice({ service: 'headless' }));
  tr.deleteService(svc({ name: 'headless' }));
  tr.takeSnapshot();
  t.equal(stateCount(tr), 0);
});

t.test('names the API server would refuse never become keys: "/" in a namespace, ":" in a name', async (t) => {
  const { tr, warns } = tracker();
  // Namespace "a/b", Service "s" and namespace "a", Service "b/s" would both be "a/b/s"; a slice
  // in "a/b" was stored as "c" and removed as "b/c", leaving its endpoint behind for good.
  tr.upsertService(svc({ ns: 'a/b', name: 's' }));
  tr.upsertService(svc({ ns: 'a/b', name: 's' }));
  tr.upsertService(svc({ ns: 'a', name: 'b/s' }));
  tr.upsertEndpointSlice(slice({ ns: 'a/b', service: 's', name: 'c', endpoints: [{ ip: ip(4, 1) }] }));
  tr.upsertEndpointSlice(slice({ ns: 'a', service: 'b/s', name: 'c', endpoints: [{ ip: ip(4, 2) }] }));
  // "ns/a" and "ns/a:x" share the prefix "ns/a:" the planner groups a Service's ports by.
  tr.upsertService(svc({ ns: 'ns', name: 'a' }));
  tr.upsertService(svc({ ns: 'ns', name: 'a:x' }));
  tr.upsertEndpointSlice(slice({ ns: 'ns', service: 'a:x', name: 'ax', endpoints: [{ ip: ip(4, 3), node: 'n1' }] }));
  const r = tr.takeSnapshot();
  t.same([...r.snapshots[4].services.keys()], ['ns/a:http/TCP'], 'only the valid Service has ports');
  t.same([...r.snapshots[4].endpoints.entries()], [['ns/a:http/TCP', []]], 'and no endpoint of an invalid slice');
  t.equal(stateCount(tr), 1, 'state for ns/a only');
  t.equal(warns.length, 6, `one warning per invalid object, however often it comes: ${warns.join('\n')}`);
  t.match(warns.join('\n'), /"object":"a\/b\/s".*metadata\.namespace: \\"a\/b\\" is not/);
  t.match(tr.problems().get('EndpointSlice ns/ax'), [/service-name"\]: "a:x" is not a valid Service name/]);

  tr.deleteEndpointSlice(slice({ ns: 'a/b', service: 's', name: 'c' }));
  tr.deleteService(svc({ ns: 'a/b', name: 's' }));
  tr.deleteService(svc({ ns: 'ns', name: 'a:x' }));
  t.equal(tr.pending(), false, 'deleting them changes nothing');
  t.equal(tr.problems().has('Service a/b/s'), false, 'problems forgotten on delete');
  t.equal(tr.problems().has('Service ns/a:x'), false);
});

t.test('node changes: addresses, zone or podCIDRs', async (t) => {
  const { tr } = tracker('n1');
  tr.setNode(node('n1', [['InternalIP', '198.18.9.1'], ['InternalIP', '2001:db8:9::1']], { 'topology.kubernetes.io/zone': 'z1' }));
  t.equal(tr.pending(), true);
  let r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, true);
  t.equal(r.changes[6].nodeChanged, true);
  t.same(r.snapshots[4].node, { name: 'n1', addresses: ['198.18.9.1', '2001:db8:9::1'], zone: 'z1' });
  tr.setNode(node('n1', [['InternalIP', '198.18.9.1'], ['InternalIP', '2001:db8:9::1']], { 'topology.kubernetes.io/zone': 'z1' }));
  t.equal(tr.pending(), false, 'same node again: no change');
  r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, false);
  // kube-proxy's NodeTopologyConfig passes on the zone label only: another label's change
  // (a controller's heartbeat) must not re-plan every Service.
  tr.setNode(node('n1', [['InternalIP', '198.18.9.1'], ['InternalIP', '2001:db8:9::1']], { 'topology.kubernetes.io/zone': 'z1', 'example.com/heartbeat': '2' }));
  t.equal(tr.pending(), false, 'an unrelated label change is no node change');
  r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, false);
  t.equal(r.changes[6].nodeChanged, false);
  tr.setNode(node('n1', [['ExternalIP', '192.0.2.1'], ['InternalIP', '198.18.9.1']], { 'topology.kubernetes.io/zone': 'z2' }));
  r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, true);
  t.same(r.snapshots[4].node.addresses, ['198.18.9.1', '192.0.2.1'], 'InternalIPs first');
  t.equal(r.snapshots[4].node.zone, 'z2');
  // Only spec.podCIDRs changes (detect-local NodeCIDR reads them): still a node change.
  const withCIDRs = node('n1', [['ExternalIP', '192.0.2.1'], ['InternalIP', '198.18.9.1']], { 'topology.kubernetes.io/zone': 'z2' });
  withCIDRs.spec = { podCIDRs: ['198.19.1.0/24'] };
  tr.setNode(withCIDRs);
  t.equal(tr.pending(), true, 'a podCIDRs change is pending');
  r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, true);
  t.same(r.snapshots[4].node.podCIDRs, ['198.19.1.0/24']);
});

t.test('bad objects: logged once per version, listed in problems(), never affect others', async (t) => {
  const { tr, warns } = tracker();
  tr.upsertService(svc({ name: 'good' }));
  const bad = svc({ name: 'bad', ports: [{ name: 'x', port: 99999 }] });
  tr.upsertService(bad);
  tr.upsertService(bad);
  t.equal(warns.length, 1, `expected one warning, got ${JSON.stringify(warns)}`);
  t.match(warns[0], /default\/bad/);
  t.match(warns[0], /spec\.ports\[0\]\.port: 99999 out of range/);
  tr.upsertService(svc({ name: 'bad', ports: [{ name: 'x', port: 99999 }], resourceVersion: '2' }));
  t.equal(warns.length, 2, 'a new version is logged again');
  t.same(tr.problems().get('Service default/bad'), ['spec.ports[0].port: 99999 out of range']);
  const r = tr.takeSnapshot();
  t.same([...r.snapshots[4].services.keys()], ['default/good:http/TCP']);
  tr.deleteService(bad);
  t.equal(tr.problems().has('Service default/bad'), false, 'problems forgotten on delete');
  tr.upsertService({ metadata: 3 } as never);
  tr.upsertEndpointSlice('junk' as never);
  tr.deleteEndpointSlice(null as never);
  tr.deleteService(undefined as never);
  t.pass('garbage did not throw');
});

t.test('trigger times of changed objects are reported once', async (t) => {
  const tr = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log: capture().log, startTime: new Date('2024-01-01T00:00:00Z') });
  tr.upsertService(svc());
  tr.upsertEndpointSlice(slice({ endpoints: [{ ip: ip(4, 1) }], annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-01-02T03:04:05Z' } }));
  const r = tr.takeSnapshot();
  t.same(r.triggerTimes.map((d) => d.toISOString()), ['2024-01-02T03:04:05.000Z']);
  t.same(tr.takeSnapshot().triggerTimes, []);
  tr.upsertEndpointSlice(slice({ endpoints: [{ ip: ip(4, 1) }], resourceVersion: '7', annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-01-02T03:05:00Z' } }));
  t.same(tr.takeSnapshot().triggerTimes, [], 'no relevant change, no trigger time');
});

t.test('trigger times from before the tracker started are not reported (kube-proxy)', async (t) => {
  const tr = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log: capture().log, startTime: new Date('2024-06-01T00:00:00Z') });
  tr.upsertService(svc());
  tr.upsertEndpointSlice(slice({ endpoints: [{ ip: ip(4, 1) }], annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2024-01-02T03:04:05Z' } }));
  const r = tr.takeSnapshot();
  t.equal(r.changes[4].changed.size, 1, 'the change itself is reported');
  t.same(r.triggerTimes, [], 'but not its trigger time: it predates the proxy');
});

// A Service of many ports whose slices come and go a few at a time: the incremental snapshot
// (which re-evaluates only the ports a changed slice names) must equal what a fresh tracker
// builds from the same objects, port by port, after every step.
t.test('random slice edits on a many-port Service: incremental snapshots equal a fresh build', async (t) => {
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return Math.floor((seed / 0x80000000) * n); // the high bits: an LCG's low bits cycle short
  };
  const PORTS = 12;
  const ports = Array.from({ length: PORTS }, (_, i) => ({ name: `p${i}`, port: 1000 + i, protocol: i % 3 === 0 ? 'UDP' : 'TCP' }));
  const { tr } = tracker();
  const service = svc({ ports: ports.map((p) => ({ ...p })) });
  tr.upsertService(service);
  const slices = new Map<string, ReturnType<typeof slice>>();
  let version = 1;
  for (let step = 0; step < 300; step++) {
    const edits = rand(4) === 0 ? 2 : 1;
    for (let e = 0; e < edits; e++) {
      const name = `web-${rand(6)}`;
      if (slices.has(name) && rand(4) === 0) {
        tr.deleteEndpointSlice(slices.get(name)!);
        slices.delete(name);
        continue;
      }
      const mine = ports.filter(() => rand(3) === 0).map((p) => ({ name: p.name, port: 8000 + rand(3), protocol: p.protocol }));
      const eps = Array.from({ length: rand(4) }, () => ({ ip: ip(4, 1 + rand(8)), node: rand(2) === 0 ? 'n1' : 'n2', ready: rand(5) !== 0 }));
      const s = slice({ name, ports: mine, endpoints: eps, resourceVersion: String(++version) });
      tr.upsertEndpointSlice(s);
      slices.set(name, s);
    }
    if (rand(10) === 0) {
      // Sometimes the Service itself changes too (a new object: every port is looked at).
      tr.upsertService(svc({ ports: ports.map((p) => ({ ...p })), resourceVersion: String(++version) }));
    }
    const got = tr.takeSnapshot().snapshots[4];
    const fresh = tracker().tr;
    fresh.upsertService(service);
    for (const s of slices.values()) fresh.upsertEndpointSlice(s);
    const want = fresh.takeSnapshot().snapshots[4];
    const norm = (m: ReadonlyMap<string, readonly { ip: string; port: number; ready: boolean; isLocal: boolean }[]>) =>
      [...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.map((x) => `${x.ip}:${x.port}:${x.ready}:${x.isLocal}`)]);
    const a = norm(got.endpoints);
    const b = norm(want.endpoints);
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      t.same(a, b, `step ${step}: endpoints per port`);
      return;
    }
  }
  t.pass('300 steps: every snapshot equal to a fresh build');
});
