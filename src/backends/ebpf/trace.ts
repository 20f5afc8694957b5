/**
 * ebpf mode for `ferry trace`: how this mode differs where the IR leaves a choice (ModeFacts:
 * socket-level load balancing for local clients, no NAT; traffic from the network through the
 * tc program with NAT, connection tracking and the IR's masquerade; docs/ebpf.md) and the hooks
 * and maps a packet meets (map names from layout.ts).
 * Pure; reads an explanation, never decides.
 */
import { nodePortAddressList } from './compiler.js';
import type { Explanation, ModeFacts, PathStep } from '../../plan/explain.js';
import type { ProxyTable, ServiceEntry } from '../../plan/types.js';
import type { MapName } from './layout.js';

/** `localhostNodePorts`: whether this node serves NodePorts on 127.0.0.1 (socket LB does by default). */
export function ebpfFacts(localhostNodePorts: boolean): ModeFacts {
  return { mode: 'ebpf', localhostNodePorts, rejectsUnknownClusterIPPorts: true, dropsUnallocatedServiceIPs: true, reoriginates: false, socketLB: true };
}

const SVC: MapName = 'ferry_svc';
const XSVC: MapName = 'ferry_xsvc';
const BACKEND: MapName = 'ferry_backend';
const SVCIP: MapName = 'ferry_svcip';
const RANGES: MapName = 'ferry_srcrange';

/** No frontend: a ClusterIP's other port (ferry_svcip) or an unallocated service-CIDR address (service_ip_verdict). */
function noFrontend(e: Explanation, at: string, rejected: string, dropped: string): PathStep[] | undefined {
  if (e.verdict.kind === 'reject') return [{ at, does: `${e.dst} is in ${SVCIP} (a ClusterIP) with no frontend for ${e.port}/${e.protocol}: ${rejected}` }];
  if (e.verdict.kind === 'drop') return [{ at, does: `${e.dst} is in no ${SVCIP} entry but in the service CIDRs (${RANGES}): ${dropped}` }];
  return undefined;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Traffic from the network: the tc program on the interface it arrives on. A ClusterIP is in
 * ferry_svc (socket LB's map, flagged for tc), every other frontend in ferry_xsvc.
 */
function tcPath(e: Explanation, svc: ServiceEntry | undefined, table: ProxyTable): PathStep[] {
  const hook = 'tc ingress (clsact) ferry_tc_ingress';
  const key = `${e.match?.frontend === 'nodePort' ? '*' : e.dst} ${e.port}/${e.protocol}`;
  if (!svc || !e.match) {
    return (
      noFrontend(e, hook, e.protocol === 'UDP' ? 'rejected with an ICMP port unreachable' : 'the SYN is turned into a RST', 'dropped') ?? [
        { at: hook, does: `no ferry_ct entry and no ${XSVC} or ClusterIP ${SVC} entry for ${e.dst} ${e.port}/${e.protocol}: passed to the stack` },
      ]
    );
  }
  const frontMap = e.match.frontend === 'clusterIP' ? `${SVC} (ClusterIP)` : XSVC;
  const steps: PathStep[] = [];
  if (e.match.frontend === 'nodePort') steps.push({ at: 'ferry_nodeaddr', does: `${e.dst} is a NodePort address: the wildcard entry applies` });
  if (e.blockedBySourceRanges) return [...steps, { at: `${hook} → ferry_srcrange`, does: `${e.src} is in no source range of the set: dropped` }];
  switch (e.verdict.kind) {
    case 'reject':
      return [
        ...steps,
        {
          at: hook,
          does:
            e.match.frontend === 'nodePort'
              ? `${frontMap} [${key}] → reject: passed to the stack, where nothing listens (TCP RST / ICMP port unreachable)`
              : e.protocol === 'UDP'
                ? `${frontMap} [${key}] → reject: answered with an ICMP port unreachable quoting the datagram, sent back out of the interface it came in on`
                : `${frontMap} [${key}] → reject: the SYN is turned into a RST and sent back out of the interface it came in on`,
        },
      ];
    case 'drop':
      return [...steps, { at: hook, does: `${frontMap} [${key}] → ${e.verdict.reason}: dropped` }];
    case 'untouched':
      return [...steps, { at: hook, does: e.verdict.reason }];
    case 'dnat': {
      const masq = e.masquerade.value === 'yes';
      steps.push({ at: hook, does: `${frontMap} [${key}] → ${e.endpointSet} set of ${e.endpoints.length}${svc.affinityTimeoutSeconds > 0 ? ', sticky per client address' : ''}${masq ? ', MASQ' : ''}` });
      steps.push({ at: BACKEND, does: `DNAT to one of ${e.endpoints.map((x) => hostPort(x.ip, x.port)).join(', ')}${masq ? "; SNAT to the node's address (ferry_snat), a source port outside the node's ephemeral range" : '; client source kept'}` });
      steps.push({ at: 'ferry_ct', does: 'both directions recorded (the reply is translated back on the interface it arrives on); sent on with bpf_fib_lookup + bpf_redirect_neigh' });
      // kube-proxy's masquerade (POSTROUTING) never meets a locally delivered packet either.
      const own = new Set(nodePortAddressList(table, true));
      const local = e.endpoints.filter((x) => own.has(x.ip));
      if (local.length > 0) {
        steps.push({
          at: 'ferry_nodeaddr',
          does: `${local.map((x) => hostPort(x.ip, x.port)).join(', ')} ${local.length === 1 ? 'is' : 'are'} this node's own: delivered by the stack, never masqueraded; the replies translated back by tc egress ferry_tc_egress`,
        });
      }
      return steps;
    }
  }
}

export function ebpfPath(e: Explanation, svc: ServiceEntry | undefined, table: ProxyTable): PathStep[] {
  if (e.traffic.class === 'external') return tcPath(e, svc, table);
  const hook = `cgroup ${e.protocol === 'UDP' ? 'sendmsg' : 'connect'}${e.family}`;
  const key = `${e.dst} ${e.port}/${e.protocol}`;
  if (!svc || !e.match) {
    return noFrontend(e, hook, 'the call fails with ECONNREFUSED', 'the call fails with EHOSTUNREACH') ?? [{ at: hook, does: `no ${SVC} entry for ${key}: the socket is left alone` }];
  }
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
        { at: `${BACKEND}`, does: `the socket is connected straight to one of ${e.endpoints.map((x) => hostPort(x.ip, x.port)).join(', ')}` },
      ];
  }
}
