/**
 * Generic REST semantics over the store, shared by the HTTP layer and the in-process
 * EndpointSlice controller: create (generateName, uid, timestamps), update (optimistic
 * concurrency, no-op detection), patch, delete (finalizers, graceful pod deletion,
 * namespace cascade, service → slice garbage collection), dry-run.
 * Resource-specific defaulting/validation/allocation is delegated to each ResourceDef.
 */
import { ApiError, fieldErr } from './errors.js';
import { clone, deepEqual, generateName, isRecord, newUid, nowRFC3339, type KObject, type OwnerReference } from './objects.js';
import { jsonMergePatch, jsonPatch, PatchError, strategicMergePatch } from './patch.js';
import type { Prepared, ResourceDef } from './resource.js';
import type { Store } from './store.js';
import { metadataErrors } from './validation.js';

export interface WriteOptions {
  dryRun?: boolean;
}

export interface UpdateOptions extends WriteOptions {
  subresource?: 'status';
}

export interface DeleteOptions extends WriteOptions {
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
  propagationPolicy?: string;
}

export type PatchType = 'merge' | 'strategic' | 'json';

export const PATCH_CONTENT_TYPES: Record<string, PatchType> = {
  'application/merge-patch+json': 'merge',
  'application/strategic-merge-patch+json': 'strategic',
  'application/json-patch+json': 'json',
};

export class Registry {
  private readonly byName = new Map<string, ResourceDef>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** owner uid → dependents (storage key + namespace + name), for service → slice garbage collection. */
  private readonly dependents = new Map<string, Set<string>>();

  constructor(
    readonly store: Store,
    readonly defs: readonly ResourceDef[],
  ) {
    for (const d of defs) this.byName.set(`${d.group}/${d.plural}`, d);
    store.subscribe((e) => {
      const refs = e.object.metadata.ownerReferences ?? [];
      const prevRefs = e.prev?.metadata.ownerReferences ?? [];
      if (refs.length === 0 && prevRefs.length === 0) return;
      const key = `${e.resource}\u0000${e.object.metadata.namespace ?? ''}\u0000${e.object.metadata.name ?? ''}`;
      for (const r of prevRefs) this.dependents.get(r.uid)?.delete(key);
      if (e.type !== 'DELETED') {
        for (const r of refs) {
          let s = this.dependents.get(r.uid);
          if (!s) this.dependents.set(r.uid, (s = new Set()));
          s.add(key);
        }
      }
    });
  }

  find(group: string, plural: string): ResourceDef | undefined {
    return this.byName.get(`${group}/${plural}`);
  }

