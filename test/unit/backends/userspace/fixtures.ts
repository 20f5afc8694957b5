/**
 * Hand-built IR for userspace mode's tests (unit and e2e): the shared builders of
 * ../ir-builders.ts with this suite's defaults (namespace `default`, unnamed ports, node IP
 * 192.0.2.1) and `tables()` taking service lists. Addresses: ClusterIPs 198.19.0.0/16,
 * endpoints 198.18.0.0/16, node 192.0.2.0/24, externalIPs 203.0.113.0/24, LB IPs
 * 198.51.100.0/24, IPv6 under 2001:db8::/32.
 */
import type { IPFamily, ProxyTable, ProxyTables, ServiceEntry, SyncChanges } from '../../../../src/plan/types.js';
import * as B from '../ir-builders.js';

export { DROP, ep, FULL, fwd, REJECT } from '../ir-builders.js';

export type SvcInput = Partial<ServiceEntry> & { name: string };

export function svc(s: SvcInput): ServiceEntry {
  return B.svc({ ...s, namespace: s.namespace ?? 'default', portName: s.portName ?? '' });
}

export function table(family: IPFamily, services: ServiceEntry[], over: Partial<ProxyTable> = {}): ProxyTable {
  return B.table(family, services, { nodeIPs: family === 4 ? ['192.0.2.1'] : ['2001:db8:2::1'], ...over });
}

export function tables(v4: ServiceEntry[], v6: ServiceEntry[] = [], over4: Partial<ProxyTable> = {}, over6: Partial<ProxyTable> = {}): ProxyTables {
  return { 4: table(4, v4, over4), 6: table(6, v6, over6) };
}

export function partial(...keys: string[]): SyncChanges {
  return B.changesOf(keys);
}
