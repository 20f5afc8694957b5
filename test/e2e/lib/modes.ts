/**
 * Which proxy modes the end-to-end suite runs, and what each mode is expected to do where modes
 * differ ON PURPOSE. Every test is written once and loops over modes(); a behaviour that differs
 * between modes is looked up here, never forked into a copy of a test. Each expectation carries
 * its reason, so a reader can tell a documented difference from a bug.
 * Pure: no I/O besides reading the environment.
 */

export const ALL_MODES = ['nftables', 'iptables', 'ebpf', 'userspace'] as const;
export type ProxyMode = (typeof ALL_MODES)[number];

export class UnknownModeError extends Error {
  readonly code = 'FERRY_ERR_E2E_MODE';
  constructor(readonly mode: string) {
    super(`FERRY_E2E_MODES: unknown proxy mode ${JSON.stringify(mode)} (known: ${ALL_MODES.join(', ')})`);
    this.name = 'UnknownModeError';
  }
}

function isMode(s: string): s is ProxyMode {
  return (ALL_MODES as readonly string[]).includes(s);
}

/** Modes to run: env FERRY_E2E_MODES (comma list), default nftables. A typo fails loudly. */
export function modes(env: NodeJS.ProcessEnv = process.env): ProxyMode[] {
  const raw = env.FERRY_E2E_MODES?.trim();
  if (!raw) return ['nftables'];
  const out: ProxyMode[] = [];
  for (const part of raw.split(',')) {
    const m = part.trim();
    if (!m) continue;
    if (!isMode(m)) throw new UnknownModeError(m);
    if (!out.includes(m)) out.push(m);
  }
  return out.length > 0 ? out : ['nftables'];
}

/**
 * What source address an endpoint sees:
 * - 'origin': the address of whoever sent the traffic (the pod's own IP, the outside client's IP);
 * - 'node':   an address owned by the node that proxied it (its node IP or its pod gateway on lo):
 *             the traffic was masqueraded (or, in userspace mode, re-originated by the proxy).
 */
export type SourceSeen = 'origin' | 'node';

/**
 * How traffic the proxy will not deliver ends, as the prober sees it: 'refused' (TCP RST to the
 * SYN or ICMP port unreachable), 'reset' (the connection was accepted, then reset or closed
 * before any reply), 'timeout' (silently dropped), 'unreachable' (connect() itself failed with
 * EHOSTUNREACH: no packet was ever sent).
 */
export type Refusal = 'refused' | 'reset' | 'timeout' | 'unreachable';

export interface Expectation<T> {
  value: T;
  reason: string;
}

export interface ModeExpectations {
  /** Pod → ClusterIP (cluster CIDR is set, so no masquerade). */
  podToClusterIP: Expectation<SourceSeen>;
  /** The node itself → ClusterIP. */
  nodeToClusterIP: Expectation<SourceSeen>;
  /** Pod → its own Service, and it is chosen (hairpin). */
  hairpin: Expectation<SourceSeen>;
  /** Pod → ClusterIP from a process outside the pod's cgroup (ebpf: not seen by socket LB). */
  uncgroupedPodToClusterIP: Expectation<SourceSeen>;
  /** The same process → its own pod's Service, and it is chosen (hairpin). */
  uncgroupedHairpin: Expectation<SourceSeen>;
  /** A pod process outside its cgroup → an externalTrafficPolicy Local NodePort of its own node, which has no endpoint (short-circuited to the cluster-wide set). */
  uncgroupedPodToLocalNodePort: Expectation<SourceSeen>;
  /** Outside client → ClusterIP, routed to a node (the client is not in the cluster CIDR). */
  outsideToClusterIP: Expectation<SourceSeen>;
  /** Outside client → NodePort / externalIP / LB IP with externalTrafficPolicy Cluster. */
  externalClusterPolicy: Expectation<SourceSeen>;
  /** Outside client → NodePort / LB IP with externalTrafficPolicy Local. */
  externalLocalPolicy: Expectation<SourceSeen>;
  /** TCP to a Service with no endpoints at all. */
  noEndpointsTCP: Expectation<Refusal>;
  /** UDP to a Service with no endpoints at all. */
  noEndpointsUDP: Expectation<Refusal>;
  /** TCP from a client outside the node to an externalIP or LB IP of a Service with no endpoints. */
  outsideNoEndpointsTCP: Expectation<Refusal>;
  /** UDP from a client outside the node to an externalIP or LB IP of a Service with no endpoints. */
  outsideNoEndpointsUDP: Expectation<Refusal>;
  /** TCP where policy says "drop": externalTrafficPolicy Local on a node without local endpoints,
   * internalTrafficPolicy Local from a node without local endpoints, a source outside
   * loadBalancerSourceRanges. */
  policyDrop: Expectation<Refusal>;
  /** The same "drop" for a client outside the node (externalTrafficPolicy Local without a local
   * endpoint, a source outside loadBalancerSourceRanges). */
  outsidePolicyDrop: Expectation<Refusal>;
  /**
   * With `--nodeport-addresses` unset: does an address the node gains while ferry runs accept
   * NodePorts (kube-proxy: every local address), or only the node's primary IP does?
   */
  nodePortOnGainedAddress: Expectation<boolean>;
  /**
   * Traffic paths this mode does not serve YET, each with its reason. The suite skips exactly
   * these (a tap skip that prints the reason); it never asserts a made-up result for them.
   * - fromOutside: traffic that enters the node from the network (the outside client → NodePort,
   *   externalIP, LB IP).
   */
  notServed: { readonly fromOutside?: string };
}

