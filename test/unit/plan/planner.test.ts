import t from 'tap';
import { FAMILIES, cidr, ip, slice, svc } from '../model/fixtures.js';
import type { NodePortAddressSpec, PlanOptions } from '../../../src/plan/planner.js';
import { NODE, NODE_V4, NODE_V6, planWorld } from './helpers.js';
import { node } from '../model/fixtures.js';
import { canonicalIPv4 } from '../../../src/util/ipv4.js';

const other = (f: 4 | 6) => (f === 4 ? 6 : 4);

for (const f of FAMILIES) {
  const nodeIP = f === 4 ? NODE_V4 : NODE_V6;

  t.test(`IPv${f}: ClusterIP masquerade modes and local traffic detector`, async (t) => {
    type Row = [string, Partial<PlanOptions>, string, unknown];
    const rows: Row[] = [
      ['masquerade-all', { masqueradeAll: true, clusterCIDRs: [cidr(f, 5)] }, 'all', { kind: 'clusterCIDR', cidrs: [cidr(f, 5)] }],
      ['cluster CIDR of this family', { clusterCIDRs: [cidr(other(f), 5), cidr(f, 5)] }, 'nonLocal', { kind: 'clusterCIDR', cidrs: [cidr(f, 5)] }],
      ['cluster CIDR of the other family only', { clusterCIDRs: [cidr(other(f), 5)] }, 'none', { kind: 'none' }],
      ['nothing', {}, 'none', { kind: 'none' }],
    ];
    for (const [name, opts, mode, detector] of rows) {
      const { table } = planWorld(f, { services: [svc({ families: [4, 6] })], slices: [], opts });
      t.equal(table.services.get('default/web:http/TCP')!.clusterIPMasquerade, mode, `${name}: clusterIPMasquerade`);
      t.same(table.localTraffic, detector, `${name}: detector`);
      t.equal(table.masqueradeAll, opts.masqueradeAll ?? false);
    }
  });

  t.test(`IPv${f}: LB IPs (VIP only), external IPs, source ranges, affinity pass through`, async (t) => {
    const { table } = planWorld(f, {
      services: [
        svc({
          type: 'LoadBalancer',
          families: [4, 6],
          ports: [{ name: 'http', port: 80, nodePort: 30080 }],
          externalIPs: ['192.0.2.5', '2001:db8:5::5'],
          ingress: [{ ip: '192.0.2.10' }, { ip: '192.0.2.11', ipMode: 'Proxy' }, { ip: '2001:db8:10::10' }, { ip: '2001:db8:10::11', ipMode: 'Proxy' }],
          sourceRanges: ['198.51.100.0/24', '2001:db8:77::/48'],
          affinity: 600,
        }),
      ],
      slices: [slice({ family: f, endpoints: [{ ip: ip(f, 1) }] })],
    });
    const e = table.services.get('default/web:http/TCP')!;
    t.same(e.loadBalancerIPs, [f === 4 ? '192.0.2.10' : '2001:db8:10::10'], 'only VIP-mode ingress IPs are captured');
    t.same(e.externalIPs, [f === 4 ? '192.0.2.5' : '2001:db8:5::5']);
    t.same(e.loadBalancerSourceRanges, [f === 4 ? '198.51.100.0/24' : '2001:db8:77::/48']);
    // The v4 range contains the node's primary IP (198.51.100.1); the v6 one does not.
    t.equal(e.allowLoadBalancerIPSources, f === 4, 'LB IPs allowed as sources only when a range holds the primary node IP');
    t.equal(e.affinityTimeoutSeconds, 600);
    t.equal(e.nodePort, 30080);
    t.equal(e.family, f);
    t.equal(e.clusterIP, f === 4 ? '203.0.113.1' : '2001:db8:ffff::1');
  });

  t.test(`IPv${f}: LB IPs as sources: only the primary node IP counts, and only with LB IPs`, async (t) => {
    const range = f === 4 ? '192.0.2.0/24' : '2001:db8:7::/48';
    const inside = f === 4 ? '192.0.2.7' : '2001:db8:7::7';
    const lb = (name: string, ingress: { ip: string }[]) =>
      svc({ name, type: 'LoadBalancer', families: [4, 6], ports: [{ name: 'http', port: 80, nodePort: name === 'a' ? 30080 : 30081 }], ingress, sourceRanges: [range] });
    const vip = [{ ip: f === 4 ? '203.0.113.50' : '2001:db8:50::1' }];
    const allow = (nodeAddrs: Array<[string, string]>, ingress: { ip: string }[]): boolean => {
      const { table } = planWorld(f, { services: [lb('a', ingress)], slices: [slice({ family: f, endpoints: [{ ip: ip(f, 1) }] })], node: node(NODE, nodeAddrs) });
      return table.services.get('default/a:http/TCP')!.allowLoadBalancerIPSources;
    };
    t.equal(allow([['InternalIP', inside]], vip), true, 'primary node IP inside a range');
    t.equal(allow([['InternalIP', nodeIP], ['InternalIP', inside]], vip), false, 'only a secondary node IP inside: not allowed (kube-proxy uses the primary)');
    t.equal(allow([['InternalIP', inside]], []), false, 'no LB IPs: nothing to allow');
  });

  t.test(`IPv${f}: health check port counts distinct ready local endpoint IPs across the service's ports`, async (t) => {
    const ports = [{ name: 'http', port: 80, nodePort: 30080 }, { name: 'https', port: 443, nodePort: 30443 }];
    const { table } = planWorld(f, {
      services: [
        svc({ type: 'LoadBalancer', families: [4, 6], etp: 'Local', hcPort: 32100, ports }),
        svc({ name: 'plain', type: 'NodePort', families: [4, 6], ports: [{ name: 'http', port: 80, nodePort: 30081 }] }),
      ],
      slices: [
        slice({
          family: f,
          ports: [{ name: 'http', port: 8080 }, { name: 'https', port: 8443 }],
          endpoints: [
            { ip: ip(f, 1), node: NODE },
            { ip: ip(f, 3), node: NODE, ready: false, serving: true, terminating: true },
            { ip: ip(f, 4), node: 'n2' },
          ],
        }),
        slice({ family: f, name: 'web-extra', ports: [{ name: 'https', port: 8443 }], endpoints: [{ ip: ip(f, 2), node: NODE }] }),
        slice({ family: f, service: 'plain', endpoints: [{ ip: ip(f, 9), node: NODE }] }),
      ],
    });
    for (const k of ['default/web:http/TCP', 'default/web:https/TCP']) {
      const e = table.services.get(k)!;
      t.equal(e.healthCheckNodePort, 32100, `${k}: hc port`);
      t.equal(e.localReadyEndpoints, 2, `${k}: ${ip(f, 1)} (both ports, counted once) and ${ip(f, 2)}; terminating and remote excluded`);
    }
    const p = table.services.get('default/plain:http/TCP')!;
    t.same([p.healthCheckNodePort, p.localReadyEndpoints], [0, 0], 'no health check port, no count');
  });

  t.test(`IPv${f}: UDP and SCTP ports carry their serving endpoints whatever policy, topology or terminating state; TCP ports none`, async (t) => {
    const ports = [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'sig', port: 36412, protocol: 'SCTP' }, { name: 'tcp', port: 53, protocol: 'TCP' }];
    const { table } = planWorld(f, {
      services: [svc({ name: 'dns', families: [4, 6], itp: 'Local', ports })],
      slices: [
        slice({
          family: f,
          service: 'dns',
          ports,
          endpoints: [
            { ip: ip(f, 1), node: NODE },
            { ip: ip(f, 2), node: 'n2', zoneHints: ['z9'] },
            { ip: ip(f, 3), node: 'n2', ready: false, serving: true, terminating: true },
            { ip: ip(f, 4), node: 'n2', ready: false, serving: false, terminating: true },
            { ip: ip(f, 5), node: NODE, ready: false, serving: false },
          ],
        }),
      ],
    });
    const udp = table.services.get('default/dns:dns/UDP')!;
    t.same(
      udp.internal.endpoints.map((e) => e.ip),
      [ip(f, 1)],
      'internalTrafficPolicy Local: the ClusterIP forwards to the local ready endpoint only',
    );
    t.same(
      udp.serving?.map((e) => `${e.ip}:${e.port}`),
      [ip(f, 1), ip(f, 2), ip(f, 3)].map((a) => `${a}:53`),
      'serving: the remote one, the terminating-but-serving one too; neither non-serving one',
    );
    t.same(table.services.get('default/dns:sig/SCTP')!.serving?.map((e) => e.ip), [ip(f, 1), ip(f, 2), ip(f, 3)], 'SCTP the same');
    t.equal(table.services.get('default/dns:tcp/TCP')!.serving, undefined, 'TCP: no conntrack cleanup, no list');
  });

  t.test(`IPv${f}: each forwarding set carries its endpoints' addresses packed (IPv4) or not at all (IPv6)`, async (t) => {
    const { table } = planWorld(f, {
      services: [svc({ type: 'NodePort', families: [4, 6], etp: 'Local', ports: [{ name: 'http', port: 80, nodePort: 30080 }] })],
      slices: [
        slice({
          family: f,
          endpoints: [
            { ip: ip(f, 7), node: NODE },
            { ip: ip(f, 3), node: 'n2' },
            { ip: ip(f, 200), node: NODE, ready: false, serving: true, terminating: true },
          ],
        }),
      ],
    });
    const e = table.services.get('default/web:http/TCP')!;
    t.not(e.external, e.cluster, 'a local set apart from the cluster set');
    for (const [what, set] of [['cluster', e.cluster], ['external (local)', e.external]] as const) {
      t.equal(set.verdict, 'forward', `${what}: forwards`);
      t.ok(set.endpoints.length > 0, `${what}: has endpoints`);
      if (f === 6) {
        t.equal(set.v4, undefined, `${what}: no packed addresses in IPv6`);
        continue;
      }
      t.same(set.v4, set.endpoints.map((x) => x.v4), `${what}: one per endpoint, in order`);
      t.same(set.v4, set.endpoints.map((x) => canonicalIPv4(x.ip)), `${what}: each the endpoint's address`);
    }
  });

  t.test(`IPv${f}: nodeport addresses`, async (t) => {
    const local = ['127.0.0.1', '::1', NODE_V4, NODE_V6, '198.51.100.200', '2001:db8:51::200', '192.0.2.1', '2001:db8:99::1'];
    type Row = [string, NodePortAddressSpec, unknown, boolean?];
    const inRange = f === 4 ? ['198.51.100.1', '198.51.100.200'] : ['2001:db8:51::1', '2001:db8:51::200'];
    const rows: Row[] = [
      ['all', { kind: 'all' }, { kind: 'all' }],
      ['primary', { kind: 'primary' }, { kind: 'list', addresses: [nodeIP] }],
      ['cidrs of both families', { kind: 'cidrs', cidrs: ['198.51.100.0/24', '2001:db8:51::/64'] }, { kind: 'list', addresses: inRange }],
      ['cidrs of the other family only → all', { kind: 'cidrs', cidrs: [f === 4 ? '2001:db8:51::/64' : '198.51.100.0/24'] }, { kind: 'all' }],
      ['zero CIDR → all', { kind: 'cidrs', cidrs: [f === 4 ? '0.0.0.0/0' : '::/0', f === 4 ? '198.51.100.0/24' : '2001:db8:51::/64'] }, { kind: 'all' }],
      ['cidr matching nothing → empty list', { kind: 'cidrs', cidrs: [f === 4 ? '203.0.113.0/24' : '2001:db8:abcd::/64'] }, { kind: 'list', addresses: [] }],
      ['invalid cidr ignored with a problem', { kind: 'cidrs', cidrs: ['bogus', '198.51.100.0/24', '2001:db8:51::/64'] }, { kind: 'list', addresses: inRange }, true],
    ];
    for (const [name, spec, want, problem] of rows) {
      const { table, problems } = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: spec, localAddresses: local } });
      t.same(table.nodePortAddresses, want, name);
      t.equal(problems.length > 0, problem ?? false, `${name}: problems ${JSON.stringify(problems)}`);
    }
    // Listed for a backend that cannot ask the kernel (ebpf): 'all' carries the host's addresses.
    const mine = f === 4 ? [NODE_V4, '192.0.2.1', '198.51.100.200'].sort() : [NODE_V6, '2001:db8:51::200', '2001:db8:99::1'].sort();
    const listing = { localAddresses: [...local, f === 4 ? '192.0.2.1' : '2001:DB8:99:0::1', 'fe80::1', 'febf::2'], listAllNodePortAddresses: true };
    for (const [name, spec] of [
      ['all', { kind: 'all' }],
      ['zero CIDR', { kind: 'cidrs', cidrs: [f === 4 ? '0.0.0.0/0' : '::/0'] }],
    ] as const) {
      const listed = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: spec, ...listing } });
      t.same(listed.table.nodePortAddresses, { kind: 'all', local: mine }, `${name}, listed: this family's host addresses, canonical, once, sorted, no loopback, no IPv6 link-local`);
    }
    const cidrsListed = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: { kind: 'cidrs', cidrs: ['198.51.100.0/24', '2001:db8:51::/64'] }, ...listing } });
    t.same(cidrsListed.table.nodePortAddresses, { kind: 'list', addresses: inRange }, 'CIDRs, listed: the list as before');
    // The CIDRs' selection is kept by the host list's identity: the same list, the same object;
    // a new list (the watch hands one out when the set changed) is read afresh.
    const cidrSpec: NodePortAddressSpec = { kind: 'cidrs', cidrs: ['198.51.100.0/24', '2001:db8:51::/64'] };
    const again = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: cidrSpec, localAddresses: local } });
    const twice = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: cidrSpec, localAddresses: local } });
    t.equal(twice.table.nodePortAddresses, again.table.nodePortAddresses, 'CIDRs, the same host list: the same selection object');
    const gained = f === 4 ? '198.51.100.7' : '2001:db8:51::7';
    const grown = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: cidrSpec, localAddresses: [...local, gained] } });
    t.same(grown.table.nodePortAddresses, { kind: 'list', addresses: [...inRange, gained].sort() }, 'CIDRs, a new host list: the address gained is selected');
    const noV6 = planWorld(f, { services: [], slices: [], node: node(NODE, [['InternalIP', NODE_V4]]), opts: { nodePortAddresses: { kind: 'primary' } } });
    t.same(
      noV6.table.nodePortAddresses,
      f === 4 ? { kind: 'list', addresses: [NODE_V4] } : { kind: 'all' },
      'primary with no node IP of the family → all (kube-proxy: no CIDR of that family)',
    );
  });

  t.test(`IPv${f}: table header`, async (t) => {
    const { table } = planWorld(f, {
      services: [],
      slices: [],
      node: node(NODE, [['ExternalIP', f === 4 ? '192.0.2.99' : '2001:db8:99::99'], ['InternalIP', NODE_V4], ['InternalIP', NODE_V6]]),
    });
    t.equal(table.family, f);
    t.equal(table.nodeName, NODE);
    t.same(table.nodeIPs, [nodeIP, f === 4 ? '192.0.2.99' : '2001:db8:99::99'], 'primary (InternalIP) first');
  });

  t.test(`IPv${f}: --bind-address overrides the primary node IP of its family (kube-proxy: detectNodeIPs)`, async (t) => {
    const bind = f === 4 ? '192.0.2.250' : '2001:db8:250::1';
    const other = f === 4 ? '2001:db8:250::1' : '192.0.2.250';
    const primary: NodePortAddressSpec = { kind: 'primary' };
    const { table } = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: primary, bindAddress: bind } });
    t.same(table.nodeIPs, [bind, nodeIP], 'the bind address first, the Node\'s after it');
    t.same(table.nodePortAddresses, { kind: 'list', addresses: [bind] }, '`primary` is the bind address');
    const same = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: primary, bindAddress: nodeIP } });
    t.same(same.table.nodeIPs, [nodeIP], 'not listed twice');
    const otherFamily = planWorld(f, { services: [], slices: [], opts: { nodePortAddresses: primary, bindAddress: other } });
    t.same(otherFamily.table.nodeIPs, [nodeIP], 'a bind address of the other family changes nothing here');
  });
}

t.test('services iterate in sorted key order', async (t) => {
  const { table } = planWorld(4, {
    services: [svc({ name: 'zz' }), svc({ name: 'aa', ports: [{ name: 'b', port: 1 }, { name: 'a', port: 2 }] }), svc({ ns: 'kube-system', name: 'dns' })],
    slices: [],
  });
  t.same([...table.services.keys()], ['default/aa:a/TCP', 'default/aa:b/TCP', 'default/zz:http/TCP', 'kube-system/dns:http/TCP']);
});
