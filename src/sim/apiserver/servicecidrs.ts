/**
 * The networking.k8s.io/v1 ServiceCIDR strategy (cluster-scoped): spec.cidrs holds one or two
 * CIDRs of different families, immutable after creation; status.conditions carries Ready. The
 * server creates the default one, named `kubernetes`, from its --service-cidr ranges, as the real
 * kube-apiserver's default ServiceCIDR controller does. The simulator allocates ClusterIPs only
 * from those default ranges; further ServiceCIDRs are stored, listed and watched (what a proxy
 * needs), not allocated from.
 * Never writes to the store.
 */
import { ApiError, fieldErr, type FieldError } from './errors.js';
import { parseCIDR } from './ip.js';
import { clone, nowRFC3339, type KObject } from './objects.js';
import { metaFieldValue, metaPatchSchema, statusOnly, type ResourceDef } from './resource.js';
import { serviceCIDRSchema } from './schema.js';
import { dns1123Subdomain } from './validation.js';

export interface ServiceCIDR extends KObject {
  spec?: { cidrs?: string[] };
  status?: { conditions?: { type?: string; status?: string; reason?: string; message?: string; lastTransitionTime?: string }[] };
}

export const DEFAULT_SERVICE_CIDR_NAME = 'kubernetes';

function validate(s: ServiceCIDR, old: ServiceCIDR | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const cidrs = s.spec?.cidrs ?? [];
  if (cidrs.length === 0) errs.push(fieldErr.required('spec.cidrs'));
  if (cidrs.length > 2) errs.push(fieldErr.tooMany('spec.cidrs', cidrs.length, 2));
  const parsed = cidrs.map((c, i) => {
    const p = parseCIDR(c);
    if (!p) errs.push(fieldErr.invalid(`spec.cidrs[${i}]`, c, 'must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)'));
    else if (p.text !== c) errs.push(fieldErr.invalid(`spec.cidrs[${i}]`, c, `must be in canonical form ("${p.text}")`));
    return p;
  });
  if (parsed.length === 2 && parsed[0] && parsed[1] && parsed[0].family === parsed[1].family) {
    errs.push(fieldErr.invalid('spec.cidrs', cidrs, 'may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64'));
  }
  if (old && JSON.stringify(old.spec?.cidrs ?? []) !== JSON.stringify(cidrs)) {
    errs.push(fieldErr.invalid('spec.cidrs', cidrs, 'field is immutable'));
  }
  return errs;
}

function ready(s: ServiceCIDR): void {
  s.status = { conditions: [{ type: 'Ready', status: 'True', reason: '', message: 'Kubernetes Service CIDR is ready', lastTransitionTime: nowRFC3339() }] };
}

export function serviceCIDRDef(): ResourceDef {
  const def: ResourceDef = {
    group: 'networking.k8s.io',
    version: 'v1',
    apiVersion: 'networking.k8s.io/v1',
    plural: 'servicecidrs',
    singular: 'servicecidr',
    kind: 'ServiceCIDR',
    namespaced: false,
    shortNames: [],
    hasStatus: true,
    storageKey: 'servicecidrs.networking.k8s.io',
    schema: serviceCIDRSchema,
    validateName: dns1123Subdomain,
    fieldSelectors: [],
    fieldValue: metaFieldValue,
    patchSchema: (path) => (path.join('.') === 'status.conditions' ? { mergeKey: 'type' } : metaPatchSchema(path)),
    prepareCreate: (input) => {
      const s = clone(input) as ServiceCIDR;
      const errs = validate(s, undefined);
      if (errs.length) throw ApiError.invalid(def, s.metadata.name ?? '', errs);
      // No allocator behind the simulator's extra ServiceCIDRs: they are ready at once.
      ready(s);
      return { obj: s };
    },
    prepareUpdate: (input, oldObj) => {
      const old = oldObj as ServiceCIDR;
      const s = clone(input) as ServiceCIDR;
      if (old.status !== undefined) s.status = old.status;
      const errs = validate(s, old);
      if (errs.length) throw ApiError.invalid(def, s.metadata.name ?? '', errs);
      return { obj: s };
    },
    prepareStatusUpdate: (input, old) => ({ obj: statusOnly(input, old) }),
  };
  return def;
}
