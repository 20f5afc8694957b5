import t from 'tap';
import type { V1EndpointSlice } from '@kubernetes/client-node';
import { mergeEndpoints, parseEndpointSlice } from '../../../src/model/endpoints.js';
import { FAMILIES, ip, slice } from './fixtures.js';

const fmt = (eps: ReadonlyArray<{ ip: string; port: number }>) => eps.map((e) => `${e.ip}:${e.port}`);

for (const f of FAMILIES) {
  t.test(`IPv${f}: conditions default as documented`, async (t) => {
    const s = parseEndpointSlice(
      slice({
        family: f,
        endpoints: [
          { ip: ip(f, 1) },
          { ip: ip(f, 2), ready: false },
          { ip: ip(f, 3), ready: false, serving: true, terminating: true },
          { ip: ip(f, 4), node: 'n1', zone: 'z1', zoneHints: ['z1', 'z1', 'z0'], nodeHints: ['n1'] },
        ],
      }),
      'n1',
    );
    t.same(s.problems, []);
    const [a, b, c, d] = s.byPort[0]!;
    t.same([a!.ready, a!.serving, a!.terminating], [true, true, false], 'all nil: ready, serving, not terminating');
    t.same([b!.ready, b!.serving, b!.terminating], [false, false, false], 'serving nil follows ready');
    t.same([c!.ready, c!.serving, c!.terminating], [false, true, true]);
    t.same([d!.isLocal, d!.zone, d!.zoneHints, d!.nodeHints], [true, 'z1', ['z0', 'z1'], ['n1']], 'hints sorted and deduplicated');
    t.equal(a!.isLocal, false);
  });

  t.test(`IPv${f}: merge across slices matches ports by name and protocol, dedups first-wins, sorts`, async (t) => {
    const s1 = parseEndpointSlice(
      slice({
        family: f,
        name: 'web-b',
        ports: [{ name: 'http', port: 8080 }, { name: 'http', port: 8080, protocol: 'UDP' }],
        endpoints: [{ ip: ip(f, 9) }, { ip: ip(f, 1), ready: false }],
      }),
      'n1',
    );
    const s0 = parseEndpointSlice(
      slice({ family: f, name: 'web-a', ports: [{ name: 'http', port: 8080 }, { name: 'other', port: 9 }], endpoints: [{ ip: ip(f, 1) }, { ip: ip(f, 5) }] }),
      'n1',
    );
    const tcp = mergeEndpoints([s1, s0], f, 'http', 'TCP');
    t.same(fmt(tcp), [ip(f, 1), ip(f, 5), ip(f, 9)].map((x) => `${x}:8080`));
    t.equal(tcp[0].ready, true, 'slice web-a comes first by name, so its (ready) copy of the endpoint wins');
    t.same(fmt(mergeEndpoints([s0, s1], f, 'http', 'UDP')), [`${ip(f, 1)}:8080`, `${ip(f, 9)}:8080`]);
    t.same(fmt(mergeEndpoints([s0, s1], f, 'http', 'SCTP')), []);
    t.same(fmt(mergeEndpoints([s0, s1], f === 4 ? 6 : 4, 'http', 'TCP')), [], 'other family ignored');
  });

  t.test(`IPv${f}: a local duplicate replaces a remote one`, async (t) => {
    const a = parseEndpointSlice(slice({ family: f, name: 'a', endpoints: [{ ip: ip(f, 1), node: 'other' }] }), 'me');
    const b = parseEndpointSlice(slice({ family: f, name: 'b', endpoints: [{ ip: ip(f, 1), node: 'me' }] }), 'me');
    const m = mergeEndpoints([a, b], f, 'http', 'TCP');
    t.equal(m.length, 1);
    t.equal(m[0].isLocal, true);
  });

  t.test(`IPv${f}: a reused IP — the copy that is not terminating wins, whichever slice or position it is in`, async (t) => {
    const old = { ip: ip(f, 1), ready: false, serving: true, terminating: true, node: 'me' };
    const fresh = { ip: ip(f, 1), ready: true, node: 'other' };
    for (const [what, a, b] of [
      ['old pod in the first slice', [old], [fresh]],
      ['old pod in the second slice', [fresh], [old]],
    ] as const) {
      const sa = parseEndpointSlice(slice({ family: f, name: 'a', endpoints: [...a] }), 'me');
      const sb = parseEndpointSlice(slice({ family: f, name: 'b', endpoints: [...b] }), 'me');
      const m = mergeEndpoints([sa, sb], f, 'http', 'TCP');
      t.same(m.map((e) => [e.ready, e.terminating, e.isLocal]), [[true, false, false]], `${what}: the ready remote copy, not the terminating local one`);
    }
    for (const order of [[old, fresh], [fresh, old]]) {
      const one = parseEndpointSlice(slice({ family: f, endpoints: order }), 'me');
      t.same(one.byPort[0]!.map((e) => [e.ready, e.terminating]), [[true, false]], 'within one slice too');
    }
  });

  t.test(`IPv${f}: invalid entries skipped with problems`, async (t) => {
    const raw = slice({ family: f, ports: [{ name: 'http', port: 0 }, { name: null, port: 80 }, { name: 'x', port: 81, protocol: 'ICMP' }, { name: 'ok', port: 82 }] });
    const eps = raw as unknown as { endpoints: unknown[] };
    eps.endpoints = [
      { addresses: [] },
      { addresses: ['not-an-ip'] },
      { addresses: [f === 4 ? '2001:db8::1' : '198.18.0.1'] },
      { addresses: [ip(f, 7)], conditions: 'weird', hints: { forZones: [{ name: 5 }] } },
      'junk',
    ];
    const s = parseEndpointSlice(raw, 'n');
    t.same(s.ports.map((p) => p.name), ['ok']);
    t.same(s.byPort.map((l) => l.map((e) => e.ip)), [[ip(f, 7)]]);
    for (const re of [/ports\[0\]\.port: 0 out of range/, /ports\[1\]\.name: undefined is not a string/, /ports\[2\]\.protocol: "ICMP" unknown/, /endpoints\[1\]\.addresses\[0\]: "not-an-ip"/, /endpoints\[2\]\.addresses\[0\]: .* is not IPv/, /endpoints\[3\]\.hints\.forZones\[0\]\.name: 5 invalid/, /endpoints\[4\]: "junk" is not an object/]) {
      t.ok(s.problems.some((p) => re.test(p)), `expected a problem matching ${re}, got ${JSON.stringify(s.problems)}`);
    }
    t.notOk(s.problems.some((p) => p.includes('endpoints[0]')), 'no-address endpoint skipped quietly');
  });
}

