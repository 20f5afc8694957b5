/**
 * The three PATCH flavours the API server accepts: JSON merge patch (RFC 7386), strategic
 * merge patch (Kubernetes' list-aware merge with `$patch`, `$setElementOrder`,
 * `$deleteFromPrimitiveList` and `$retainKeys` directives) and JSON patch (RFC 6902).
 * Which lists merge by which key comes from a PatchSchema the resource supplies.
 * Pure: never mutates its inputs, no I/O.
 */
import { clone, deepEqual, isRecord, type JsonObject } from './objects.js';

export class PatchError extends Error {
  readonly code = 'FERRY_ERR_PATCH';
  constructor(
    message: string,
    /** 422 for a JSON patch that does not apply (failed test, missing path), 400 for a malformed patch. */
    readonly httpCode: 400 | 422,
  ) {
    super(message);
    this.name = 'PatchError';
  }
}

/** How a list at a field path merges: by a key of its map elements, or as a set of primitives. */
export type ListStrategy = { mergeKey: string } | { set: true };

/** Field path without list indices, e.g. ['spec', 'ports'] or ['spec', 'containers', 'ports']. */
export type PatchSchema = (path: readonly string[]) => ListStrategy | undefined;

export function jsonMergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return clone(patch);
  const out: JsonObject = isRecord(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = jsonMergePatch(out[k], v);
  }
  return out;
}

const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

export function strategicMergePatch(original: unknown, patch: unknown, schema: PatchSchema): unknown {
  if (!isRecord(patch)) throw new PatchError('strategic merge patch must be a JSON object', 400);
  const r = mergeMap(isRecord(original) ? original : {}, patch, [], schema);
  return r === undefined ? {} : r;
}

function mergeMap(orig: JsonObject, patch: JsonObject, path: string[], schema: PatchSchema): JsonObject | undefined {
  const directive = patch['$patch'];
  if (directive === 'delete') return undefined;
  if (directive === 'replace') return cleanDirectives(withoutKey(patch, '$patch')) as JsonObject;
  if (directive !== undefined && directive !== 'merge') {
    throw new PatchError(`Unknown patch type: ${String(directive)} in map: ${JSON.stringify(patch)}`, 400);
  }
  const out: JsonObject = { ...orig };
  const orders: [string, unknown[]][] = [];
  const deletes: [string, unknown[]][] = [];
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys') continue;
    if (k.startsWith(SET_ORDER)) {
      if (!Array.isArray(v)) throw new PatchError(`${k} must be a list`, 400);
      orders.push([k.slice(SET_ORDER.length), v]);
      continue;
    }
    if (k.startsWith(DELETE_PRIMITIVE)) {
      if (!Array.isArray(v)) throw new PatchError(`${k} must be a list`, 400);
      deletes.push([k.slice(DELETE_PRIMITIVE.length), v]);
      continue;
    }
    const childPath = [...path, k];
    if (v === null) {
      delete out[k];
    } else if (isRecord(v)) {
      const merged = mergeMap(isRecord(out[k]) ? (out[k] as JsonObject) : {}, v, childPath, schema);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    } else if (Array.isArray(v)) {
      out[k] = mergeList(Array.isArray(out[k]) ? (out[k] as unknown[]) : [], v, childPath, schema);
    } else {
      out[k] = v;
    }
  }
  for (const [field, values] of deletes) {
    const cur = out[field];
    if (Array.isArray(cur)) out[field] = cur.filter((x) => !values.some((d) => deepEqual(d, x)));
  }
  for (const [field, order] of orders) {
    const cur = out[field];
    if (Array.isArray(cur)) out[field] = applyOrder(cur, order, schema([...path, field]));
  }
  const retain = patch['$retainKeys'];
  if (retain !== undefined) {
    if (!Array.isArray(retain)) throw new PatchError('$retainKeys must be a list', 400);
    for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  }
  return out;
}

