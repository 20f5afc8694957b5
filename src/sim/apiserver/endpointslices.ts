/**
 * The discovery.k8s.io/v1 EndpointSlice strategy: defaulting and validation of slices,
 * whether written by users (Services without selectors) or by the in-process controller.
 * Never writes to the store.
 */
import { ApiError, fieldErr, type FieldError } from './errors.js';
import { parseIP } from './ip.js';
import { clone, type KObject } from './objects.js';
import { metaFieldValue, metaPatchSchema, type ResourceDef } from './resource.js';
import { endpointSliceSchema } from './schema.js';
import { dns1123Label, dns1123Subdomain, PORT_RANGE_MSG, validPort } from './validation.js';

export interface EndpointConditions {
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export interface Endpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  hostname?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
  nodeName?: string;
  zone?: string;
  hints?: { forZones?: { name: string }[]; forNodes?: { name: string }[] };
}

export interface EndpointPort {
  name?: string;
  protocol?: string;
  port?: number;
  appProtocol?: string;
}

export interface EndpointSlice extends KObject {
  addressType: string;
  endpoints?: Endpoint[];
  ports?: EndpointPort[];
}

const ADDRESS_TYPES = ['FQDN', 'IPv4', 'IPv6'];
const PROTOCOLS = ['SCTP', 'TCP', 'UDP'];

function defaults(s: EndpointSlice): void {
  for (const p of s.ports ?? []) {
    p.name ??= '';
    p.protocol ??= 'TCP';
  }
}

function validate(s: EndpointSlice, old: EndpointSlice | undefined): FieldError[] {
  const errs: FieldError[] = [];
  if (!s.addressType) errs.push(fieldErr.required('addressType'));
  else if (!ADDRESS_TYPES.includes(s.addressType)) errs.push(fieldErr.notSupported('addressType', s.addressType, ADDRESS_TYPES));
  if (old && old.addressType !== s.addressType) errs.push(fieldErr.invalid('addressType', s.addressType, 'field is immutable'));
  const eps = s.endpoints ?? [];
  if (eps.length > 1000) errs.push(fieldErr.tooMany('endpoints', eps.length, 1000));
  eps.forEach((e, i) => {
    const path = `endpoints[${i}]`;
    const addrs = e.addresses ?? [];
    if (addrs.length === 0) errs.push(fieldErr.required(`${path}.addresses`, 'must contain at least 1 address'));
    else if (addrs.length > 1) errs.push(fieldErr.tooMany(`${path}.addresses`, addrs.length, 1));
    addrs.forEach((a, j) => {
      const ap = `${path}.addresses[${j}]`;
      if (s.addressType === 'IPv4' || s.addressType === 'IPv6') {
        const p = parseIP(a);
        if (!p || p.family !== s.addressType) errs.push(fieldErr.invalid(ap, a, `must be a valid ${s.addressType} address`));
      } else if (s.addressType === 'FQDN') {
        const m = dns1123Subdomain(a);
        if (m) errs.push(fieldErr.invalid(ap, a, m));
      }
    });
    if (e.nodeName) {
      const m = dns1123Subdomain(e.nodeName);
      if (m) errs.push(fieldErr.invalid(`${path}.nodeName`, e.nodeName, m));
    }
    if (e.hostname) {
      const m = dns1123Label(e.hostname);
      if (m) errs.push(fieldErr.invalid(`${path}.hostname`, e.hostname, m));
    }
    const zones = e.hints?.forZones ?? [];
    if (zones.length > 8) errs.push(fieldErr.tooMany(`${path}.hints.forZones`, zones.length, 8));
  });
  const ports = s.ports ?? [];
  if (ports.length > 100) errs.push(fieldErr.tooMany('ports', ports.length, 100));
  const names = new Set<string>();
  ports.forEach((p, i) => {
    const path = `ports[${i}]`;
    if (p.name) {
      const m = dns1123Label(p.name);
      if (m) errs.push(fieldErr.invalid(`${path}.name`, p.name, m));
    }
    if (names.has(p.name ?? '')) errs.push(fieldErr.duplicate(`${path}.name`, p.name ?? ''));
    names.add(p.name ?? '');
    if (p.protocol !== undefined && !PROTOCOLS.includes(p.protocol)) errs.push(fieldErr.notSupported(`${path}.protocol`, p.protocol, PROTOCOLS));
    if (p.port !== undefined && !validPort(p.port)) errs.push(fieldErr.invalid(`${path}.port`, p.port, PORT_RANGE_MSG));
  });
  return errs;
}

export function endpointSliceDef(): ResourceDef {
  const prepare = (input: KObject, old: KObject | undefined): KObject => {
    const s = clone(input) as EndpointSlice;
    defaults(s);
    const errs = validate(s, old as EndpointSlice | undefined);
    if (errs.length) throw ApiError.invalid(def, s.metadata.name ?? '', errs);
    return s;
  };
  const def: ResourceDef = {
    group: 'discovery.k8s.io',
    version: 'v1',
    apiVersion: 'discovery.k8s.io/v1',
    plural: 'endpointslices',
    singular: 'endpointslice',
    kind: 'EndpointSlice',
    namespaced: true,
    shortNames: [],
    hasStatus: false,
    storageKey: 'endpointslices.discovery.k8s.io',
    schema: endpointSliceSchema,
    validateName: dns1123Subdomain,
    fieldSelectors: [],
    fieldValue: metaFieldValue,
    patchSchema: metaPatchSchema,
    prepareCreate: (input) => ({ obj: prepare(input, undefined) }),
    prepareUpdate: (input, old) => ({ obj: prepare(input, old) }),
    prepareStatusUpdate: () => {
      throw ApiError.notFoundPath();
    },
  };
  return def;
}
