// Addresses are checked for class as well as family: a Service or endpoint that names the node's
// loopback, "any", a link-local neighbour, a multicast group or the broadcast address is refused
// for that Service (ClusterIP) or that entry only, with a problem naming the field.
import t from 'tap';
import ipaddr from 'ipaddr.js';
import { specialIPClass } from '../../../src/model/addr.js';
import { parseEndpointSlice } from '../../../src/model/endpoints.js';
import { parseService } from '../../../src/model/service.js';
import { ChangeTracker } from '../../../src/model/tracker.js';
import type { Logger } from '../../../src/util/log.js';
import { ip, slice, svc } from './fixtures.js';

const SPECIAL: [string, RegExp][] = [
  ['0.0.0.0', /unspecified/],
  ['0.1.2.3', /unspecified/],
  ['127.0.0.1', /loopback/],
  ['127.255.0.9', /loopback/],
  ['169.254.169.254', /link-local/],
  ['224.0.0.1', /multicast/],
  ['239.1.2.3', /multicast/],
  ['255.255.255.255', /broadcast/],
  ['::', /unspecified/],
  ['::1', /loopback/],
  ['fe80::1', /link-local/],
  ['ff02::1', /multicast/],
  ['ff05::2', /multicast/],
];
const ORDINARY = ['10.96.0.1', '198.18.0.1', '203.0.113.9', '100.64.0.1', '192.168.1.1', '2001:db8::1', 'fd00::1', '240.0.0.1'];

t.test('specialIPClass names each refused class and passes ordinary addresses', async (t) => {
  for (const [a, re] of SPECIAL) t.match(specialIPClass(a), re, a);
  for (const a of ORDINARY) t.equal(specialIPClass(a), undefined, a);
});

t.test('the IPv4 fast path classifies exactly as ipaddr.js range() does, at every class boundary', async (t) => {
  const CLASSES: Record<string, RegExp> = { unspecified: /unspecified/, loopback: /loopback/, linkLocal: /link-local/, multicast: /multicast/, broadcast: /broadcast/ };
  const firsts = [0, 1, 9, 10, 99, 100, 126, 127, 128, 168, 169, 170, 192, 198, 223, 224, 225, 238, 239, 240, 254, 255];
  const seconds = [0, 1, 168, 253, 254, 255];
  let n = 0;
  for (const a of firsts) {
    for (const b of seconds) {
      for (const tail of ['0.0', '0.1', '255.254', '255.255']) {
        const addr = `${a}.${b}.${tail}`;
        const range = ipaddr.IPv4.parse(addr).range();
        const want = CLASSES[range];
        const got = specialIPClass(addr);
        if (want) t.match(got, want, `${addr} (${range})`);
        else t.equal(got, undefined, `${addr} (${range})`);
        n++;
      }
    }
  }
  t.comment(`${n} addresses compared`);
});

t.test('a special ClusterIP skips that Service only, naming the field', async (t) => {
  for (const [a] of SPECIAL) {
    const fam = a.includes(':') ? 6 : 4;
    const r = parseService(svc({ families: [fam], clusterIPs: [a] }), [4, 6]);
    t.same(r.ports, [], `${a}: no ports`);
    t.equal(r.problems.length, 1, a);
    t.match(r.problems[0], new RegExp(`^spec\\.clusterIPs\\[0\\]: ${a.replace(/\./g, '\\.')} is .*not a usable ClusterIP`), a);
  }
  const legacy = svc({ clusterIPs: [] });
  (legacy.spec as Record<string, unknown>).clusterIP = '127.0.0.1';
  delete (legacy.spec as Record<string, unknown>).clusterIPs;
  const r = parseService(legacy, [4]);
  t.same(r.ports, []);
  t.match(r.problems[0], /^spec\.clusterIP: 127\.0\.0\.1 is loopback/);
});

