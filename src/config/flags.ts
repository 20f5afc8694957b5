/**
 * The proxy's command-line surface: every flag ferry accepts (kube-proxy's names and meanings,
 * plus a few ferry extensions) and every kube-proxy flag it refuses by name. The CLI module
 * turns this table into commander options; nothing here parses values (see resolve.ts).
 */

export interface FlagSpec {
  /** Long name without dashes. */
  readonly name: string;
  readonly short?: string;
  /** commander argument syntax: '<value>' required, '[bool]' optional boolean value. */
  readonly arg: string;
  readonly help: string;
  /** Shown in --help and used when neither the flag nor the config file sets the value. */
  readonly defaultText?: string;
  /**
   * Accepted for kube-proxy compatibility but without effect in ferry, and why. Its value is
   * still validated; giving it is logged once at start.
   */
  readonly ignoredBecause?: string;
  /**
   * Given more than once, the values accumulate instead of the last one winning: kube-proxy
   * declares it as a pflag StringSlice (or MapStringBool), whose repeated uses append.
   */
  readonly repeatable?: boolean;
  /**
   * kube-proxy marks it deprecated (pflag MarkDeprecated): hidden from --help, and using it logs
   * "Flag --NAME has been deprecated, " followed by this text.
   */
  readonly deprecated?: string;
}

const NO_RATE_LIMIT = 'ferry only lists and watches, so it does not rate-limit its API client';
const UNBUFFERED_LOG = 'ferry writes each log line unbuffered to stderr';

