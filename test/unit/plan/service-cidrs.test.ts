// ServiceCIDRs from the API to the IR: parsed per object (bad entries skipped with a problem),
// merged per family by the tracker, carried into ProxyTable.serviceCIDRs, and a change to them
// is a table-level change (diffTables.tableChanged) that re-plans without touching entries.
import t from 'tap';
import { ChangeTracker } from '../../../src/model/tracker.js';
import { parseServiceCIDR } from '../../../src/model/servicecidr.js';
import { diffTables, planTables } from '../../../src/plan/planner.js';
import { svc } from '../model/fixtures.js';
import { defaultNode, NODE, OPTS, quietLog } from './helpers.js';

const cidrObj = (name: string, cidrs: unknown, rv = '1') => ({ apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name, resourceVersion: rv }, spec: { cidrs } });

t.test('parseServiceCIDR keeps valid ranges, canonical, one per family', async (t) => {
  t.same(parseServiceCIDR(cidrObj('kubernetes', ['10.96.0.0/16', 'FD00:96::/112'])), {
    name: 'kubernetes',
    cidrs: [
      { cidr: '10.96.0.0/16', family: 4 },
      { cidr: 'fd00:96::/112', family: 6 },
    ],
    problems: [],
  });
  const bad = parseServiceCIDR(cidrObj('x', ['10.96.0.1/16', 'nope', '10.97.0.0/16', 7]));
  t.same(bad.cidrs, [{ cidr: '10.96.0.0/16', family: 4 }], 'host bits cleared; second IPv4 and junk skipped');
  t.same(bad.problems, ['spec.cidrs[1]: "nope" is not a valid CIDR, ignored', 'spec.cidrs[2]: second IPv4 range 10.97.0.0/16, ignored', 'spec.cidrs[3]: 7 is not a valid CIDR, ignored']);
  t.match(parseServiceCIDR(cidrObj('y', 'all')).problems, [/^spec\.cidrs: "all" is not an array/]);
  t.match(parseServiceCIDR({ spec: { cidrs: ['10.0.0.0/8'] } }).problems, [/metadata\.name/]);
});

t.test('the tracker merges every ServiceCIDR per family into the snapshot; the planner carries them into the IR', async (t) => {
  const warns: string[] = [];
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: { ...quietLog, warn: (m: string) => warns.push(m) } });
  tr.setNode(defaultNode());
  tr.upsertService(svc({ name: 'web' }));
  let r = tr.takeSnapshot();
  const t0 = planTables(r.snapshots, OPTS);
  t.equal(t0[4].serviceCIDRs, undefined, 'none known: the field is absent (nothing to drop)');

  tr.upsertServiceCIDR(cidrObj('kubernetes', ['10.96.0.0/16', 'fd00:96::/112']));
  tr.upsertServiceCIDR(cidrObj('extra', ['10.100.0.0/24', 'bogus']));
  t.equal(tr.pending(), true, 'a ServiceCIDR change is pending work');
  t.equal(warns.length, 1, 'the bad entry is logged');
  r = tr.takeSnapshot();
  t.equal(r.changes[4].nodeChanged, true, 'reported as a table-level change');
  t.same(r.snapshots[4].serviceCIDRs, ['10.100.0.0/24', '10.96.0.0/16']);
  t.same(r.snapshots[6].serviceCIDRs, ['fd00:96::/112']);
  const t1 = planTables(r.snapshots, OPTS, t0, r.changes);
  t.same(t1[4].serviceCIDRs, ['10.100.0.0/24', '10.96.0.0/16']);
  t.same(t1[6].serviceCIDRs, ['fd00:96::/112']);
  const d1 = diffTables(t0, t1);
  t.equal(d1.tableChanged, true, 'diffTables: table-level change');
  t.same([...d1.changed], [], 'no service entry changed');
  t.same(t1[4].services.get('default/web:http/TCP'), t0[4].services.get('default/web:http/TCP'), 'the entry is re-planned equal');

  tr.upsertServiceCIDR(cidrObj('extra', ['10.100.0.0/24', 'bogus'], '2'));
  t.equal(tr.pending(), false, 'the same ranges again are no change');
  tr.deleteServiceCIDR(cidrObj('extra', []));
  r = tr.takeSnapshot();
  t.same(r.snapshots[4].serviceCIDRs, ['10.96.0.0/16'], 'a deleted ServiceCIDR no longer counts');
  const t2 = planTables(r.snapshots, OPTS, t1, r.changes);
  t.equal(diffTables(t1, t2).tableChanged, true);
  tr.deleteServiceCIDR(cidrObj('kubernetes', []));
  r = tr.takeSnapshot();
  t.equal(planTables(r.snapshots, OPTS, t2, r.changes)[4].serviceCIDRs, undefined, 'all gone: absent again');
});

t.test('nested ranges collapse to the outermost (an nftables interval set takes them without conflicts)', async (t) => {
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: quietLog });
  tr.setNode(defaultNode());
  tr.upsertServiceCIDR(cidrObj('kubernetes', ['10.96.0.0/16', 'fd00:96::/112']));
  tr.upsertServiceCIDR(cidrObj('bigger', ['10.96.0.0/12']));
  tr.upsertServiceCIDR(cidrObj('inside', ['10.100.4.0/24', 'fd00:96::80/121']));
  tr.upsertServiceCIDR(cidrObj('apart', ['192.168.200.0/24']));
  const r = tr.takeSnapshot();
  t.same(r.snapshots[4].serviceCIDRs, ['10.100.4.0/24', '10.96.0.0/12', '10.96.0.0/16', '192.168.200.0/24'], 'the model keeps every range');
  const planned = planTables(r.snapshots, OPTS);
  t.same(planned[4].serviceCIDRs, ['10.96.0.0/12', '192.168.200.0/24'], 'the IR keeps the outermost, disjoint');
  t.same(planned[6].serviceCIDRs, ['fd00:96::/112']);
});
