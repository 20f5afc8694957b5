import t from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig, type V1Service } from '@kubernetes/client-node';
import { DEFAULT_BACKOFF, ResilientInformer, backoffDelay } from '../../../src/kube/informer.js';
import { getJSON } from '../../../src/kube/rest.js';
import { proxyLabelSelector } from '../../../src/kube/watches.js';
import { setLogSink } from '../../../src/util/log.js';

const logs: string[] = [];
setLogSink((l) => logs.push(l));

/** A tiny stand-in API server for one resource: list + chunked watch, restartable on its port. */
class FakeAPI {
  rv = 100;
  readonly objects = new Map<string, V1Service>();
  private watchers = new Set<ServerResponse>();
  private server: Server | undefined;
  port = 0;
  /** Requests seen, e.g. "list", "watch rv=105". */
  readonly requests: string[] = [];
  /** When set, the next watch request answers with a 410 Gone event. */
  expireNextWatch = false;
  /** When set, every watch request is answered with an empty body, ended at once. */
  emptyWatches = false;
  /** When set, watch requests are answered 200 with headers and then nothing, ever (a dead connection). */
  silentWatches = false;
  /** When set, watch requests are refused with this status (a Status body). */
  watchStatus: number | undefined;
  /** When set, a list page asked for with a continue token is answered 410 (the token expired). */
  expireContinue = false;
  /** When set, watch requests get this many bytes without a newline, then nothing. */
  unendingLine = 0;
  /** When set, watch requests get kube-apiserver's "Too large resource version" ERROR event (a store behind them). */
  tooLargeWatches = false;

  put(name: string): V1Service {
    const obj: V1Service = { apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'ns', name, resourceVersion: String(++this.rv) } };
    const type = this.objects.has(name) ? 'MODIFIED' : 'ADDED';
    this.objects.set(name, obj);
    this.send(type, obj);
    return obj;
  }

  del(name: string): void {
    const obj = this.objects.get(name);
    if (!obj) return;
    this.objects.delete(name);
    this.send('DELETED', { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++this.rv) } });
  }

  private send(type: string, object: unknown): void {
    for (const w of this.watchers) w.write(JSON.stringify({ type, object }) + '\n');
  }

  /** Ends every open watch normally, as the server's watch timeout does. */
  endWatches(): void {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
  }

  watcherCount(): number {
    return this.watchers.size;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen({ host: '127.0.0.1', port: this.port }, r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    for (const w of this.watchers) w.destroy();
    this.watchers.clear();
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/api/v1/services') {
      res.writeHead(404).end();
      return;
    }
    if (url.searchParams.get('watch') === 'true') {
      this.requests.push(`watch rv=${url.searchParams.get('resourceVersion')} ls=${url.searchParams.get('labelSelector')}`);
      if (this.watchStatus !== undefined) {
        const code = this.watchStatus;
        res.writeHead(code, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason: code === 403 ? 'Forbidden' : 'TooManyRequests', message: `refused with ${code}` }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
      if (this.silentWatches) {
        res.flushHeaders();
        this.watchers.add(res);
        res.on('close', () => this.watchers.delete(res));
        return;
      }
      if (this.unendingLine > 0) {
        res.write(Buffer.alloc(this.unendingLine, 'x'));
        this.watchers.add(res);
        res.on('close', () => this.watchers.delete(res));
        return;
      }
      if (this.tooLargeWatches) {
        const rv = url.searchParams.get('resourceVersion');
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 504, reason: 'Timeout', message: `Too large resource version: ${rv}, current: ${this.rv}` } }) + '\n');
        return;
      }
      if (this.emptyWatches) {
        res.end();
        return;
      }
      if (this.expireNextWatch) {
        this.expireNextWatch = false;
        res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 410, reason: 'Expired' } }) + '\n');
        return;
      }
      res.write('');
      this.watchers.add(res);
      res.on('close', () => this.watchers.delete(res));
      return;
    }
    const cont = url.searchParams.get('continue');
    this.requests.push(`list ls=${url.searchParams.get('labelSelector')} limit=${url.searchParams.get('limit')}${cont !== null ? ` continue=${cont}` : ''}`);
    if (cont !== null && this.expireContinue) {
      res.writeHead(410, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 410, reason: 'Expired', message: 'The provided continue parameter is too old' }));
      return;
    }
    // Pages as the API server cuts them: `limit` items, a continue token while more remain.
    const all = [...this.objects.values()];
    const from = Number(url.searchParams.get('continue') ?? 0);
    const limit = Number(url.searchParams.get('limit') ?? all.length) || all.length;
    const items = all.slice(from, from + limit);
    const more = from + limit < all.length;
    const body = { kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv), ...(more ? { continue: String(from + limit) } : {}) }, items };
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  }
}

