/**
 * A networking.k8s.io/v1 ServiceCIDR (decoded JSON, untrusted) → its ranges, canonical, for the
 * table-level "service CIDRs" fact (nftables mode drops traffic to unallocated IPs inside them,
 * as kube-proxy does). Pure: problems are returned for the tracker to log.
 */
import { parseCIDR } from './addr.js';
import { Problems, arr, field, show, str } from './untrusted.js';
import type { IPFamily } from './types.js';

export interface ParsedServiceCIDR {
  /** metadata.name; "" when missing (then nothing else is read). */
  readonly name: string;
  readonly cidrs: readonly { readonly cidr: string; readonly family: IPFamily }[];
  readonly problems: readonly string[];
}

/**
 * spec.cidrs: at most two, one per family. A bad entry is skipped with a problem; the others are
 * kept. A ServiceCIDR being deleted (metadata.deletionTimestamp) still counts, as for kube-proxy:
 * its IPs may still be in use until the API server's controller lets it go.
 */
export function parseServiceCIDR(obj: unknown): ParsedServiceCIDR {
  const problems = new Problems();
  const name = str(field(obj, 'metadata'), 'name') ?? '';
  const cidrs: { cidr: string; family: IPFamily }[] = [];
  if (!name) {
    problems.add('metadata.name must be a non-empty string');
    return { name, cidrs, problems: problems.result() };
  }
  const spec = field(obj, 'spec');
  const list = arr(spec, 'cidrs');
  if (!list) {
    problems.add(`spec.cidrs: ${show(field(spec, 'cidrs'))} is not an array`);
    return { name, cidrs, problems: problems.result() };
  }
  const seen = new Set<IPFamily>();
  for (let i = 0; i < list.length; i++) {
    const c = parseCIDR(list[i]);
    if (!c) {
      problems.add(`spec.cidrs[${i}]: ${show(list[i])} is not a valid CIDR, ignored`);
      continue;
    }
    if (seen.has(c.family)) {
      problems.add(`spec.cidrs[${i}]: second IPv${c.family} range ${c.cidr}, ignored`);
      continue;
    }
    seen.add(c.family);
    cidrs.push({ cidr: c.cidr, family: c.family });
  }
  return { name, cidrs, problems: problems.result() };
}