const KERNEL_NAT: ModeExpectations = {
  podToClusterIP: {
    value: 'origin',
    reason: '--cluster-cidr is set, so traffic from the cluster CIDR is DNAT-ed without masquerade (as kube-proxy does)',
  },
  nodeToClusterIP: {
    value: 'node',
    reason: 'node-originated traffic is not from the cluster CIDR, so it is masqueraded (kube-proxy marks it for masquerade)',
  },
  hairpin: {
    value: 'node',
    reason: 'an endpoint reaching itself through its Service must be masqueraded, or its reply would bypass the reverse NAT',
  },
  uncgroupedPodToClusterIP: {
    value: 'origin',
    reason: 'cgroups do not matter to netfilter: the pod address is kept, as for any pod',
  },
  uncgroupedHairpin: {
    value: 'node',
    reason: 'cgroups do not matter to netfilter: masqueraded, as any hairpin',
  },
  uncgroupedPodToLocalNodePort: {
    value: 'origin',
    reason: 'traffic from the cluster CIDR is short-circuited to the Service chain without masquerade (kube-proxy)',
  },
  outsideToClusterIP: {
    value: 'node',
    reason: 'clusterIPMasquerade nonLocal: traffic from outside the cluster CIDR is masqueraded (kube-proxy: masquerade off-cluster traffic to ClusterIPs)',
  },
  externalClusterPolicy: {
    value: 'node',
    reason: 'externalTrafficPolicy Cluster may forward to another node, so the source is masqueraded to keep replies symmetric',
  },
  externalLocalPolicy: {
    value: 'origin',
    reason: 'externalTrafficPolicy Local only uses local endpoints, so the client address is preserved',
  },
  noEndpointsTCP: {
    value: 'refused',
    reason: 'kube-proxy rejects traffic to a Service without endpoints (nft/iptables reject: ICMP port unreachable) so clients fail fast',
  },
  noEndpointsUDP: {
    value: 'refused',
    reason: 'kube-proxy rejects traffic to a Service without endpoints with ICMP port unreachable so clients fail fast',
  },
  outsideNoEndpointsTCP: {
    value: 'refused',
    reason: 'the reject rule answers traffic from the network as it answers local traffic (ICMP port unreachable)',
  },
  outsideNoEndpointsUDP: {
    value: 'refused',
    reason: 'the reject rule answers traffic from the network as it answers local traffic (ICMP port unreachable)',
  },
  policyDrop: {
    value: 'timeout',
    reason: 'traffic that policy says must not be served here (no local endpoint, source outside loadBalancerSourceRanges) is dropped, not rejected',
  },
  outsidePolicyDrop: {
    value: 'timeout',
    reason: 'traffic that policy says must not be served here (no local endpoint, source outside loadBalancerSourceRanges) is dropped, not rejected',
  },
  nodePortOnGainedAddress: {
    value: true,
    reason: "kube-proxy's iptables mode accepts NodePorts on every local address when --nodeport-addresses is unset, also one added later",
  },
  notServed: {},
};

/** nftables mode: kube-proxy's nftables defaults, where they differ from its iptables ones. */
const NFTABLES: ModeExpectations = {
  ...KERNEL_NAT,
  nodePortOnGainedAddress: {
    value: false,
    reason: "kube-proxy's nftables mode defaults --nodeport-addresses to `primary` (platformApplyDefaults): NodePorts answer on the node's IP, not on every address it has",
  },
};

/**
 * ebpf mode (docs/ebpf.md): a local client's connect() goes straight to the endpoint (socket-level
 * LB; nothing is NATed, so nothing is masqueraded); traffic from the network is translated by the
 * tc program with kube-proxy's masquerade and drop semantics (the KERNEL_NAT values).
 */