  byStorageKey(key: string): ResourceDef | undefined {
    return this.defs.find((d) => d.storageKey === key);
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private namespaceDef(): ResourceDef {
    return this.find('', 'namespaces')!;
  }

  get(def: ResourceDef, ns: string | undefined, name: string): KObject {
    const o = this.store.get(def.storageKey, def.namespaced ? ns : undefined, name);
    if (!o) throw ApiError.notFound(def, name);
    return o;
  }

  list(def: ResourceDef, ns: string | undefined): readonly KObject[] {
    return this.store.list(def.storageKey, def.namespaced ? ns : undefined);
  }

  private requireNamespace(def: ResourceDef, ns: string | undefined): void {
    if (!def.namespaced) return;
    if (!ns) throw ApiError.badRequest('the server could not find the requested resource: a namespace is required');
    const nsObj = this.store.get('namespaces', undefined, ns);
    if (!nsObj) throw ApiError.notFound(this.namespaceDef(), ns);
    if (nsObj.metadata.deletionTimestamp) {
      throw ApiError.forbidden(def, '', `unable to create new content in namespace ${ns} because it is being terminated`);
    }
  }

  private checkTypeMeta(def: ResourceDef, body: KObject): void {
    if (body.apiVersion !== undefined && body.apiVersion !== def.apiVersion) {
      throw ApiError.badRequest(`the API version in the data (${body.apiVersion}) does not match the expected API version (${def.apiVersion})`);
    }
    if (body.kind !== undefined && body.kind !== def.kind) {
      throw ApiError.badRequest(`${body.kind} in version "${def.version}" cannot be handled as a ${def.kind}: no kind "${body.kind}" is registered for version "${def.apiVersion}"`);
    }
  }

  create(def: ResourceDef, ns: string | undefined, input: KObject, opts: WriteOptions = {}): KObject {
    this.checkTypeMeta(def, input);
    const obj: KObject = { ...clone(input), apiVersion: def.apiVersion, kind: def.kind };
    obj.metadata = { ...(isRecord(obj.metadata) ? obj.metadata : {}) };
    const meta = obj.metadata;
    if (def.namespaced) {
      if (meta.namespace && ns && meta.namespace !== ns) {
        throw ApiError.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = ns ?? meta.namespace;
    } else {
      delete meta.namespace;
    }
    this.requireNamespace(def, meta.namespace);
    if (meta.resourceVersion) {
      throw new ApiError(500, 'InternalError', 'Internal error occurred: resourceVersion should not be set on objects to be created');
    }
    if (!meta.name) {
      if (!meta.generateName) {
        throw ApiError.invalid(def, '', [fieldErr.required('metadata.name', 'name or generateName is required')]);
      }
      let tries = 0;
      do meta.name = generateName(meta.generateName);
      while (this.store.get(def.storageKey, meta.namespace, meta.name) && ++tries < 10);
    }
    const errs = metadataErrors(meta, def.validateName);
    if (errs.length) throw ApiError.invalid(def, meta.name, errs);
    if (this.store.get(def.storageKey, meta.namespace, meta.name)) throw ApiError.alreadyExists(def, meta.name);
    meta.uid = newUid();
    meta.creationTimestamp = nowRFC3339();
    meta.generation = 1;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    delete meta.managedFields;
    delete meta.selfLink;
    const prepared = def.prepareCreate(obj);
    return this.settle(prepared, opts, () => this.store.write('ADDED', def.storageKey, prepared.obj));
  }

  update(def: ResourceDef, ns: string | undefined, name: string, input: KObject, opts: UpdateOptions = {}): KObject {
    this.checkTypeMeta(def, input);
    const obj: KObject = { ...clone(input), apiVersion: def.apiVersion, kind: def.kind };
    obj.metadata = { ...(isRecord(obj.metadata) ? obj.metadata : {}) };
    const meta = obj.metadata;
    if (meta.name !== undefined && meta.name !== name) {
      throw ApiError.badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    }
    meta.name = name;
    if (def.namespaced) {
      if (meta.namespace && meta.namespace !== ns) {
        throw ApiError.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = ns;
    } else {
      delete meta.namespace;
    }
    const old = this.get(def, ns, name);
    if (meta.resourceVersion && meta.resourceVersion !== old.metadata.resourceVersion) throw ApiError.conflict(def, name);
    if (meta.uid && meta.uid !== old.metadata.uid) {
      throw ApiError.conflict(def, name, `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    // System fields always come from the stored object.
    meta.uid = old.metadata.uid;
    meta.creationTimestamp = old.metadata.creationTimestamp;
    meta.generation = old.metadata.generation;
    if (old.metadata.deletionTimestamp) {
      meta.deletionTimestamp = old.metadata.deletionTimestamp;
      if (old.metadata.deletionGracePeriodSeconds !== undefined) meta.deletionGracePeriodSeconds = old.metadata.deletionGracePeriodSeconds;
    } else {
      delete meta.deletionTimestamp;
      delete meta.deletionGracePeriodSeconds;
    }
    delete meta.managedFields;
    delete meta.selfLink;
    if (opts.subresource !== 'status') {
      const errs = metadataErrors(meta, () => undefined);
      if (errs.length) throw ApiError.invalid(def, name, errs);
    }
    const prepared = opts.subresource === 'status' ? def.prepareStatusUpdate(obj, old) : def.prepareUpdate(obj, old);
    const next = prepared.obj;
    if (opts.subresource !== 'status' && !deepEqual(specOf(next), specOf(old))) {
      next.metadata = { ...next.metadata, generation: (old.metadata.generation ?? 1) + 1 };
    }
    if (sameExceptVersion(next, old)) {
      prepared.rollback?.();
      return old;
    }
    const finalized = !!old.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0 && !this.gracePending(old);
    return this.settle(prepared, opts, () => {
      if (finalized) return this.remove(def, next, old);
      return this.store.write('MODIFIED', def.storageKey, next, old);
    });
  }

  patch(
    def: ResourceDef,
    ns: string | undefined,
    name: string,
    type: PatchType,
    body: unknown,
    opts: UpdateOptions & { decode?: (patched: unknown) => KObject } = {},
  ): KObject {
    const old = this.get(def, ns, name);
    let patched: unknown;
    try {
      if (type === 'merge') patched = jsonMergePatch(old, body);
      else if (type === 'strategic') patched = strategicMergePatch(old, body, def.patchSchema);
      else patched = jsonPatch(old, body);
    } catch (e) {
      if (e instanceof PatchError) {
        if (e.httpCode === 422) throw new ApiError(422, 'Invalid', e.message);
        throw ApiError.badRequest(e.message);
      }
      throw e;
    }
    if (!isRecord(patched) || !isRecord(patched['metadata'])) throw ApiError.badRequest('the patch removed the object metadata');
    const obj = opts.decode ? opts.decode(patched) : (patched as KObject);
    const uopts: UpdateOptions = { dryRun: opts.dryRun ?? false };
    if (opts.subresource) uopts.subresource = opts.subresource;
    return this.update(def, ns, name, obj, uopts);
  }

  /** Returns the object as it was deleted (or as it now is, when deletion is pending). */
  delete(def: ResourceDef, ns: string | undefined, name: string, opts: DeleteOptions = {}): { obj: KObject; deleted: boolean } {
    const old = this.get(def, ns, name);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== old.metadata.uid) {
      throw ApiError.conflict(def, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw ApiError.conflict(
        def,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`,
      );
    }
    if (def.storageKey === 'namespaces' && (name === 'default' || name === 'kube-system' || name === 'kube-public')) {
      throw ApiError.forbidden(def, name, 'this namespace may not be deleted');
    }
    const hasFinalizers = (old.metadata.finalizers ?? []).length > 0;
    const grace = def.storageKey === 'pods' && old.metadata.namespace ? podGrace(old, opts.gracePeriodSeconds) : 0;
    if (hasFinalizers || grace > 0) {
      if (opts.dryRun) return { obj: old, deleted: false };
      const now = Date.now();
      const currentDeadline = old.metadata.deletionTimestamp ? Date.parse(old.metadata.deletionTimestamp) : Infinity;
      const deadline = now + grace * 1000;
      if (old.metadata.deletionTimestamp && deadline >= currentDeadline) return { obj: old, deleted: false };
      const next: KObject = {
        ...old,
        metadata: {
          ...old.metadata,
          deletionTimestamp: new Date(deadline).toISOString().replace(/\.\d{3}Z$/, 'Z'),
          deletionGracePeriodSeconds: grace,
          generation: (old.metadata.generation ?? 1) + (old.metadata.deletionTimestamp ? 0 : 1),
        },
      };
      const stored = this.store.write('MODIFIED', def.storageKey, next, old);
      if (grace > 0) this.scheduleGracefulRemoval(def, stored, grace);
      return { obj: stored, deleted: false };
    }
    if (opts.dryRun) return { obj: old, deleted: true };
    return { obj: this.remove(def, old, old), deleted: true };
  }

  /** A pod's grace period: the request's, else none (there is no kubelet to wait for). */
  private gracePending(o: KObject): boolean {
    const ts = o.metadata.deletionTimestamp;
    return !!ts && (o.metadata.deletionGracePeriodSeconds ?? 0) > 0 && Date.parse(ts) > Date.now();
  }

  /** Stands in for the kubelet: once a terminating pod's grace period is over, remove it. */
  private scheduleGracefulRemoval(def: ResourceDef, pod: KObject, grace: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      const cur = this.store.get(def.storageKey, pod.metadata.namespace, pod.metadata.name ?? '');
      if (!cur || cur.metadata.uid !== pod.metadata.uid || !cur.metadata.deletionTimestamp) return;
      if (Date.parse(cur.metadata.deletionTimestamp) > Date.now() + 50) return; // a later, shorter delete rescheduled it
      if ((cur.metadata.finalizers ?? []).length > 0) return;
      this.remove(def, cur, cur);
    }, grace * 1000);
    t.unref();
    this.timers.add(t);
  }

  private remove(def: ResourceDef, last: KObject, prev: KObject): KObject {
    if (def.storageKey === 'namespaces') this.emptyNamespace(last.metadata.name ?? '');
    const stored = this.store.write('DELETED', def.storageKey, last, prev);
    def.released?.(prev);
    const uid = prev.metadata.uid;
    if (uid) this.collectDependents(uid);
    return stored;
  }

  /** Garbage collection limited to what the simulator needs: dependents of a deleted owner go too. */
  private collectDependents(uid: string): void {
    const deps = this.dependents.get(uid);
    if (!deps) return;
    this.dependents.delete(uid);
    for (const k of deps) {
      const [storageKey, ns, name] = k.split('\u0000') as [string, string, string];
      const def = this.byStorageKey(storageKey);
      const o = this.store.get(storageKey, ns || undefined, name);
      if (!def || !o) continue;
      // Only when every owner is gone, like the real garbage collector.
      const owners = (o.metadata.ownerReferences ?? []).filter((r) => r.uid !== uid && this.ownerExists(r, ns));
      if (owners.length === 0) this.remove(def, o, o);
    }
  }

  private ownerExists(ref: OwnerReference, ns: string): boolean {
    const def = this.defs.find((d) => d.kind === ref.kind && d.apiVersion === ref.apiVersion);
    if (!def) return false;
    return this.store.get(def.storageKey, def.namespaced ? ns : undefined, ref.name)?.metadata.uid === ref.uid;
  }

  private emptyNamespace(ns: string): void {
    for (const d of this.defs) {
      if (!d.namespaced) continue;
      for (const o of this.store.list(d.storageKey, ns)) this.remove(d, o, o);
    }
  }

  private settle(prepared: Prepared, opts: WriteOptions, write: () => KObject): KObject {
    if (opts.dryRun) {
      prepared.rollback?.();
      return prepared.obj;
    }
    let stored: KObject;
    try {
      stored = write();
    } catch (e) {
      prepared.rollback?.();
      throw e;
    }
    prepared.commit?.();
    return stored;
  }
}

function podGrace(pod: KObject, requested: number | undefined): number {
  // Without a kubelet, a pod is only kept terminating when the client asks for a grace period.
  const spec = pod['spec'];
  if (requested === undefined || requested <= 0) return 0;
  if (!isRecord(spec) || typeof spec['nodeName'] !== 'string' || spec['nodeName'] === '') return 0;
  return requested;
}

function specOf(o: KObject): unknown {
  const rest: Record<string, unknown> = { ...o };
  delete rest['metadata'];
  delete rest['status'];
  delete rest['apiVersion'];
  delete rest['kind'];
  return rest;
}

function sameExceptVersion(a: KObject, b: KObject): boolean {
  return deepEqual({ ...a, metadata: { ...a.metadata, resourceVersion: undefined } }, { ...b, metadata: { ...b.metadata, resourceVersion: undefined } });
}
