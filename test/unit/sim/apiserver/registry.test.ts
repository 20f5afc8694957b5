// Registry semantics and the Service strategy (defaults, validation, allocation), without HTTP.
import t from 'tap';
import { ApiError } from '../../../../src/sim/apiserver/errors.js';
import { createApiCore, type ApiCore } from '../../../../src/sim/apiserver/index.js';
import type { KObject } from '../../../../src/sim/apiserver/objects.js';
import type { Service } from '../../../../src/sim/apiserver/services.js';

function core(opts: Parameters<typeof createApiCore>[0] = {}): ApiCore & {
  svc: (spec: Service['spec'], name?: string, extra?: Partial<KObject>) => Service;
  def: (plural: string, group?: string) => NonNullable<ReturnType<ApiCore['registry']['find']>>;
} {
  const c = createApiCore(opts);
  const def = (plural: string, group = '') => c.registry.find(group, plural)!;
  return {
    ...c,
    def,
    svc: (spec, name = 'web', extra = {}) =>
      c.registry.create(def('services'), 'default', { metadata: { name }, spec, ...extra } as KObject) as Service,
  };
}

/** The ApiError a call throws (fails the test with what happened instead). */
function apiError(t: Tap, fn: () => unknown): ApiError {
  try {
    const r = fn();
    t.fail(`expected an ApiError, got a result: ${JSON.stringify(r)}`);
  } catch (e) {
    if (e instanceof ApiError) return e;
    t.fail(`expected an ApiError, got ${String(e)}`);
  }
  return new ApiError(0, 'none', 'none');
}
type Tap = { fail(msg: string): void };

t.test('ClusterIP service defaults', async (t) => {
  const c = core();
  const s = c.svc({ selector: { app: 'web' }, ports: [{ port: 80 }] });
  t.match(s.spec, {
    type: 'ClusterIP',
    sessionAffinity: 'None',
    internalTrafficPolicy: 'Cluster',
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ port: 80, protocol: 'TCP', targetPort: 80 }],
  });
  t.equal(s.spec.externalTrafficPolicy, undefined, 'no externalTrafficPolicy for an internal ClusterIP service');
  t.match(s.spec.clusterIP, /^10\.96\./);
  t.same(s.spec.clusterIPs, [s.spec.clusterIP]);
  t.equal(s.metadata.generation, 1);
  t.match(s.metadata.uid, /^[0-9a-f-]{36}$/);
  t.match(s.metadata.resourceVersion, /^\d+$/);
  t.equal(s.apiVersion, 'v1');
  t.equal(s.kind, 'Service');
  const ext = c.svc({ ports: [{ port: 80 }], externalIPs: ['203.0.113.9'] }, 'ext');
  t.equal(ext.spec.externalTrafficPolicy, 'Cluster', 'externalIPs make a ClusterIP service externally accessible');
});

