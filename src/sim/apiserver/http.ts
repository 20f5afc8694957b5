/**
 * The REST front end: routes Kubernetes API paths to the registry, negotiates the response
 * form (plain objects, meta.k8s.io Tables, PartialObjectMetadata), decodes bodies with the
 * resource schemas and `fieldValidation`, runs list paging and selectors, and hands watches
 * to WatchSession. Every failure leaves as a `Status` object.
 * It holds no state of its own beyond the set of open watches.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import YAML from 'yaml';
import { apiGroup, apiGroupList, apiVersions, openAPIV2, resourceList, SERVER_VERSION } from './discovery.js';
import { ApiError, successStatus } from './errors.js';
import { isRecord, type KObject } from './objects.js';
import { PATCH_CONTENT_TYPES, type DeleteOptions, type Registry } from './registry.js';
import type { ResourceDef } from './resource.js';
import { decodeK8sProtobuf, ProtobufError } from './proto.js';
import { decode, DecodeError, deleteOptionsSchema } from './schema.js';
import { parseFieldSelector, parseLabelSelector, SelectorError, type FieldSelector, type LabelSelector } from './selectors.js';
import type { Store } from './store.js';
import { partialMetadata, toTable, type IncludeObject } from './tables.js';
import { WatchSession } from './watch.js';
import { logger } from '../../util/log.js';

const log = logger('sim-apiserver');
const MAX_BODY = 3 * 1024 * 1024;

/** Resources whose DELETE answers with the deleted object rather than a Status (ReturnDeletedObject). */
const RETURNS_DELETED_OBJECT = new Set(['pods', 'services', 'namespaces']);

export interface HttpContext {
  registry: Registry;
  store: Store;
  watches: Set<WatchSession>;
  bookmarkIntervalMs: number;
  /** host:port as clients reach it, for /api's serverAddressByClientCIDRs. */
  serverAddress(): string;
}

interface Negotiated {
  table?: { apiVersion: string };
  partial?: boolean;
}

/** Parse the Accept header for `as=Table;g=meta.k8s.io` and `as=PartialObjectMetadata(List)`. */
export function negotiate(accept: string | undefined): Negotiated {
  for (const range of (accept ?? '').split(',')) {
    const parts = range.split(';').map((s) => s.trim());
    const params = new Map<string, string>();
    for (const p of parts.slice(1)) {
      const eq = p.indexOf('=');
      if (eq > 0) params.set(p.slice(0, eq).trim(), p.slice(eq + 1).trim());
    }
    const as = params.get('as');
    if (!as) {
      if (parts[0] === 'application/json' || parts[0] === '*/*' || parts[0] === 'application/yaml') return {};
      continue;
    }
    if (params.get('g') !== 'meta.k8s.io') continue;
    const v = params.get('v');
    if (v !== 'v1' && v !== 'v1beta1') continue;
    if (as === 'Table') return { table: { apiVersion: `meta.k8s.io/${v}` } };
    if (as === 'PartialObjectMetadata' || as === 'PartialObjectMetadataList') return { partial: true };
  }
  return {};
}

interface Route {
  def: ResourceDef;
  namespace?: string;
  name?: string;
  subresource?: string;
  watchPath: boolean;
}

