// Guards "lean by construction" (DESIGN.md): what the model keeps of an API object is exactly
// what the planner reads. A Service or EndpointSlice as a real API server sends it (managedFields,
// annotations, status, targetRefs) goes in; afterwards nothing of the raw object may be reachable
// from the tracker or its snapshot, the cached forms carry only their documented fields, and a
// Service's endpoint list is the slice's own, not a copy. If one of these fails, a field was added
// to the cached form or a raw object is being kept: decide whether the planner really needs it.
import t from 'tap';
import { ChangeTracker } from '../../../src/model/tracker.js';
import { parseEndpointSlice } from '../../../src/model/endpoints.js';
import { canonicalIPv4 } from '../../../src/util/ipv4.js';

function apiService(): unknown {
  return {
    kind: 'Service',
    apiVersion: 'v1',
    metadata: {
      name: 'web',
      namespace: 'shop',
      uid: '6a1f0b7e-1111-4c1e-9d7a-0123456789ab',
      resourceVersion: '48211',
      creationTimestamp: '2026-11-30T10:00:00Z',
      labels: { app: 'web', tier: 'front' },
      annotations: {
        'kubectl.kubernetes.io/last-applied-configuration': '{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"}}',
        'endpoints.kubernetes.io/last-change-trigger-time': '2026-11-30T10:00:01Z',
      },
      managedFields: [{ manager: 'kubectl', operation: 'Apply', apiVersion: 'v1', time: '2026-11-30T10:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:ports': {} } } }],
    },
    spec: {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10'],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: 'SingleStack',
      selector: { app: 'web' },
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 31080 }],
      sessionAffinity: 'None',
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      allocateLoadBalancerNodePorts: true,
      externalIPs: ['192.0.2.10'],
    },
    status: { loadBalancer: { ingress: [{ ip: '192.0.2.20', ipMode: 'VIP' }] }, conditions: [] },
  };
}

function apiSlice(): unknown {
  return {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    metadata: {
      name: 'web-x7k2p',
      generateName: 'web-',
      namespace: 'shop',
      uid: '7b2e0c8f-2222-4c1e-9d7a-0123456789ab',
      resourceVersion: '48215',
      creationTimestamp: '2026-11-30T10:00:01Z',
      generation: 3,
      labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-11-30T10:00:01Z' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: 'web', uid: '6a1f0b7e-1111-4c1e-9d7a-0123456789ab', controller: true, blockOwnerDeletion: true }],
      managedFields: [{ manager: 'kube-controller-manager', operation: 'Update', apiVersion: 'discovery.k8s.io/v1', time: '2026-11-30T10:00:01Z', fieldsType: 'FieldsV1', fieldsV1: {} }],
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP', appProtocol: 'http' }],
    endpoints: [1, 2, 3].map((n) => ({
      addresses: [`10.244.${n}.7`],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${n}`,
      zone: 'zone-a',
      hints: { forZones: [{ name: 'zone-a' }] },
      targetRef: { kind: 'Pod', namespace: 'shop', name: `web-${n}`, uid: `uid-${n}` },
    })),
  };
}

/** Every object and array inside a value (not the value itself when it is a primitive). */
function objectsIn(v: unknown, into = new Set<object>()): Set<object> {
  if (typeof v !== 'object' || v === null || into.has(v)) return into;
  into.add(v);
  for (const x of Object.values(v)) objectsIn(x, into);
  return into;
}

/** Everything reachable from `root` through own properties, array items and Map/Set entries. */
function reachable(root: unknown): Set<object> {
  const seen = new Set<object>();
  const stack: unknown[] = [root];
  while (stack.length) {
    const v = stack.pop();
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null || seen.has(v)) continue;
    seen.add(v);
    if (typeof v === 'function') continue;
    if (v instanceof Map) for (const [k, x] of v) stack.push(k, x);
    else if (v instanceof Set) for (const x of v) stack.push(x);
    for (const key of Reflect.ownKeys(v)) stack.push((v as Record<string | symbol, unknown>)[key]);
  }
  return seen;
}

const SERVICE_PORT_FIELDS = [
  'affinityTimeoutSeconds', 'clusterIP', 'externalIPs', 'externalTrafficPolicy', 'family', 'healthCheckNodePort', 'internalTrafficPolicy',
  'key', 'loadBalancerIngress', 'loadBalancerSourceRanges', 'name', 'namespace', 'nodePort', 'port', 'portName', 'protocol',
  'targetPort', 'trafficDistribution', 'type',
];
// v4 is for the nftables compiler and encoder, which walk every endpoint of a full sync.
const ENDPOINT_FIELDS = ['ip', 'isLocal', 'nodeHints', 'nodeName', 'port', 'ready', 'serving', 'terminating', 'v4', 'zone', 'zoneHints'];

t.test('the tracker keeps only what the planner reads, and nothing of the raw objects', async (t) => {
  const tracker = new ChangeTracker({ nodeName: 'node-2', families: [4], startTime: new Date(0) });
  const svc = apiService();
  const slice = apiSlice();
  tracker.upsertService(svc);
  tracker.upsertEndpointSlice(slice);
  const { snapshots } = tracker.takeSnapshot();
  const snap = snapshots[4];

  const sp = snap.services.get('shop/web:http/TCP');
  t.ok(sp, 'the service port is in the snapshot');
  t.same(Object.keys(sp!).sort(), SERVICE_PORT_FIELDS, 'a ServicePort carries exactly its documented fields');
  const eps = snap.endpoints.get('shop/web:http/TCP')!;
  t.equal(eps.length, 3);
  for (const e of eps) t.same(Object.keys(e).sort(), ENDPOINT_FIELDS, 'an Endpoint carries exactly its documented fields');
  for (const e of eps) t.equal(e.v4, canonicalIPv4(e.ip), `${e.ip}: v4 is the address's value`);
  const v6 = parseEndpointSlice(
    {
      metadata: { namespace: 'shop', name: 'web-v6', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv6',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: ['fd00::1'] }],
    },
    'node-2',
  );
  t.same(v6.byPort[0]?.map((e) => [e.ip, e.v4]), [['fd00::1', -1]], 'an IPv6 endpoint has no v4 value');

  const raw = new Set([...objectsIn(svc), ...objectsIn(slice)]);
  const kept = reachable(tracker);
  for (const o of reachable(snapshots)) kept.add(o);
  const leaked = [...raw].filter((o) => kept.has(o));
  t.same(leaked, [], 'no part of the raw Service or EndpointSlice is reachable from the tracker or the snapshot');
});

t.test("a Service with one slice shares the slice's endpoint objects instead of copying them", async (t) => {
  const tracker = new ChangeTracker({ nodeName: 'node-2', families: [4] });
  tracker.upsertService(apiService());
  tracker.upsertEndpointSlice(apiSlice());
  const eps = tracker.takeSnapshot().snapshots[4].endpoints.get('shop/web:http/TCP')!;
  const parsed = parseEndpointSlice(apiSlice(), 'node-2');
  t.same(eps, parsed.byPort[0], 'same content as the slice decodes to');
  const kept = reachable(tracker);
  let lists = 0;
  for (const o of kept) if (Array.isArray(o) && o.length === 3 && o.every((e) => typeof e === 'object' && e !== null && 'ip' in e)) lists++;
  t.equal(lists, 1, 'one list of the three endpoints in all of the tracker, not one per stage');
});
