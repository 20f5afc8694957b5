/**
 * One service port's share of the iptables ruleset, laid out exactly as kube-proxy's
 * syncProxyRules writes it (pkg/proxy/iptables/proxier.go): its own nat chains (KUBE-SVC-,
 * KUBE-SVL-, KUBE-EXT-, KUBE-FW-, KUBE-SEP-) with their rules, and the rules it adds to the
 * shared "skeleton" chains (nat KUBE-SERVICES/KUBE-NODEPORTS, filter KUBE-SERVICES/
 * KUBE-EXTERNAL-SERVICES/KUBE-NODEPORTS/KUBE-PROXY-FIREWALL).
 *
 * kube-proxy's decisions map onto the IR like this (the planner made them; we only read them):
 *  - hasEndpoints          ⇔ some path does not reject;
 *  - hasInternalEndpoints  ⇔ internal.verdict is forward (reject/drop otherwise, in filter);
 *  - hasExternalEndpoints  ⇔ external.verdict is forward;
 *  - the KUBE-SVC chain holds the `cluster` set (a path with Cluster policy uses that set), the
 *    KUBE-SVL chain the Local-policy set (internal or external, whichever is Local).
 *
 * Pure and deterministic: the same ServiceEntry and context always give equal rules. Lines are
 * complete iptables-restore lines (`-A CHAIN ...`). Never decides which endpoints apply.
 */
import { goFixed } from '../../util/go-format.js';
import type { EndpointSet, LocalTrafficDetector, PlannedEndpoint, ServiceEntry } from '../../plan/types.js';
import { Chain, endpointChainName, endpointString, serviceChainNames } from './names.js';

/** Table-level facts that a service's rules depend on. */
export interface ServiceContext {
  readonly family: 4 | 6;
  /**
   * kube-proxy's LocalTrafficDetector as iptables matches: IfLocal is one match per rule (one per
   * CIDR, or the interface), IfNotLocal a single match (absent: no detector).
   */
  readonly ifLocal: readonly string[];
  readonly ifNotLocal?: string;
  /** kube-proxy's large cluster mode: no comments on endpoint rules. */
  readonly largeCluster: boolean;
}

export interface ServiceRules {
  /** Chains this service port owns (nat), name → `-A` lines, in write order. */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  readonly natServices: readonly string[];
  readonly natNodePorts: readonly string[];
  readonly filterServices: readonly string[];
  readonly filterExternal: readonly string[];
  readonly filterNodePorts: readonly string[];
  readonly filterFirewall: readonly string[];
  /** Endpoint chains written (kube-proxy counts these for large cluster mode). */
  readonly endpointCount: number;
}

function forwards(set: EndpointSet): boolean {
  return set.verdict === 'forward' && set.endpoints.length > 0;
}

