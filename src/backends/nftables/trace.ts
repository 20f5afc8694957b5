/**
 * nftables mode for `ferry trace`: how this mode differs where the IR leaves a choice
 * (ModeFacts), and the chains, maps and keys a packet meets in ferry's table. Names come from
 * names.ts and keys from rules.ts, so the path shows exactly what `nft list table` shows.
 * Pure; reads an explanation, never decides.
 */
import type { Explanation, ModeFacts, PathStep } from '../../plan/explain.js';
import type { ProxyTable, ServiceEntry } from '../../plan/types.js';
import { Chains, countSetName, FERRY_TABLE, GROUPED_MAX_ENDPOINTS, groupedMapName, Maps, Sets, serviceNames } from './names.js';
import { addrProtoPortKey, protoPortKey } from './rules.js';

export const NFTABLES_FACTS: ModeFacts = {
  mode: 'nftables',
  localhostNodePorts: false,
  rejectsUnknownClusterIPPorts: true,
  dropsUnallocatedServiceIPs: true,
  reoriginates: false,
};

export function nftablesPath(e: Explanation, svc: ServiceEntry | undefined, table: ProxyTable): PathStep[] {
  const fam = table.family === 4 ? 'ip' : 'ip6';
  const t = (chain: string): string => `${fam} ${FERRY_TABLE} ${chain}`;
  const local = e.traffic.class === 'node' || e.traffic.class === 'localhost';
  const steps: PathStep[] = [];
  const natHook = local ? Chains.natOutput : Chains.natPrerouting;
  if (!svc || !e.match) {
    steps.push({ at: t(natHook), does: `jump ${Chains.services}: no key for ${addrProtoPortKey(e.dst, e.protocol, e.port)} in @${Maps.serviceIPs} or @${Maps.serviceNodePorts}` });
    if (e.verdict.kind === 'reject') steps.push({ at: t(Chains.clusterIPsCheck), does: `${fam} daddr @${Sets.clusterIPs} reject` });
    if (e.verdict.kind === 'drop') steps.push({ at: t(Chains.clusterIPsCheck), does: `${fam} daddr @${Sets.serviceCIDRs} drop` });
    return steps;
  }
  const n = serviceNames(svc);
  const nodePort = e.match.frontend === 'nodePort';
  const key = nodePort ? protoPortKey(e.protocol, e.port) : addrProtoPortKey(e.dst, e.protocol, e.port);
  if (e.match.frontend === 'loadBalancerIP' && svc.loadBalancerSourceRanges.length > 0) {
    const hook = local ? Chains.filterOutputPreDnat : Chains.filterPrerouting;
    steps.push({ at: t(hook), does: `jump ${Chains.firewallCheck}: @${Maps.firewallIPs} [${key}] → goto ${n.fw}` });
    steps.push({ at: t(n.fw), does: e.blockedBySourceRanges ? 'saddr not in the allowed sources: drop' : 'saddr allowed: continue' });
    if (e.blockedBySourceRanges) return steps;
  }
  if (e.verdict.kind === 'reject') {
    const map = nodePort ? Maps.noEndpointNodePorts : Maps.noEndpointServices;
    const check = nodePort ? Chains.nodePortEndpointsCheck : Chains.serviceEndpointsCheck;
    const hook = local ? Chains.filterOutput : nodePort ? Chains.filterInput : Chains.filterForward;
    steps.push({ at: t(hook), does: `jump ${check}: @${map} [${key}] → goto ${Chains.reject}` });
    steps.push({ at: t(Chains.reject), does: 'reject' });
    return steps;
  }
  const map = nodePort ? Maps.serviceNodePorts : Maps.serviceIPs;
  steps.push({ at: t(natHook), does: `jump ${Chains.services}` });
  const chain = e.match.frontend === 'clusterIP' ? n.svc : n.ext;
  if (e.verdict.kind === 'drop' && e.match.frontend === 'clusterIP') {
    steps.push({ at: t(Chains.services), does: `@${map} [${key}] → drop` });
    return steps;
  }
  const extChain = e.match.frontend !== 'clusterIP' && (svc.external.verdict === 'forward' || (svc.externalPolicyLocal && svc.cluster.verdict === 'forward'));
  if (e.verdict.kind === 'drop' && !extChain) {
    steps.push({ at: t(Chains.services), does: `@${map} [${key}] → drop` });
    return steps;
  }
  const n0 = svc.internal.endpoints.length;
  const nx = svc.external.endpoints.length;
  // Endpoint-count layout (names.ts): no chain of its own; its key sits in a count set. A
  // ClusterIP with its internal endpoints; the external frontends of a Cluster-policy Service with
  // the external ones, always masqueraded — an externalIP or LB IP beside the ClusterIPs, a
  // NodePort in nodeports-by-count.
  const externalGrouped = e.match.frontend !== 'clusterIP' && svc.externalMasquerade && svc.external.verdict === 'forward' && nx > 0 && nx <= GROUPED_MAX_ENDPOINTS && svc.affinityTimeoutSeconds === 0;
  const clusterIPGrouped = e.match.frontend === 'clusterIP' && svc.internal.verdict === 'forward' && n0 > 0 && n0 <= GROUPED_MAX_ENDPOINTS && svc.affinityTimeoutSeconds === 0;
  if (externalGrouped || clusterIPGrouped) {
    const kind = nodePort ? 'port' : 'addr';
    const n = externalGrouped ? nx : n0;
    const at = t(nodePort ? Chains.nodePortsByCount : Chains.servicesByCount);
    steps.push({ at: t(Chains.services), does: nodePort ? `NodePort address: jump ${Chains.nodePortsByCount}` : `jump ${Chains.servicesByCount}` });
    const masqSet = nodePort
      ? Sets.masqNodePorts
      : externalGrouped || svc.clusterIPMasquerade === 'all'
        ? Sets.masqAll
        : svc.clusterIPMasquerade === 'nonLocal' && table.localTraffic.kind !== 'none'
          ? Sets.masqNonLocal
          : undefined;
    if (masqSet && (externalGrouped || e.masquerade.value === 'yes')) steps.push({ at, does: `@${masqSet} [${key}] → jump ${Chains.markForMasquerade}` });
    const how = n === 1 ? `dnat to ${e.endpoints[0]?.ip ?? '?'}:${e.endpoints[0]?.port ?? '?'}` : `numgen random mod ${n} → dnat`;
    steps.push({ at, does: `@${countSetName(svc.protocol, n, kind)} [${key}]: ${e.endpointSet ? `${e.endpointSet} set: ` : ''}${how} via @${groupedMapName(svc.protocol, n, kind)} [${key} . index]` });
  } else {
    steps.push({ at: t(Chains.services), does: `@${map} [${key}] → goto ${chain}` });
    const how = e.verdict.kind === 'drop' ? 'drop' : svc.affinityTimeoutSeconds > 0 ? `@${Sets.affinity} [saddr . (service port, endpoint)] → goto ep-…, else numgen random mod ${e.endpoints.length} → ep-…; ep-… refreshes @${Sets.affinity} (timeout ${svc.affinityTimeoutSeconds}s) and DNATs` : e.endpoints.length === 1 ? `dnat to ${e.endpoints[0]!.ip}:${e.endpoints[0]!.port}` : `numgen random mod ${e.endpoints.length} → dnat via endpoints map`;
    steps.push({ at: t(chain), does: `${e.masquerade.value === 'yes' ? `jump ${Chains.markForMasquerade}; ` : ''}${e.endpointSet ? `${e.endpointSet} set: ` : ''}${how}` });
  }
  if (e.verdict.kind === 'dnat') {
    if (e.masquerade.value === 'yes') steps.push({ at: t(Chains.natPostrouting), does: `jump ${Chains.masquerading}: marked → masquerade` });
    else if (e.masquerade.value === 'hairpin') steps.push({ at: t(Chains.natPostrouting), does: `saddr . daddr in @${Sets.hairpin} → masquerade (hairpin only)` });
  }
  return steps;
}