const EBPF: ModeExpectations = {
  ...KERNEL_NAT,
  podToClusterIP: {
    value: 'origin',
    reason: 'socket-level LB rewrites the pod\'s connect() to the endpoint; the packets carry the pod address, no NAT at all',
  },
  nodeToClusterIP: {
    value: 'node',
    reason: "socket-level LB rewrites the node's connect() to the endpoint; the kernel picks the node's own source address for that route",
  },
  hairpin: {
    value: 'origin',
    reason: 'socket-level LB connects the pod straight to itself; no reverse NAT exists that a reply could bypass, so nothing needs masquerading',
  },
  uncgroupedPodToClusterIP: {
    value: 'origin',
    reason: 'the tc program on the pod\'s interface translates it (socket LB never saw it); the source is in the cluster CIDR, so it is not masqueraded (clusterIPMasquerade nonLocal)',
  },
  uncgroupedHairpin: {
    value: 'node',
    reason: 'translated by the tc program, whose reverse NAT the reply must meet: masqueraded, as kube-proxy masquerades any hairpin',
  },
  uncgroupedPodToLocalNodePort: {
    value: 'origin',
    reason: 'the tc program short-circuits a source in the cluster CIDR to the cluster-wide set socket LB has for the same frontend, unmasqueraded',
  },
  outsideToClusterIP: {
    value: 'node',
    reason: 'the tc program on the node\'s uplink translates it; the client is outside the cluster CIDR, so it is masqueraded (clusterIPMasquerade nonLocal)',
  },
  noEndpointsTCP: {
    value: 'refused',
    reason: 'the connect hook fails connect() with ECONNREFUSED at once (bpf_set_retval), before any packet',
  },
  noEndpointsUDP: {
    value: 'refused',
    reason: 'the connect/sendmsg hooks fail the call with ECONNREFUSED at once (bpf_set_retval)',
  },
  policyDrop: {
    value: 'unreachable',
    reason: 'for a local client the decision is made in connect(), before any packet exists that could be dropped: it fails with EHOSTUNREACH (as Cilium\'s socket LB does) instead of timing out',
  },
  outsideNoEndpointsTCP: {
    value: 'refused',
    reason: 'the tc program turns the SYN into a RST and sends it back out of the interface it came in on',
  },
  outsideNoEndpointsUDP: {
    value: 'refused',
    reason: 'the tc program answers with an ICMP port unreachable quoting the datagram, rate-limited as the kernel limits its own',
  },
  outsidePolicyDrop: {
    value: 'timeout',
    reason: 'a packet from the network that policy says must not be served here is dropped by the tc program (TC_ACT_SHOT), as kube-proxy drops it',
  },
  notServed: {},
};

const USERSPACE: ModeExpectations = {
  ...KERNEL_NAT,
  notServed: {},
  podToClusterIP: {
    value: 'node',
    reason: 'the userspace forwarder terminates the connection and opens a new one from the node, so the pod address is lost',
  },
  hairpin: {
    value: 'node',
    reason: 'the userspace forwarder always connects from the node',
  },
  uncgroupedPodToClusterIP: {
    value: 'node',
    reason: 'the userspace forwarder terminates the connection and opens a new one from the node, so the pod address is lost',
  },
  uncgroupedHairpin: {
    value: 'node',
    reason: 'the userspace forwarder always connects from the node',
  },
  uncgroupedPodToLocalNodePort: {
    value: 'node',
    reason: 'the userspace forwarder re-originates every connection from the node',
  },
  outsideToClusterIP: {
    value: 'node',
    reason: 'the ClusterIP is an address of ferry0 on every node: the forwarder accepts the connection and opens a new one from the node',
  },
  externalLocalPolicy: {
    value: 'node',
    reason: 'the userspace forwarder re-originates every connection, so even Local policy cannot preserve the client address',
  },
  noEndpointsTCP: {
    value: 'reset',
    reason: 'docs/userspace.md: the kernel completes the handshake on the forwarder socket before ferry decides, so reject = reset of the accepted connection (still fast)',
  },
  noEndpointsUDP: {
    value: 'refused',
    reason: 'docs/userspace.md: with no endpoint anywhere the UDP socket is not bound, so the kernel answers ICMP port unreachable',
  },
  outsideNoEndpointsTCP: {
    value: 'reset',
    reason: 'docs/userspace.md: external addresses live on ferry0 like ClusterIPs, so an outside client meets the same reset of the accepted connection',
  },
  outsideNoEndpointsUDP: {
    value: 'refused',
    reason: 'docs/userspace.md: external addresses live on ferry0 and the UDP socket is not bound, so the kernel answers ICMP port unreachable',
  },
  policyDrop: {
    value: 'reset',
    reason: 'docs/userspace.md: userspace cannot ignore a SYN the kernel already answered, so drop = close the accepted connection without a byte; the health check keeps load balancers away',
  },
  outsidePolicyDrop: {
    value: 'reset',
    reason: 'docs/userspace.md: userspace cannot ignore a SYN the kernel already answered, so drop = close the accepted connection without a byte; the health check keeps load balancers away',
  },
};

export function expectations(mode: ProxyMode): ModeExpectations {
  switch (mode) {
    case 'nftables':
      return NFTABLES;
    case 'iptables':
      return KERNEL_NAT;
    case 'ebpf':
      return EBPF;
    case 'userspace':
      return USERSPACE;
  }
}

/** Commands whose output explains a failure in this mode (run inside a node namespace). */
export function diagnosticCommands(mode: ProxyMode): string[][] {
  const common = [
    ['ip', '-brief', 'addr'],
    ['conntrack', '-L'],
  ];
  switch (mode) {
    case 'nftables':
      return [['nft', 'list', 'ruleset'], ...common];
    case 'iptables':
      return [['iptables-save'], ['ip6tables-save'], ...common];
    case 'ebpf':
      return [['bpftool', 'link', 'show'], ...common];
    case 'userspace':
      return [['ss', '-lntup'], ...common];
  }
}
