/**
 * The v1 Node and v1 Namespace strategies (both cluster-scoped and simple).
 * Nodes keep the status they are created with (a kubelet would post it); podCIDRs may be set
 * once. Namespaces get their standard finalizer, phase and `kubernetes.io/metadata.name` label.
 * Never writes to the store.
 */
import { ApiError, fieldErr, type FieldError } from './errors.js';
import { parseCIDR, parseIP } from './ip.js';
import { clone, type KObject } from './objects.js';
import { metaFieldValue, metaPatchSchema, statusOnly, type ResourceDef } from './resource.js';
import { namespaceSchema, nodeSchema } from './schema.js';
import { dns1123Label, dns1123Subdomain } from './validation.js';

export interface NodeAddress {
  type?: string;
  address?: string;
}

export interface Node extends KObject {
  spec?: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean; taints?: unknown[]; [k: string]: unknown };
  status?: {
    addresses?: NodeAddress[];
    conditions?: { type?: string; status?: string }[];
    nodeInfo?: { kubeletVersion?: string; osImage?: string; kernelVersion?: string; containerRuntimeVersion?: string };
    [k: string]: unknown;
  };
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';
const ADDRESS_TYPES = ['ExternalDNS', 'ExternalIP', 'Hostname', 'InternalDNS', 'InternalIP'];

function syncPodCIDRs(spec: NonNullable<Node['spec']>): void {
  if (spec.podCIDR && (!spec.podCIDRs || spec.podCIDRs.length === 0)) spec.podCIDRs = [spec.podCIDR];
  if (!spec.podCIDR && spec.podCIDRs && spec.podCIDRs.length > 0) spec.podCIDR = spec.podCIDRs[0];
}

function validateNode(n: Node, old: Node | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const cidrs = n.spec?.podCIDRs ?? [];
  if (cidrs.length > 2) errs.push(fieldErr.tooMany('spec.podCIDRs', cidrs.length, 2));
  cidrs.forEach((c, i) => {
    if (!parseCIDR(c)) errs.push(fieldErr.invalid(`spec.podCIDRs[${i}]`, c, 'must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'));
  });
  if (cidrs.length === 2 && parseCIDR(cidrs[0])?.family === parseCIDR(cidrs[1])?.family) {
    errs.push(fieldErr.invalid('spec.podCIDRs', cidrs, 'may specify no more than one CIDR for each IP family'));
  }
  if (n.spec?.podCIDR && cidrs[0] !== n.spec.podCIDR) errs.push(fieldErr.invalid('spec.podCIDRs[0]', cidrs[0], 'must match spec.podCIDR'));
  const before = old?.spec?.podCIDRs ?? [];
  if (old && before.length > 0 && JSON.stringify(before) !== JSON.stringify(cidrs)) {
    errs.push(fieldErr.forbidden('spec.podCIDRs', 'node updates may not change podCIDR except from "" to valid'));
  }
  errs.push(...validateAddresses(n));
  return errs;
}

function validateAddresses(n: Node): FieldError[] {
  const errs: FieldError[] = [];
  (n.status?.addresses ?? []).forEach((a, i) => {
    if (!a.type || !ADDRESS_TYPES.includes(a.type)) errs.push(fieldErr.notSupported(`status.addresses[${i}].type`, a.type ?? '', ADDRESS_TYPES));
    if ((a.type === 'InternalIP' || a.type === 'ExternalIP') && !parseIP(a.address)) {
      errs.push(fieldErr.invalid(`status.addresses[${i}].address`, a.address ?? '', 'must be a valid IP address'));
    }
  });
  return errs;
}

export function nodeDef(): ResourceDef {
  const def: ResourceDef = {
    group: '',
    version: 'v1',
    apiVersion: 'v1',
    plural: 'nodes',
    singular: 'node',
    kind: 'Node',
    namespaced: false,
    shortNames: ['no'],
    hasStatus: true,
    storageKey: 'nodes',
    schema: nodeSchema,
    validateName: dns1123Subdomain,
    fieldSelectors: ['spec.unschedulable'],
    fieldValue: (o, f) => (f === 'spec.unschedulable' ? String((o as Node).spec?.unschedulable ?? false) : metaFieldValue(o, f)),
    patchSchema: (path) => {
      const p = path.join('.');
      if (p === 'status.conditions' || p === 'status.addresses') return { mergeKey: 'type' };
      if (p === 'spec.podCIDRs') return { set: true };
      return metaPatchSchema(path);
    },
    prepareCreate: (input) => {
      const n = clone(input) as Node;
      n.spec ??= {};
      syncPodCIDRs(n.spec);
      const errs = validateNode(n, undefined);
      if (errs.length) throw ApiError.invalid(def, n.metadata.name ?? '', errs);
      return { obj: n };
    },
    prepareUpdate: (input, oldObj) => {
      const old = oldObj as Node;
      const n = clone(input) as Node;
      n.spec ??= {};
      if (old.status !== undefined) n.status = old.status;
      else delete n['status'];
      syncPodCIDRs(n.spec);
      const errs = validateNode(n, old);
      if (errs.length) throw ApiError.invalid(def, n.metadata.name ?? '', errs);
      return { obj: n };
    },
    prepareStatusUpdate: (input, old) => {
      const n = statusOnly(input, old) as Node;
      const errs = validateAddresses(n);
      if (errs.length) throw ApiError.invalid(def, n.metadata.name ?? '', errs);
      return { obj: n };
    },
  };
  return def;
}

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export function namespaceDef(): ResourceDef {
  const normalize = (input: KObject, keepStatus: KObject | undefined): KObject => {
    const ns = clone(input);
    const name = ns.metadata.name ?? '';
    ns.metadata.labels = { ...(ns.metadata.labels ?? {}), [NAMESPACE_NAME_LABEL]: name };
    ns['spec'] = { finalizers: ['kubernetes'], ...(ns['spec'] as object | undefined) };
    if (keepStatus) ns['status'] = keepStatus['status'];
    else ns['status'] = { phase: 'Active' };
    return ns;
  };
  const def: ResourceDef = {
    group: '',
    version: 'v1',
    apiVersion: 'v1',
    plural: 'namespaces',
    singular: 'namespace',
    kind: 'Namespace',
    namespaced: false,
    shortNames: ['ns'],
    hasStatus: true,
    storageKey: 'namespaces',
    schema: namespaceSchema,
    validateName: dns1123Label,
    fieldSelectors: ['status.phase'],
    fieldValue: (o, f) => {
      if (f === 'status.phase') {
        const s = o['status'];
        return typeof s === 'object' && s !== null && 'phase' in s ? String((s as { phase: unknown }).phase) : '';
      }
      return metaFieldValue(o, f);
    },
    patchSchema: metaPatchSchema,
    prepareCreate: (input) => ({ obj: normalize(input, undefined) }),
    prepareUpdate: (input, old) => ({ obj: normalize(input, old) }),
    prepareStatusUpdate: (input, old) => ({ obj: statusOnly(input, old) }),
  };
  return def;
}
