/**
 * Which endpoints each traffic path of one service port may use on this node — kube-proxy's
 * CategorizeEndpoints (pkg/proxy/topology.go), which every backend shares. Traffic policies,
 * topology hints (PreferSameNode, then PreferSameZone) and the serving-terminating fallback
 * live here and nowhere else. Pure; input endpoints are sorted and stay sorted.
 */
import type { Endpoint } from '../model/types.js';

/** The facts about a service port that categorization depends on. */
export interface CategorizeInput {
  readonly internalPolicyLocal: boolean;
  readonly externalPolicyLocal: boolean;
  /** Has a NodePort, externalIPs or VIP-mode LB IPs in this family. */
  readonly externallyAccessible: boolean;
}

export type TopologyMode = '' | 'PreferSameNode' | 'PreferSameZone';

export interface Categorized {
  /** Cluster-policy endpoints (topology + fallback applied). Computed even when unused. */
  readonly cluster: readonly Endpoint[];
  /** Local-policy endpoints (ready local, else serving-terminating local). */
  readonly local: readonly Endpoint[];
  /** kube-proxy's hasAnyEndpoints: some usable endpoint exists anywhere in the cluster. */
  readonly hasAnyEndpoints: boolean;
  readonly usesCluster: boolean;
  readonly usesLocal: boolean;
  readonly topologyMode: TopologyMode;
}

export function usesClusterEndpoints(s: CategorizeInput): boolean {
  // Even with externalTrafficPolicy Local, external traffic from pods and the node itself is
  // short-circuited to the cluster set, so any externally accessible port needs it.
  return !s.internalPolicyLocal || s.externallyAccessible;
}

export function usesLocalEndpoints(s: CategorizeInput): boolean {
  return s.internalPolicyLocal || (s.externalPolicyLocal && s.externallyAccessible);
}

/**
 * PreferSameNode when every ready endpoint has node hints and one names this node; else
 * PreferSameZone when every ready endpoint has zone hints and one names this node's zone; else
 * no topology. (kube-proxy's topologyModeFromHints with PreferSameTrafficDistribution on, the
 * default since 1.34.)
 */
export function topologyMode(endpoints: readonly Endpoint[], nodeName: string, zone: string): TopologyMode {
  let hasReady = false;
  let allNodeHints = true;
  let forNode = false;
  let allZoneHints = true;
  let forZone = false;
  // Indexed: the planner runs below V8's optimizing tier on a cold start, where a for…of makes
  // an iterator result per endpoint (440,000 at 44k Services, several loops each).
  for (let i = 0; i < endpoints.length; i++) {
    const ep = endpoints[i]!;
    if (!ep.ready) continue;
    hasReady = true;
    if (ep.nodeHints.length === 0) allNodeHints = false;
    else if (nodeName !== '' && ep.nodeHints.includes(nodeName)) forNode = true;
    if (ep.zoneHints.length === 0) allZoneHints = false;
    else if (zone !== '' && ep.zoneHints.includes(zone)) forZone = true;
  }
  if (!hasReady) return '';
  if (allNodeHints && forNode) return 'PreferSameNode';
  if (allZoneHints && forZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(ep: Endpoint, mode: TopologyMode, nodeName: string, zone: string): boolean {
  if (mode === 'PreferSameNode') return ep.nodeHints.includes(nodeName);
  if (mode === 'PreferSameZone') return ep.zoneHints.includes(zone);
  return true;
}

/**
 * The endpoints that pass; the list itself when all do (the IR then shares the snapshot's list),
 * with no array made for it — usually the case for the cluster-wide set.
 */
function keep(endpoints: readonly Endpoint[], pass: (ep: Endpoint) => boolean): readonly Endpoint[] {
  let i = 0;
  while (i < endpoints.length && pass(endpoints[i]!)) i++;
  if (i === endpoints.length) return endpoints;
  const out = endpoints.slice(0, i);
  for (i++; i < endpoints.length; i++) if (pass(endpoints[i]!)) out.push(endpoints[i]!);
  return out;
}

/**
 * The endpoints whose EndpointSlice condition says serving, whatever their readiness, node or
 * hints (kube-proxy's IsServing()): what conntrack cleanup keeps flows to. The list itself when
 * all serve, as usual.
 */
export function servingEndpoints(endpoints: readonly Endpoint[]): readonly Endpoint[] {
  return keep(endpoints, (ep) => ep.serving);
}

export function categorizeEndpoints(
  endpoints: readonly Endpoint[],
  svc: CategorizeInput,
  nodeName: string,
  zone: string,
): Categorized {
  const usesCluster = usesClusterEndpoints(svc);
  const usesLocal = usesLocalEndpoints(svc);
  const mode = topologyMode(endpoints, nodeName, zone);

  let cluster = keep(endpoints, (ep) => ep.ready && availableForTopology(ep, mode, nodeName, zone));
  if (cluster.length === 0) {
    // No ready endpoint anywhere (topology already fell back if none matched this node/zone).
    // kube-proxy does not apply topology to this fallback; neither do we.
    cluster = keep(endpoints, (ep) => ep.serving && ep.terminating);
  }

  let local = keep(endpoints, (ep) => ep.isLocal && ep.ready);
  if (local.length === 0) local = keep(endpoints, (ep) => ep.isLocal && ep.serving && ep.terminating);

  let hasAnyEndpoints = false;
  if (usesCluster && cluster.length > 0) hasAnyEndpoints = true;
  if (usesLocal) {
    for (let i = 0; i < endpoints.length; i++) {
      const ep = endpoints[i]!;
      if (ep.ready || (ep.serving && ep.terminating)) {
        hasAnyEndpoints = true;
        break;
      }
    }
  }
  return { cluster, local, hasAnyEndpoints, usesCluster, usesLocal, topologyMode: mode };
}