export const PROXY_FLAGS: readonly FlagSpec[] = [
  { name: 'config', arg: '<file>', help: 'path to a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON); flags given explicitly override it' },
  { name: 'kubeconfig', arg: '<path>', help: 'kubeconfig with the API server and credentials (default: in-cluster service account)' },
  { name: 'master', arg: '<url>', help: 'API server URL; overrides the server in the kubeconfig' },
  { name: 'hostname-override', arg: '<name>', help: 'name of the Node this proxy runs on (default: the hostname, lowercased)' },
  { name: 'proxy-mode', arg: '<mode>', help: 'how Services are implemented: nftables, iptables, ebpf (socket-level load balancing for local clients, tc programs for traffic from the network; docs/ebpf.md) or userspace', defaultText: 'nftables' },
  { name: 'ebpf-cgroup-root', arg: '<dir>', help: "ferry extension, ebpf mode: the cgroup v2 directory whose processes (and their descendants') connects are load-balanced (default: the host's cgroup2 mount, mounted at /run/ferry/cgroup2 when there is none)" },
  { name: 'ebpf-interfaces', arg: '<names>', help: "ferry extension, ebpf mode: interfaces whose ingress gets the tc program (traffic from the network), comma-separated names or prefixes ending in '*' (default: every interface of ferry's network namespace except lo)" },
  { name: 'ebpf-ct-max', arg: '<n>', help: "ferry extension, ebpf mode: connections the tc program tracks (NodePorts, externalIPs, LB IPs, ClusterIPs from outside ferry's cgroup), 1024-4194304; its map holds two entries each (~290 bytes of kernel memory per connection, allocated at start), and past that the least recently used are dropped. Changing it empties the table once", defaultText: '65536' },
  { name: 'ebpf-bpffs-dir', arg: '<dir>', help: "ferry extension, ebpf mode: the bpffs directory holding ferry's pinned maps and links (bpffs is mounted on /sys/fs/bpf when absent)", defaultText: '/sys/fs/bpf/ferry' },
  { name: 'proxy-mode-fallback', arg: '<mode>', help: 'userspace: forward in userspace when the kernel mode cannot program this node (default: exit with an error)' },
  { name: 'cluster-cidr', arg: '<cidrs>', help: 'pod CIDR(s), comma-separated, at most one IPv4 and one IPv6; traffic to ClusterIPs from outside is masqueraded' },
  { name: 'detect-local-mode', arg: '<mode>', help: 'how traffic from local pods is recognized: ClusterCIDR (--cluster-cidr), NodeCIDR (the Node\'s spec.podCIDRs), BridgeInterface (--pod-bridge-interface) or InterfaceNamePrefix (--pod-interface-name-prefix)', defaultText: 'ClusterCIDR' },
  { name: 'pod-bridge-interface', arg: '<name>', help: 'with --detect-local-mode BridgeInterface: traffic arriving on this bridge is local' },
  { name: 'pod-interface-name-prefix', arg: '<prefix>', help: 'with --detect-local-mode InterfaceNamePrefix: traffic arriving on an interface whose name starts with this prefix is local' },
  { name: 'nodeport-addresses', arg: '<cidrs>', help: "CIDRs of node addresses that accept NodePorts, comma-separated (repeating the flag adds to the list), or 'primary' (default, and when empty: primary in nftables mode, all local addresses in the others)", repeatable: true },
  { name: 'masquerade-all', arg: '[bool]', help: 'SNAT all traffic sent via Service ClusterIPs', defaultText: 'false' },
  { name: 'iptables-masquerade-bit', arg: '<bit>', help: 'fwmark bit [0, 31] marking packets that need SNAT', defaultText: '14' },
  { name: 'iptables-localhost-nodeports', arg: '[bool]', help: 'NodePorts also answer on 127.0.0.1 (IPv4), masqueraded, where --nodeport-addresses takes 127.0.0.1 in (as kube-proxy): iptables mode as kube-proxy (route_localnet=1, KUBE-FIREWALL martian drop), userspace and ebpf modes their own way; never in nftables mode (as kube-proxy)', defaultText: 'true' },
  { name: 'bind-address', arg: '<ip>', help: "overrides the node's primary IP (and so the primary family); the name is historical", defaultText: '0.0.0.0' },
  { name: 'healthz-bind-address', arg: '<ip:port>', help: 'address of the /healthz and /livez server; empty disables it', defaultText: '0.0.0.0:10256' },
  { name: 'metrics-bind-address', arg: '<ip:port>', help: 'address of the /metrics server; empty disables it', defaultText: '127.0.0.1:10249' },
  { name: 'healthz-port', arg: '<port>', help: 'deprecated: 0 disables the /healthz server; another port is used when --healthz-bind-address has none (only without --config)', deprecated: 'This flag is deprecated and will be removed in a future release. Please use --healthz-bind-address instead.' },
  { name: 'metrics-port', arg: '<port>', help: 'deprecated: 0 disables the /metrics server; another port is used when --metrics-bind-address has none (only without --config)', deprecated: 'This flag is deprecated and will be removed in a future release. Please use --metrics-bind-address instead.' },
  { name: 'iptables-sync-period', arg: '<duration>', help: 'longest time between full resyncs of the rules (e.g. 30s, 1m); applies to every mode', defaultText: '30s' },
  { name: 'iptables-min-sync-period', arg: '<duration>', help: "shortest time between syncs; bursts of changes are coalesced (0 = sync on every change). Unset, a lone change is applied at once and bursts wait by the measured cost of recent syncs, at most 1s (docs/sync.md)", defaultText: 'unset: cost-aware, at most 1s' },
  { name: 'conntrack-max-per-core', arg: '<n>', help: 'raise net.netfilter.nf_conntrack_max to this many entries per CPU (0 = leave the limit alone and ignore --conntrack-min)', defaultText: '32768' },
  { name: 'conntrack-min', arg: '<n>', help: 'lower bound of the nf_conntrack_max computed from --conntrack-max-per-core', defaultText: '131072' },
  { name: 'conntrack-tcp-timeout-established', arg: '<duration>', help: 'net.netfilter.nf_conntrack_tcp_timeout_established (0 = leave alone); ebpf mode: also its tc program\'s tracking', defaultText: '24h0m0s' },
  { name: 'conntrack-tcp-timeout-close-wait', arg: '<duration>', help: 'net.netfilter.nf_conntrack_tcp_timeout_close_wait (0 = leave alone); ebpf mode: also its tc program\'s tracking', defaultText: '1h0m0s' },
  { name: 'conntrack-tcp-be-liberal', arg: '[bool]', help: 'set net.netfilter.nf_conntrack_tcp_be_liberal: out-of-window TCP packets are not marked INVALID', defaultText: 'false' },
  { name: 'conntrack-udp-timeout', arg: '<duration>', help: 'net.netfilter.nf_conntrack_udp_timeout (0 = leave alone); ebpf mode: also its tc program\'s tracking', defaultText: '0s' },
  { name: 'conntrack-udp-timeout-stream', arg: '<duration>', help: 'net.netfilter.nf_conntrack_udp_timeout_stream (0 = leave alone); ebpf mode: also its tc program\'s tracking', defaultText: '0s' },
  { name: 'oom-score-adj', arg: '<n>', help: "this process's oom_score_adj, in [-1000, 1000]", defaultText: '-999' },
  { name: 'init-only', arg: '[bool]', help: 'apply the node settings that need privileges (the conntrack sysctls), then exit', defaultText: 'false' },
  { name: 'write-config-to', arg: '<file>', help: 'write the resolved configuration (defaults, --config, flags) as a complete KubeProxyConfiguration to this file, then exit' },
  { name: 'cleanup', arg: '[bool]', help: "remove every rule ferry's backends may have installed, then exit", defaultText: 'false' },
  { name: 'dry-run', arg: '[bool]', help: 'ferry extension: touch no kernel state; print each planned table as one JSON line on stdout', defaultText: 'false' },
  { name: 'v', short: 'v', arg: '<level>', help: 'log verbosity (0 = quiet, higher = more detail)', defaultText: '0' },
  { name: 'logging-format', arg: '<format>', help: "log format; only 'text' (ferry's own line format)", defaultText: 'text' },
  // Accepted, validated, and without effect (logged once at start).
  { name: 'config-sync-period', arg: '<duration>', help: 'kube-proxy: informer resync period', defaultText: '15m0s', ignoredBecause: 'ferry never relists on a timer: its watches resume from their last version' },
  { name: 'feature-gates', arg: '<gates>', help: 'kube-proxy feature gates, key=true|false,...', repeatable: true, ignoredBecause: "ferry implements the GA behaviour of kube-proxy's gates; they cannot be switched" },
  { name: 'bind-address-hard-fail', arg: '[bool]', help: 'kube-proxy: exit when a server cannot bind', ignoredBecause: 'ferry always exits when it cannot bind its /healthz or /metrics server' },
  { name: 'show-hidden-metrics-for-version', arg: '<version>', help: 'kube-proxy: re-enable metrics hidden in that version', ignoredBecause: 'ferry has no hidden metrics' },
  { name: 'profiling', arg: '[bool]', help: 'kube-proxy: /debug/pprof on the metrics server (true is refused)', ignoredBecause: 'ferry has no /debug/pprof handler' },
  { name: 'kube-api-qps', arg: '<qps>', help: 'kube-proxy: API client QPS', ignoredBecause: NO_RATE_LIMIT },
  { name: 'kube-api-burst', arg: '<n>', help: 'kube-proxy: API client burst', ignoredBecause: NO_RATE_LIMIT },
  { name: 'kube-api-content-type', arg: '<type>', help: 'kube-proxy: API request content type', ignoredBecause: "ferry's API client speaks JSON" },
  { name: 'log-flush-frequency', arg: '<duration>', help: 'kube-proxy: log flush period', ignoredBecause: UNBUFFERED_LOG },
  { name: 'log-text-info-buffer-size', arg: '<size>', help: 'kube-proxy: text log buffer', ignoredBecause: UNBUFFERED_LOG },
  { name: 'log-text-split-stream', arg: '[bool]', help: 'kube-proxy: info to stdout, errors to stderr', ignoredBecause: 'ferry writes every log line to stderr (stdout is the --dry-run plan stream)' },
  { name: 'log-json-info-buffer-size', arg: '<size>', help: 'kube-proxy: JSON log buffer', ignoredBecause: UNBUFFERED_LOG },
  { name: 'log-json-split-stream', arg: '[bool]', help: 'kube-proxy: info to stdout, errors to stderr', ignoredBecause: 'ferry writes every log line to stderr (stdout is the --dry-run plan stream)' },
  { name: 'proxy-port-range', arg: '<range>', help: "kube-proxy: the removed userspace mode's port range", ignoredBecause: 'unused in kube-proxy too since its userspace mode was removed' },
];

