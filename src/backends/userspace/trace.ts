/**
 * userspace mode for `ferry trace`: how this mode differs where the IR leaves a choice
 * (ModeFacts), and the listener a packet meets (frontend keys as frontends.ts spells them).
 * Pure; reads an explanation, never decides.
 */
import type { Explanation, ModeFacts, PathStep } from '../../plan/explain.js';
import type { ProxyTable, ServiceEntry } from '../../plan/types.js';
import { frontendKey } from './frontends.js';
import { DEFAULT_INTERFACE } from './iface.js';

export function userspaceFacts(localhostNodePorts: boolean): ModeFacts {
  return {
    mode: 'userspace',
    localhostNodePorts,
    // A ClusterIP is an address of ferry0: a port nobody listens on is refused by the kernel.
    rejectsUnknownClusterIPPorts: true,
    dropsUnallocatedServiceIPs: false,
    reoriginates: true,
  };
}

export function userspacePath(e: Explanation, svc: ServiceEntry | undefined, _table: ProxyTable): PathStep[] {
  if (!svc || !e.match) {
    return [{ at: 'kernel', does: e.verdict.kind === 'reject' ? `no listener on ${e.dst}:${e.port}: the kernel refuses` : 'no ferry listener: not handled by ferry' }];
  }
  if (e.protocol === 'SCTP') return [{ at: 'userspace forwarder', does: 'SCTP is not forwarded in userspace mode' }];
  const key = frontendKey(e.protocol, e.dst, e.port);
  const on = e.match.frontend === 'nodePort' ? 'a node address' : DEFAULT_INTERFACE;
  if (e.verdict.kind === 'reject') {
    // frontends.ts udpNeedsSocket: source ranges keep an LB IP's UDP socket bound.
    const rangedUdp = e.protocol === 'UDP' && e.match.frontend === 'loadBalancerIP' && svc.loadBalancerSourceRanges.length > 0;
    return [
      {
        at: `listener ${key}`,
        does: rangedUdp
          ? 'bound for its loadBalancerSourceRanges (no endpoint anywhere): discards the datagram, no ICMP'
          : e.protocol === 'UDP'
            ? 'not bound (no endpoint anywhere): the kernel answers ICMP port unreachable'
            : 'accepts, then resets the connection (reject)',
      },
    ];
  }
  if (e.verdict.kind === 'drop') {
    return [{ at: `listener ${key} (on ${on})`, does: `${e.blockedBySourceRanges ? 'source outside loadBalancerSourceRanges' : 'no usable endpoint here'}: ${e.protocol === 'TCP' ? 'accepts, then closes without a byte' : 'discards the datagram'}` }];
  }
  const eps = e.endpoints.map((ep) => (ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`)).join(', ');
  return [
    { at: `listener ${key} (on ${on})`, does: `${e.endpointSet} set${svc.affinityTimeoutSeconds > 0 ? ', sticky per client' : ''}` },
    { at: 'forwarder', does: `new ${e.protocol} connection from the node to one of ${eps}` },
  ];
}
