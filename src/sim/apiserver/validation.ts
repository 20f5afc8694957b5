/**
 * Validators shared by the resource strategies, with the real server's messages
 * (k8s.io/apimachinery/pkg/util/validation). Each returns FieldErrors; nothing throws.
 * Pure: no I/O.
 */
import { fieldErr, FieldError } from './errors.js';
import { parseIP } from './ip.js';
import type { ObjectMeta } from './objects.js';
import { isLabelValue, isQualifiedName } from './selectors.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

export function dns1123Label(v: string): string | undefined {
  if (v.length > 63) return 'must be no more than 63 characters';
  if (!DNS1123_LABEL.test(v)) {
    return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
  }
  return undefined;
}

export function dns1123Subdomain(v: string): string | undefined {
  if (v.length > 253) return 'must be no more than 253 characters';
  if (!DNS1123_SUBDOMAIN.test(v)) {
    return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
  }
  return undefined;
}

export function dns1035Label(v: string): string | undefined {
  if (v.length > 63) return 'must be no more than 63 characters';
  if (!DNS1035_LABEL.test(v)) {
    return "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
  }
  return undefined;
}

/** IANA_SVC_NAME: a named port (targetPort, container port names). */
export function ianaSvcName(v: string): string | undefined {
  if (v.length > 15) return 'must be no more than 15 characters';
  if (!/^[-a-z0-9]+$/.test(v)) return 'must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)';
  if (v.includes('--')) return 'must not contain consecutive hyphens';
  if (!/[a-z]/.test(v)) return 'must contain at least one letter (a-z)';
  if (v.startsWith('-') || v.endsWith('-')) return 'must not begin or end with a hyphen';
  return undefined;
}

export const PORT_RANGE_MSG = 'must be between 1 and 65535, inclusive';

export function validPort(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

export function labelErrors(labels: Record<string, string> | undefined, field: string): FieldError[] {
  const errs: FieldError[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (!isQualifiedName(k)) {
      errs.push(
        fieldErr.invalid(
          field,
          k,
          "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
      );
    }
    if (!isLabelValue(v)) {
      errs.push(
        fieldErr.invalid(
          field,
          v,
          v.length > 63
            ? 'must be no more than 63 characters'
            : "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
      );
    }
  }
  return errs;
}

export function metadataErrors(meta: ObjectMeta, validateName: (n: string) => string | undefined): FieldError[] {
  const errs: FieldError[] = [];
  if (meta.name) {
    const m = validateName(meta.name);
    if (m) errs.push(fieldErr.invalid('metadata.name', meta.name, m));
  }
  errs.push(...labelErrors(meta.labels, 'metadata.labels'));
  let size = 0;
  for (const [k, v] of Object.entries(meta.annotations ?? {})) {
    size += k.length + v.length;
    if (!isQualifiedName(k)) {
      errs.push(
        fieldErr.invalid(
          'metadata.annotations',
          k,
          "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
      );
    }
  }
  if (size > 256 * 1024) errs.push(new FieldError('FieldValueTooLong', 'metadata.annotations', '', 'must have at most 262144 bytes'));
  for (const [i, f] of (meta.finalizers ?? []).entries()) {
    if (!isQualifiedName(f)) errs.push(fieldErr.invalid(`metadata.finalizers[${i}]`, f, 'name is neither a standard finalizer name nor is it fully qualified'));
  }
  return errs;
}

/** IPs that may not be used as service addresses (ValidateNonSpecialIP). */
export function specialIPError(ip: string): string | undefined {
  const p = parseIP(ip);
  if (!p) return undefined;
  if (p.value === 0n) return `may not be unspecified (${p.text})`;
  if (p.family === 'IPv4') {
    if (p.value >> 24n === 127n) return 'may not be in the loopback range (127.0.0.0/8, ::1/128)';
    if (p.value >> 16n === 0xa9fen) return 'may not be in the link-local range (169.254.0.0/16, fe80::/10)';
    if (p.value >> 8n === 0xe00000n) return 'may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)';
  } else {
    if (p.value === 1n) return 'may not be in the loopback range (127.0.0.0/8, ::1/128)';
    if (p.value >> 118n === 0x3fan) return 'may not be in the link-local range (169.254.0.0/16, fe80::/10)';
  }
  return undefined;
}

export const IP_MSG = 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)';
