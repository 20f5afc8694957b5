/**
 * Helpers for the deployment tests: read deploy/ as Kubernetes objects (the raw YAML files,
 * or rendered through `kubectl kustomize` for an overlay), and turn API request lines into
 * RBAC (apiGroup, resource, verb) triples. Pure apart from reading files and running kubectl;
 * never talks to a cluster.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { run } from '../../../src/util/exec.js';

/** The repository root (this file runs from dist/test/unit/deploy/). */
export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

export interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly [field: string]: unknown;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a multi-document YAML stream into objects; throws naming the source on bad YAML. */
export function parseObjects(text: string, source: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0]!.message}`);
    const v: unknown = doc.toJS();
    if (v === null || v === undefined) continue;
    if (!isRecord(v) || typeof v.kind !== 'string' || typeof v.apiVersion !== 'string' || !isRecord(v.metadata)) {
      throw new Error(`${source}: a document is not a Kubernetes object: ${JSON.stringify(v).slice(0, 120)}`);
    }
    out.push(v as unknown as K8sObject);
  }
  return out;
}

/** Every object in deploy/base/*.yaml except the kustomization itself. */
export function baseObjects(): K8sObject[] {
  const dir = join(REPO, 'deploy', 'base');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .sort()
    .flatMap((f) => parseObjects(readFileSync(join(dir, f), 'utf8'), `deploy/base/${f}`));
}

/** `kubectl kustomize deploy/<dir>`: what `kubectl apply -k` would send. */
export async function kustomize(dir: string): Promise<K8sObject[]> {
  const r = await run(['kubectl', 'kustomize', join(REPO, dir)], { timeoutMs: 60_000 });
  return parseObjects(r.stdout, `kubectl kustomize ${dir}`);
}

export function find(objs: readonly K8sObject[], kind: string, name: string): K8sObject {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind}/${name} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
}

/** Reads a nested field ("spec.template.spec") or undefined. */
export function at(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (Array.isArray(cur) && /^\d+$/.test(part)) cur = cur[Number(part)];
    else if (isRecord(cur)) cur = cur[part];
    else return undefined;
  }
  return cur;
}

/** One RBAC permission: "apiGroup/resource:verb" ("" group for core). */
export type Permission = string;
export const perm = (group: string, resource: string, verb: string): Permission => `${group}/${resource}:${verb}`;

/** Expands a ClusterRole's rules into permissions; throws on wildcards or non-resource URLs. */
export function rolePermissions(role: K8sObject): Set<Permission> {
  const rules = role.rules;
  if (!Array.isArray(rules)) throw new Error(`ClusterRole/${role.metadata.name} has no rules list`);
  const out = new Set<Permission>();
  for (const r of rules) {
    if (!isRecord(r)) throw new Error(`ClusterRole/${role.metadata.name}: a rule is not a map`);
    if (r.nonResourceURLs !== undefined || r.resourceNames !== undefined) {
      throw new Error(`ClusterRole/${role.metadata.name}: nonResourceURLs/resourceNames are not expected: ${JSON.stringify(r)}`);
    }
    const list = (k: string): string[] => {
      const v = r[k];
      if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) throw new Error(`rule field ${k} must be a string list: ${JSON.stringify(r)}`);
      if (v.includes('*')) throw new Error(`wildcard in ${k}: ${JSON.stringify(r)}`);
      return v;
    };
    for (const g of list('apiGroups')) for (const res of list('resources')) for (const v of list('verbs')) out.add(perm(g, res, v));
  }
  return out;
}

export interface ApiRequest {
  readonly method: string;
  /** Path and query as sent. */
  readonly url: string;
}

/**
 * The RBAC permission an API request needs, as the API server's request-info resolver sees it:
 * /api/v1/[namespaces/NS/]RESOURCE[/NAME[/SUB]] and /apis/GROUP/VERSION/..., with the verb from
 * the method (GET on a collection = list, or watch with ?watch=true; GET on a name = get).
 * Returns a string starting with "nonResource:" for discovery and other non-resource paths.
 */
export function permissionOf(req: ApiRequest): Permission {
  const u = new URL(req.url, 'http://x');
  const parts = u.pathname.split('/').filter((p) => p !== '');
  let group: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    group = '';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    group = parts[1]!;
    rest = parts.slice(3);
  } else {
    return `nonResource:${req.method} ${u.pathname}`;
  }
  let legacyWatch = false;
  if (rest[0] === 'watch') {
    legacyWatch = true;
    rest = rest.slice(1);
  }
  if (rest[0] === 'namespaces' && rest.length >= 3) rest = rest.slice(2);
  const resource = rest[0]!;
  const named = rest.length >= 2;
  const sub = rest.length >= 3 ? `/${rest[2]}` : '';
  const watchParam = u.searchParams.get('watch');
  const watch = legacyWatch || watchParam === 'true' || watchParam === '1';
  let verb: string;
  switch (req.method) {
    case 'GET':
      verb = watch ? 'watch' : named ? 'get' : 'list';
      break;
    case 'POST':
      verb = 'create';
      break;
    case 'PUT':
      verb = 'update';
      break;
    case 'PATCH':
      verb = 'patch';
      break;
    case 'DELETE':
      verb = named ? 'delete' : 'deletecollection';
      break;
    default:
      verb = req.method.toLowerCase();
  }
  return perm(group, resource + sub, verb);
}
