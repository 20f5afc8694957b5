/**
 * iptables mode for `ferry trace`: how this mode differs where the IR leaves a choice
 * (ModeFacts), and kube-proxy's chains a packet meets (names from names.ts, so they match
 * `iptables-save`). Pure; reads an explanation, never decides.
 */
import type { Explanation, ModeFacts, PathStep } from '../../plan/explain.js';
import type { ProxyTable, ServiceEntry } from '../../plan/types.js';
import { Chain, endpointChainName, serviceChainNames } from './names.js';

export function iptablesFacts(localhostNodePorts: boolean): ModeFacts {
  return { mode: 'iptables', localhostNodePorts, rejectsUnknownClusterIPPorts: false, dropsUnallocatedServiceIPs: false, reoriginates: false };
}

export function iptablesPath(e: Explanation, svc: ServiceEntry | undefined, _table: ProxyTable): PathStep[] {
  const local = e.traffic.class === 'node' || e.traffic.class === 'localhost';
  const natHook = `nat ${local ? 'OUTPUT' : 'PREROUTING'}`;
  if (!svc || !e.match) return [{ at: natHook, does: `jump ${Chain.services}: no rule matches; the packet is left alone` }];
  const n = serviceChainNames(svc);
  const steps: PathStep[] = [];
  const nodePort = e.match.frontend === 'nodePort';
  const clusterIP = e.match.frontend === 'clusterIP';
  if (e.blockedBySourceRanges) {
    steps.push({ at: `filter ${Chain.proxyFirewall}`, does: `-d ${e.dst} --dport ${e.port}: not accepted by ${n.fw} → DROP` });
    return steps;
  }
  if (e.verdict.kind === 'reject' || (e.verdict.kind === 'drop' && (clusterIP || svc.external.verdict !== 'forward') && !(svc.externalPolicyLocal && svc.cluster.verdict === 'forward' && !clusterIP))) {
    const target = e.verdict.kind === 'reject' ? 'REJECT' : 'DROP';
    const chain = clusterIP ? Chain.services : Chain.externalServices;
    steps.push({ at: `filter ${chain}`, does: `-d ${nodePort ? '(local address, --dst-type LOCAL)' : e.dst} --dport ${e.port} → ${target}` });
    return steps;
  }
  if (clusterIP) {
    const chain = svc.internalPolicyLocal ? n.svl : n.svc;
    steps.push({ at: `${natHook} → ${Chain.services}`, does: `-d ${e.dst} --dport ${e.port} → ${chain}` });
    steps.push({ at: `nat ${chain}`, does: `${e.masquerade.value === 'yes' ? `${Chain.markMasq}; ` : ''}pick one of ${e.endpoints.length}${svc.affinityTimeoutSeconds > 0 ? ' (recent: sticky)' : ''}` });
  } else {
    const entry = nodePort ? `${Chain.services} → ${Chain.nodePorts}` : Chain.services;
    const first = e.match.frontend === 'loadBalancerIP' && svc.loadBalancerSourceRanges.length > 0 ? n.fw : n.ext;
    steps.push({ at: `${natHook} → ${entry}`, does: `${nodePort ? '' : `-d ${e.dst} `}--dport ${e.port} → ${first}` });
    if (first === n.fw) steps.push({ at: `nat ${n.fw}`, does: `source allowed → ${n.ext}` });
    const policyChain = e.endpointSet === 'cluster' || !svc.externalPolicyLocal ? n.svc : n.svl;
    steps.push({ at: `nat ${n.ext}`, does: `${e.masquerade.value === 'yes' ? `${Chain.markMasq}; ` : ''}${e.verdict.kind === 'drop' ? 'no rule matches: dropped in filter' : `→ ${policyChain}`}` });
    if (e.verdict.kind === 'drop') return steps;
    steps.push({ at: `nat ${policyChain}`, does: `pick one of ${e.endpoints.length}${svc.affinityTimeoutSeconds > 0 ? ' (recent: sticky)' : ''}` });
  }
  const seps = e.endpoints.map((ep) => `${endpointChainName(n, ep)} (${ep.ip}:${ep.port})`);
  steps.push({ at: 'nat KUBE-SEP-*', does: `DNAT: ${seps.join(', ')}` });
  if (e.masquerade.value !== 'no') steps.push({ at: `nat POSTROUTING → ${Chain.postrouting}`, does: e.masquerade.value === 'yes' ? 'marked → MASQUERADE' : 'hairpin (KUBE-SEP marks a connection from the endpoint itself) → MASQUERADE' });
  return steps;
}
