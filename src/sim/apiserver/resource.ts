/**
 * What a served resource is: its names (for discovery, URLs and error messages), its wire
 * schema, and its strategy — the defaulting, validation and allocation that runs before a
 * write, like a registry strategy in the real server.
 * Strategies never write to the store themselves; the registry does, after they succeed.
 */
import type { ResourceNames } from './errors.js';
import type { KObject } from './objects.js';
import type { PatchSchema } from './patch.js';
import type { Schema } from './schema.js';

/** The result of preparing a write: the object to store and how to settle side effects. */
export interface Prepared {
  obj: KObject;
  /** Called after the write is stored (e.g. release allocations the old object held). */
  commit?(): void;
  /** Called when the write does not happen (dry run, later failure): undo allocations. */
  rollback?(): void;
}

export interface ResourceDef extends ResourceNames {
  /** '' for the core group. */
  group: string;
  version: 'v1';
  /** `v1` or `discovery.k8s.io/v1`. */
  apiVersion: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  hasStatus: boolean;
  /** Key in the store: plural, qualified by the group for non-core groups. */
  storageKey: string;
  schema: Schema & { obj: Record<string, Schema> };
  /** Checks metadata.name; returns the validation message or undefined when valid. */
  validateName(name: string): string | undefined;
  /** Field selector labels supported beyond metadata.name and metadata.namespace. */
  fieldSelectors: readonly string[];
  fieldValue(obj: KObject, field: string): string | undefined;
  patchSchema: PatchSchema;
  prepareCreate(obj: KObject): Prepared;
  prepareUpdate(obj: KObject, old: KObject): Prepared;
  prepareStatusUpdate(obj: KObject, old: KObject): Prepared;
  /** The object was removed from the store: release what it held. */
  released?(obj: KObject): void;
}

export function metaFieldValue(obj: KObject, field: string): string | undefined {
  if (field === 'metadata.name') return obj.metadata.name ?? '';
  if (field === 'metadata.namespace') return obj.metadata.namespace ?? '';
  return undefined;
}

/** Patch metadata shared by every kind: ObjectMeta's merge lists. */
export function metaPatchSchema(path: readonly string[]): ReturnType<PatchSchema> {
  if (path.length === 2 && path[0] === 'metadata') {
    if (path[1] === 'finalizers') return { set: true };
    if (path[1] === 'ownerReferences') return { mergeKey: 'uid' };
  }
  return undefined;
}

/** Status updates keep everything but status from the stored object, as ResetObjectMetaForStatus does. */
export function statusOnly(obj: KObject, old: KObject): KObject {
  const out: KObject = { ...old, metadata: { ...old.metadata } };
  if (obj['status'] !== undefined) out['status'] = obj['status'];
  else delete out['status'];
  return out;
}