/** `"text"` when the comment needs quoting in restore input (kube-proxy quotes those with spaces). */
export function comment(text: string): string {
  return /[\s"]/.test(text) ? `-m comment --comment "${text.replace(/"/g, '')}"` : `-m comment --comment ${text}`;
}

/** The kube-proxy probability string for 1/n: Go's `%0.10f` (half to even, util/go-format.ts). */
const probabilities: string[] = ['<bad value>'];
export function probability(n: number): string {
  for (let i = probabilities.length; i <= n; i++) probabilities.push(goFixed(1 / i, 10));
  return probabilities[n]!;
}

/**
 * The detector's matches. By CIDR: iptables cannot negate a list of sources in one rule, and
 * kube-proxy's detector holds one CIDR per family; with several, IfNotLocal uses the first
 * (documented in docs/iptables.md). By interface: `-i name`, or `-i prefix+` for a prefix.
 */
export function localMatches(d: LocalTrafficDetector): { ifLocal: readonly string[]; ifNotLocal?: string } {
  switch (d.kind) {
    case 'clusterCIDR':
      return d.cidrs.length > 0 ? { ifLocal: d.cidrs.map((c) => `-s ${c}`), ifNotLocal: `! -s ${d.cidrs[0]}` } : { ifLocal: [] };
    case 'bridgeInterface':
      return { ifLocal: [`-i ${d.name}`], ifNotLocal: `! -i ${d.name}` };
    case 'interfaceNamePrefix':
      return { ifLocal: [`-i ${d.prefix}+`], ifNotLocal: `! -i ${d.prefix}+` };
    case 'none':
      return { ifLocal: [] };
  }
}

export function serviceRules(svc: ServiceEntry, ctx: ServiceContext): ServiceRules {
  const n = serviceChainNames(svc);
  const name = n.portName;
  const proto = `-m ${n.proto} -p ${n.proto}`;
  const chains = new Map<string, string[]>();
  const natServices: string[] = [];
  const natNodePorts: string[] = [];
  const filterServices: string[] = [];
  const filterExternal: string[] = [];
  const filterNodePorts: string[] = [];
  const filterFirewall: string[] = [];

  const externallyAccessible = svc.nodePort > 0 || svc.externalIPs.length > 0 || svc.loadBalancerIPs.length > 0;
  const hasEndpoints = svc.internal.verdict !== 'reject' || svc.external.verdict !== 'reject' || svc.cluster.verdict !== 'reject';
  const hasInternal = forwards(svc.internal);
  const hasExternal = forwards(svc.external);

  // Policy chains, as kube-proxy's usesClusterPolicyChain / usesLocalPolicyChain: KUBE-SVC exists
  // when some path jumps to it. Its endpoints are the cluster set; the fallbacks only matter for
  // an IR where a Cluster-policy path's set differs from `cluster` (the planner never makes one).
  const internalViaSvc = !svc.internalPolicyLocal && hasInternal;
  const externalViaSvc = externallyAccessible && !svc.externalPolicyLocal && hasExternal;
  const shortCircuit = externallyAccessible && svc.externalPolicyLocal && forwards(svc.cluster);
  const svcSet = forwards(svc.cluster) ? svc.cluster : internalViaSvc ? svc.internal : externalViaSvc ? svc.external : undefined;
  const usesSvc = svcSet !== undefined && (internalViaSvc || externalViaSvc || shortCircuit);
  const localSet = svc.internalPolicyLocal && forwards(svc.internal) ? svc.internal : svc.externalPolicyLocal && forwards(svc.external) ? svc.external : undefined;
  const usesSvl = localSet !== undefined;
  const internalChain = svc.internalPolicyLocal ? n.svl : n.svc;
  const externalPolicyChain = svc.externalPolicyLocal ? n.svl : n.svc;
  // The EXT chain is needed when external traffic forwards, or for the Local short-circuit.
  const usesExt = hasEndpoints && externallyAccessible && (hasExternal || (svc.externalPolicyLocal && usesSvc));
  const usesFw = usesExt && svc.loadBalancerIPs.length > 0 && svc.loadBalancerSourceRanges.length > 0;
  const lbChain = usesFw ? n.fw : n.ext;

  const internalFilter = svc.internal.verdict === 'drop' ? { target: 'DROP', comment: `${name} has no local endpoints` } : { target: 'REJECT', comment: `${name} has no endpoints` };
  const externalFilter = svc.external.verdict === 'drop' ? { target: 'DROP', comment: `${name} has no local endpoints` } : { target: 'REJECT', comment: `${name} has no endpoints` };

  // ClusterIP.
  const clusterMatch = `${comment(`${name} cluster IP`)} ${proto} -d ${svc.clusterIP} --dport ${svc.port}`;
  if (svc.clusterIP) {
    if (hasInternal) natServices.push(`-A ${Chain.services} ${clusterMatch} -j ${internalChain}`);
    else filterServices.push(`-A ${Chain.services} ${comment(internalFilter.comment)} ${proto} -d ${svc.clusterIP} --dport ${svc.port} -j ${internalFilter.target}`);
  }

  // externalIPs.
  for (const ip of svc.externalIPs) {
    if (usesExt) natServices.push(`-A ${Chain.services} ${comment(`${name} external IP`)} ${proto} -d ${ip} --dport ${svc.port} -j ${n.ext}`);
    if (!hasExternal) filterExternal.push(`-A ${Chain.externalServices} ${comment(externalFilter.comment)} ${proto} -d ${ip} --dport ${svc.port} -j ${externalFilter.target}`);
  }

  // LoadBalancer IPs.
  for (const ip of svc.loadBalancerIPs) {
    if (usesExt) natServices.push(`-A ${Chain.services} ${comment(`${name} loadbalancer IP`)} ${proto} -d ${ip} --dport ${svc.port} -j ${lbChain}`);
    if (usesFw) filterFirewall.push(`-A ${Chain.proxyFirewall} ${comment(`${name} traffic not accepted by ${n.fw}`)} ${proto} -d ${ip} --dport ${svc.port} -j DROP`);
  }
  if (!hasExternal) {
    for (const ip of svc.loadBalancerIPs) {
      filterExternal.push(`-A ${Chain.externalServices} ${comment(externalFilter.comment)} ${proto} -d ${ip} --dport ${svc.port} -j ${externalFilter.target}`);
    }
  }

  // NodePort. Which destination addresses reach KUBE-NODEPORTS (loopback only with localhost
  // NodePorts on) is decided by the jump at the end of KUBE-SERVICES (compiler.ts closeSkeleton).
  if (svc.nodePort > 0) {
    if (usesExt) natNodePorts.push(`-A ${Chain.nodePorts} ${comment(name)} ${proto} --dport ${svc.nodePort} -j ${n.ext}`);
    if (!hasExternal) {
      filterExternal.push(`-A ${Chain.externalServices} ${comment(externalFilter.comment)} -m addrtype --dst-type LOCAL ${proto} --dport ${svc.nodePort} -j ${externalFilter.target}`);
    }
  }

  // healthCheckNodePort: accepted whether or not there are local endpoints.
  if (svc.healthCheckNodePort > 0) {
    filterNodePorts.push(`-A ${Chain.nodePorts} ${comment(`${name} health check node port`)} -m tcp -p tcp --dport ${svc.healthCheckNodePort} -j ACCEPT`);
  }

  // Internal traffic: masquerade per the IR, written into the internal policy chain.
  const policyRules = new Map<string, string[]>();
  const rulesOf = (chain: string): string[] => {
    let r = policyRules.get(chain);
    if (!r) {
      r = [];
      policyRules.set(chain, r);
    }
    return r;
  };
  if (hasInternal && svc.clusterIP) {
    if (svc.clusterIPMasquerade === 'all') rulesOf(internalChain).push(`-A ${internalChain} ${clusterMatch} -j ${Chain.markMasq}`);
    else if (svc.clusterIPMasquerade === 'nonLocal') {
      const notLocal = ctx.ifNotLocal;
      if (notLocal !== undefined) rulesOf(internalChain).push(`-A ${internalChain} ${clusterMatch} ${notLocal} -j ${Chain.markMasq}`);
    }
  }

  // External traffic.
  if (usesExt) {
    const ext: string[] = [];
    chains.set(n.ext, ext);
    if (svc.externalMasquerade) {
      ext.push(`-A ${n.ext} ${comment(`masquerade traffic for ${name} external destinations`)} -j ${Chain.markMasq}`);
    }
    if (svc.externalPolicyLocal && usesSvc) {
      for (const src of ctx.ifLocal) ext.push(`-A ${n.ext} ${comment(`pod traffic for ${name} external destinations`)} ${src} -j ${n.svc}`);
      ext.push(`-A ${n.ext} ${comment(`masquerade LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j ${Chain.markMasq}`);
      ext.push(`-A ${n.ext} ${comment(`route LOCAL traffic for ${name} external destinations`)} -m addrtype --src-type LOCAL -j ${n.svc}`);
    }
    if (hasExternal) ext.push(`-A ${n.ext} -j ${externalPolicyChain}`);
  }

  // loadBalancerSourceRanges.
  if (usesFw) {
    const fw: string[] = [];
    chains.set(n.fw, fw);
    const head = `-A ${n.fw} ${comment(`${name} loadbalancer IP`)}`;
    for (const cidr of svc.loadBalancerSourceRanges) fw.push(`${head} -s ${cidr} -j ${n.ext}`);
    if (svc.allowLoadBalancerIPSources) {
      for (const ip of svc.loadBalancerIPs) fw.push(`${head} -s ${ip} -j ${n.ext}`);
    }
    fw.push(`-A ${n.fw} ${comment(`other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`)}`);
  }

  // Endpoint dispatch.
  const affinity = svc.affinityTimeoutSeconds > 0;
  const sepOf = new Map<string, string>();
  const sepName = (ep: PlannedEndpoint): string => {
    const id = endpointString(ep);
    let s = sepOf.get(id);
    if (s === undefined) {
      s = endpointChainName(n, ep);
      sepOf.set(id, s);
    }
    return s;
  };
  const dispatch = (chain: string, endpoints: readonly PlannedEndpoint[]): void => {
    const rules = rulesOf(chain);
    const cmt = (ep: PlannedEndpoint): string => (ctx.largeCluster ? '' : ` ${comment(`${name} -> ${endpointString(ep)}`)}`);
    if (affinity) {
      for (const ep of endpoints) {
        const sep = sepName(ep);
        rules.push(`-A ${chain}${cmt(ep)} -m recent --name ${sep} --rcheck --seconds ${svc.affinityTimeoutSeconds} --reap -j ${sep}`);
      }
    }
    const count = endpoints.length;
    for (let i = 0; i < count; i++) {
      const ep = endpoints[i]!;
      const stat = i < count - 1 ? ` -m statistic --mode random --probability ${probability(count - i)}` : '';
      rules.push(`-A ${chain}${cmt(ep)}${stat} -j ${sepName(ep)}`);
    }
  };
  const reachable: PlannedEndpoint[] = [];
  const seen = new Set<string>();
  const collect = (eps: readonly PlannedEndpoint[]): void => {
    for (const ep of eps) {
      const id = endpointString(ep);
      if (seen.has(id)) continue;
      seen.add(id);
      reachable.push(ep);
    }
  };
  if (usesSvc) {
    dispatch(n.svc, svcSet.endpoints);
    collect(svcSet.endpoints);
  }
  if (usesSvl) {
    dispatch(n.svl, localSet.endpoints);
    collect(localSet.endpoints);
  }
  // Policy chains follow EXT/FW in kube-proxy's write order.
  if (usesSvc) chains.set(n.svc, rulesOf(n.svc));
  if (usesSvl) chains.set(n.svl, rulesOf(n.svl));

  const svcComment = ctx.largeCluster ? '' : ` ${comment(name)}`;
  for (const ep of reachable) {
    const sep = sepName(ep);
    const recent = affinity ? ` -m recent --name ${sep} --set` : '';
    chains.set(sep, [
      `-A ${sep}${svcComment} -s ${ep.ip} -j ${Chain.markMasq}`,
      `-A ${sep}${svcComment}${recent} ${proto} -j DNAT --to-destination ${endpointString(ep)}`,
    ]);
  }

  return { chains, natServices, natNodePorts, filterServices, filterExternal, filterNodePorts, filterFirewall, endpointCount: reachable.length };
}