function mergeList(orig: unknown[], patch: unknown[], path: string[], schema: PatchSchema): unknown[] {
  const strat = schema(path);
  if (!strat) return patch.map((e) => cleanDirectives(e));
  if ('set' in strat) {
    // A `{"$patch": "replace"}` element means: the list is exactly the other elements.
    if (patch.some((e) => isRecord(e) && e['$patch'] === 'replace')) return patch.filter((e) => !isRecord(e));
    const out = [...orig];
    for (const e of patch) if (!out.some((x) => deepEqual(x, e))) out.push(e);
    return out;
  }
  const key = strat.mergeKey;
  if (patch.some((e) => isRecord(e) && e['$patch'] === 'replace')) {
    return patch.filter((e) => !(isRecord(e) && e['$patch'] === 'replace')).map((e) => cleanDirectives(e));
  }
  const out: unknown[] = [...orig];
  for (const e of patch) {
    if (!isRecord(e)) throw new PatchError(`expected a map in list ${path.join('.')} with merge key ${key}, got ${JSON.stringify(e)}`, 400);
    if (!(key in e)) throw new PatchError(`map: ${JSON.stringify(e)} does not contain declared merge key: ${key}`, 400);
    const idx = out.findIndex((x) => isRecord(x) && deepEqual(x[key], e[key]));
    if (e['$patch'] === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) {
      const merged = mergeMap(out[idx] as JsonObject, e, path, schema);
      if (merged === undefined) out.splice(idx, 1);
      else out[idx] = merged;
    } else {
      const merged = mergeMap({}, e, path, schema);
      if (merged !== undefined) out.push(merged);
    }
  }
  return out;
}

/** Elements named in `order` come first in that order; the rest keep their relative order after them. */
function applyOrder(list: unknown[], order: unknown[], strat: ListStrategy | undefined): unknown[] {
  const keyOf = (e: unknown): unknown => (strat && 'mergeKey' in strat && isRecord(e) ? e[strat.mergeKey] : e);
  const orderKeys = order.map((o) => (strat && 'mergeKey' in strat && isRecord(o) ? o[strat.mergeKey] : o));
  const ranked: { e: unknown; rank: number; pos: number }[] = list.map((e, pos) => {
    const k = keyOf(e);
    const rank = orderKeys.findIndex((o) => deepEqual(o, k));
    return { e, rank: rank < 0 ? Number.MAX_SAFE_INTEGER : rank, pos };
  });
  ranked.sort((a, b) => a.rank - b.rank || a.pos - b.pos);
  return ranked.map((r) => r.e);
}

function withoutKey(o: JsonObject, k: string): JsonObject {
  const out = { ...o };
  delete out[k];
  return out;
}

/** Remove patch directives from a value that is being inserted wholesale. */
function cleanDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((e) => !(isRecord(e) && e['$patch'] === 'delete')).map(cleanDirectives);
  if (!isRecord(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) {
    if (k.startsWith('$')) continue;
    if (x === null) continue;
    out[k] = cleanDirectives(x);
  }
  return out;
}

// ---- RFC 6902 JSON patch ----

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string') throw new PatchError(`invalid JSON pointer: ${JSON.stringify(p)}`, 400);
  if (p === '') return [];
  if (!p.startsWith('/')) throw new PatchError(`JSON pointer must start with '/': ${p}`, 400);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function getAt(doc: unknown, path: string[], raw: string): unknown {
  let cur = doc;
  for (const seg of path) {
    if (Array.isArray(cur)) {
      const i = Number(seg);
      if (!/^\d+$/.test(seg) || i >= cur.length) throw new PatchError(`unable to find path ${raw}: index ${seg} out of range`, 422);
      cur = cur[i];
    } else if (isRecord(cur)) {
      if (!(seg in cur)) throw new PatchError(`doc is missing path: "${raw}": missing value`, 422);
      cur = cur[seg];
    } else {
      throw new PatchError(`doc is missing path: "${raw}": missing value`, 422);
    }
  }
  return cur;
}

