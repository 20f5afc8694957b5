/**
 * The benchmark's result vocabulary: what bench-results/<run>/results.json holds. Times are
 * milliseconds, sizes bytes, rates per second. Plain data, JSON-serializable.
 */

export type Phase = 'compile' | 'apply' | 'latency' | 'datapath' | 'daemon';
export const PHASES: readonly Phase[] = ['compile', 'apply', 'latency', 'datapath', 'daemon'];

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

/** Memory of the real daemon process at one moment (MiB). */
export interface MemorySample {
  /** VmRSS: what the kernel counts against the process. */
  readonly rssMB: number;
  /** RssAnon / RssFile from /proc/PID/status: heap-like memory vs mapped files (code, the addon, libraries). */
  readonly anonMB: number;
  readonly fileMB: number;
  /** process.memoryUsage() of the daemon (its /debug/memory): V8's heap, and memory V8 knows about outside it. */
  readonly heapUsedMB: number;
  readonly heapTotalMB: number;
  readonly externalMB: number;
  readonly arrayBuffersMB: number;
  /** RssAnon − heapTotal − external: malloc'd by native code (libnftables, the addon, Node itself). An estimate. */
  readonly nativeMB: number;
}

/** A real ferry process against the simulated API server preloaded with services × endpoints. */
export interface DaemonRow extends Size {
  readonly mode: ProxyUnderTest;
  /** Process start → the probe Service answers (its rules went in with the first full sync). */
  readonly readyMs: number;
  /** Service rules found in the kernel after start (nftables: service-ips elements; iptables: KUBE-SERVICES jumps; userspace: ferry0 addresses). */
  readonly rulesFound: number;
  /** Once RSS stopped moving after start. */
  readonly steady: MemorySample;
  /** After each forced full resync (ferry's rules removed behind its back; its intact check repairs them). */
  readonly resyncs: readonly { readonly repairMs: number; readonly memory: MemorySample }[];
  /** VmHWM at the end: the peak RSS over start and every resync. */
  readonly hwmMB: number;
  readonly error?: string;
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
  daemon: DaemonRow[];
  ratios: RatioRow[];
  /** Parts not measured and why. */
  notes: string[];
}
