/**
 * The backend-neutral IR ("proxy table"): per node, per IP family, every decision a backend
 * needs, already made. Backends translate it; they never re-derive Kubernetes semantics
 * (traffic policies, topology, terminating fallback, masquerade, reject vs drop).
 *
 * Stage: plan (types). Pure data, immutable, JSON-serializable except for the Map.
 * docs/ir.md describes the same in prose.
 */
import type { IPFamily, Protocol, ServicePortKey } from '../model/types.js';

export type { IPFamily, Protocol, ServicePortKey };

export interface PlannedEndpoint {
  readonly ip: string;
  /** `ip` as a 32-bit number if IPv4, -1 if not (model Endpoint.v4); absent: read `ip`. */
  readonly v4?: number;
  readonly port: number;
  readonly isLocal: boolean;
  /**
   * False when the endpoint is only in the set because of the serving-terminating fallback
   * (KEP-1669): no ready endpoint existed in this set's scope.
   */
  readonly ready: boolean;
}

/**
 * What traffic on one path does.
 * - forward: DNAT to one of `endpoints` (random, or sticky per client with affinity).
 * - reject:  the service has no usable endpoint anywhere: ICMP unreachable / TCP RST, fast.
 * - drop:    the service has endpoints, but none that this path may use (traffic policy Local
 *            and no local endpoint): silently dropped, as kube-proxy does.
 */
export type PathVerdict = 'forward' | 'reject' | 'drop';

export interface EndpointSet {
  readonly verdict: PathVerdict;
  /** Non-empty exactly when verdict is 'forward'. Sorted by ip, then port. */
  readonly endpoints: readonly PlannedEndpoint[];
  /**
   * IPv4 sets from the planner: each endpoint's PlannedEndpoint.v4, in the same order, in one
   * packed array. A full compile walks every set's addresses (the hairpin set: 440,000 at 44k
   * Services); read from here that walk touches one array per set instead of every endpoint
   * object, which the lists left scattered over the heap. Absent: read the endpoints.
   */
  readonly v4?: readonly number[];
}

/**
 * Masquerading of traffic to a ClusterIP:
 * - all:      masquerade everything (--masquerade-all);
 * - nonLocal: masquerade unless the source is local pod traffic per the table's localTraffic
 *             detector (kube-proxy's default with --cluster-cidr or another detect-local mode);
 * - none:     no detector and no masquerade-all: only hairpin traffic is masqueraded.
 */
export type ClusterIPMasquerade = 'all' | 'nonLocal' | 'none';

export interface ServiceEntry {
  readonly key: ServicePortKey;
  readonly namespace: string;
  readonly name: string;
  readonly portName: string;
  readonly protocol: Protocol;
  readonly family: IPFamily;

  /** Frontends. */
  readonly clusterIP: string;
  readonly port: number;
  /** 0 = no NodePort. */
  readonly nodePort: number;
  readonly externalIPs: readonly string[];
  /** LoadBalancer ingress IPs with ipMode VIP (Proxy-mode IPs are not captured by the node). */
  readonly loadBalancerIPs: readonly string[];
  /**
   * loadBalancerSourceRanges as CIDRs of this family; when non-empty, traffic to the
   * loadBalancerIPs from any other source is dropped. Empty = allow all.
   */
  readonly loadBalancerSourceRanges: readonly string[];
  /**
   * With loadBalancerSourceRanges: also accept the loadBalancerIPs themselves as sources. True
   * when a range contains the node's primary IP (kube-proxy): a node reaching a VIP routed
   * locally appears with the VIP as its source. Decided here so every backend agrees.
   */
  readonly allowLoadBalancerIPSources: boolean;

  /** ClientIP session affinity timeout in seconds; 0 = none. */
  readonly affinityTimeoutSeconds: number;

  /** Traffic to the ClusterIP (internalTrafficPolicy applied). */
  readonly internal: EndpointSet;
  /** Traffic to NodePort, externalIPs and LB IPs (externalTrafficPolicy applied). */
  readonly external: EndpointSet;
  /**
   * The cluster-wide set (topology and terminating fallback applied, policy ignored). With
   * externalTrafficPolicy Local, external traffic that comes from a local pod (per the
   * localTraffic detector) or from the node itself is sent here instead of `external`, the
   * latter masqueraded — as kube-proxy does, so that pods and the node can always reach
   * external addresses of a Local service.
   */
  readonly cluster: EndpointSet;
  /**
   * The topology hints that narrowed the cluster set (absent: none applied). Recorded for
   * explanations (`ferry trace`); backends need not read it, the sets already reflect it.
   */
  readonly topology?: 'PreferSameNode' | 'PreferSameZone';
  /**
   * UDP and SCTP service ports only (absent on TCP ones): every endpoint of the service port that
   * its EndpointSlices call serving, whatever the traffic policies, topology hints or terminating
   * state (kube-proxy's IsServing()), sorted by ip, then port. Conntrack cleanup reads it: a flow
   * through one of this port's frontends is stale only when its reply source is none of these, so
   * a policy or topology shift, or an endpoint that starts terminating, cuts no flow (kube-proxy's
   * CleanStaleEntries, "consistent with TCP services"). Absent on a UDP/SCTP entry built by hand:
   * the endpoints of the forwarding sets count as serving. Backends that program rules ignore it.
   */
  readonly serving?: readonly PlannedEndpoint[];

