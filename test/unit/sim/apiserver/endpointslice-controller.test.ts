// The in-process EndpointSlice controller, driven through the registry (no HTTP).
import t from 'tap';
import { createApiCore, type ApiCore } from '../../../../src/sim/apiserver/index.js';
import type { EndpointSlice } from '../../../../src/sim/apiserver/endpointslices.js';
import type { KObject } from '../../../../src/sim/apiserver/objects.js';

type Core = ApiCore & {
  def: (plural: string) => NonNullable<ReturnType<ApiCore['registry']['find']>>;
  node: (name: string, zone?: string) => void;
  pod: (name: string, opts?: { ip?: string | string[]; ready?: boolean; labels?: Record<string, string>; node?: string; phase?: string; portName?: string; port?: number; finalizers?: string[] }) => KObject;
  service: (name: string, spec: Record<string, unknown>, meta?: Record<string, unknown>) => KObject;
  slices: (svc: string) => Promise<EndpointSlice[]>;
};

function setup(opts: Parameters<typeof createApiCore>[0] = {}): Core {
  const c = createApiCore(opts);
  const def = (plural: string) => c.registry.find(plural === 'endpointslices' ? 'discovery.k8s.io' : '', plural)!;
  return {
    ...c,
    def,
    node(name, zone) {
      c.registry.create(def('nodes'), undefined, { metadata: { name, labels: zone ? { 'topology.kubernetes.io/zone': zone } : {} } });
    },
    pod(name, o = {}) {
      const ips = o.ip === undefined ? [] : Array.isArray(o.ip) ? o.ip : [o.ip];
      return c.registry.create(def('pods'), 'default', {
        metadata: { name, labels: o.labels ?? { app: 'web' }, finalizers: o.finalizers ?? [] },
        spec: {
          nodeName: o.node ?? 'node-a',
          containers: [{ name: 'c', image: 'img', ports: [{ name: o.portName ?? 'http', containerPort: o.port ?? 8080 }] }],
        },
        status: {
          phase: o.phase ?? 'Running',
          podIPs: ips.map((ip) => ({ ip })),
          conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
        },
      });
    },
    service(name, spec, meta = {}) {
      return c.registry.create(def('services'), 'default', { metadata: { name, ...meta }, spec });
    },
    async slices(svc) {
      await c.controller.settled();
      return c.store
        .list('endpointslices.discovery.k8s.io', 'default')
        .filter((s) => s.metadata.labels?.['kubernetes.io/service-name'] === svc) as EndpointSlice[];
    },
  };
}

const addrs = (s: EndpointSlice | undefined) => (s?.endpoints ?? []).map((e) => e.addresses[0]).sort();

t.test('a selector service gets one slice with its ready pods', async (t) => {
  const c = setup();
  c.node('node-a', 'zone-a');
  const p1 = c.pod('web-1', { ip: '198.18.128.1' });
  c.pod('web-2', { ip: '198.18.128.2' });
  c.pod('other', { ip: '198.18.128.3', labels: { app: 'db' } });
  const svc = c.service('web', { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] }, { labels: { team: 'x' } });
  const [s, ...rest] = await c.slices('web');
  t.equal(rest.length, 0, 'exactly one slice');
  t.match(s!.metadata.name, /^web-[a-z0-9]{5}$/, 'named by generateName');
  t.same(s!.metadata.labels, {
    team: 'x',
    'kubernetes.io/service-name': 'web',
    'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
  });
  t.same(s!.metadata.ownerReferences, [{ apiVersion: 'v1', kind: 'Service', name: 'web', uid: svc.metadata.uid, controller: true, blockOwnerDeletion: true }]);
  t.match(s!.metadata.annotations?.['endpoints.kubernetes.io/last-change-trigger-time'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  t.equal(s!.addressType, 'IPv4');
  t.same(s!.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }], 'the named targetPort resolved through the container port');
  t.same(s!.endpoints![0], {
    addresses: ['198.18.128.1'],
    conditions: { ready: true, serving: true, terminating: false },
    targetRef: { kind: 'Pod', namespace: 'default', name: 'web-1', uid: p1.metadata.uid },
    nodeName: 'node-a',
    zone: 'zone-a',
  });
  t.same(addrs(s), ['198.18.128.1', '198.18.128.2'], 'the db pod is not selected');
});

t.test('endpoint conditions: not ready, terminating, terminal and IP-less pods', async (t) => {
  const c = setup();
  c.node('node-a');
  c.pod('ready', { ip: '198.18.128.1' });
  c.pod('unready', { ip: '198.18.128.2', ready: false });
  c.pod('term', { ip: '198.18.128.3', finalizers: ['example.com/hold'] });
  c.pod('done', { ip: '198.18.128.4', phase: 'Succeeded' });
  c.pod('noip', {});
  c.registry.delete(c.def('pods'), 'default', 'term');
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80 }] });
  const [s] = await c.slices('web');
  const byName = Object.fromEntries((s?.endpoints ?? []).map((e) => [e.targetRef!.name, e.conditions]));
  t.same(byName, {
    ready: { ready: true, serving: true, terminating: false },
    unready: { ready: false, serving: false, terminating: false },
    term: { ready: false, serving: true, terminating: true },
  });
  c.registry.patch(c.def('services'), 'default', 'web', 'merge', { spec: { publishNotReadyAddresses: true } });
  const [s2] = await c.slices('web');
  t.ok(s2!.endpoints!.every((e) => e.conditions!.ready), 'publishNotReadyAddresses makes every endpoint ready');
});

