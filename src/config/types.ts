/**
 * The proxy's resolved configuration: defaults, then the KubeProxyConfiguration file, then the
 * flags the user gave explicitly — validated once at start. Everything downstream reads this,
 * never the raw flags. Pure data.
 */
import type { IPFamily } from '../model/types.js';

export type ProxyMode = 'nftables' | 'iptables' | 'ebpf' | 'userspace';
export const PROXY_MODES: readonly ProxyMode[] = ['nftables', 'iptables', 'ebpf', 'userspace'];

/** Same shape as the planner's NodePortAddressSpec (src/plan/planner.ts). */
export type NodePortAddressSpec =
  | { readonly kind: 'all' }
  | { readonly kind: 'primary' }
  | { readonly kind: 'cidrs'; readonly cidrs: readonly string[] };

/**
 * How traffic from local pods is recognized (kube-proxy's --detect-local-mode). ClusterCIDR
 * uses the proxy's clusterCIDRs; NodeCIDR the Node's spec.podCIDRs; the interface modes match
 * the interface the packet came in on.
 */
export type DetectLocal =
  | { readonly mode: 'ClusterCIDR' }
  | { readonly mode: 'NodeCIDR' }
  | { readonly mode: 'BridgeInterface'; readonly bridgeInterface: string }
  | { readonly mode: 'InterfaceNamePrefix'; readonly interfaceNamePrefix: string };
export type DetectLocalMode = DetectLocal['mode'];
export const DETECT_LOCAL_MODES: readonly DetectLocalMode[] = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'];

/**
 * kube-proxy's conntrack sysctls. Zero means "leave the kernel's value alone", for each field
 * (maxPerCore 0 also ignores min), as in kube-proxy.
 */
export interface ConntrackConfig {
  readonly maxPerCore: number;
  readonly min: number;
  readonly tcpEstablishedTimeoutMs: number;
  readonly tcpCloseWaitTimeoutMs: number;
  readonly tcpBeLiberal: boolean;
  readonly udpTimeoutMs: number;
  readonly udpStreamTimeoutMs: number;
}

export interface HostPort {
  /** A literal IP ("0.0.0.0", "::", "127.0.0.1"). */
  readonly host: string;
  readonly port: number;
}

export interface ProxyConfig {
  /** Path of the kubeconfig; undefined = in-cluster (or --master alone). */
  readonly kubeconfig: string | undefined;
  /** Overrides the kubeconfig's server URL. */
  readonly master: string | undefined;
  /** The Node this proxy serves: --hostname-override / hostnameOverride, else the hostname; lowercased. */
  readonly nodeName: string;
  readonly mode: ProxyMode;
  /** --proxy-mode-fallback: the mode to use when the configured kernel mode cannot program this node. */
  readonly modeFallback: ProxyMode | undefined;
  /** ferry extension: plan only, print each synced table as a JSON line, touch no kernel state. */
  readonly dryRun: boolean;
  readonly cleanup: boolean;
  /** Normalized pod CIDRs, at most one per family. */
  readonly clusterCIDRs: readonly string[];
  readonly nodePortAddresses: NodePortAddressSpec;
  readonly masqueradeAll: boolean;
  readonly masqueradeBit: number;
  /** --bind-address: decides the primary family when it is not unspecified. */
  readonly bindAddress: string;
  /** The family of a specified (not 0.0.0.0 / ::) bind address; undefined = take it from the Node. */
  readonly primaryFamily: IPFamily | undefined;
  /** null = server disabled (empty address). */
  readonly healthzBindAddress: HostPort | null;
  readonly metricsBindAddress: HostPort | null;
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  /**
   * The min sync period was given (flag or file). Then it means what kube-proxy means by it;
   * unset, ferry coalesces by the measured cost of recent syncs instead (docs/sync.md).
   */
  readonly minSyncPeriodExplicit: boolean;
  /** configSyncPeriod from the file (informer resync; accepted, informational). */
  readonly configSyncPeriodMs: number;
  readonly verbosity: number;
  /** serviceProxyName: when set, watch only Services labelled with this proxy name. */
  readonly serviceProxyName: string;
  readonly detectLocal: DetectLocal;
  /** Set at start (not in --dry-run): nf_conntrack_max and the conntrack timeouts. */
  readonly conntrack: ConntrackConfig;
  /** Written to /proc/self/oom_score_adj at start (not in --dry-run). */
  readonly oomScoreAdj: number;
  /**
   * iptables.localhostNodePorts / --iptables-localhost-nodeports (kube-proxy's default: true):
   * whether NodePorts answer on 127.0.0.1 in iptables mode.
   */
  readonly localhostNodePorts: boolean;
  /**
   * ebpf mode (ferry extension, no kube-proxy equivalent): the cgroup v2 directory whose
   * processes get socket-level load balancing (--ebpf-cgroup-root; undefined = the host's
   * cgroup2 mount, mounted by ferry when absent) and the bpffs directory for ferry's pins
   * (--ebpf-bpffs-dir; default /sys/fs/bpf/ferry).
   */
  readonly ebpfCgroupRoot: string | undefined;
  readonly ebpfBpffsDir: string;
  /**
   * ebpf mode: interfaces whose ingress gets the tc program (--ebpf-interfaces: names, or
   * prefixes ending in '*'); undefined = every interface of ferry's network namespace but lo.
   */
  readonly ebpfInterfaces: readonly string[] | undefined;
  /** ebpf mode: connections the tc program tracks (--ebpf-ct-max); undefined = the compiled 65,536. */
  readonly ebpfCtMax: number | undefined;
  /** --init-only: apply the node settings that need privileges (conntrack sysctls), then exit. */
  readonly initOnly: boolean;
  /** --write-config-to: write this configuration as a KubeProxyConfiguration there, then exit. */
  readonly writeConfigTo: string | undefined;
  /**
   * Settings given (non-zero) that ferry accepts for compatibility but that change nothing,
   * each as "field (why)": logged once at start.
   */
  readonly ignored: readonly string[];
}

/** A configuration problem, named by the flag or file field that caused it. */
export class ConfigError extends Error {
  readonly code = 'FERRY_ERR_CONFIG';
  constructor(
    /** The flag ("--proxy-mode") or file field ("nftables.syncPeriod"). */
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** A kube-proxy flag ferry does not implement: rejected by name, never ignored. */
export class UnsupportedFlagError extends Error {
  readonly code = 'FERRY_ERR_UNSUPPORTED_FLAG';
  constructor(
    readonly flag: string,
    readonly reason?: string,
  ) {
    super(`kube-proxy flag --${flag} is not implemented by ferry${reason ? `: ${reason}` : ''}`);
    this.name = 'UnsupportedFlagError';
  }
}
