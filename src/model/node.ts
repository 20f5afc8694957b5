/**
 * V1Node → NodeInfo: the facts about this node that planning needs (the zone label for topology,
 * addresses for node IPs and --nodeport-addresses primary, pod CIDRs for detect-local NodeCIDR).
 * Nothing else of the Node is kept: a change to anything else (another label, a condition, a
 * heartbeat) must not look like a node change, which re-plans every Service.
 * Untrusted input; never throws.
 * Pure.
 */
import type { V1Node } from '@kubernetes/client-node';
import { parseCIDR, parseIP } from './addr.js';
import { arr, field, str } from './untrusted.js';
import type { NodeInfo } from './types.js';

export const LABEL_ZONE = 'topology.kubernetes.io/zone';

/**
 * Addresses are InternalIPs first, then ExternalIPs, each in status order, deduplicated — the
 * order kube-proxy's GetNodeHostIPs uses, so that the first address of a family is that
 * family's primary node IP.
 */
export function parseNode(node: V1Node | undefined, nodeName: string): NodeInfo {
  const zone = str(field(field(node, 'metadata'), 'labels'), LABEL_ZONE) ?? '';
  const list = arr(field(node, 'status'), 'addresses') ?? [];
  const seen = new Set<string>();
  for (const kind of ['InternalIP', 'ExternalIP']) {
    for (const a of list) {
      if (str(a, 'type') !== kind) continue;
      const p = parseIP(field(a, 'address'));
      if (p) seen.add(p.ip);
    }
  }
  const cidrs = podCIDRs(field(node, 'spec'));
  return Object.freeze({
    name: nodeName,
    addresses: Object.freeze([...seen]),
    zone,
    // Absent rather than empty, so a node without pod CIDRs looks as it always did.
    ...(cidrs.length > 0 ? { podCIDRs: cidrs } : {}),
  });
}

/**
 * spec.podCIDRs (at most one per family, as the API server allows), else the older single
 * spec.podCIDR; normalized, invalid entries dropped.
 */
function podCIDRs(spec: unknown): readonly string[] {
  const list = arr(spec, 'podCIDRs') ?? [];
  const texts = list.length > 0 ? list : [field(spec, 'podCIDR')];
  const out: string[] = [];
  const families = new Set<number>();
  for (const t of texts) {
    const c = parseCIDR(t);
    if (!c || families.has(c.family)) continue;
    families.add(c.family);
    out.push(c.cidr);
  }
  return Object.freeze(out);
}
