import t from 'tap';
import ipaddr from 'ipaddr.js';
import * as A from '../../../../src/sim/cluster/addressing.js';

function inside(addr: string, cidr: string): boolean {
  const a = ipaddr.parse(addr);
  const [net, bits] = ipaddr.parseCIDR(cidr);
  return a.kind() === net.kind() && a.match([net, bits]);
}

t.test('random prefixes are "fy" + 4 base36 characters and valid', async (t) => {
  for (let i = 0; i < 50; i++) {
    const p = A.randomPrefix();
    t.match(p, /^fy[a-z0-9]{4}$/, `prefix ${p}`);
    t.doesNotThrow(() => A.validatePrefix(p));
  }
});

t.test('prefixes that would overflow interface names or leave the fy space are rejected', async (t) => {
  t.throws(() => A.validatePrefix('fyabcde'), A.InvalidPrefixError);
  t.throws(() => A.validatePrefix('xyab'), A.InvalidPrefixError);
  t.throws(() => A.validatePrefix('fyAB'), A.InvalidPrefixError);
});

t.test('every name fits IFNAMSIZ and starts with the prefix, at the largest node and pod numbers', async (t) => {
  const p = 'fyzz99';
  const names = [A.hostVeth(p), A.podVeth(p, A.MAX_NODES, A.MAX_PODS_PER_NODE)];
  for (const n of names) {
    t.ok(n.length <= 15, `${n} is ${n.length} characters`);
    t.ok(n.startsWith(p), `${n} starts with ${p}`);
  }
  for (const ns of [A.lanNetns(p), A.clientNetns(p), A.nodeNetns(p, 3), A.podNetns(p, 3, 7)]) t.ok(ns.startsWith(p + '-'), ns);
});

t.test('node and pod addresses fall in their documented ranges', async (t) => {
  for (const i of [1, 2, 9, 10, A.MAX_NODES]) {
    t.ok(inside(A.nodeIP(i), A.LAN_CIDR), `node ${i} ${A.nodeIP(i)}`);
    t.ok(inside(A.nodeIP6(i), A.LAN_CIDR6), `node ${i} ${A.nodeIP6(i)}`);
    t.not(A.nodeIP(i), A.CLIENT_IP);
    t.not(A.nodeIP(i), A.HOST_IP);
    t.ok(inside(A.podCIDR(i).split('/')[0] as string, A.CLUSTER_CIDR));
    t.ok(inside(A.podCIDR6(i).split('/')[0] as string, A.CLUSTER_CIDR6));
    for (const k of [1, 2, A.MAX_PODS_PER_NODE]) {
      t.ok(inside(A.podIP(i, k), A.podCIDR(i)), `${A.podIP(i, k)} in ${A.podCIDR(i)}`);
      t.ok(inside(A.podIP6(i, k), A.podCIDR6(i)), `${A.podIP6(i, k)} in ${A.podCIDR6(i)}`);
      t.not(A.podIP(i, k), A.podGateway(i), 'pods never get the gateway address');
    }
  }
  t.equal(A.nodeIP(1), '198.18.0.11');
  t.equal(A.podIP(2, 1), '198.19.2.2');
  t.equal(A.podIP6(2, 1), '2001:db8:1:2::2');
});

t.test('service, external and LAN ranges do not overlap the cluster CIDRs', async (t) => {
  const probes = [A.SERVICE_CIDR, A.EXTERNAL_CIDR, A.LAN_CIDR];
  for (const c of probes) t.notOk(inside(c.split('/')[0] as string, A.CLUSTER_CIDR), `${c} outside ${A.CLUSTER_CIDR}`);
  for (const c of [A.SERVICE_CIDR6, A.EXTERNAL_CIDR6, A.LAN_CIDR6]) t.notOk(inside(c.split('/')[0] as string, A.CLUSTER_CIDR6), c);
  t.notOk(inside(A.SERVICE_CIDR.split('/')[0] as string, A.LAN_CIDR));
});

t.test('splitHostPort takes the port after the last colon, for IPv4 and IPv6', async (t) => {
  t.same(A.splitHostPort('198.19.1.2:4567'), { ip: '198.19.1.2', port: 4567 });
  t.same(A.splitHostPort('2001:db8:1:1::2:4567'), { ip: '2001:db8:1:1::2', port: 4567 });
  t.same(A.splitHostPort('[2001:db8::1]:80'), { ip: '2001:db8::1', port: 80 });
  t.equal(A.splitHostPort('nonsense'), undefined);
});
