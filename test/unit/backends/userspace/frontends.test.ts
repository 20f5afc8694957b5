import t from 'tap';
import { planFrontends, type LocalAddresses } from '../../../../src/backends/userspace/frontends.js';
import { planReconcile } from '../../../../src/backends/userspace/reconcile.js';
import { DROP, REJECT, ep, fwd, svc, tables } from './fixtures.js';

const LOCAL: LocalAddresses = { 4: ['127.0.0.1', '192.0.2.1', '10.0.0.5'], 6: ['::1', '2001:db8:2::1', 'fe80::1'] };
const OPTS = { families: [4, 6] as const, localhostNodePorts: true };

const web = svc({ name: 'web', clusterIP: '198.19.0.10', port: 80, internal: fwd(ep('198.18.0.11', 8080)) });

t.test('ClusterIP, externalIPs and LB IPs become ferry0 addresses and one TCP socket each', async (t) => {
  const s = svc({
    name: 'web',
    internal: fwd(ep('198.18.0.11', 8080)),
    externalIPs: ['203.0.113.7'],
    loadBalancerIPs: ['198.51.100.9'],
  });
  const d = planFrontends(tables([s]), LOCAL, { ...OPTS, families: [4] });
  t.same([...d.addresses].sort(), ['198.19.0.10', '198.51.100.9', '203.0.113.7']);
  t.same([...d.frontends.keys()].sort(), ['TCP 198.19.0.10:80', 'TCP 198.51.100.9:80', 'TCP 203.0.113.7:80']);
  t.equal(d.frontends.get('TCP 198.51.100.9:80')?.role, 'loadBalancer');
  t.equal(d.frontends.get('TCP 203.0.113.7:80')?.role, 'externalIP');
});

t.test('NodePort with "all": one socket per non-loopback local address, plus 127.0.0.1 when localhost NodePorts are on', async (t) => {
  const s = svc({ name: 'np', nodePort: 30080, internal: fwd(ep('198.18.0.11', 8080)) });
  const on = planFrontends(tables([s]), LOCAL, { ...OPTS, families: [4] });
  const np = [...on.frontends.values()].filter((f) => f.role === 'nodePort').map((f) => f.key).sort();
  t.same(np, ['TCP 10.0.0.5:30080', 'TCP 127.0.0.1:30080', 'TCP 192.0.2.1:30080']);
  t.notOk(on.addresses.has('192.0.2.1'), 'node addresses are not put on ferry0');
  const off = planFrontends(tables([s]), LOCAL, { families: [4], localhostNodePorts: false });
  t.notOk(off.frontends.has('TCP 127.0.0.1:30080'), 'no localhost NodePort when the option is off');
});

t.test('NodePort with a list: exactly those addresses; IPv6 skips link-local and ::1', async (t) => {
  const s4 = svc({ name: 'np', nodePort: 30080, internal: fwd(ep('198.18.0.11', 8080)) });
  const s6 = svc({ name: 'np', family: 6, nodePort: 30080, internal: fwd(ep('2001:db8:18::11', 8080)) });
  const d = planFrontends(
    tables([s4], [s6], { nodePortAddresses: { kind: 'list', addresses: ['192.0.2.1'] } }),
    LOCAL,
    OPTS,
  );
  const np = [...d.frontends.values()].filter((f) => f.role === 'nodePort').map((f) => f.key).sort();
  t.same(np, ['TCP 192.0.2.1:30080', 'TCP [2001:db8:2::1]:30080']);
});

