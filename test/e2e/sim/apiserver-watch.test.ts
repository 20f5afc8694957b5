// The simulated API server's wire protocol seen with plain HTTP: watch streams (synthetic
// ADDED, resume, 410 Gone, bookmarks, timeoutSeconds, tables), discovery, Status errors,
// patch content types, dry run, field validation. Loopback only, no root needed.
import t from 'tap';
import { request } from 'node:http';
import { startApiServer, type ApiServer } from '../../../src/sim/apiserver/index.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json: () => Record<string, unknown>;
}

function call(server: ApiServer, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = request(server.url + path, { method, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json: () => JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Read a watch stream until the server ends it; returns the decoded events. */
async function watchAll(server: ApiServer, path: string, headers: Record<string, string> = {}): Promise<{ type: string; object: Record<string, unknown> }[]> {
  const r = await call(server, 'GET', path, undefined, headers);
  if (r.status !== 200) throw new Error(`watch ${path} answered ${r.status}: ${r.body}`);
  return r.body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { type: string; object: Record<string, unknown> });
}

const svc = (name: string) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { ports: [{ port: 80 }] } });
const SVCS = '/api/v1/namespaces/default/services';
const nameOf = (o: Record<string, unknown>) => (o['metadata'] as { name?: string }).name;

t.test('watch: synthetic ADDED, resume from a version, 410 Gone, bookmarks, timeout', async (t) => {
  const server = await startApiServer({ bookmarkIntervalMs: 100, watchHistory: 5 });
  t.teardown(() => server.close());
  await call(server, 'POST', SVCS, svc('a'));
  await call(server, 'POST', SVCS, svc('b'));
  const list = (await call(server, 'GET', SVCS)).json();
  const rv = (list['metadata'] as { resourceVersion: string }).resourceVersion;

  const initial = await watchAll(server, `${SVCS}?watch=true&timeoutSeconds=1`);
  t.same(initial.map((e) => `${e.type} ${nameOf(e.object)}`), ['ADDED a', 'ADDED b'], 'no resourceVersion: the current state as ADDED, then the timeout ends the stream');

  await call(server, 'DELETE', `${SVCS}/a`);
  await call(server, 'PATCH', `${SVCS}/b`, { metadata: { labels: { x: 'y' } } }, { 'Content-Type': 'application/merge-patch+json' });
  const resumed = await watchAll(server, `${SVCS}?watch=1&resourceVersion=${rv}&timeoutSeconds=1`);
  t.same(resumed.map((e) => `${e.type} ${nameOf(e.object)}`), ['DELETED a', 'MODIFIED b'], 'resuming replays what happened after the version');

  for (let i = 0; i < 6; i++) await call(server, 'POST', SVCS, svc(`n${i}`));
  const expired = await watchAll(server, `${SVCS}?watch=true&resourceVersion=${rv}`);
  t.equal(expired.length, 1, 'one event, then the stream ends');
  t.same(expired[0], {
    type: 'ERROR',
    object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: expired[0]?.object['message'], reason: 'Expired', code: 410 },
  });
  t.match(expired[0]?.object['message'], new RegExp(`^too old resource version: ${rv} \\(\\d+\\)$`));
  // Ahead of the store (a client of a wiped or restored store): kube-apiserver's "Too large
  // resource version" ERROR event, on which clients relist.
  const ahead = await watchAll(server, `${SVCS}?watch=true&resourceVersion=999999`);
  t.equal(ahead.length, 1, 'ahead of the store: one event, then the stream ends');
  t.match(ahead[0], { type: 'ERROR', object: { code: 504, reason: 'Timeout', message: /^Too large resource version: 999999, current: \d+$/ } });

  const bm = await watchAll(server, `${SVCS}?watch=true&resourceVersion=0&allowWatchBookmarks=true&timeoutSeconds=1`);
  const bookmarks = bm.filter((e) => e.type === 'BOOKMARK');
  t.ok(bookmarks.length >= 1, `bookmarks arrive (got ${bm.map((e) => e.type).join(',')})`);
  t.same(Object.keys(bookmarks[0]?.object ?? {}).sort(), ['apiVersion', 'kind', 'metadata'], 'a bookmark carries only kind, apiVersion and metadata');
  t.match((bookmarks[0]?.object['metadata'] as { resourceVersion?: string }).resourceVersion, /^\d+$/);
});