t.test('NodePort and LoadBalancer allocation', async (t) => {
  const c = core({ nodePortRange: [30000, 30100] });
  const np = c.svc({ type: 'NodePort', ports: [{ port: 80 }] }, 'np');
  t.ok(np.spec.ports![0]!.nodePort! >= 30000 && np.spec.ports![0]!.nodePort! <= 30100, `nodePort ${np.spec.ports![0]!.nodePort} in range`);
  t.equal(np.spec.externalTrafficPolicy, 'Cluster');
  const dns = c.svc({ type: 'NodePort', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }] }, 'dns');
  t.equal(dns.spec.ports![0]!.nodePort, dns.spec.ports![1]!.nodePort, 'the same port over two protocols shares one nodePort');
  const lb = c.svc({ type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ port: 443 }] }, 'lb');
  t.equal(lb.spec.allocateLoadBalancerNodePorts, true);
  t.ok(lb.spec.healthCheckNodePort, `healthCheckNodePort allocated (${lb.spec.healthCheckNodePort})`);
  t.not(lb.spec.healthCheckNodePort, lb.spec.ports![0]!.nodePort);
  const noNP = c.svc({ type: 'LoadBalancer', allocateLoadBalancerNodePorts: false, ports: [{ port: 443 }] }, 'lb2');
  t.equal(noNP.spec.ports![0]!.nodePort, undefined, 'allocateLoadBalancerNodePorts=false allocates none');

  const taken = np.spec.ports![0]!.nodePort!;
  const e = apiError(t, () => c.svc({ type: 'NodePort', ports: [{ port: 80, nodePort: taken }] }, 'dup'));
  t.equal(e.httpCode, 422);
  t.equal(e.message, `Service "dup" is invalid: spec.ports[0].nodePort: Invalid value: ${taken}: provided port is already allocated`);
  t.same(e.details?.causes, [{ reason: 'FieldValueInvalid', message: `Invalid value: ${taken}: provided port is already allocated`, field: 'spec.ports[0].nodePort' }]);
  const range = apiError(t, () => c.svc({ type: 'NodePort', ports: [{ port: 80, nodePort: 31000 }] }, 'out'));
  t.match(range.message, 'provided port is not in the valid range. The range of valid ports is 30000-30100');
  const forbidden = apiError(t, () => c.svc({ ports: [{ port: 80, nodePort: 30050 }] }, 'cip'));
  t.match(forbidden.message, "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'");

  // Releasing: deleting the service frees its nodePort; a failed create leaks nothing.
  c.registry.delete(c.def('services'), 'default', 'np');
  const again = c.svc({ type: 'NodePort', ports: [{ port: 80, nodePort: taken }] }, 'again');
  t.equal(again.spec.ports![0]!.nodePort, taken, 'the nodePort is free again after delete');
  t.notOk(c.services.nodePorts.has(31000), 'the out-of-range attempt left nothing behind');
});

t.test('type change NodePort → ClusterIP releases nodePorts; dry run allocates nothing', async (t) => {
  const c = core();
  const np = c.svc({ type: 'NodePort', ports: [{ port: 80 }] });
  const port = np.spec.ports![0]!.nodePort!;
  const updated = c.registry.update(c.def('services'), 'default', 'web', { ...np, spec: { ...np.spec, type: 'ClusterIP', externalTrafficPolicy: undefined } } as KObject) as Service;
  t.equal(updated.spec.ports![0]!.nodePort, undefined, 'nodePort dropped');
  t.notOk(c.services.nodePorts.has(port), 'and released');
  const dry = c.registry.create(c.def('services'), 'default', { metadata: { name: 'dry' }, spec: { type: 'NodePort', clusterIP: '10.96.5.5', ports: [{ port: 80, nodePort: 30999 }] } }, { dryRun: true }) as Service;
  t.equal(dry.spec.clusterIP, '10.96.5.5', 'dry run returns the would-be object');
  t.notOk(c.services.nodePorts.has(30999), 'dry run leaves the nodePort free');
  t.equal(c.store.get('services', 'default', 'dry'), undefined, 'dry run stores nothing');
  c.svc({ ports: [{ port: 80 }], clusterIP: '10.96.5.5' }, 'real');
});

t.test('explicit ClusterIPs, immutability, headless', async (t) => {
  const c = core();
  const s = c.svc({ clusterIP: '10.96.0.10', ports: [{ port: 53 }] }, 'dns');
  t.equal(s.spec.clusterIP, '10.96.0.10');
  const taken = apiError(t, () => c.svc({ clusterIP: '10.96.0.10', ports: [{ port: 53 }] }, 'dns2'));
  t.equal(taken.message, 'Service "dns2" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.10": provided IP is already allocated');
  const out = apiError(t, () => c.svc({ clusterIP: '192.0.2.1', ports: [{ port: 53 }] }, 'dns3'));
  t.match(out.message, 'provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16');
  const change = apiError(t, () => c.registry.update(c.def('services'), 'default', 'dns', { ...s, spec: { ...s.spec, clusterIP: '10.96.0.11', clusterIPs: ['10.96.0.11'] } } as KObject));
  t.match(change.message, 'spec.clusterIPs[0]: Invalid value: ["10.96.0.11"]: may not change once set');
  const kept = c.registry.update(c.def('services'), 'default', 'dns', { metadata: { name: 'dns' }, spec: { ports: [{ port: 53 }] } }) as Service;
  t.equal(kept.spec.clusterIP, '10.96.0.10', 'an update without clusterIP keeps the allocated one');
  const headless = c.svc({ clusterIP: 'None', selector: { app: 'x' } }, 'headless');
  t.same(headless.spec.clusterIPs, ['None'], 'headless services need no ports and get no IP');
});