// kube-proxy's syncProxyRules and ferry's other modes skip a listed loopback address unless
// localhost NodePorts are on, and [::1] always; userspace mode listened on every listed address.
t.test('NodePort with a list: loopback only with localhost NodePorts, and never ::1', async (t) => {
  const s4 = svc({ name: 'np', nodePort: 30080, internal: fwd(ep('198.18.0.11', 8080)) });
  const s6 = svc({ name: 'np', family: 6, nodePort: 30080, internal: fwd(ep('2001:db8:18::11', 8080)) });
  const ir = tables([s4], [s6], { nodePortAddresses: { kind: 'list', addresses: ['127.0.0.1', '192.0.2.1'] } }, {
    nodePortAddresses: { kind: 'list', addresses: ['::1', '2001:db8:2::1'] },
  });
  const nodePorts = (localhostNodePorts: boolean): string[] =>
    [...planFrontends(ir, LOCAL, { families: [4, 6], localhostNodePorts }).frontends.values()]
      .filter((f) => f.role === 'nodePort')
      .map((f) => f.key)
      .sort();
  t.same(nodePorts(false), ['TCP 192.0.2.1:30080', 'TCP [2001:db8:2::1]:30080'], 'localhost NodePorts off');
  t.same(nodePorts(true), ['TCP 127.0.0.1:30080', 'TCP 192.0.2.1:30080', 'TCP [2001:db8:2::1]:30080'], 'on: 127.0.0.1 kept, ::1 not');
});

// The IR drops sources outside loadBalancerSourceRanges before the no-endpoint reject; with no
// socket the kernel answered every source ICMP port unreachable, those outside too.
t.test('UDP LB IP with source ranges and no endpoints keeps its socket, so outside sources are dropped', async (t) => {
  const ranged = svc({
    name: 'dns',
    protocol: 'UDP',
    port: 53,
    clusterIP: '198.19.0.53',
    internal: REJECT,
    externalIPs: ['203.0.113.7'],
    loadBalancerIPs: ['198.51.100.9'],
    loadBalancerSourceRanges: ['203.0.113.0/24'],
  });
  const d = planFrontends(tables([ranged]), LOCAL, { ...OPTS, families: [4] });
  t.same([...d.frontends.keys()], ['UDP 198.51.100.9:53'], 'only the LB IP, whose ranges apply; ClusterIP and externalIP stay unbound (ICMP)');
  const open = svc({ ...ranged, name: 'dns2', loadBalancerSourceRanges: [] });
  t.same([...planFrontends(tables([open]), LOCAL, { ...OPTS, families: [4] }).frontends.keys()], [], 'without ranges: no socket at all');
});

t.test('an externalIP that is already a node address is not added to ferry0 but still served', async (t) => {
  const s = svc({ name: 'web', internal: fwd(ep('198.18.0.11', 8080)), externalIPs: ['192.0.2.1'], port: 8443 });
  const d = planFrontends(tables([s]), LOCAL, { ...OPTS, families: [4] });
  t.notOk(d.addresses.has('192.0.2.1'));
  t.ok(d.frontends.has('TCP 192.0.2.1:8443'));
});

t.test('UDP with verdict reject has no socket (the kernel answers ICMP); drop keeps one; SCTP is unsupported', async (t) => {
  const rej = svc({ name: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: REJECT });
  const drop = svc({ name: 'dns2', protocol: 'UDP', port: 53, clusterIP: '198.19.0.54', internal: DROP });
  const sctp = svc({ name: 'sig', protocol: 'SCTP', port: 9, clusterIP: '198.19.0.55', internal: fwd(ep('198.18.0.11', 9)) });
  const tcpRej = svc({ name: 'tcp', clusterIP: '198.19.0.56', internal: REJECT });
  const d = planFrontends(tables([rej, drop, sctp, tcpRej]), LOCAL, { ...OPTS, families: [4] });
  t.notOk(d.frontends.has('UDP 198.19.0.53:53'), 'no socket for UDP reject');
  t.ok(d.addresses.has('198.19.0.53'), 'but its address is held (other ports may use it)');
  t.ok(d.frontends.has('UDP 198.19.0.54:53'), 'UDP drop keeps its socket');
  t.ok(d.frontends.has('TCP 198.19.0.56:80'), 'TCP reject keeps its socket (it resets)');
  t.same(d.unsupported, [sctp.key]);
  t.notOk(d.addresses.has('198.19.0.55'));
});

