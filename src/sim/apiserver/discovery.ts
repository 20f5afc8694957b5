/**
 * Discovery documents (/version, /api, /api/v1, /apis, /apis/GROUP, /apis/GROUP/VERSION),
 * built from the served ResourceDefs. Only the legacy (unaggregated) format is served;
 * clients asking for aggregated discovery fall back to it, as they do with older servers.
 * Pure: no I/O.
 */
import type { ResourceDef } from './resource.js';

const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2024-08-13T00:00:00Z',
  goVersion: 'go1.22.5',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export function apiVersions(serverAddress: string): Record<string, unknown> {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

export function resourceList(groupVersion: string, defs: readonly ResourceDef[]): Record<string, unknown> {
  const resources: Record<string, unknown>[] = [];
  for (const d of defs) {
    const r: Record<string, unknown> = {
      name: d.plural,
      singularName: d.singular,
      namespaced: d.namespaced,
      kind: d.kind,
      verbs: VERBS,
    };
    if (d.shortNames.length > 0) r['shortNames'] = d.shortNames;
    if (d.kind === 'Pod' || d.kind === 'Service') r['categories'] = ['all'];
    resources.push(r);
    if (d.hasStatus) {
      resources.push({ name: `${d.plural}/status`, singularName: '', namespaced: d.namespaced, kind: d.kind, verbs: ['get', 'patch', 'update'] });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion, resources };
}

function groupDoc(group: string): Record<string, unknown> {
  const gv = { groupVersion: `${group}/v1`, version: 'v1' };
  return { name: group, versions: [gv], preferredVersion: gv };
}

export function apiGroupList(groups: readonly string[]): Record<string, unknown> {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupDoc) };
}

export function apiGroup(group: string): Record<string, unknown> {
  return { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(group) };
}

/**
 * A minimal, empty OpenAPI v2 document. kubectl refuses to create or apply (with its default
 * --validate=strict) when /openapi/v2 is missing; with an empty document it finds no schema for
 * the kind, skips client-side validation, and leaves field validation to this server
 * (`fieldValidation=Strict`). Apply patches then come from kubectl's built-in types.
 */
export function openAPIV2(protobuf: boolean): { contentType: string; body: Buffer } {
  const title = 'Kubernetes';
  const version = SERVER_VERSION.gitVersion;
  if (!protobuf) {
    return {
      contentType: 'application/json',
      body: Buffer.from(JSON.stringify({ swagger: '2.0', info: { title, version }, paths: {} })),
    };
  }
  // gnostic openapi_v2.Document: 1 = swagger (string), 2 = info (Info: 1 = title, 2 = version).
  const str = (field: number, s: string): number[] => [(field << 3) | 2, Buffer.byteLength(s), ...Buffer.from(s)];
  const info = [...str(1, title), ...str(2, version)];
  const doc = [...str(1, '2.0'), (2 << 3) | 2, info.length, ...info];
  return { contentType: 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf', body: Buffer.from(doc) };
}