t.test('dual-stack families', async (t) => {
  const c = core({ serviceCIDRs: ['198.18.64.0/18', '2001:db8:2::/112'] });
  const single = c.svc({ ports: [{ port: 80 }] }, 'single');
  t.match(single.spec.clusterIPs, [/^198\.18\./]);
  const dual = c.svc({ ipFamilyPolicy: 'PreferDualStack', ports: [{ port: 80 }] }, 'dual');
  t.same(dual.spec.ipFamilies, ['IPv4', 'IPv6']);
  t.match(dual.spec.clusterIPs, [/^198\.18\./, /^2001:db8:2::/]);
  const v6 = c.svc({ ipFamilies: ['IPv6'], ports: [{ port: 80 }] }, 'v6');
  t.match(v6.spec.clusterIP, /^2001:db8:2::/);
  const v4only = core();
  const e = apiError(t, () => v4only.svc({ ipFamilyPolicy: 'RequireDualStack', ports: [{ port: 80 }] }));
  t.match(e.message, 'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services');
  const prefer = v4only.svc({ ipFamilyPolicy: 'PreferDualStack', ports: [{ port: 80 }] }, 'prefer');
  t.same(prefer.spec.ipFamilies, ['IPv4'], 'PreferDualStack on a single-stack cluster gets one family');
});

t.test('validation collects every error with real messages', async (t) => {
  const c = core();
  const e = apiError(t, () =>
    c.svc(
      {
        type: 'NodePort',
        ports: [{ port: 70000 }, { port: 80, protocol: 'XTCP' }, { name: 'a', port: 81 }, { name: 'a', port: 81 }],
        externalIPs: ['not-an-ip'],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } },
        loadBalancerSourceRanges: ['192.0.2.0/24'],
      },
      'bad',
    ),
  );
  t.equal(e.httpCode, 422);
  t.equal(e.reason, 'Invalid');
  const fields = (e.details?.causes ?? []).map((x) => `${x.reason} ${x.field}`);
  t.same(fields, [
    'FieldValueRequired spec.ports[0].name',
    'FieldValueInvalid spec.ports[0].port',
    'FieldValueInvalid spec.ports[0].targetPort',
    'FieldValueRequired spec.ports[1].name',
    'FieldValueNotSupported spec.ports[1].protocol',
    'FieldValueDuplicate spec.ports[3].name',
    'FieldValueDuplicate spec.ports[3]',
    'FieldValueInvalid spec.sessionAffinityConfig.clientIP.timeoutSeconds',
    'FieldValueInvalid spec.externalIPs[0]',
    'FieldValueForbidden spec.loadBalancerSourceRanges',
  ]);
  t.match(e.message, /^Service "bad" is invalid: \[spec.ports\[0\].name: Required value, spec.ports\[0\].port: Invalid value: 70000: must be between 1 and 65535, inclusive, /);
  t.match(e.message, 'spec.ports[1].protocol: Unsupported value: "XTCP": supported values: "SCTP", "TCP", "UDP"');
  const name = apiError(t, () => c.svc({ ports: [{ port: 80 }] }, 'Bad_Name'));
  t.match(name.message, 'metadata.name: Invalid value: "Bad_Name": a DNS-1035 label must consist of lower case alphanumeric characters');
  const noPorts = apiError(t, () => c.svc({ selector: { a: 'b' } }, 'noports'));
  t.equal(noPorts.message, 'Service "noports" is invalid: spec.ports: Required value');
  const lb = apiError(t, () => c.svc({ type: 'LoadBalancer', loadBalancerSourceRanges: ['10.0.0.0/33'], ports: [{ port: 80 }] }, 'lb'));
  t.match(lb.message, 'spec.loadBalancerSourceRanges[0]: Invalid value: "10.0.0.0/33": must be a list of IP ranges');
});