  readonly clusterIPMasquerade: ClusterIPMasquerade;
  /** externalTrafficPolicy Cluster: masquerade external traffic. Local: preserve the client source. */
  readonly externalMasquerade: boolean;
  /** externalTrafficPolicy Local (and the service is externally reachable). */
  readonly externalPolicyLocal: boolean;
  readonly internalPolicyLocal: boolean;

  /** healthCheckNodePort (0 = none) and the number of ready local endpoints it reports. */
  readonly healthCheckNodePort: number;
  readonly localReadyEndpoints: number;
}

/**
 * How to recognize traffic from local pods (kube-proxy's LocalTrafficDetector).
 * - clusterCIDR: by source address in `cidrs` — the cluster CIDRs (detect-local ClusterCIDR) or
 *   this node's pod CIDRs (NodeCIDR); backends need not know which.
 * - bridgeInterface: arrived on the interface named `name` (iifname, exact).
 * - interfaceNamePrefix: arrived on an interface whose name starts with `prefix` (iifname
 *   "prefix*" in nftables, `-i prefix+` in iptables).
 * - none: no detector.
 * Interface detectors are the same in both families' tables.
 */
export type LocalTrafficDetector =
  | { readonly kind: 'clusterCIDR'; readonly cidrs: readonly string[] }
  | { readonly kind: 'bridgeInterface'; readonly name: string }
  | { readonly kind: 'interfaceNamePrefix'; readonly prefix: string }
  | { readonly kind: 'none' };

/** Where NodePorts are accepted on this node, for this family. */
export type NodePortAddresses =
  /**
   * Every local address except loopback (nftables: `fib daddr type local`). `local`: those
   * addresses of the family as the host listed them (canonical, sorted), present when the
   * planner was asked to list them (PlanOptions.listAllNodePortAddresses) for a backend that
   * cannot ask the kernel per packet (ebpf).
   */
  | { readonly kind: 'all'; readonly local?: readonly string[] }
  /** Exactly these local addresses (from --nodeport-addresses CIDRs or "primary"). */
  | { readonly kind: 'list'; readonly addresses: readonly string[] };

export interface ProxyTable {
  readonly family: IPFamily;
  readonly nodeName: string;
  /** The node's addresses of this family (status.addresses), primary first. */
  readonly nodeIPs: readonly string[];
  readonly nodePortAddresses: NodePortAddresses;
  readonly localTraffic: LocalTrafficDetector;
  readonly masqueradeAll: boolean;
  /**
   * The cluster's service IP ranges of this family (networking.k8s.io/v1 ServiceCIDRs: canonical,
   * sorted, deduplicated). Absent when none are known: nothing is dropped then. Traffic to an
   * address inside these ranges that is no Service's ClusterIP is dropped (nftables mode, as
   * kube-proxy's); see docs/ir.md.
   */
  readonly serviceCIDRs?: readonly string[];
  /** Every service port of this family, keyed and iterated in sorted key order. */
  readonly services: ReadonlyMap<ServicePortKey, ServiceEntry>;
}

/** Both families' tables; a family ferry does not serve has an empty table. */
export interface ProxyTables {
  readonly 4: ProxyTable;
  readonly 6: ProxyTable;
}

/**
 * What a sync must rewrite. `full` means: assume nothing about the kernel, rewrite all.
 * Otherwise `changed` lists service ports whose entries (or existence) differ between prev
 * and next, and `tableChanged` says table-level fields (node IPs, nodeport addresses,
 * detector) changed.
 */
export interface SyncChanges {
  readonly full: boolean;
  readonly changed: ReadonlySet<ServicePortKey>;
  readonly tableChanged: boolean;
}

/** The interface every backend implements; the syncer drives it. */
export interface Backend {
  readonly name: string;
  /**
   * Make the kernel (or the forwarder) match `next`. `prev` is what the last successful sync
   * programmed (null on the first sync or after a failure, when `changes.full` is true).
   * Must be atomic: on failure, throw and leave the previous state in force.
   */
  sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void>;
  /**
   * Cheap check that what the last sync installed is still in place (e.g. a canary chain), so an
   * external flush or delete is noticed without a sync; false forces a full sync. Optional.
   */
  intact?(): Promise<boolean>;
  /**
   * Begin what the first sync needs that does not depend on the cluster's objects (ebpf: load
   * and attach the programs) while the initial lists arrive; the first sync waits for it and
   * reports its failure. Optional; the daemon calls it once, at start.
   */
  prepare?(): void;
  /** Remove everything this backend installed. */
  cleanup(): Promise<void>;
}