/** An open watch stream: events so far, and a promise for the end of the stream. */
function openWatch(server: ApiServer, path: string, headers: Record<string, string> = {}): { events: { type: string; object: Record<string, unknown> }[]; ended: Promise<void> } {
  const events: { type: string; object: Record<string, unknown> }[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    const req = request(server.url + path, { headers }, (res) => {
      let buf = '';
      res.on('data', (b: Buffer) => {
        buf += b.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buf.slice(0, nl)) as { type: string; object: Record<string, unknown> });
          buf = buf.slice(nl + 1);
        }
      });
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
  return { events, ended };
}

async function until(cond: () => boolean, what: string, describe: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; instead: ${describe()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('watch: server.dropWatches ends streams; single-object and table watches', async (t) => {
  const server = await startApiServer();
  t.teardown(() => server.close());
  await call(server, 'POST', SVCS, svc('a'));
  await call(server, 'POST', SVCS, svc('b'));
  const w = openWatch(server, `${SVCS}/a?watch=true`, { Accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json' });
  await until(() => w.events.length === 1, 'the synthetic ADDED of a', () => JSON.stringify(w.events));
  await call(server, 'PATCH', `${SVCS}/b`, { metadata: { labels: { x: 'y' } } }, { 'Content-Type': 'application/merge-patch+json' });
  await call(server, 'PATCH', `${SVCS}/a`, { metadata: { labels: { x: 'y' } } }, { 'Content-Type': 'application/merge-patch+json' });
  await until(() => w.events.length === 2, 'the MODIFIED of a', () => JSON.stringify(w.events.map((e) => e.type)));
  server.dropWatches();
  await w.ended;
  t.same(w.events.map((e) => e.type), ['ADDED', 'MODIFIED'], 'only object a, then the stream ends');
  const table = w.events[0]!.object as { kind: string; columnDefinitions: { name: string }[]; rows: { cells: unknown[]; object: { kind: string } }[] };
  t.equal(table.kind, 'Table');
  t.same(table.columnDefinitions.map((c) => c.name), ['Name', 'Type', 'Cluster-IP', 'External-IP', 'Port(s)', 'Age', 'Selector']);
  t.equal(table.rows[0]!.cells[0], 'a');
  t.equal(table.rows[0]!.object.kind, 'PartialObjectMetadata');
});

t.test('discovery documents', async (t) => {
  const server = await startApiServer();
  t.teardown(() => server.close());
  t.match((await call(server, 'GET', '/version')).json(), { major: '1', gitVersion: /^v1\.\d+\.\d+$/ });
  t.match((await call(server, 'GET', '/api')).json(), { kind: 'APIVersions', versions: ['v1'] });
  const core = (await call(server, 'GET', '/api/v1')).json() as { resources: { name: string; shortNames?: string[]; namespaced: boolean; kind: string }[] };
  t.same(core.resources.map((r) => r.name), ['namespaces', 'namespaces/status', 'services', 'services/status', 'pods', 'pods/status', 'nodes', 'nodes/status']);
  t.match(core.resources.find((r) => r.name === 'services'), { shortNames: ['svc'], namespaced: true, kind: 'Service' });
  t.match((await call(server, 'GET', '/apis')).json(), { kind: 'APIGroupList', groups: [{ name: 'discovery.k8s.io', preferredVersion: { groupVersion: 'discovery.k8s.io/v1' } }] });
  t.match((await call(server, 'GET', '/apis/discovery.k8s.io/v1')).json(), { groupVersion: 'discovery.k8s.io/v1', resources: [{ name: 'endpointslices', kind: 'EndpointSlice' }] });
  t.equal((await call(server, 'GET', '/openapi/v3')).status, 404);
});

t.test('writes over HTTP: Status errors, patch types, dry run, field validation', async (t) => {
  const server = await startApiServer();
  t.teardown(() => server.close());
  const created = await call(server, 'POST', SVCS, svc('web'));
  t.equal(created.status, 201);
  const dup = await call(server, 'POST', SVCS, svc('web'));
  t.match(dup, { status: 409 });
  t.match(dup.json(), { kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409, details: { name: 'web', kind: 'services' } });

  const jp = await call(server, 'PATCH', `${SVCS}/web`, [{ op: 'add', path: '/metadata/labels', value: { a: 'b' } }], { 'Content-Type': 'application/json-patch+json' });
  t.match(jp.json(), { metadata: { labels: { a: 'b' } } }, 'JSON patch');
  const failed = await call(server, 'PATCH', `${SVCS}/web`, [{ op: 'test', path: '/metadata/name', value: 'x' }], { 'Content-Type': 'application/json-patch+json' });
  t.equal(failed.status, 422, 'a failing JSON patch test is 422');
  const smp = await call(server, 'PATCH', `${SVCS}/web`, { spec: { ports: [{ port: 80, targetPort: 8080 }] } }, { 'Content-Type': 'application/strategic-merge-patch+json' });
  t.match(smp.json(), { spec: { ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] } }, 'strategic merge patch');
  const ssa = await call(server, 'PATCH', `${SVCS}/web`, 'x: y', { 'Content-Type': 'application/apply-patch+yaml' });
  t.equal(ssa.status, 415, 'server-side apply is refused clearly');

  const dry = await call(server, 'POST', `${SVCS}?dryRun=All`, svc('dry'));
  t.equal(dry.status, 201);
  t.equal((await call(server, 'GET', `${SVCS}/dry`)).status, 404, 'dry run stored nothing');

  const strict = await call(server, 'POST', `${SVCS}?fieldValidation=Strict`, { ...svc('strict'), spec: { ports: [{ port: 80 }], bogus: 1 } });
  t.match(strict.json(), { code: 400, reason: 'BadRequest', message: 'Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogus"' });
  const warn = await call(server, 'POST', SVCS, { ...svc('warn'), spec: { ports: [{ port: 80 }], bogus: 1 } });
  t.equal(warn.status, 201);
  t.equal(warn.headers['warning'], '299 - "unknown field \\"spec.bogus\\""', 'Warn (the default) answers with a warning header');
  t.notOk('bogus' in ((warn.json()['spec'] as Record<string, unknown>) ?? {}), 'and drops the unknown field');
  const wrongType = await call(server, 'POST', SVCS, { ...svc('wt'), spec: { ports: [{ port: '80' }] } });
  t.match(wrongType.json(), { code: 400, message: /cannot unmarshal string into Go struct field Service\.spec\.ports\.port of type int32/ });

  const put = await call(server, 'PUT', `${SVCS}/web`, { ...svc('web'), metadata: { name: 'web', resourceVersion: '1' } });
  t.match(put.json(), { code: 409, reason: 'Conflict' }, 'PUT with a stale resourceVersion');
  t.match((await call(server, 'POST', `${SVCS}/web`, svc('web'))).json(), { code: 405, reason: 'MethodNotAllowed' });
  t.match((await call(server, 'GET', '/api/v1/nope')).json(), { code: 404, reason: 'NotFound' });
  t.match((await call(server, 'GET', `${SVCS}?labelSelector=a%20in%20(`)).json(), { code: 400, reason: 'BadRequest' });

  const del = await call(server, 'DELETE', `${SVCS}/web`);
  t.match(del.json(), { kind: 'Service', metadata: { name: 'web' } }, 'DELETE of a service returns the object');
  t.equal((await call(server, 'GET', `${SVCS}/web`)).status, 404);
});

t.test('pods: graceful deletion with gracePeriodSeconds keeps the pod terminating, then removes it', async (t) => {
  const server = await startApiServer();
  t.teardown(() => server.close());
  const pod = {
    metadata: { name: 'p' },
    spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'img' }] },
    status: { phase: 'Running', podIP: '198.18.128.1', conditions: [{ type: 'Ready', status: 'True' }] },
  };
  const created = (await call(server, 'POST', '/api/v1/namespaces/default/pods', pod)).json();
  t.match(created, { status: { podIP: '198.18.128.1', podIPs: [{ ip: '198.18.128.1' }], phase: 'Running' } }, 'status is accepted on create');
  const del = (await call(server, 'DELETE', '/api/v1/namespaces/default/pods/p?gracePeriodSeconds=1')).json();
  t.match(del, { metadata: { deletionGracePeriodSeconds: 1, deletionTimestamp: /Z$/ } });
  t.equal((await call(server, 'GET', '/api/v1/namespaces/default/pods/p')).status, 200, 'still there while terminating');
  const deadline = Date.now() + 5000;
  let status = 200;
  while (status === 200 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    status = (await call(server, 'GET', '/api/v1/namespaces/default/pods/p')).status;
  }
  t.equal(status, 404, 'removed after the grace period');
});