t.test('status subresource: load balancer ingress only through /status', async (t) => {
  const c = core();
  const def = c.def('services');
  const s = c.svc({ type: 'LoadBalancer', ports: [{ port: 80 }] }, 'lb', { status: { loadBalancer: { ingress: [{ ip: '203.0.113.5' }] } } });
  t.equal(s.status, undefined, 'status given on create is dropped');
  const viaMain = c.registry.update(def, 'default', 'lb', { ...s, status: { loadBalancer: { ingress: [{ ip: '203.0.113.5' }] } } } as KObject) as Service;
  t.equal(viaMain.status, undefined, 'status in a main-resource update is ignored');
  const viaStatus = c.registry.update(def, 'default', 'lb', { ...s, metadata: { ...s.metadata, labels: { ignored: 'yes' } }, status: { loadBalancer: { ingress: [{ ip: '203.0.113.5' }, { ip: '203.0.113.6', ipMode: 'Proxy' }] } } } as KObject, { subresource: 'status' }) as Service;
  t.same(viaStatus.status?.loadBalancer?.ingress, [{ ip: '203.0.113.5', ipMode: 'VIP' }, { ip: '203.0.113.6', ipMode: 'Proxy' }], 'ipMode defaults to VIP');
  t.equal(viaStatus.metadata.labels, undefined, 'metadata changes through /status are ignored');
  const bad = apiError(t, () => c.registry.update(def, 'default', 'lb', { ...viaStatus, status: { loadBalancer: { ingress: [{ ip: 'x', ipMode: 'Weird' }] } } } as KObject, { subresource: 'status' }));
  t.same((bad.details?.causes ?? []).map((x) => x.field), ['status.loadBalancer.ingress[0].ip', 'status.loadBalancer.ingress[0].ipMode']);
});

t.test('optimistic concurrency, no-op updates, generateName, namespaces', async (t) => {
  const c = core();
  const def = c.def('services');
  const s = c.svc({ ports: [{ port: 80 }] });
  const rv = c.store.resourceVersion;
  const same = c.registry.update(def, 'default', 'web', s);
  t.equal(same.metadata.resourceVersion, s.metadata.resourceVersion, 'a no-op update keeps the resourceVersion');
  t.equal(c.store.resourceVersion, rv, 'and writes nothing');
  const changed = c.registry.update(def, 'default', 'web', { ...s, metadata: { ...s.metadata, labels: { a: 'b' } } });
  t.not(changed.metadata.resourceVersion, s.metadata.resourceVersion);
  t.equal(changed.metadata.generation, 1, 'metadata changes do not bump generation');
  const stale = apiError(t, () => c.registry.update(def, 'default', 'web', { ...s, metadata: { ...s.metadata, labels: { a: 'c' } } }));
  t.equal(stale.httpCode, 409);
  t.equal(stale.message, 'Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again');
  const specChange = c.registry.update(def, 'default', 'web', { ...changed, spec: { ...(changed as Service).spec, ports: [{ port: 81 }] } } as KObject);
  t.equal(specChange.metadata.generation, 2, 'spec changes bump generation');
  const exists = apiError(t, () => c.svc({ ports: [{ port: 80 }] }));
  t.equal(exists.message, 'services "web" already exists');
  t.equal(exists.httpCode, 409);
  const gen = c.registry.create(def, 'default', { metadata: { generateName: 'gen-' }, spec: { ports: [{ port: 80 }] } });
  t.match(gen.metadata.name, /^gen-[a-z0-9]{5}$/);
  const nons = apiError(t, () => c.registry.create(def, 'nope', { metadata: { name: 'x' }, spec: { ports: [{ port: 80 }] } }));
  t.equal(nons.message, 'namespaces "nope" not found');
  t.equal(nons.httpCode, 404);
  const missing = apiError(t, () => c.registry.get(def, 'default', 'missing'));
  t.same(missing.toStatus(), {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'services "missing" not found',
    reason: 'NotFound',
    details: { name: 'missing', kind: 'services' },
    code: 404,
  });
});

