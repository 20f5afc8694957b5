/**
 * ebpf mode for `ferry trace`: how this mode differs where the IR leaves a choice (ModeFacts:
 * socket-level load balancing, no NAT; traffic from outside not handled yet, docs/ebpf.md) and
 * the hooks and maps a local client's connect() meets (map names from layout.ts).
 * Pure; reads an explanation, never decides.
 */
import type { Explanation, ModeFacts, PathStep } from '../../plan/explain.js';
import type { ProxyTable, ServiceEntry } from '../../plan/types.js';
import type { MapName } from './layout.js';

export const EBPF_FACTS: ModeFacts = {
  mode: 'ebpf',
  localhostNodePorts: false,
  rejectsUnknownClusterIPPorts: false,
  dropsUnallocatedServiceIPs: false,
  reoriginates: false,
  socketLB: { fromOutside: 'traffic from outside the node is not handled yet (the tc data path is not built; docs/ebpf.md)' },
};

const SVC: MapName = 'ferry_svc';
const BACKEND: MapName = 'ferry_backend';

export function ebpfPath(e: Explanation, svc: ServiceEntry | undefined, _table: ProxyTable): PathStep[] {
  const hook = `cgroup ${e.protocol === 'UDP' ? 'sendmsg' : 'connect'}${e.family}`;
  const key = `${e.dst} ${e.port}/${e.protocol}`;
  if (!svc || !e.match) return [{ at: hook, does: `no ${SVC} entry for ${key}: the socket is left alone` }];
  switch (e.verdict.kind) {
    case 'reject':
      return [{ at: hook, does: `${SVC} [${key}] → reject: the call fails with ECONNREFUSED` }];
    case 'drop':
      return [{ at: hook, does: `${SVC} [${key}] → drop: the call fails with EHOSTUNREACH` }];
    case 'untouched':
      return [{ at: hook, does: e.verdict.reason }];
    case 'dnat':
      return [
        { at: hook, does: `${SVC} [${key}] → ${e.endpointSet} set of ${e.endpoints.length}${svc.affinityTimeoutSeconds > 0 ? ', sticky per client' : ''}` },
        { at: `${BACKEND}`, does: `the socket is connected straight to one of ${e.endpoints.map((x) => (x.ip.includes(':') ? `[${x.ip}]:${x.port}` : `${x.ip}:${x.port}`)).join(', ')}` },
      ];
  }
}
