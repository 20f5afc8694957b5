// @kubernetes/client-node against the simulated API server: an informer that must survive a
// dropped watch plus 410 Gone by relisting, list paging, label/field selectors.
// Loopback only, no root needed.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  Watch,
  type V1Service,
} from '@kubernetes/client-node';
import { startApiServer, type ApiServer } from '../../../src/sim/apiserver/index.js';
import { scaledMs } from '../../../src/util/timescale.js';

async function waitFor(cond: () => boolean, what: string, describe: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + scaledMs(timeoutMs);
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; instead: ${describe()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function svc(name: string, labels: Record<string, string> = {}): V1Service {
  return { metadata: { name, labels }, spec: { selector: { app: name }, ports: [{ port: 80 }] } };
}

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ server: ApiServer; kc: KubeConfig; core: CoreV1Api }> {
  const server = await startApiServer();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-informer-'));
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  server.writeKubeconfig(join(dir, 'kubeconfig'));
  const kc = new KubeConfig();
  kc.loadFromFile(join(dir, 'kubeconfig'));
  return { server, kc, core: kc.makeApiClient(CoreV1Api) };
}

const labelPatch = (labels: Record<string, string>) => ({ metadata: { labels } });
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

t.test('informer relists after 410 Gone and ends equal to the server', async (t) => {
  const { server, kc, core } = await setup(t);
  for (const n of ['a', 'b', 'c']) await core.createNamespacedService({ namespace: 'default', body: svc(n) });

  let listCalls = 0;
  let gate: Promise<void> | undefined;
  const informer = makeInformer<V1Service>(kc, '/api/v1/namespaces/default/services', async () => {
    listCalls++;
    if (gate) await gate;
    return core.listNamespacedService({ namespace: 'default' });
  });
  const added: string[] = [];
  const updated: string[] = [];
  const deleted: string[] = [];
  const errors: unknown[] = [];
  informer.on('add', (o) => added.push(o.metadata!.name!));
  informer.on('update', (o) => updated.push(o.metadata!.name!));
  informer.on('delete', (o) => deleted.push(o.metadata!.name!));
  informer.on('error', (e) => errors.push(e));
  t.teardown(() => informer.stop());
  await informer.start();
  const names = () => informer.list().map((o) => o.metadata!.name!).sort().join(',');
  await waitFor(() => names() === 'a,b,c', 'the initial list in the cache', () => `cache=${names()} errors=${errors.length}`);

  // A live change arrives through the watch.
  await core.patchNamespacedService({ name: 'a', namespace: 'default', body: labelPatch({ v: '1' }) }, mergePatch);
  await waitFor(() => updated.includes('a'), 'the update of a through the watch', () => `updates=${updated}`);

  // Expire every resourceVersion and cut the watch: the re-watch must get 410 and relist.
  let release!: () => void;
  gate = new Promise<void>((r) => (release = r));
  server.compact();
  server.dropWatches();
  await waitFor(() => listCalls === 2, 'the relist after 410 Gone', () => `list calls=${listCalls} errors=${errors.map(String)}`);

  // While the informer is between watches: delete, change, create.
  await core.deleteNamespacedService({ name: 'b', namespace: 'default' });
  await core.patchNamespacedService({ name: 'c', namespace: 'default', body: labelPatch({ v: '2' }) }, mergePatch);
  await core.createNamespacedService({ namespace: 'default', body: svc('d') });
  gate = undefined;
  release();

  const serverState = async () => {
    const l = await core.listNamespacedService({ namespace: 'default' });
    return l.items.map((s) => `${s.metadata!.name}@${s.metadata!.resourceVersion}`).sort().join(',');
  };
  const cacheState = () => informer.list().map((s) => `${s.metadata!.name}@${s.metadata!.resourceVersion}`).sort().join(',');
  const want = await serverState();
  await waitFor(() => cacheState() === want, 'the cache to equal the server list', () => `cache=${cacheState()} server=${want}`);
  t.ok(deleted.includes('b'), `delete callback for b (deletes: ${deleted})`);
  t.ok(added.includes('d'), `add callback for d (adds: ${added})`);
  t.ok(updated.includes('c'), `update callback for c (updates: ${updated})`);
  t.same(errors, [], 'no error callbacks');

  // The new watch works: a delete arrives live.
  await core.deleteNamespacedService({ name: 'd', namespace: 'default' });
  await waitFor(() => deleted.includes('d'), 'the delete of d through the new watch', () => `deletes=${deleted}`);
  t.equal(listCalls, 2, 'no further relists were needed');
  t.equal(cacheState(), await serverState(), 'cache equals server after the live delete');
});

t.test('list paging with limit and continue', async (t) => {
  const { core } = await setup(t);
  const want: string[] = [];
  for (let i = 0; i < 7; i++) {
    const name = `svc-${i}`;
    want.push(name);
    await core.createNamespacedService({ namespace: 'default', body: svc(name) });
  }
  const got: string[] = [];
  const rvs = new Set<string>();
  let cont: string | undefined;
  let pages = 0;
  do {
    const page = await core.listNamespacedService(cont ? { namespace: 'default', limit: 3, _continue: cont } : { namespace: 'default', limit: 3 });
    pages++;
    t.ok(page.items.length <= 3, `page ${pages} has at most 3 items (got ${page.items.length})`);
    got.push(...page.items.map((s) => s.metadata!.name!));
    rvs.add(page.metadata!.resourceVersion!);
    if (pages === 1) t.equal(page.metadata!.remainingItemCount, 4, 'remainingItemCount after the first page');
    cont = page.metadata!._continue || undefined;
  } while (cont && pages < 10);
  t.equal(pages, 3, 'three pages for seven items');
  t.same(got, want, 'every item exactly once, in name order');
  t.equal(rvs.size, 1, `all pages report the first page's resourceVersion (got ${[...rvs]})`);

  const bad = await core.listNamespacedService({ namespace: 'default', limit: 3, _continue: 'garbage' }).then(
    () => 'no error',
    (e: unknown) => (e instanceof ApiException ? e.code : String(e)),
  );
  t.equal(bad, 400, 'an invalid continue token is a 400');
});

t.test('label and field selectors on list and watch', async (t) => {
  const { kc, core } = await setup(t);
  await core.createNamespacedService({ namespace: 'default', body: svc('a1', { tier: 'a' }) });
  await core.createNamespacedService({ namespace: 'default', body: svc('b1', { tier: 'b', canary: 'yes' }) });
  await core.createNamespacedService({ namespace: 'default', body: svc('b2', { tier: 'b' }) });
  await core.createNamespacedService({ namespace: 'default', body: svc('c1', { tier: 'c' }) });
  const list = async (labelSelector?: string, fieldSelector?: string) => {
    const req: { namespace: string; labelSelector?: string; fieldSelector?: string } = { namespace: 'default' };
    if (labelSelector) req.labelSelector = labelSelector;
    if (fieldSelector) req.fieldSelector = fieldSelector;
    const l = await core.listNamespacedService(req);
    return l.items.map((s) => s.metadata!.name!).join(',');
  };
  t.equal(await list('tier in (a,b),!canary'), 'a1,b2', 'in + !key');
  t.equal(await list('tier notin (a), canary'), 'b1', 'notin + key');
  t.equal(await list('tier==b,canary!=yes'), 'b2', '== and !=');
  t.equal(await list(undefined, 'metadata.name!=b1'), 'a1,b2,c1', 'field selector !=');
  t.equal(await list('tier=b', 'metadata.name=b1'), 'b1', 'label and field selector together');
  const status = await list('tier in (a').then(
    () => 'no error',
    (e: unknown) => (e instanceof ApiException ? `${e.code}` : String(e)),
  );
  t.equal(status, '400', 'an invalid label selector is a 400 BadRequest');
  const fstatus = await list(undefined, 'spec.nope=x').then(
    () => 'no error',
    (e: unknown) => (e instanceof ApiException ? `${e.code} ${String((e.body as string) ?? '')}` : String(e)),
  );
  t.match(fstatus, /^400 .*field label not supported: spec\.nope/, 'an unsupported field selector is a 400');

  // A watch with a selector sees objects leave (DELETED) and enter (ADDED) the selection.
  const start = await core.listNamespacedService({ namespace: 'default', labelSelector: 'tier=b' });
  const events: string[] = [];
  const watch = new Watch(kc);
  const req = await watch.watch(
    '/api/v1/namespaces/default/services',
    { labelSelector: 'tier=b', resourceVersion: start.metadata!.resourceVersion! },
    (type, obj: V1Service) => events.push(`${type} ${obj.metadata!.name} tier=${obj.metadata!.labels?.['tier']}`),
    () => {},
  );
  t.teardown(() => req.abort());
  await core.patchNamespacedService({ name: 'b2', namespace: 'default', body: labelPatch({ tier: 'c' }) }, mergePatch);
  await core.patchNamespacedService({ name: 'a1', namespace: 'default', body: labelPatch({ tier: 'b' }) }, mergePatch);
  await core.patchNamespacedService({ name: 'c1', namespace: 'default', body: labelPatch({ x: 'y' }) }, mergePatch);
  await core.patchNamespacedService({ name: 'b1', namespace: 'default', body: labelPatch({ x: 'y' }) }, mergePatch);
  await waitFor(() => events.length >= 3, 'three watch events', () => events.join('; '));
  await new Promise((r) => setTimeout(r, 200));
  t.same(
    events,
    ['DELETED b2 tier=b', 'ADDED a1 tier=b', 'MODIFIED b1 tier=b'],
    'leaving the selection is DELETED with the old content, entering is ADDED, c1 is never seen',
  );
});
