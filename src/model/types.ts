/**
 * The model's nouns: what ferry knows about the cluster after parsing API objects, before any
 * per-node decision. Everything here is immutable data (readonly) built by src/model/ from
 * src/kube/ events. Stage: model. Never imports plan or backends.
 *
 * One ServicePort exists per (Service, port entry, IP family): a dual-stack Service with two
 * ports yields four ServicePorts, two in each family's snapshot.
 */

export type IPFamily = 4 | 6;
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type TrafficPolicy = 'Cluster' | 'Local';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

/**
 * Identifies a service port across families, as kube-proxy's ServicePortName does:
 * `namespace/name:portName/PROTOCOL` (portName may be empty: `default/web:/TCP`).
 */
export type ServicePortKey = string;

export function servicePortKey(namespace: string, name: string, portName: string, protocol: Protocol): ServicePortKey {
  return `${namespace}/${name}:${portName}/${protocol}`;
}

export interface LoadBalancerIngress {
  readonly ip: string;
  /** VIP: traffic to the IP is handled by the node (kube-proxy default). Proxy: the LB proxies; the node does not capture the IP. */
  readonly ipMode: 'VIP' | 'Proxy';
}

export interface ServicePort {
  readonly key: ServicePortKey;
  readonly namespace: string;
  readonly name: string;
  readonly portName: string;
  readonly protocol: Protocol;
  readonly family: IPFamily;
  readonly type: ServiceType;
  /** The ClusterIP of this family. */
  readonly clusterIP: string;
  readonly port: number;
  /** 0 when the service has no NodePort. */
  readonly nodePort: number;
  /** spec.ports[].targetPort when numeric; informational (endpoints carry the real port). */
  readonly targetPort: number | string;
  /** externalIPs of this family, deduplicated, in spec order. */
  readonly externalIPs: readonly string[];
  /** status.loadBalancer.ingress IPs of this family (hostname-only entries are dropped). */
  readonly loadBalancerIngress: readonly LoadBalancerIngress[];
  /** spec.loadBalancerSourceRanges of this family as normalized CIDRs. Empty = allow all. */
  readonly loadBalancerSourceRanges: readonly string[];
  /** ClientIP affinity timeout in seconds, or 0 for no affinity. */
  readonly affinityTimeoutSeconds: number;
  readonly externalTrafficPolicy: TrafficPolicy;
  readonly internalTrafficPolicy: TrafficPolicy;
  /** 0 unless LoadBalancer with externalTrafficPolicy Local. */
  readonly healthCheckNodePort: number;
  /** spec.trafficDistribution (e.g. "PreferClose"), or "" when unset. */
  readonly trafficDistribution: string;
}

/** One endpoint of one service port (EndpointSlice entry × matching port). */
export interface Endpoint {
  readonly ip: string;
  /**
   * The address as a 32-bit number when it is IPv4 (always canonical here), -1 for IPv6: read
   * once with the slice, so that the nftables compiler and encoder, which walk every endpoint of
   * a full sync (440,000 at 44k Services), need not read the text again.
   */
  readonly v4: number;
  readonly port: number;
  /** conditions.ready (nil means true). */
  readonly ready: boolean;
  /** conditions.serving (nil means the value of ready). */
  readonly serving: boolean;
  /** conditions.terminating (nil means false). */
  readonly terminating: boolean;
  readonly nodeName: string;
  readonly zone: string;
  /** hints.forZones[].name; empty when there are no hints. */
  readonly zoneHints: readonly string[];
  /** hints.forNodes[].name; empty when there are no hints. */
  readonly nodeHints: readonly string[];
  /** nodeName equals this node's name. */
  readonly isLocal: boolean;
}

/** What ferry knows about its own node. */
export interface NodeInfo {
  readonly name: string;
  /** status.addresses InternalIP/ExternalIP, in order. */
  readonly addresses: readonly string[];
  /** Topology zone label (topology.kubernetes.io/zone), "" when unset. */
  readonly zone: string;
  /**
   * spec.podCIDRs (or spec.podCIDR), normalized, at most one per family, for detect-local
   * NodeCIDR. Absent when the Node has none.
   */
  readonly podCIDRs?: readonly string[];
}

/** Immutable picture of one IP family at one moment. */
export interface ClusterSnapshot {
  readonly family: IPFamily;
  readonly services: ReadonlyMap<ServicePortKey, ServicePort>;
  /** Endpoints of each service port, deduplicated by ip:port, sorted by ip then port. */
  readonly endpoints: ReadonlyMap<ServicePortKey, readonly Endpoint[]>;
  readonly node: NodeInfo;
  /**
   * This family's ranges from networking.k8s.io/v1 ServiceCIDR objects, canonical, sorted,
   * deduplicated. Absent when none are known (no ServiceCIDR seen, or an API server that does
   * not serve them).
   */
  readonly serviceCIDRs?: readonly string[];
}

/** What changed between two snapshots: the set of service ports whose rules must be rewritten. */
export interface ChangeSet {
  readonly changed: ReadonlySet<ServicePortKey>;
  /**
   * Table-level inputs changed — the node's addresses, zone or podCIDRs, or the service CIDRs:
   * every service may plan differently.
   */
  readonly nodeChanged: boolean;
}
