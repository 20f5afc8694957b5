/**
 * The benchmark's result vocabulary: what bench-results/<run>/results.json holds. Times are
 * milliseconds, sizes bytes, rates per second. Plain data, JSON-serializable.
 */

export type Phase = 'compile' | 'apply' | 'latency' | 'datapath';
export const PHASES: readonly Phase[] = ['compile', 'apply', 'latency', 'datapath'];

export interface Size {
  readonly services: number;
  readonly endpoints: number;
}

/** nftables / iptables: ferry's compilers. reference: the kube-proxy layout generator (size only). userspace: frontend plan + reconcile. */
export type CompileMode = 'nftables' | 'iptables' | 'reference' | 'userspace';

export interface CompileRow extends Size {
  readonly mode: CompileMode;
  /** Full compile (+ render for nftables), median over the rounds. */
  readonly fullMs: number;
  readonly fullBytes: number;
  readonly fullLines: number;
  /** One endpoint of one service changed: partial compile, median over the changes. */
  readonly partialEndpointMs: number;
  readonly partialEndpointLines: number;
  /** One service added. */
  readonly partialAddMs: number;
  readonly partialAddLines: number;
}

export interface PlanRow extends Size {
  /** Parsing every object into the ChangeTracker and taking the first snapshot. */
  readonly trackMs: number;
  /** planTables over the whole cluster. */
  readonly planMs: number;
  /** Snapshot + incremental planTables + diffTables after a one-endpoint change (median). */
  readonly planEndpointMs: number;
  /** The same after adding one service. */
  readonly planAddMs: number;
}

export interface MemoryRow extends Size {
  /** Growth of RSS / used heap of a fresh process after building tracker + IR (after GC). */
  readonly rssMB: number;
  readonly heapMB: number;
}

export type ApplyMode = 'nftables-addon' | 'nftables-exec' | 'iptables' | 'reference';

export interface ApplyRow extends Size {
  readonly mode: ApplyMode;
  /** First full apply into an empty namespace. */
  readonly fullColdMs: number;
  /** Full re-apply over the same ruleset (median). */
  readonly fullMs: number;
  readonly partialEndpointMs: number;
  readonly partialAddMs: number;
  readonly error?: string;
}

export type ProxyUnderTest = 'nftables' | 'iptables' | 'userspace' | 'kube-proxy';

export interface Percentiles {
  readonly n: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
}

export interface LatencyRow {
  readonly services: number;
  readonly mode: ProxyUnderTest;
  /** API write → first successful connection from a pod through the changed Service. */
  readonly e2eMs: Percentiles;
  /** ferry's own kubeproxy_network_programming_duration_seconds (histogram buckets → ms), if read. */
  readonly metric?: { readonly count: number; readonly p50: number; readonly p90: number; readonly p99: number };
  readonly failures: number;
}

/** Proxy start → target Service reachable from the pod and via NodePort (full first sync, end to end). */
export interface StartupRow {
  readonly services: number;
  readonly mode: ProxyUnderTest | 'reference';
  readonly readyMs: number;
}

export type DatapathMode = 'nftables' | 'iptables' | 'userspace' | 'reference' | 'direct' | 'kube-proxy';
export type DatapathPath = 'nodeport' | 'clusterip';

export interface DatapathRow {
  readonly services: number;
  readonly mode: DatapathMode;
  /** nodeport: outside client → NodeIP:NodePort; clusterip: pod → ClusterIP (direct: pod → pod IP). */
  readonly path: DatapathPath;
  /** New TCP connections per second (connect, one request, close), with the given concurrency. */
  readonly connPerSec: number;
  readonly connErrors: number;
  /** One TCP connection, bulk send, Mbit/s. */
  readonly throughputMbps: number;
}

export interface RatioRow {
  readonly what: string;
  readonly size: string;
  readonly ferry: number;
  readonly reference: number;
  /** ferry / reference. For times lower is better; for rates higher is better (see `better`). */
  readonly ratio: number;
  readonly better: 'lower' | 'higher';
}

export interface BenchMeta {
  readonly date: string;
  readonly kernel: string;
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryMB: number;
  readonly node: string;
  readonly profile: string;
  readonly phases: readonly Phase[];
  readonly durationS: number;
  readonly iptables: string;
  readonly nft: string;
  readonly nativeAddon: boolean;
  readonly kubeProxy: string | null;
}

export interface BenchResults {
  meta: BenchMeta;
  plan: PlanRow[];
  compile: CompileRow[];
  memory: MemoryRow[];
  apply: ApplyRow[];
  latency: LatencyRow[];
  startup: StartupRow[];
  datapath: DatapathRow[];
  ratios: RatioRow[];
  /** Parts not measured and why. */
  notes: string[];
}