t.test('special externalIPs and LB ingress IPs are ignored one by one; the Service stays', async (t) => {
  const s = svc({ type: 'LoadBalancer', externalIPs: ['127.0.0.1', '198.51.100.1', '::1', '224.0.0.5'] });
  (s as unknown as { status: unknown }).status = { loadBalancer: { ingress: [{ ip: '0.0.0.0' }, { ip: '192.0.2.10' }, { ip: 'fe80::9' }] } };
  const r = parseService(s, [4, 6]);
  t.equal(r.ports.length, 1, 'the Service is kept');
  t.same(r.ports[0]!.externalIPs, ['198.51.100.1']);
  t.same(r.ports[0]!.loadBalancerIngress, [{ ip: '192.0.2.10', ipMode: 'VIP' }]);
  t.same(r.problems, [
    'spec.externalIPs[0]: 127.0.0.1 is loopback (127.0.0.0/8), ignored',
    'spec.externalIPs[2]: ::1 is loopback (::1), ignored',
    'spec.externalIPs[3]: 224.0.0.5 is multicast (224.0.0.0/4), ignored',
    'status.loadBalancer.ingress[0].ip: 0.0.0.0 is unspecified (0.0.0.0/8), ignored',
    'status.loadBalancer.ingress[2].ip: fe80::9 is link-local (fe80::/10), ignored',
  ]);
});

t.test('source ranges: syntax and family only, except ranges no client can be in, which are reported but kept', async (t) => {
  const s = svc({ type: 'LoadBalancer', sourceRanges: ['0.0.0.0/0', '127.0.0.0/8', '224.0.0.0/4', '255.255.255.255/32', '::/0'] });
  const r = parseService(s, [4, 6]);
  t.same(r.ports[0]!.loadBalancerSourceRanges, ['0.0.0.0/0', '127.0.0.0/8', '224.0.0.0/4', '255.255.255.255/32'], 'nothing dropped: an emptied list would allow every source');
  t.equal(r.problems.length, 2);
  t.match(r.problems[0], /^spec\.loadBalancerSourceRanges\[2\]: 224\.0\.0\.0\/4 is multicast .*matches no client/);
  t.match(r.problems[1], /^spec\.loadBalancerSourceRanges\[3\]: 255\.255\.255\.255\/32 is the broadcast address/);
});

t.test('special endpoint addresses are skipped one by one, naming the field', async (t) => {
  const s = parseEndpointSlice(slice({ endpoints: [{ ip: '127.0.0.1' }, { ip: ip(4, 1) }, { ip: '169.254.1.1' }, { ip: '255.255.255.255' }] }), 'n1');
  t.same(s.byPort[0]!.map((e) => e.ip), [ip(4, 1)]);
  t.same(s.problems, [
    'endpoints[0].addresses[0]: 127.0.0.1 is loopback (127.0.0.0/8), endpoint ignored',
    'endpoints[2].addresses[0]: 169.254.1.1 is link-local (169.254.0.0/16), endpoint ignored',
    'endpoints[3].addresses[0]: 255.255.255.255 is the broadcast address, endpoint ignored',
  ]);
  const s6 = parseEndpointSlice(slice({ family: 6, endpoints: [{ ip: '::1' }, { ip: 'ff02::1' }, { ip: ip(6, 1) }] }), 'n1');
  t.same(s6.byPort[0]!.map((e) => e.ip), [ip(6, 1)]);
  t.equal(s6.problems.length, 2);
});

t.test('the tracker counts each invalid object version once, where it logs', async (t) => {
  const counted: string[] = [];
  const warns: string[] = [];
  const log = { warn: (m: string) => warns.push(m), info: () => undefined, error: () => undefined, v: () => undefined, debug: () => undefined } as unknown as Logger;
  const tr = new ChangeTracker({ nodeName: 'n1', families: [4, 6], log, onInvalid: (r) => counted.push(r) });
  const bad = svc({ name: 'lo', clusterIPs: ['127.0.0.1'] });
  tr.upsertService(bad);
  tr.upsertService(bad);
  t.same(counted, ['services'], 'the same version twice counts once');
  tr.upsertService(svc({ name: 'lo', clusterIPs: ['127.0.0.1'], resourceVersion: '2' }));
  t.same(counted, ['services', 'services'], 'a new version counts again');
  tr.upsertEndpointSlice(slice({ endpoints: [{ ip: '127.0.0.1' }] }));
  tr.upsertService(svc({ name: 'fine' }));
  t.same(counted, ['services', 'services', 'endpointslices']);
  t.equal(warns.length, counted.length, 'counted exactly where logged');
  const snap = tr.takeSnapshot();
  t.same([...snap.snapshots[4].services.keys()], ['default/fine:http/TCP']);
});