t.test('two service ports on the same socket: the first in key order keeps it, the conflict is reported', async (t) => {
  const a = svc({ name: 'a', internal: fwd(ep('198.18.0.11', 1)), externalIPs: ['203.0.113.7'] });
  const b = svc({ name: 'b', clusterIP: '198.19.0.11', internal: fwd(ep('198.18.0.12', 1)), externalIPs: ['203.0.113.7'] });
  const d = planFrontends(tables([b, a]), LOCAL, { ...OPTS, families: [4] });
  t.equal(d.frontends.get('TCP 203.0.113.7:80')?.service, a.key);
  t.same(d.conflicts, [{ key: 'TCP 203.0.113.7:80', kept: a.key, refused: b.key }]);
});

t.test('families not served are ignored; IPv6 addresses are normalized', async (t) => {
  const s6 = svc({ name: 'web', family: 6, clusterIP: '2001:0db8:0019:0000::0010', internal: fwd(ep('2001:db8:18::11', 80)) });
  const only4 = planFrontends(tables([web], [s6]), LOCAL, { ...OPTS, families: [4] });
  t.same([...only4.addresses], ['198.19.0.10']);
  const both = planFrontends(tables([web], [s6]), LOCAL, OPTS);
  t.ok(both.addresses.has('2001:db8:19::10'));
  t.ok(both.frontends.has('TCP [2001:db8:19::10]:80'));
});

t.test('reconcile: unchanged sockets and addresses are not in the plan; others are added/removed/re-pointed', async (t) => {
  const other = svc({ name: 'other', clusterIP: '198.19.0.20', internal: fwd(ep('198.18.0.12', 80)) });
  const prev = planFrontends(tables([web, other]), LOCAL, { ...OPTS, families: [4] });
  // web's endpoints change (no socket change), other goes away, api arrives, and web's
  // ClusterIP socket now belongs to a renamed service port with the same address.
  const webMoved = svc({ name: 'web', clusterIP: '198.19.0.10', internal: fwd(ep('198.18.0.99', 8080)) });
  const api = svc({ name: 'api', clusterIP: '198.19.0.30', port: 443, internal: fwd(ep('198.18.0.13', 8443)) });
  const next = planFrontends(tables([webMoved, api]), LOCAL, { ...OPTS, families: [4] });
  const p = planReconcile({ addresses: prev.addresses, frontends: prev.frontends }, next);
  t.same(p.addAddresses, ['198.19.0.30']);
  t.same(p.removeAddresses, ['198.19.0.20']);
  t.same(p.open.map((f) => f.key), ['TCP 198.19.0.30:443']);
  t.same(p.close, ['TCP 198.19.0.20:80']);
  t.same(p.retarget, [], 'an endpoint change does not touch the socket');

  const renamed = svc({ name: 'web2', clusterIP: '198.19.0.10', internal: fwd(ep('198.18.0.11', 8080)) });
  const next2 = planFrontends(tables([renamed, other]), LOCAL, { ...OPTS, families: [4] });
  const p2 = planReconcile({ addresses: prev.addresses, frontends: prev.frontends }, next2);
  t.same(p2.open, []);
  t.same(p2.close, []);
  t.same(p2.retarget.map((f) => `${f.key} → ${f.service}`), [`TCP 198.19.0.10:80 → ${renamed.key}`]);
});

t.test('reconcile: addresses held on ferry0 that the IR no longer wants are removed; nothing else is touched', async (t) => {
  const want = planFrontends(tables([web]), LOCAL, { ...OPTS, families: [4] });
  const p = planReconcile({ addresses: new Set(['198.19.0.10', '198.19.0.77']), frontends: new Map() }, want);
  t.same(p.removeAddresses, ['198.19.0.77']);
  t.same(p.addAddresses, []);
  t.same(p.open.map((f) => f.key), ['TCP 198.19.0.10:80']);
});
