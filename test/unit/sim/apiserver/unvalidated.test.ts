// Test-only paths of the simulator (and the store hook benchmarks use): objects written past validation are listed and watched as
// they are (and do not upset the EndpointSlice controller), and a server restarted on the same
// core serves the same store and resourceVersions.
import t from 'tap';
import { createApiCore, startApiServer, stopApiCore, writeUnvalidated } from '../../../../src/sim/apiserver/index.js';

async function getJSON(url: string): Promise<Record<string, unknown>> {
  const r = await fetch(url);
  return (await r.json()) as Record<string, unknown>;
}

t.test('unvalidated objects are served as written; the controller ignores what it cannot read', async (t) => {
  const core = createApiCore();
  t.teardown(() => stopApiCore(core));
  core.registry.create(core.services.def, 'default', { metadata: { name: 'good' }, spec: { selector: { app: 'x' }, ports: [{ port: 80 }] } });
  writeUnvalidated(core, 'services', { metadata: { namespace: 'default', name: 'bad' }, spec: { selector: 'everything', ports: 'eighty' } });
  writeUnvalidated(core, 'services', { metadata: { namespace: 'default', labels: 7 }, spec: 42 });
  writeUnvalidated(core, 'services', { metadata: { namespace: 'default', name: 'worse' }, spec: { selector: { app: 5 } } });
  await core.controller.settled();
  const api = await startApiServer({ core });
  t.teardown(() => api.close());
  const list = await getJSON(`${api.url}/api/v1/services?labelSelector=${encodeURIComponent('!service.kubernetes.io/headless')}`);
  const items = list['items'] as Record<string, unknown>[];
  t.equal(items.length, 4, 'all four listed (kubernetes is not seeded here: good, bad, unnamed, worse)');
  const bad = items.find((i) => (i['metadata'] as Record<string, unknown>)['name'] === 'bad')!;
  t.same((bad['spec'] as Record<string, unknown>)['ports'], 'eighty', 'served exactly as written');
  t.ok((bad['metadata'] as Record<string, unknown>)['resourceVersion'], 'stamped with a resourceVersion');
  writeUnvalidated(core, 'services', { metadata: { namespace: 'default', name: 'bad' } }, 'DELETED');
  t.equal(core.store.get('services', 'default', 'bad'), undefined, 'deleted past validation too');
});

t.test('a server restarted on the same core serves the same store on the same port', async (t) => {
  const core = createApiCore();
  t.teardown(() => stopApiCore(core));
  const a = await startApiServer({ core });
  core.registry.create(core.services.def, 'default', { metadata: { name: 'kept' }, spec: { ports: [{ port: 80 }] } });
  const before = await getJSON(`${a.url}/api/v1/namespaces/default/services/kept`);
  await a.close();
  await t.rejects(fetch(`${a.url}/version`), 'down means down');
  const b = await startApiServer({ core, port: a.port });
  t.teardown(() => b.close());
  t.equal(b.url, a.url);
  const after = await getJSON(`${b.url}/api/v1/namespaces/default/services/kept`);
  t.same(after, before, 'same object, same resourceVersion');
  core.registry.create(core.services.def, 'default', { metadata: { name: 'new' }, spec: { selector: { app: 'y' }, ports: [{ port: 80 }] } });
  await core.controller.settled();
  t.pass('the controller still runs after the first server closed');
});

t.test('onStored reports each commit before any watch hears of it, until unsubscribed', async (t) => {
  const api = await startApiServer({});
  t.teardown(() => api.close());
  const seen: string[] = [];
  const off = api.onStored((e) => seen.push(`${e.type} ${e.resource} ${e.object.metadata.name ?? ''}`));
  const body = JSON.stringify({ metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } });
  const r = await fetch(`${api.url}/api/v1/namespaces/default/services`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  t.equal(r.status, 201);
  await api.settled();
  t.ok(seen.includes('ADDED services web'), 'the Service write');
  t.ok(seen.some((s) => s.startsWith('ADDED endpointslices.discovery.k8s.io web-')), "the controller's EndpointSlice for it");
  off();
  const n = seen.length;
  await fetch(`${api.url}/api/v1/namespaces/default/services/web`, { method: 'DELETE' });
  await api.settled();
  t.equal(seen.length, n, 'nothing after unsubscribing');
});