t.test('finalizers hold deletion until cleared', async (t) => {
  const c = core();
  const def = c.def('services');
  c.svc({ ports: [{ port: 80 }] }, 'fin', { metadata: { name: 'fin', finalizers: ['example.com/hold'] } } as Partial<KObject>);
  const r = c.registry.delete(def, 'default', 'fin');
  t.equal(r.deleted, false);
  t.ok(r.obj.metadata.deletionTimestamp, 'deletionTimestamp set');
  t.ok(c.store.get('services', 'default', 'fin'), 'still stored');
  const cur = c.store.get('services', 'default', 'fin')!;
  c.registry.patch(def, 'default', 'fin', 'merge', { metadata: { finalizers: null } });
  t.equal(c.store.get('services', 'default', 'fin'), undefined, 'removed once the finalizers are cleared');
  t.notOk(c.services.ipAllocators[0]!.has((cur as Service).spec.clusterIP!), 'and its ClusterIP released');
});

t.test('pods and endpoint slices are validated', async (t) => {
  const c = core();
  const e = apiError(t, () => c.registry.create(c.def('pods'), 'default', { metadata: { name: 'p' }, spec: {} }));
  t.equal(e.message, 'Pod "p" is invalid: spec.containers: Required value');
  const s = apiError(t, () =>
    c.registry.create(c.def('endpointslices', 'discovery.k8s.io'), 'default', {
      metadata: { name: 's' },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['2001:db8::1'] }, { addresses: [] }],
      ports: [{ port: 0 }],
    } as KObject),
  );
  t.equal(
    s.message,
    'EndpointSlice.discovery.k8s.io "s" is invalid: [endpoints[0].addresses[0]: Invalid value: "2001:db8::1": must be a valid IPv4 address, endpoints[1].addresses: Required value: must contain at least 1 address, ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive]',
  );
  const ok = c.registry.create(c.def('endpointslices', 'discovery.k8s.io'), 'default', {
    metadata: { name: 'ok' },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['198.18.0.1'] }],
    ports: [{ port: 80 }],
  } as KObject);
  t.same(ok['ports'], [{ port: 80, name: '', protocol: 'TCP' }], 'slice ports are defaulted');
});

t.test('namespaces: bootstrap set, protected, deleting one deletes its contents', async (t) => {
  const c = core();
  t.same(c.store.list('namespaces').map((n) => n.metadata.name), ['default', 'kube-node-lease', 'kube-public', 'kube-system']);
  t.match(c.store.get('namespaces', undefined, 'default'), { metadata: { labels: { 'kubernetes.io/metadata.name': 'default' } }, status: { phase: 'Active' } });
  const e = apiError(t, () => c.registry.delete(c.def('namespaces'), undefined, 'default'));
  t.equal(e.httpCode, 403);
  c.registry.create(c.def('namespaces'), undefined, { metadata: { name: 'team' } });
  const s = c.registry.create(c.def('services'), 'team', { metadata: { name: 'web' }, spec: { type: 'NodePort', ports: [{ port: 80 }] } }) as Service;
  c.registry.delete(c.def('namespaces'), undefined, 'team');
  t.equal(c.store.get('namespaces', undefined, 'team'), undefined);
  t.same(c.store.list('services', 'team'), [], 'its services are gone');
  t.notOk(c.services.nodePorts.has(s.spec.ports![0]!.nodePort!), 'and their allocations released');
});