const IPVS = 'the ipvs proxy mode is not implemented (use nftables or iptables)';
const KLOG_REMOVED = 'a klog flag that kube-proxy 1.26+ no longer has either; ferry logs to stderr';
const REMOVED = 'removed from kube-proxy; see its KubeProxyConfiguration equivalent';

/**
 * kube-proxy's flags that ferry does not implement, each with the reason. They are accepted by
 * the parser only so that they can be refused by name instead of a generic "unknown option".
 */
export const REFUSED_KUBE_PROXY_FLAGS: Readonly<Record<string, string>> = {
  'sync-period': 'use --iptables-sync-period',
  'min-sync-period': 'use --iptables-min-sync-period',
  'node-ip-override': 'use --bind-address to set the primary node IP',
  'healthz-bind-addresses': REMOVED,
  'healthz-bind-port': REMOVED,
  'metrics-bind-addresses': REMOVED,
  'metrics-bind-port': REMOVED,
  'udp-timeout':
    "kube-proxy's userspace-mode UDP session idle timeout (its default 250ms); ferry's userspace mode keeps idle UDP sessions 30s, as conntrack's UDP timeout, and takes no setting for it (docs/userspace.md); --conntrack-udp-timeout sets only the conntrack sysctl",
  'resource-container': REMOVED,
  'cleanup-ipvs': IPVS,
  'cleanup-iptables': 'use --cleanup',
  'azure-container-registry-config': REMOVED,
  'windows-service': 'Windows only',
  'cluster-cidrs': 'use --cluster-cidr (comma-separated)',
  'ipvs-sync-period': IPVS,
  'ipvs-min-sync-period': IPVS,
  'ipvs-scheduler': IPVS,
  'ipvs-exclude-cidrs': IPVS,
  'ipvs-strict-arp': IPVS,
  'ipvs-tcp-timeout': IPVS,
  'ipvs-tcpfin-timeout': IPVS,
  'ipvs-udp-timeout': IPVS,
  'ipvs-masquerade-bit': IPVS,
  vmodule: 'ferry has one verbosity for all of its modules (-v)',
  ...Object.fromEntries(
    [
      'log-dir', 'log_dir', 'log-file', 'log_file', 'log-file-max-size', 'log_file_max_size', 'logtostderr',
      'alsologtostderr', 'one-output', 'one_output', 'skip-headers', 'skip_headers', 'skip-log-headers',
      'skip_log_headers', 'stderrthreshold', 'add-dir-header', 'add_dir_header', 'log-backtrace-at', 'log_backtrace_at',
    ].map((f) => [f, KLOG_REMOVED]),
  ),
};

export const UNSUPPORTED_KUBE_PROXY_FLAGS: readonly string[] = Object.keys(REFUSED_KUBE_PROXY_FLAGS);

/** Flag name (no dashes) → the value given on the command line. Only flags given explicitly. */
export type ExplicitFlags = ReadonlyMap<string, string | boolean>;