t.test('pods whose named port resolves differently go to different slices; unresolvable pods are left out', async (t) => {
  const c = setup();
  c.node('node-a');
  c.pod('a', { ip: '198.18.128.1', port: 8080 });
  c.pod('b', { ip: '198.18.128.2', port: 9090 });
  c.pod('c', { ip: '198.18.128.3', portName: 'other' });
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 'http' }] });
  const slices = await c.slices('web');
  const summary = slices.map((s) => `${s.ports![0]!.port}:${addrs(s).join(',')}`).sort();
  t.same(summary, ['8080:198.18.128.1', '9090:198.18.128.2']);
});

t.test('at most 100 endpoints per slice; changes update slices in place; no-op changes write nothing', async (t) => {
  const c = setup();
  c.node('node-a');
  for (let i = 0; i < 150; i++) c.pod(`p-${i}`, { ip: `198.18.${128 + Math.floor(i / 200)}.${(i % 200) + 1}` });
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80 }] });
  const first = await c.slices('web');
  t.same(first.map((s) => s.endpoints!.length).sort((a, b) => a - b), [50, 100]);
  const names = first.map((s) => s.metadata.name).sort();
  c.registry.delete(c.def('pods'), 'default', 'p-3');
  const second = await c.slices('web');
  t.same(second.map((s) => s.metadata.name).sort(), names, 'same slices, updated in place');
  t.equal(second.reduce((n, s) => n + s.endpoints!.length, 0), 149);
  const rvs = second.map((s) => s.metadata.resourceVersion).join(',');
  c.registry.patch(c.def('pods'), 'default', 'p-5', 'merge', { metadata: { annotations: { unrelated: 'yes' } } });
  const third = await c.slices('web');
  t.equal(third.map((s) => s.metadata.resourceVersion).join(','), rvs, 'an irrelevant pod change writes no slice');
});

t.test('dual-stack services get one slice per family', async (t) => {
  const c = setup({ serviceCIDRs: ['198.18.64.0/18', '2001:db8:2::/112'] });
  c.node('node-a');
  c.pod('a', { ip: ['198.18.128.1', '2001:db8:1::1'] });
  c.service('web', { selector: { app: 'web' }, ipFamilyPolicy: 'RequireDualStack', ports: [{ port: 80 }] });
  const slices = await c.slices('web');
  t.same(slices.map((s) => `${s.addressType} ${addrs(s).join(',')}`).sort(), ['IPv4 198.18.128.1', 'IPv6 2001:db8:1::1']);
});

t.test('headless label, placeholder slice, selector removal, user slices untouched, service deletion', async (t) => {
  const c = setup();
  c.service('empty', { selector: { app: 'nothing' }, clusterIP: 'None' });
  const [ph] = await c.slices('empty');
  t.same(ph?.endpoints, [], 'a placeholder slice without endpoints');
  t.equal(ph?.metadata.labels?.['service.kubernetes.io/headless'], '', 'headless services are labelled');
  c.service('manual', { ports: [{ port: 80 }] });
  c.registry.create(c.def('endpointslices'), 'default', {
    metadata: { name: 'manual-1', labels: { 'kubernetes.io/service-name': 'manual' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['198.18.0.9'] }],
    ports: [{ port: 80 }],
  } as KObject);
  t.same((await c.slices('manual')).map((s) => s.metadata.name), ['manual-1'], 'the user slice is left alone');
  c.registry.patch(c.def('services'), 'default', 'empty', 'merge', { spec: { selector: null } });
  t.same(await c.slices('empty'), [], 'removing the selector deletes managed slices');
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80 }] });
  t.equal((await c.slices('web')).length, 1);
  c.registry.delete(c.def('services'), 'default', 'web');
  t.same(await c.slices('web'), [], 'deleting the service deletes its slices');
});

t.test('zones and topology hints follow the nodes', async (t) => {
  const c = setup();
  c.node('node-a', 'zone-a');
  c.node('node-b');
  c.pod('a', { ip: '198.18.128.1', node: 'node-a' });
  c.pod('b', { ip: '198.18.128.2', node: 'node-b' });
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80 }], trafficDistribution: 'PreferClose' });
  const eps = async () => Object.fromEntries(((await c.slices('web'))[0]?.endpoints ?? []).map((e) => [e.targetRef!.name, { zone: e.zone, hints: e.hints }]));
  t.same(await eps(), { a: { zone: 'zone-a', hints: { forZones: [{ name: 'zone-a' }] } }, b: { zone: undefined, hints: undefined } });
  c.registry.patch(c.def('nodes'), undefined, 'node-b', 'merge', { metadata: { labels: { 'topology.kubernetes.io/zone': 'zone-b' } } });
  t.same((await eps())['b'], { zone: 'zone-b', hints: { forZones: [{ name: 'zone-b' }] } }, 'a node zone change reaches the endpoints');
  c.registry.patch(c.def('services'), 'default', 'web', 'merge', { spec: { trafficDistribution: null } });
  t.same((await eps())['a'], { zone: 'zone-a', hints: undefined }, 'no hints without trafficDistribution');
  c.registry.patch(c.def('services'), 'default', 'web', 'merge', { metadata: { annotations: { 'service.kubernetes.io/topology-mode': 'Auto' } } });
  t.same((await eps())['a'], { zone: 'zone-a', hints: { forZones: [{ name: 'zone-a' }] } }, 'topology-mode Auto also gives hints');
});

t.test('a hand-edited managed slice is put back', async (t) => {
  const c = setup();
  c.node('node-a');
  c.pod('a', { ip: '198.18.128.1' });
  c.service('web', { selector: { app: 'web' }, ports: [{ port: 80 }] });
  const [s] = await c.slices('web');
  c.registry.patch(c.def('endpointslices'), 'default', s!.metadata.name!, 'merge', { endpoints: [{ addresses: ['198.18.9.9'] }] });
  const [fixed] = await c.slices('web');
  t.same(addrs(fixed), ['198.18.128.1']);
});