t.test('ignored slices: FQDN, headless label, no service label', async (t) => {
  const cases: Array<[string, V1EndpointSlice]> = [
    ['FQDN', slice({ addressType: 'FQDN' })],
    ['headless', slice({ labels: { 'service.kubernetes.io/headless': '' } })],
    ['unowned', (() => {
      const s = slice();
      s.metadata!.labels = {};
      return s;
    })()],
  ];
  for (const [name, s] of cases) {
    const p = parseEndpointSlice(s, 'n');
    t.equal(p.family, null, `${name}: expected the slice to be ignored`);
    t.same(p.problems, [], `${name}: no problem`);
  }
});

t.test('a namespace, name or service-name label the API server would refuse ignores the slice with a problem', async (t) => {
  const cases: Array<[string, V1EndpointSlice, RegExp]> = [
    ['"/" in the namespace', slice({ ns: 'a/b', service: 's', name: 'c' }), /^metadata\.namespace: "a\/b" is not a DNS-1123 label .*; slice ignored$/],
    ['"/" in the name', slice({ ns: 'a', service: 's', name: 'b/c' }), /^metadata\.name: "b\/c" is not a DNS-1123 subdomain .*; slice ignored$/],
    ['":" in the service name', slice({ service: 'a:x', name: 'ax' }), /^metadata\.labels\["kubernetes\.io\/service-name"\]: "a:x" is not a valid Service name; slice ignored$/],
    ['"/" in the service name', slice({ service: 'b/s', name: 'sl' }), /service-name"\]: "b\/s" is not/],
  ];
  for (const [what, s, problem] of cases) {
    s.endpoints = [{ addresses: [ip(4, 1)] }];
    const p = parseEndpointSlice(s, 'n');
    t.equal(p.family, null, `${what}: ignored`);
    t.same(p.byPort, [], `${what}: no endpoints`);
    t.equal(p.problems.length, 1, `${what}: one problem`);
    t.match(p.problems[0], problem, what);
  }
  t.same(parseEndpointSlice(slice({ name: 'web.v4-abcde', endpoints: [{ ip: ip(4, 1) }] }), 'n').problems, [], 'a dotted slice name is valid');
});

t.test('garbage never throws', async (t) => {
  for (const g of [null, 1, 'x', [], { metadata: { name: 'a', namespace: 'b', labels: 'no' } }, { metadata: { name: 'a', namespace: 'b', labels: { 'kubernetes.io/service-name': 's' } }, addressType: 'IPv4', ports: {}, endpoints: 7 }]) {
    const p = parseEndpointSlice(g as unknown as V1EndpointSlice, 'n');
    t.same(p.byPort.flat(), [], `no endpoints from ${JSON.stringify(g)}`);
  }
});
