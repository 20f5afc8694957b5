/**
 * The benchmark's result vocabulary: what bench-results/<run>/results.json holds. Times are
 * milliseconds, sizes bytes, rates per second. Plain data, JSON-serializable.
 */

import type { Spread } from './stats.js';

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

export type ApplyMode = 'nftables-netlink' | 'nftables-addon' | 'nftables-exec' | 'iptables' | 'reference' | 'ebpf';

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

export type ProxyUnderTest = 'nftables' | 'iptables' | 'userspace' | 'ebpf' | 'kube-proxy';
/** The proxy's sync window in a latency measurement: its default, or an explicit 1 s min sync period. */
export type LatencyWindow = 'default' | '1s';

export interface Percentiles {
  readonly n: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
}

/** Percentiles (ms) read from a histogram over one measurement's changes. */
export interface LatencyMetric {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
}

export interface LatencyRow {
  readonly services: number;
  readonly mode: ProxyUnderTest;
  /** Absent in results from before the variants existed: default window, singly. */
  readonly window?: LatencyWindow;
  /** Services created at once (1 = singly). */
  readonly burst?: number;
  /** API write → first successful connection from a pod through the changed Service. */
  readonly e2eMs: Percentiles;
  /**
   * API write returned (the object accepted and stored; in a burst, later writes queue behind
   * earlier ones in the API server) → first successful connection. Absent in older results.
   */
  readonly acceptedMs?: Percentiles;
  /**
   * The Service's first EndpointSlice with an endpoint stored (the simulator's controller made
   * it; the object that makes the Service reachable) → first successful connection: the proxy's
   * share with the API server's own work taken out. Absent in older results.
   */
  readonly sliceMs?: Percentiles;
  /** The proxy's kubeproxy_network_programming_duration_seconds (histogram buckets → ms), if read. */
  readonly metric?: LatencyMetric;
  /** ferry's ferry_sync_event_to_programmed_seconds: watch event received → rules or maps programmed. */
  readonly programmed?: LatencyMetric;
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
/** One full sync of the daemon, from its log (-v 2); ms. Absent parts: not logged by that mode. */
export interface DaemonFullSync {
  /** Process start → this sync's end. */
  readonly endMs: number;
  readonly durationMs: number;
  /** Snapshot + plan + diff. */
  readonly planMs: number;
  /** nftables: listing the table's chain and map names. */
  readonly listMs?: number;
  /** nftables: IR → Transaction. */
  readonly compileMs?: number;
  /** nftables: encoding + kernel. */
  readonly applyMs?: number;
  /** nftables: counting the set claims the compile deferred, after the rules are in (claims.ts). */
  readonly indexMs?: number;
  /** nftables: Transaction → netlink batch. */
  readonly encodeMs?: number;
  /** nftables: the batch's sendmsg (the kernel's work) and the answers. */
  readonly kernelMs?: number;
  readonly batchMB?: number;
  readonly messages?: number;
  /** ebpf: loading and attaching the programs (the first sync, and after the pins were lost). */
  readonly attachMs?: number;
  /** ebpf: dumping the maps (what a full sync diffs against). */
  readonly dumpMs?: number;
  /** ebpf: compiling and writing the elements, overlapped part by part. */
  readonly mapsMs?: number;
}

/** Process start → each startup milestone (ms; -1: not seen in the log). */
export interface DaemonStartup {
  /** CPU time (user + system) ferry used until live: less at the mercy of the machine's load than the wall time. */
  readonly readyCpuMs?: number;
  /** VmHWM once the first sync is done (before any resync). */
  readonly hwmAfterStartMB?: number;
  /** ferry's first log line (node start + module loading + backend probe). */
  readonly startedMs: number;
  readonly servicesListedMs: number;
  readonly slicesListedMs: number;
  /** Both lists done: the first sync starts. */
  readonly listedMs: number;
  readonly firstSync?: DaemonFullSync;
}

/**
 * An EndpointSlice changed while a repair runs (a third of the first sync's duration after the
 * sabotage): when ferry synced it, from its log. The change cannot overtake the repair (a full
 * sync is one transaction); what follows the repair's end is ferry's own wait.
 */
export interface RepairChange {
  /** The change stored → its partial sync done (ms). */
  readonly changeMs: number;
  /** The repair's full sync done → the change's partial sync done (ms); null when the change arrived early enough to ride in the repair itself. */
  readonly afterRepairMs: number | null;
}

/**
 * What the daemon phase runs: a ferry mode, or `iptables-legacy` — ferry's iptables mode on a node
 * whose kubelet uses iptables-legacy (its hint chain there), where iptables-legacy-restore loads
 * 10k × 10 in seconds, so that ferry's own memory at that size is measured (docs/bench.md).
 */
export type DaemonMode = Exclude<ProxyUnderTest, 'kube-proxy'> | 'iptables-legacy';

export interface DaemonRow extends Size {
  readonly mode: DaemonMode;
  /** Process start → the probe Service answers (its rules went in with the first full sync). */
  readonly readyMs: number;
  /** The launcher, when the run compared several (--daemon-ferry). */
  readonly ferry?: string;
  /** Where the time to ready went (older results lack it). */
  readonly startup?: DaemonStartup;
  /** Service rules found in the kernel after start (nftables: service-ips elements and endpoint-count set elements; iptables: KUBE-SERVICES jumps; userspace: ferry0 addresses). */
  readonly rulesFound: number;
  /** Once RSS stopped moving after start. */
  readonly steady: MemorySample;
  /** After each forced full resync (ferry's rules removed behind its back; its intact check repairs them). */
  readonly resyncs: readonly { readonly repairMs: number; readonly memory: MemorySample; readonly sync?: DaemonFullSync; readonly change?: RepairChange }[];
  /** VmHWM at the end: the peak RSS over start and every resync. */
  readonly hwmMB: number;
  readonly error?: string;
}

/**
 * What a data-path lane runs: a ferry mode, the reference kube-proxy layout, no proxy, or a given
 * kube-proxy binary. The `-legacy` lanes are a node whose kubelet uses iptables-legacy: ferry's
 * iptables mode follows kubelet's hint chain there, and the reference is restored with it.
 */
export type DatapathMode = 'nftables' | 'iptables' | 'iptables-legacy' | 'userspace' | 'ebpf' | 'reference' | 'reference-legacy' | 'direct' | 'kube-proxy';
export type DatapathPath = 'nodeport' | 'clusterip';


/** One open-loop measurement of one lane and path in one round. */
export interface DatapathRound {
  readonly services: number;
  readonly mode: DatapathMode;
  readonly path: DatapathPath;
  readonly round: number;
  /** Answered connections per second over the window (offered load, fixed). */
  readonly okPerSec: number;
  readonly ok: number;
  /** Refused, reset, closed without an answer… (errorKinds by code), apart from timeouts. */
  readonly errors: number;
  readonly errorKinds: Record<string, number>;
  readonly timeouts: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** TcpExt TCPSynRetrans of the client's namespace over the run: a lost SYN costs 1 s. */
  readonly synRetransmits: number;
  /** Connections answered after ≥ 900 ms or not at all: what a lost SYN looks like. */
  readonly stalls: number;
  /** The node namespace's conntrack insert_failed and drop over the run (/proc/net/stat/nf_conntrack). */
  readonly ctInsertFailed: number;
  readonly ctDrop: number;
  /** How far the load generator fell behind its schedule (> a few ms: it could not offer the load). */
  readonly lagMs: number;
  /** CPU ms per 1000 answered connections: load generator + server + proxy process (utime+stime, incl. the softirq work charged to them). */
  readonly cpuMsPerKConn: number;
  /** The proxy process's share (userspace forwards in it; kernel modes should be ~0). */
  readonly proxyCpuMsPerKConn: number;
  /** The load generator's and the server's shares. */
  readonly genCpuMsPerKConn: number;
  readonly serverCpuMsPerKConn: number;
  /** Busy fraction of the whole machine (/proc/stat) during the run: other sessions' load shows here. */
  readonly machineBusy: number;
}

export interface DatapathRow {
  readonly services: number;
  readonly mode: DatapathMode;
  /** nodeport: outside client → NodeIP:NodePort; clusterip: pod → ClusterIP (direct: pod → pod IP). */
  readonly path: DatapathPath;
  /** Offered new connections per second (open loop), each one request and one answer. */
  readonly offered: number;
  readonly rounds: number;
  readonly connPerSec: Spread;
  readonly cpuMsPerKConn: Spread;
  readonly proxyCpuMsPerKConn: Spread;
  readonly p99Ms: Spread;
  readonly ok: number;
  readonly connErrors: number;
  readonly timeouts: number;
  readonly synRetransmits: number;
  readonly stalls: number;
  readonly ctInsertFailed: number;
  readonly machineBusy: Spread;
}

/** A lane at one size that was not measured, and why (not available, over its limit, failed). */
export interface DatapathSkip {
  readonly services: number;
  readonly mode: DatapathMode;
  readonly why: string;
}

/** Creating the Services of one size, and bringing each lane up to date (start or catch-up → both paths answer). */
export interface DatapathLoadRow {
  readonly services: number;
  readonly createMs: number;
  readonly loadMs: Partial<Record<DatapathMode, number>>;
  /** Untranslated conntrack entries towards the target ClusterIPs (what the readiness probes left), flushed before measuring. */
  readonly staleConntrack: number;
  /** The same, found when flushing before each round (after the first): should be 0. */
  readonly staleBetweenRounds: number;
}

export interface RatioRow {
  readonly what: string;
  readonly size: string;
  readonly ferry: number;
  readonly reference: number;
  /** ferry / reference. For times lower is better; for rates higher is better (see `better`). */
  readonly ratio: number;
  readonly better: 'lower' | 'higher';
  /** Measured over rounds: the ratio's spread (min/max … max/min) and whether it crosses 1.0. */
  readonly low?: number;
  readonly high?: number;
  readonly differs?: boolean;
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
  /** /proc/loadavg at the start and the end: the machine is shared. */
  readonly loadavgStart?: string;
  readonly loadavgEnd?: string;
  /** The data-path phase's offered load. */
  readonly datapathLoad?: { readonly offered: number; readonly seconds: number; readonly rounds: number; readonly timeoutMs: number };
  readonly datapathS?: number;
  /** false when run with --no-conntrack-flush. */
  readonly conntrackFlush?: boolean;
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
  datapathRounds: DatapathRound[];
  datapathSkips: DatapathSkip[];
  datapathLoads: DatapathLoadRow[];
  daemon: DaemonRow[];
  ratios: RatioRow[];
  /** Parts not measured and why. */
  notes: string[];
}