function send(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
  const s = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(s)), 'Cache-Control': 'no-cache, private', ...headers });
  res.end(s);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > MAX_BODY) {
        reject(new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728'));
        req.destroy();
        return;
      }
      chunks.push(b);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseBody(raw: Buffer, contentType: string): unknown {
  if (contentType.includes('application/vnd.kubernetes.protobuf')) {
    try {
      return decodeK8sProtobuf(raw);
    } catch (e) {
      if (e instanceof ProtobufError) throw new ApiError(415, 'UnsupportedMediaType', e.message);
      throw e;
    }
  }
  const text = raw.toString('utf8');
  if (text.trim() === '') throw ApiError.badRequest('the body of the request was empty');
  try {
    if (contentType.includes('yaml')) return YAML.parse(text) as unknown;
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw ApiError.badRequest(`error decoding request body: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function createHandler(ctx: HttpContext): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    handle(ctx, req, res).catch((e: unknown) => {
      let err: ApiError;
      if (e instanceof ApiError) err = e;
      else if (e instanceof DecodeError || e instanceof SelectorError) err = ApiError.badRequest(e.message);
      else {
        log.error('request failed', { method: req.method, url: req.url, err: e instanceof Error ? e : String(e) });
        err = new ApiError(500, 'InternalError', `Internal error occurred: ${e instanceof Error ? e.message : String(e)}`);
      }
      log.v(4, 'request error', { method: req.method, url: req.url, code: err.httpCode, msg: err.message });
      if (res.headersSent) {
        res.end();
        return;
      }
      send(res, err.httpCode, err.toStatus());
    });
  };
}

async function handle(ctx: HttpContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://sim');
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const method = req.method ?? 'GET';
  log.v(5, 'request', { method, url: req.url });
  const defs = ctx.registry.defs;
  const core = defs.filter((d) => d.group === '');
  const groups = [...new Set(defs.filter((d) => d.group !== '').map((d) => d.group))];
  if (method === 'GET') {
    switch (path) {
      case '/version':
        return send(res, 200, SERVER_VERSION);
      case '/healthz':
      case '/livez':
      case '/readyz':
        res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end('ok');
        return;
      case '/api':
        return send(res, 200, apiVersions(ctx.serverAddress()));
      case '/api/v1':
        return send(res, 200, resourceList('v1', core));
      case '/apis':
        return send(res, 200, apiGroupList(groups));
      case '/openapi/v2': {
        const doc = openAPIV2((req.headers.accept ?? '').includes('protobuf'));
        res.writeHead(200, { 'Content-Type': doc.contentType, 'Content-Length': String(doc.body.length) });
        res.end(doc.body);
        return;
      }
    }
    for (const g of groups) {
      if (path === `/apis/${g}`) return send(res, 200, apiGroup(g));
      if (path === `/apis/${g}/v1`) return send(res, 200, resourceList(`${g}/v1`, defs.filter((d) => d.group === g)));
    }
  }
  const route = resolve(ctx.registry, path);
  if (!route) throw ApiError.notFoundPath();
  const q = url.searchParams;
  const dryRun = q.getAll('dryRun').includes('All');
  if (q.getAll('dryRun').some((v) => v !== 'All')) throw ApiError.badRequest(`Invalid dry run value: ${q.getAll('dryRun').join(',')}`);
  const { def, namespace, name, subresource } = route;
  if (subresource !== undefined && (subresource !== 'status' || !def.hasStatus)) throw ApiError.notFoundPath();
  const neg = negotiate(req.headers.accept);
  const include = (q.get('includeObject') ?? 'Metadata') as IncludeObject;
  if (!['None', 'Metadata', 'Object'].includes(include)) throw ApiError.badRequest(`invalid includeObject value: ${include}`);
  const render = (o: KObject): unknown => {
    if (neg.table) return { ...toTable(def, [o], include, { resourceVersion: o.metadata.resourceVersion }), apiVersion: neg.table.apiVersion };
    if (neg.partial) return partialMetadata(o);
    return o;
  };
  const warnings: string[] = [];
  const decodeBody = (body: unknown): KObject => {
    const mode = q.get('fieldValidation') ?? 'Warn';
    if (!['Strict', 'Warn', 'Ignore'].includes(mode)) {
      throw ApiError.badRequest(`fieldValidation parameter unsupported: ${mode}. Supported values: Ignore, Strict, Warn`);
    }
    const r = decode(body, def.schema, def.kind);
    if (r.unknown.length > 0) {
      if (mode === 'Strict') {
        const list = r.unknown.map((u) => `unknown field "${u}"`);
        throw ApiError.badRequest(`${def.kind} in version "v1" cannot be handled as a ${def.kind}: strict decoding error: ${list.join(', ')}`);
      }
      if (mode === 'Warn') for (const u of r.unknown) warnings.push(`unknown field "${u}"`);
    }
    if (!isRecord(r.value['metadata'])) r.value['metadata'] = {};
    return r.value as KObject;
  };
  const headers = (): Record<string, string> =>
    warnings.length ? { Warning: warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(', ') } : {};

  const isCollection = name === undefined;
  switch (method) {
    case 'GET': {
      if (isCollection) return listOrWatch(ctx, req, res, route, q, neg, include);
      if (route.watchPath || q.get('watch') === 'true' || q.get('watch') === '1') {
        // Watching a single object: a field selector on its name.
        const r2 = new URLSearchParams(q);
        const fs = [r2.get('fieldSelector'), `metadata.name=${name}`].filter((x) => x).join(',');
        r2.set('fieldSelector', fs);
        return listOrWatch(ctx, req, res, { ...route, name: undefined, watchPath: true }, r2, neg, include);
      }
      return send(res, 200, render(ctx.registry.get(def, namespace, name)));
    }
    case 'POST': {
      if (!isCollection) throw ApiError.methodNotAllowed();
      const body = decodeBody(parseBody(await readBody(req), req.headers['content-type'] ?? ''));
      const created = ctx.registry.create(def, namespace, body, { dryRun });
      return send(res, 201, render(created), headers());
    }
    case 'PUT': {
      if (isCollection) throw ApiError.methodNotAllowed();
      const body = decodeBody(parseBody(await readBody(req), req.headers['content-type'] ?? ''));
      const opts = subresource === 'status' ? { dryRun, subresource: 'status' as const } : { dryRun };
      return send(res, 200, render(ctx.registry.update(def, namespace, name, body, opts)), headers());
    }
    case 'PATCH': {
      if (isCollection) throw ApiError.methodNotAllowed();
      const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      const type = PATCH_CONTENT_TYPES[ct];
      if (!type) {
        if (ct === 'application/apply-patch+yaml' || ct === 'application/apply-patch+cbor') {
          throw new ApiError(415, 'UnsupportedMediaType', 'server-side apply is not supported by the ferry simulator; use client-side kubectl apply');
        }
        throw ApiError.unsupportedMediaType(ct);
      }
      const patch = parseBody(await readBody(req), 'application/json');
      const opts = subresource === 'status' ? { dryRun, subresource: 'status' as const } : { dryRun };
      const updated = ctx.registry.patch(def, namespace, name, type, patch, { ...opts, decode: decodeBody });
      return send(res, 200, render(updated), headers());
    }
    case 'DELETE': {
      const raw = await readBody(req);
      const opts: DeleteOptions = { dryRun };
      if (raw.toString('utf8').trim() !== '') {
        const body = decode(parseBody(raw, req.headers['content-type'] ?? ''), deleteOptionsSchema, 'DeleteOptions').value;
        if (typeof body['gracePeriodSeconds'] === 'number') opts.gracePeriodSeconds = body['gracePeriodSeconds'];
        if (isRecord(body['preconditions'])) opts.preconditions = body['preconditions'] as DeleteOptions['preconditions'];
        if (Array.isArray(body['dryRun']) && body['dryRun'].includes('All')) opts.dryRun = true;
      }
      const gp = q.get('gracePeriodSeconds');
      if (gp !== null) {
        if (!/^-?\d+$/.test(gp)) throw ApiError.badRequest(`invalid gracePeriodSeconds: ${gp}`);
        opts.gracePeriodSeconds = Number(gp);
      }
      const pp = q.get('propagationPolicy');
      if (pp !== null && !['Orphan', 'Background', 'Foreground'].includes(pp)) {
        throw ApiError.badRequest(`propagationPolicy: Unsupported value: "${pp}": supported values: "Foreground", "Background", "Orphan"`);
      }
      if (subresource !== undefined) throw ApiError.methodNotAllowed();
      if (isCollection) {
        const { labels, fields } = selectors(def, q);
        const items: KObject[] = [];
        for (const o of ctx.registry.list(def, namespace)) {
          if (!labels.matches(o.metadata.labels) || !fields.matches((f) => def.fieldValue(o, f))) continue;
          items.push(ctx.registry.delete(def, o.metadata.namespace, o.metadata.name ?? '', opts).obj);
        }
        return send(res, 200, { kind: `${def.kind}List`, apiVersion: def.apiVersion, metadata: { resourceVersion: String(ctx.store.resourceVersion) }, items });
      }
      const { obj, deleted } = ctx.registry.delete(def, namespace, name, opts);
      if (deleted && !RETURNS_DELETED_OBJECT.has(def.storageKey)) return send(res, 200, successStatus(def, name, obj.metadata.uid));
      return send(res, 200, render(obj));
    }
  }
  throw ApiError.methodNotAllowed();
}

function resolve(registry: Registry, path: string): Route | undefined {
  let group: string;
  let rest: string;
  if (path.startsWith('/api/v1/')) {
    group = '';
    rest = path.slice('/api/v1/'.length);
  } else {
    const m = /^\/apis\/([^/]+)\/v1\/(.*)$/.exec(path);
    if (!m) return undefined;
    group = m[1]!;
    rest = m[2]!;
  }
  let segs = rest.split('/').filter((s) => s !== '').map(decodeURIComponent);
  let watchPath = false;
  if (segs[0] === 'watch') {
    watchPath = true;
    segs = segs.slice(1);
  }
  let namespace: string | undefined;
  if (segs[0] === 'namespaces' && segs.length >= 3) {
    // namespaces/NS/RESOURCE[/NAME[/SUB]], unless it is the Namespace's own subresource (namespaces/NS/status).
    const namespaceSubresource = segs.length === 3 && registry.find(group, segs[2]!) === undefined;
    if (!namespaceSubresource) {
      namespace = segs[1];
      segs = segs.slice(2);
    }
  }
  const [plural, name, subresource, ...extra] = segs;
  if (!plural || extra.length > 0) return undefined;
  const def = registry.find(group, plural);
  if (!def) return undefined;
  if (namespace !== undefined && !def.namespaced) return undefined;
  if (namespace === undefined && def.namespaced && name !== undefined) return undefined;
  const r: Route = { def, watchPath };
  if (namespace !== undefined) r.namespace = namespace;
  if (name !== undefined) r.name = name;
  if (subresource !== undefined) r.subresource = subresource;
  return r;
}

function selectors(def: ResourceDef, q: URLSearchParams): { labels: LabelSelector; fields: FieldSelector } {
  return {
    labels: parseLabelSelector(q.get('labelSelector')),
    fields: parseFieldSelector(q.get('fieldSelector'), ['metadata.name', 'metadata.namespace', ...def.fieldSelectors]),
  };
}

interface ContinueToken {
  rv: number;
  /** Namespace and name of the last item returned. */
  after: [string, string];
}

function encodeContinue(t: ContinueToken): string {
  return Buffer.from(JSON.stringify({ v: 'ferry.sim/v1', rv: t.rv, after: t.after })).toString('base64url');
}

function decodeContinue(s: string): ContinueToken {
  try {
    const o = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown;
    if (isRecord(o) && o['v'] === 'ferry.sim/v1' && typeof o['rv'] === 'number' && Array.isArray(o['after']) && o['after'].length === 2) {
      return { rv: o['rv'], after: [String(o['after'][0]), String(o['after'][1])] };
    }
  } catch {
    /* fall through */
  }
  throw ApiError.badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
}

function listOrWatch(
  ctx: HttpContext,
  req: IncomingMessage,
  res: ServerResponse,
  route: Route,
  q: URLSearchParams,
  neg: Negotiated,
  include: IncludeObject,
): void {
  const { def, namespace } = route;
  const { labels, fields } = selectors(def, q);
  const watch = route.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
  const rv = q.get('resourceVersion') ?? '';
  if (watch) {
    const ts = q.get('timeoutSeconds');
    const sie = q.get('sendInitialEvents');
    const filter: { namespace?: string; labels: LabelSelector; fields: FieldSelector } = { labels, fields };
    if (namespace !== undefined) filter.namespace = namespace;
    const render: { table?: { include: IncludeObject; apiVersion: string }; partial?: boolean } = {};
    if (neg.table) render.table = { include, apiVersion: neg.table.apiVersion };
    if (neg.partial) render.partial = true;
    const session = new WatchSession(res, ctx.store, def, filter, render, (s) => ctx.watches.delete(s));
    ctx.watches.add(session);
    req.on('close', () => session.close());
    const start: Parameters<WatchSession['start']>[0] = {
      resourceVersion: rv,
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      bookmarkIntervalMs: ctx.bookmarkIntervalMs,
    };
    if (ts !== null && /^\d+$/.test(ts)) start.timeoutSeconds = Number(ts);
    if (sie !== null) start.sendInitialEvents = sie === 'true';
    session.start(start);
    return;
  }
  const match = q.get('resourceVersionMatch');
  if (match !== null && !['Exact', 'NotOlderThan'].includes(match)) {
    throw ApiError.badRequest(`resourceVersionMatch: Unsupported value: "${match}": supported values: "Exact", "NotOlderThan"`);
  }
  if (match && rv === '') throw ApiError.badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
  if (rv !== '' && rv !== '0') {
    const n = Number(rv);
    if (!Number.isInteger(n) || n < 0) throw ApiError.badRequest(`invalid resource version: ${rv}`);
    if (match === 'Exact' && n < ctx.store.oldestResumable) {
      throw ApiError.gone(`The resourceVersion for the provided list is too old.`);
    }
  }
  const limitText = q.get('limit');
  const limit = limitText !== null && /^\d+$/.test(limitText) ? Number(limitText) : 0;
  const cont = q.get('continue');
  let listRV = ctx.store.resourceVersion;
  const all = ctx.registry.list(def, namespace);
  // A page costs O(page), not O(all): binary search for where the token left off, then match
  // only until the page is full and one more match proves there is a next page.
  let start = 0;
  if (cont) {
    const tok = decodeContinue(cont);
    listRV = tok.rv;
    const [ans, aname] = tok.after;
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const o = all[mid]!;
      const ns = o.metadata.namespace ?? '';
      const n = o.metadata.name ?? '';
      if (ns > ans || (ns === ans && n > aname)) hi = mid;
      else lo = mid + 1;
    }
    start = lo;
  }
  const page: KObject[] = [];
  let more = false;
  let i = start;
  for (; i < all.length; i++) {
    const o = all[i]!;
    if (!labels.matches(o.metadata.labels) || !fields.matches((f) => def.fieldValue(o, f))) continue;
    if (limit > 0 && page.length === limit) {
      more = true;
      break;
    }
    page.push(o);
  }
  const meta: { resourceVersion: string; continue?: string; remainingItemCount?: number } = { resourceVersion: String(listRV) };
  if (more) {
    const last = page[page.length - 1]!;
    meta.continue = encodeContinue({ rv: listRV, after: [last.metadata.namespace ?? '', last.metadata.name ?? ''] });
    if (labels.empty && fields.empty) meta.remainingItemCount = all.length - start - page.length;
  }
  if (neg.table) {
    send(res, 200, { ...toTable(def, page, include, meta), apiVersion: neg.table.apiVersion });
    return;
  }
  if (neg.partial) {
    send(res, 200, { kind: 'PartialObjectMetadataList', apiVersion: 'meta.k8s.io/v1', metadata: meta, items: page.map(partialMetadata) });
    return;
  }
  send(res, 200, { kind: `${def.kind}List`, apiVersion: def.apiVersion, metadata: meta, items: page });
}
