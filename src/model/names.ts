/**
 * Object names as the API server validates them (k8s.io/apimachinery's IsDNS1123Label and
 * IsDNS1123Subdomain). The tracker keys Services and slices by `namespace/name`, ServicePortKeys
 * are `namespace/name:port/PROTOCOL`, and both are split again (the tracker, the planner's
 * serviceOfKey), so a '/' or ':' in a name would make two objects one. The API server never
 * stores such a name; a proxy on every node must not rely on that.
 * Pure; never throws.
 */
import { show } from './untrusted.js';

const LABEL_MAX = 63;
const SUBDOMAIN_MAX = 253;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both ends, at most 63 characters. */
export function isDNSLabel(s: string): boolean {
  return s.length <= LABEL_MAX && LABEL.test(s);
}

/** RFC 1123 subdomain: such labels joined by '.', at most 253 characters. */
export function isDNSSubdomain(s: string): boolean {
  return s.length <= SUBDOMAIN_MAX && SUBDOMAIN.test(s);
}

const NOT_LABEL = 'a DNS-1123 label (lower-case alphanumerics and "-", at most 63 characters)';

function namespaceProblem(namespace: string): string | undefined {
  return isDNSLabel(namespace) ? undefined : `metadata.namespace: ${show(namespace)} is not ${NOT_LABEL}`;
}

/**
 * Why a Service's namespace and name cannot be a Service's, or undefined when they can. The name
 * is checked as a DNS-1123 label, as API servers with RelaxedServiceNameValidation (Kubernetes
 * 1.34+) check it; older ones required a DNS-1035 label (no leading digit), a subset.
 */
export function serviceIdProblem(namespace: string, name: string): string | undefined {
  return namespaceProblem(namespace) ?? (isDNSLabel(name) ? undefined : `metadata.name: ${show(name)} is not ${NOT_LABEL}`);
}

/** As serviceIdProblem for an EndpointSlice: its name is a DNS-1123 subdomain. */
export function sliceIdProblem(namespace: string, name: string): string | undefined {
  return (
    namespaceProblem(namespace) ??
    (isDNSSubdomain(name) ? undefined : `metadata.name: ${show(name)} is not a DNS-1123 subdomain (DNS-1123 labels joined by ".", at most 253 characters)`)
  );
}