/** Returns the container (already copied) holding the last path element, copying along the way. */
function parentOf(doc: { root: unknown }, path: string[], raw: string): JsonObject | unknown[] {
  if (path.length === 0) throw new PatchError(`cannot operate on the document root in ${raw}`, 422);
  let holder: JsonObject | unknown[] = doc as unknown as JsonObject;
  let key: string | number = 'root';
  for (const seg of path.slice(0, -1)) {
    const cur: unknown = Array.isArray(holder) ? holder[key as number] : holder[key as string];
    let copy: JsonObject | unknown[];
    if (Array.isArray(cur)) copy = [...cur];
    else if (isRecord(cur)) copy = { ...cur };
    else throw new PatchError(`doc is missing path: "${raw}": missing value`, 422);
    if (Array.isArray(holder)) holder[key as number] = copy;
    else holder[key as string] = copy;
    holder = copy;
    if (Array.isArray(copy)) {
      if (!/^\d+$/.test(seg) || Number(seg) >= copy.length) throw new PatchError(`unable to find path ${raw}`, 422);
      key = Number(seg);
    } else {
      if (!(seg in copy)) throw new PatchError(`doc is missing path: "${raw}": missing value`, 422);
      key = seg;
    }
  }
  const last = Array.isArray(holder) ? holder[key as number] : holder[key as string];
  let copy: JsonObject | unknown[];
  if (Array.isArray(last)) copy = [...last];
  else if (isRecord(last)) copy = { ...last };
  else throw new PatchError(`doc is missing path: "${raw}": missing value`, 422);
  if (Array.isArray(holder)) holder[key as number] = copy;
  else holder[key as string] = copy;
  return copy;
}

function addAt(doc: { root: unknown }, path: string[], value: unknown, raw: string): void {
  if (path.length === 0) {
    doc.root = clone(value);
    return;
  }
  const parent = parentOf(doc, path, raw);
  const last = path[path.length - 1]!;
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!/^\d+$/.test(last) && last !== '-') throw new PatchError(`invalid array index ${last} in ${raw}`, 422);
    if (i > parent.length) throw new PatchError(`unable to add ${raw}: index out of range`, 422);
    parent.splice(i, 0, clone(value));
  } else {
    parent[last] = clone(value);
  }
}

function removeAt(doc: { root: unknown }, path: string[], raw: string): unknown {
  const parent = parentOf(doc, path, raw);
  const last = path[path.length - 1]!;
  if (Array.isArray(parent)) {
    const i = Number(last);
    if (!/^\d+$/.test(last) || i >= parent.length) throw new PatchError(`unable to remove nonexistent key: ${last}: missing value`, 422);
    return parent.splice(i, 1)[0];
  }
  if (!(last in parent)) throw new PatchError(`Unable to remove nonexistent key: ${last}: missing value`, 422);
  const v = parent[last];
  delete parent[last];
  return v;
}

export function jsonPatch(original: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new PatchError('json patch must be a list of operations', 400);
  const doc = { root: clone(original) };
  for (const op of ops) {
    if (!isRecord(op)) throw new PatchError(`invalid json patch operation: ${JSON.stringify(op)}`, 400);
    const raw = String(op['path']);
    const path = parsePointer(op['path']);
    switch (op['op']) {
      case 'add':
        if (!('value' in op)) throw new PatchError(`add operation does not apply: missing value for ${raw}`, 422);
        addAt(doc, path, op['value'], raw);
        break;
      case 'remove':
        removeAt(doc, path, raw);
        break;
      case 'replace':
        if (!('value' in op)) throw new PatchError(`replace operation does not apply: missing value for ${raw}`, 422);
        getAt(doc.root, path, raw);
        if (path.length === 0) doc.root = clone(op['value']);
        else {
          const parent = parentOf(doc, path, raw);
          const last = path[path.length - 1]!;
          if (Array.isArray(parent)) parent[Number(last)] = clone(op['value']);
          else parent[last] = clone(op['value']);
        }
        break;
      case 'test': {
        const cur = getAt(doc.root, path, raw);
        if (!deepEqual(cur, op['value'])) throw new PatchError(`testing value ${raw} failed: test failed`, 422);
        break;
      }
      case 'move': {
        const from = parsePointer(op['from']);
        const v = removeAt(doc, from, String(op['from']));
        addAt(doc, path, v, raw);
        break;
      }
      case 'copy': {
        const from = parsePointer(op['from']);
        addAt(doc, path, getAt(doc.root, from, String(op['from'])), raw);
        break;
      }
      default:
        throw new PatchError(`Unexpected kind: ${String(op['op'])}`, 400);
    }
  }
  return doc.root;
}
