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
}

export const PROXY_FLAGS: readonly FlagSpec[] = [
  { name: 'config', arg: '<file>', help: 'path to a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1, YAML or JSON); flags given explicitly override it' },
  { name: 'kubeconfig', arg: '<path>', help: 'kubeconfig with the API server and credentials (default: in-cluster service account)' },
  { name: 'master', arg: '<url>', help: 'API server URL; overrides the server in the kubeconfig' },
  { name: 'hostname-override', arg: '<name>', help: 'name of the Node this proxy runs on (default: the hostname, lowercased)' },
  { name: 'proxy-mode', arg: '<mode>', help: 'how Services are implemented: nftables, iptables or userspace', defaultText: 'nftables' },
  { name: 'proxy-mode-fallback', arg: '<mode>', help: 'userspace: forward in userspace when the kernel mode cannot program this node (default: exit with an error)' },
  { name: 'cluster-cidr', arg: '<cidrs>', help: 'pod CIDR(s), comma-separated, at most one IPv4 and one IPv6; traffic to ClusterIPs from outside is masqueraded' },
  { name: 'nodeport-addresses', arg: '<cidrs>', help: "CIDRs of node addresses that accept NodePorts, comma-separated, or 'primary' (default: all local addresses)" },
  { name: 'masquerade-all', arg: '[bool]', help: 'SNAT all traffic sent via Service ClusterIPs', defaultText: 'false' },
  { name: 'iptables-masquerade-bit', arg: '<bit>', help: 'fwmark bit [0, 31] marking packets that need SNAT', defaultText: '14' },
  { name: 'bind-address', arg: '<ip>', help: "overrides the node's primary IP (and so the primary family); the name is historical", defaultText: '0.0.0.0' },
  { name: 'healthz-bind-address', arg: '<ip:port>', help: 'address of the /healthz and /livez server; empty disables it', defaultText: '0.0.0.0:10256' },
  { name: 'metrics-bind-address', arg: '<ip:port>', help: 'address of the /metrics server; empty disables it', defaultText: '127.0.0.1:10249' },
  { name: 'iptables-sync-period', arg: '<duration>', help: 'longest time between full resyncs of the rules (e.g. 30s, 1m); applies to every mode', defaultText: '30s' },
  { name: 'iptables-min-sync-period', arg: '<duration>', help: 'shortest time between syncs; bursts of changes are coalesced (0 = sync on every change)', defaultText: '1s' },
  { name: 'cleanup', arg: '[bool]', help: "remove every rule ferry's backends may have installed, then exit", defaultText: 'false' },
  { name: 'dry-run', arg: '[bool]', help: 'ferry extension: touch no kernel state; print each planned table as one JSON line on stdout', defaultText: 'false' },
  { name: 'v', short: 'v', arg: '<level>', help: 'log verbosity (0 = quiet, higher = more detail)', defaultText: '0' },
];

/**
 * kube-proxy's flags that ferry does not implement. Each is accepted by the parser only so that
 * it can be refused with its own name instead of a generic "unknown option".
 */
export const UNSUPPORTED_KUBE_PROXY_FLAGS: readonly string[] = [
  // general
  'write-config-to', 'init-only', 'feature-gates', 'profiling', 'show-hidden-metrics-for-version',
  'config-sync-period', 'sync-period', 'min-sync-period', 'node-ip-override', 'bind-address-hard-fail',
  'healthz-port', 'metrics-port', 'healthz-bind-addresses', 'healthz-bind-port', 'metrics-bind-addresses',
  'metrics-bind-port', 'oom-score-adj', 'proxy-port-range', 'udp-timeout', 'resource-container',
  'cleanup-ipvs', 'cleanup-iptables', 'azure-container-registry-config', 'windows-service',
  // API client tuning
  'kube-api-content-type', 'kube-api-burst', 'kube-api-qps',
  // iptables specifics ferry does not implement
  'iptables-localhost-nodeports',
  // ipvs
  'ipvs-sync-period', 'ipvs-min-sync-period', 'ipvs-scheduler', 'ipvs-exclude-cidrs', 'ipvs-strict-arp',
  'ipvs-tcp-timeout', 'ipvs-tcpfin-timeout', 'ipvs-udp-timeout', 'ipvs-masquerade-bit',
  // local traffic detection other than the cluster CIDR
  'detect-local-mode', 'pod-bridge-interface', 'pod-interface-name-prefix', 'cluster-cidrs',
  // conntrack sysctls: ferry leaves them to the node's configuration
  'conntrack-max-per-core', 'conntrack-min', 'conntrack-tcp-timeout-established',
  'conntrack-tcp-timeout-close-wait', 'conntrack-tcp-be-liberal', 'conntrack-udp-timeout',
  'conntrack-udp-timeout-stream',
  // klog / component-base logging
  'log-flush-frequency', 'logging-format', 'log-json-info-buffer-size', 'log-json-split-stream',
  'log-text-info-buffer-size', 'log-text-split-stream', 'vmodule', 'log-dir', 'log_dir', 'log-file',
  'log_file', 'log-file-max-size', 'log_file_max_size', 'logtostderr', 'alsologtostderr', 'one-output',
  'one_output', 'skip-headers', 'skip_headers', 'skip-log-headers', 'skip_log_headers', 'stderrthreshold',
  'add-dir-header', 'add_dir_header', 'log-backtrace-at', 'log_backtrace_at',
];

/** Flag name (no dashes) → the value given on the command line. Only flags given explicitly. */
export type ExplicitFlags = ReadonlyMap<string, string | boolean>;