interface Event {
  op: 'upsert' | 'remove';
  name: string;
  rv: string | undefined;
}

async function until(t: { fail(m: string): unknown }, what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for: ${what}`);
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('backoff grows exponentially to the cap, with bounded jitter', async (t) => {
  const b = { initialMs: 500, maxMs: 30_000 };
  t.same([1, 2, 3, 4, 7, 20].map((n) => backoffDelay(b, n, () => 0.5)), [500, 1000, 2000, 4000, 30_000, 30_000]);
  t.same([1, 2, 3, 4, 5, 9].map((n) => backoffDelay(DEFAULT_BACKOFF, n, () => 1)), [240, 480, 960, 1920, 1920, 1920], 'the default never waits more than 1.92 s');
  t.equal(backoffDelay(b, 1, () => 0), 400);
  t.equal(backoffDelay(b, 1, () => 1), 600);
});

t.test("kube-proxy's label selector", async (t) => {
  t.equal(proxyLabelSelector(), '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless');
  t.equal(proxyLabelSelector('ferry'), 'service.kubernetes.io/service-proxy-name=ferry,!service.kubernetes.io/headless');
});

t.test('a list in pages: each page is asked for before the one before it is decoded; a failed page fails the list, retried whole', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  for (const n of ['a', 'b', 'c', 'd', 'e']) api.put(n);
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }, { name: 'u' });
  const order: string[] = [];
  let failPage: string | undefined;
  const get: typeof getJSON = (k, path, query, signal) => {
    order.push(`get ${query.continue ?? 'first'}`);
    if (failPage !== undefined && query.continue === failPage) return Promise.reject(new Error('page refused'));
    return getJSON(k, path, query, signal);
  };
  const meta = (o: unknown) => (o as V1Service).metadata!;
  const paged = () =>
    new ResilientInformer({
      resource: 'services',
      path: '/api/v1/services',
      kubeConfig: kc,
      pageSize: 2,
      get,
      backoff: { initialMs: 20, maxMs: 50 },
      sink: { upsert: (o) => order.push(`upsert ${meta(o).name}`), remove: (o) => order.push(`remove ${meta(o).name}`) },
    });
  const inf = paged();
  t.teardown(() => inf.stop());
  inf.start();
  t.equal(await inf.waitForSync(10_000), true, 'synced');
  t.same(order, ['get first', 'get 2', 'upsert a', 'upsert b', 'get 4', 'upsert c', 'upsert d', 'upsert e'], 'three pages, each asked for before the previous is decoded');
  await inf.stop();

  // The second page fails while the first is decoded: the list fails and is retried whole.
  order.length = 0;
  failPage = '2';
  logs.length = 0;
  const again = paged();
  t.teardown(() => again.stop());
  again.start();
  await until(t, 'failure logged', () => logs.some((l) => /services failed: page refused/.test(l)));
  await until(t, 'the list is retried from its first page', () => order.filter((o) => o === 'get first').length >= 2);
  failPage = undefined;
  t.equal(await again.waitForSync(10_000), true, 'synced once the page is served');
  await again.stop();
});

t.test('lists, watches, survives an API server restart and a 410 Gone', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.put('b');
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }, { name: 'u' });
  const events: Event[] = [];
  const labelSelector = proxyLabelSelector();
  const meta = (o: unknown) => (o as V1Service).metadata!;
  const inf = new ResilientInformer({
    resource: 'services',
    path: '/api/v1/services',
    labelSelector,
    kubeConfig: kc,
    backoff: { initialMs: 20, maxMs: 200 },
    sink: {
      upsert: (o) => events.push({ op: 'upsert', name: meta(o).name!, rv: meta(o).resourceVersion }),
      remove: (o) => events.push({ op: 'remove', name: meta(o).name!, rv: meta(o).resourceVersion }),
    },
  });
  t.teardown(() => inf.stop());
  logs.length = 0;
  inf.start();
  t.equal(await inf.waitForSync(10_000), true, 'initial list synced');
  t.same(events.map((e) => `${e.op} ${e.name}`).sort(), ['upsert a', 'upsert b']);
  t.match(api.requests[0], /^list ls=!service\.kubernetes\.io\/service-proxy-name,!service\.kubernetes\.io\/headless limit=500$/, 'list uses the selector, in pages');

  await until(t, 'watch connected', () => api.requests.some((r) => r.startsWith('watch')));
  t.match(api.requests.find((r) => r.startsWith('watch')), /ls=!service/, 'watch uses the selector');
  api.put('c');
  await until(t, 'watch delivers c', () => events.some((e) => e.name === 'c'));

  // The API server goes away; meanwhile a is deleted and b changes.
  await api.stop();
  await until(t, 'failure logged', () => logs.some((l) => /watch for services failed: .*; retrying/.test(l)));
  await new Promise((r) => setTimeout(r, 300));
  t.ok(inf.failures() >= 2, `kept retrying while down (attempts: ${inf.failures()})`);
  t.equal(logs.filter((l) => /watch for services failed/.test(l)).length, 1, 'the failure is logged once, not per retry');
  api.objects.delete('a');
  const b2 = api.put('b');
  events.length = 0;
  await api.start();
  await until(t, 'recovered', () => logs.some((l) => /watch for services recovered after \d+ attempts?/.test(l)));
  t.same(
    events.map((e) => `${e.op} ${e.name}`).sort(),
    ['remove a', 'upsert b'],
    'relist after the restart reports the deletion and the change, and not the unchanged c',
  );
  t.equal(events.find((e) => e.name === 'b')?.rv, b2.metadata!.resourceVersion);

  // 410 Gone on the next watch: the informer relists without reporting unchanged objects.
  events.length = 0;
  const count = (prefix: string) => api.requests.filter((r) => r.startsWith(prefix)).length;
  const listsBefore = count('list');
  const watchesBefore = count('watch');
  api.expireNextWatch = true;
  for (const w of (api as unknown as { watchers: Set<ServerResponse> }).watchers) w.end();
  await until(t, 'relisted after 410', () => count('list') > listsBefore);
  // The fake server keeps no history, so wait for the watch after the relist before changing.
  await until(t, 'watching again', () => count('watch') >= watchesBefore + 2 && api.watcherCount() > 0);
  api.put('d');
  await until(t, 'd arrives after the relist', () => events.some((e) => e.name === 'd'));
  t.same(events.map((e) => `${e.op} ${e.name}`), ['upsert d'], 'nothing but the new object reported');

  await inf.stop();
  api.put('e');
  await new Promise((r) => setTimeout(r, 100));
  t.notOk(events.some((e) => e.name === 'e'), 'no events after stop');
});

t.test('a watch that ends at once without an event waits out the backoff (client-go: "very short watch")', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.emptyWatches = true;
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }, { name: 'u' });
  const inf = new ResilientInformer({
    resource: 'services',
    path: '/api/v1/services',
    labelSelector: proxyLabelSelector(),
    kubeConfig: kc,
    backoff: { initialMs: 20, maxMs: 200 },
    sink: { upsert: () => {}, remove: () => {} },
  });
  t.teardown(() => inf.stop());
  logs.length = 0;
  inf.start();
  t.equal(await inf.waitForSync(10_000), true, 'initial list synced');
  await new Promise((r) => setTimeout(r, 1000));
  const watches = api.requests.filter((r) => r.startsWith('watch')).length;
  // Backoff 20, 40, 80, 160, 200, 200 … ms (±20%): about eight in a second; without it, thousands.
  t.ok(watches >= 2 && watches <= 20, `watches in a second: ${watches}`);
  t.equal(api.requests.filter((r) => r.startsWith('list')).length, 1, 'resumed without a relist: nothing was lost');
  t.equal(logs.filter((l) => /watch for services: the watch ended after \d+ ms without an event; retrying/.test(l)).length, 1, 'said once');
  t.ok(inf.failures() >= 2, `counted as failures (${inf.failures()})`);
  api.emptyWatches = false;
  await until(t, 'a real watch again', () => api.watcherCount() > 0);
  api.put('b');
  await until(t, 'recovered', () => logs.some((l) => /watch for services recovered after \d+ attempts?/.test(l)));
});

function informerFor(api: FakeAPI, extra: Partial<ConstructorParameters<typeof ResilientInformer>[0]> = {}): ResilientInformer {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'fake', server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }, { name: 'u' });
  return new ResilientInformer({
    resource: 'services',
    path: '/api/v1/services',
    kubeConfig: kc,
    backoff: { initialMs: 20, maxMs: 100 },
    sink: { upsert: () => {}, remove: () => {} },
    ...extra,
  });
}

const count = (api: FakeAPI, prefix: string) => api.requests.filter((r) => r.startsWith(prefix)).length;

t.test('a watch silent for watchIdleMs (a connection dead without a word) is resumed from its resourceVersion: no relist, no failure', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.silentWatches = true;
  const inf = informerFor(api, { watchIdleMs: 200 });
  t.teardown(() => inf.stop());
  inf.start();
  t.equal(await inf.waitForSync(10_000), true);
  const listRV = String(api.rv);
  await until(t, 'a second watch', () => api.requests.filter((r) => r === `watch rv=${listRV} ls=null`).length >= 2);
  t.equal(count(api, 'list'), 1, 'no relist');
  t.equal(inf.failures(), 0, 'not counted as a failure');
  t.equal(inf.lastFailure(), undefined);
  // Events (bookmarks too) re-arm the timer and move the resume point.
  api.silentWatches = false;
  await until(t, 'a live watch', () => api.watcherCount() > 0 && count(api, 'watch') >= 3);
  const watches = count(api, 'watch');
  api.put('b');
  await until(t, 'resumed from the newer resourceVersion', () => api.requests.includes(`watch rv=${api.rv} ls=null`));
  t.ok(count(api, 'watch') > watches);
  t.equal(count(api, 'list'), 1, 'still no relist');
});

t.test('a watch that keeps being refused after good lists backs off further; the lists do not reset it', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.watchStatus = 403;
  const inf = informerFor(api);
  t.teardown(() => inf.stop());
  logs.length = 0;
  inf.start();
  t.equal(await inf.waitForSync(10_000), true);
  await until(t, 'four watches', () => count(api, 'watch') >= 4);
  t.ok(inf.failures() >= 3, `failures keep counting (${inf.failures()})`);
  t.ok(count(api, 'list') >= 3, 'a refused watch (403) relists, as client-go');
  t.equal(logs.filter((l) => /watch for services failed: .*403 Forbidden/.test(l)).length, 1, 'logged once');
  t.notOk(logs.some((l) => /recovered/.test(l)), 'never said to recover');
  api.watchStatus = undefined;
  await until(t, 'recovered once a watch works', () => logs.some((l) => /watch for services recovered after \d+ attempts/.test(l)));
  t.equal(inf.failures(), 0);
});

t.test("a watch refused with 429 or 5xx is retried from the same resourceVersion without a relist (client-go's isWatchErrorRetriable)", async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.watchStatus = 429;
  const inf = informerFor(api);
  t.teardown(() => inf.stop());
  inf.start();
  t.equal(await inf.waitForSync(10_000), true);
  const listRV = String(api.rv);
  await until(t, 'three watches', () => count(api, 'watch') >= 3);
  api.watchStatus = 503;
  const before = count(api, 'watch');
  await until(t, 'three more', () => count(api, 'watch') >= before + 3);
  t.equal(count(api, 'list'), 1, 'never relisted');
  t.ok(api.requests.filter((r) => r.startsWith('watch')).every((r) => r === `watch rv=${listRV} ls=null`), 'every retry from the list\'s resourceVersion');
  t.ok(inf.failures() >= 5, `counted (${inf.failures()})`);
});

t.test("a continue token that expires mid-list falls back to one unpaginated list (client-go's pager, FullListIfExpired)", async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.put('b');
  api.expireContinue = true;
  const seen: string[] = [];
  const inf = informerFor(api, { pageSize: 1, sink: { upsert: (o) => seen.push((o as V1Service).metadata!.name!), remove: () => {} } });
  t.teardown(() => inf.stop());
  inf.start();
  t.equal(await inf.waitForSync(5000), true, 'synced');
  t.same(api.requests.filter((r) => r.startsWith('list')), ['list ls=null limit=1', 'list ls=null limit=1 continue=1', 'list ls=null limit=null'], 'first page, expired second page, then one list without pages');
  t.same(seen.sort(), ['a', 'b'], 'each object delivered once');
  t.equal(inf.failures(), 0);
});

t.test('a watch line past 4 MiB without a newline abandons the watch, retried after the backoff', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.unendingLine = 5 * 1024 * 1024;
  const inf = informerFor(api);
  t.teardown(() => inf.stop());
  logs.length = 0;
  inf.start();
  t.equal(await inf.waitForSync(10_000), true);
  await until(t, 'retried', () => count(api, 'watch') >= 2);
  t.match(logs.join('\n'), /watch for services failed: watch \/api\/v1\/services: an event line passed 4194304 bytes/);
  t.equal(count(api, 'list'), 1, 'resumed, not relisted: the event comes again');
  t.ok(inf.failures() >= 1);
});

t.test('a resource this API server does not serve (404, mayBeAbsent: ServiceCIDRs before 1.33) is synced as none, not failing', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  const path = '/apis/networking.k8s.io/v1/servicecidrs';
  const absent = informerFor(api, { resource: 'servicecidrs', path, mayBeAbsent: true, backoff: { initialMs: 20, maxMs: 50 } });
  t.teardown(() => absent.stop());
  absent.start();
  t.equal(await absent.waitForSync(5000), true, 'synced (an empty list), as client-go takes a 404 list');
  t.equal(absent.notServed(), true, 'and said to be not served');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(absent.failures(), 0, 'never counted as a failure, though asked again');
  t.equal(absent.lastFailure(), undefined);
  t.equal(logs.filter((l) => /servicecidrs: not served by this API server \(404\)/.test(l)).length, 1, 'said once');
  const failing = informerFor(api, { resource: 'servicecidrs', path });
  t.teardown(() => failing.stop());
  failing.start();
  t.equal(await failing.waitForSync(300), false, 'without mayBeAbsent a 404 is a failure, as before');
  t.ok(failing.failures() >= 1);
});

t.test('a watch from a resourceVersion the store is behind (a wiped or restored etcd) relists, and what is gone goes', async (t) => {
  const api = new FakeAPI();
  await api.start();
  t.teardown(() => api.stop());
  api.put('a');
  api.put('b');
  const events: string[] = [];
  const inf = informerFor(api, {
    sink: {
      upsert: (o) => events.push(`+${(o as V1Service).metadata?.name}`),
      remove: (o) => events.push(`-${(o as V1Service).metadata?.name}`),
    },
  });
  t.teardown(() => inf.stop());
  inf.start();
  t.equal(await inf.waitForSync(5000), true);
  await until(t, 'the first watch', () => count(api, 'watch') >= 1);
  // The store loses b, and its resourceVersion goes back: the informer's is now ahead of it.
  api.tooLargeWatches = true;
  api.objects.delete('b');
  api.rv = 50;
  api.endWatches();
  await until(t, 'a relist', () => count(api, 'list') >= 2);
  api.tooLargeWatches = false;
  await until(t, 'b removed', () => events.includes('-b'));
  t.same(events.slice(0, 2).sort(), ['+a', '+b']);
  t.notOk(events.includes('-a'), 'a, still there, stays');
});
