/**
 * The simulated cluster's public vocabulary. The demo, the end-to-end tests and the benchmarks
 * depend on exactly these shapes; add fields, do not change existing ones.
 */
import type { ChildProcess } from 'node:child_process';
import type { RunOptions, RunResult } from '../../util/exec.js';

export interface ClusterOptions {
  /** Number of node namespaces; default 3. */
  nodes?: number;
  /** Echo pods created on every node at start-up, named `<node>-pod-<k>` with label app=echo; default 0. */
  podsPerNode?: number;
  dualStack?: boolean;
  /** If set, Nodes and Pods are registered with this API server. */
  kubeconfig?: string;
  /** Default: "fy" + 4 random base36 characters. */
  prefix?: string;
  /** Zone label per node (topology.kubernetes.io/zone), by node index. */
  zones?: string[];
  /** Kubernetes node names; default node-1 .. node-N. */
  nodeNames?: string[];
  /** Extra addresses (CIDR notation) put on a node's eth0 at start-up, by node name. */
  nodeAddresses?: Record<string, string[]>;
  /** How long to wait for another live simulated cluster to release the LAN addresses; default 120 s. */
  lanWaitMs?: number;
}

export interface SimNode {
  name: string;
  netns: string;
  ip: string;
  ip6?: string;
  podCIDR: string;
  podCIDR6?: string;
}

export interface SimPod {
  name: string;
  namespace: string;
  node: string;
  netns: string;
  ip: string;
  ip6?: string;
  labels: Record<string, string>;
  /** A hostNetwork pod: its echo server runs in the node's namespace, on the node's addresses. */
  hostNetwork?: boolean;
}

export interface AddPodOptions {
  name: string;
  node: string;
  labels?: Record<string, string>;
  namespace?: string;
  /** Ports the echo server listens on (TCP and UDP); default [8080]. */
  ports?: number[];
  /** Ready condition reported to the API server; default true. The echo server runs either way. */
  ready?: boolean;
  /** Container ports in the Pod spec; default one TCP and one UDP entry per echo port. */
  containerPorts?: { name: string; containerPort: number; protocol?: string }[];
  /**
   * hostNetwork: the echo server runs in the node's network namespace (and cgroup) and the pod's
   * IPs are the node's, as a kubelet reports them. Its ports must not clash with the node's.
   */
  hostNetwork?: boolean;
}

/**
 * Where a probe runs. A pod's probe joins the pod's cgroup unless `outsideCgroup`: a process
 * in the pod's network namespace that ebpf mode's socket LB does not see (its packets meet the
 * tc program on the node instead).
 */
export type Vantage = { kind: 'client' } | { kind: 'node'; node: string } | { kind: 'pod'; pod: string; namespace?: string; outsideCgroup?: boolean } | { kind: 'host' };

export interface ProbeTarget {
  proto: 'tcp' | 'udp';
  addr: string;
  port: number;
}

export interface ProbeOptions {
  /** Attempts; default 1. 0 means "until signal fires". */
  count?: number;
  /** Per attempt; default 2000 ms. */
  timeoutMs?: number;
  /** Pause between attempts; default 0. */
  intervalMs?: number;
  /**
   * Start an attempt every intervalMs without waiting for the one before (results come as each
   * finishes): a rule that appears mid-attempt is met by the next attempt at once, while a slow
   * answer still has the whole timeout. Default false (one attempt after another).
   */
  overlap?: boolean;
  /** Stops the probe; the results gathered so far are returned. */
  signal?: AbortSignal;
  /** Called with each result as it arrives (for live output during churn tests). */
  onResult?: (r: ProbeResult) => void;
}

export interface ProbeResult {
  ok: boolean;
  /** The address asked, when the probe was given several (probe.ts `--addr A,B,…`). */
  addr?: string;
  pod?: string;
  /** "ip:port" the echo server saw as the client. */
  seen?: string;
  seenIP?: string;
  error?: string;
  ms: number;
}

export interface SpawnOptions {
  /** Append stdout and stderr to this file; otherwise they are discarded unless `pipe` is set. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Give the caller stdout/stderr pipes (the caller must read them). */
  pipe?: boolean;
  /**
   * Enter only the network namespace (nsenter --net) and keep the host's mounts: `ip netns exec`
   * remounts /sys, which hides /sys/fs/cgroup and /sys/fs/bpf from ferry in ebpf mode.
   */
  hostMounts?: boolean;
}

export interface Cluster {
  readonly prefix: string;
  readonly nodes: SimNode[];
  readonly clientNetns: string;
  /** 198.18.0.1: the host's address on the LAN, where the simulated API server listens. */
  readonly hostIP: string;
  readonly hostIP6?: string;
  readonly clientIP: string;
  readonly clusterCIDRs: string[];
  readonly serviceCIDRs: string[];
  readonly dualStack: boolean;
  readonly pods: ReadonlyMap<string, SimPod>;
  addPod(p: AddPodOptions): Promise<SimPod>;
  removePod(name: string, namespace?: string): Promise<void>;
  setPodReady(name: string, ready: boolean, namespace?: string): Promise<void>;
  addNodeAddress(node: string, cidr: string): Promise<void>;
  addClientRoute(cidr: string, viaNode: string): Promise<void>;
  /** Register every node and pod created so far with an API server, and every later one too. */
  attachApiServer(kubeconfig: string): Promise<void>;
  node(name: string): SimNode;
  pod(name: string, namespace?: string): SimPod;
  netnsOf(v: Vantage): string | undefined;
  /**
   * The cgroup v2 directory the processes of a node or pod vantage run in (undefined for the
   * client, the host, or without cgroup2): a node's is the root of its pods', so a ferry in
   * ebpf mode attached there load-balances the node and its pods and nothing else.
   */
  cgroupOf(v: Vantage): string | undefined;
  /** A bpffs directory for the node's ferry's pins (ebpf mode), removed with the cluster. */
  bpffsDirOf(node: string): string;
  exec(ns: string | undefined, argv: string[], opts?: RunOptions): Promise<RunResult>;
  spawnIn(ns: string | undefined, argv: string[], opts?: SpawnOptions): ChildProcess;
  probe(from: Vantage, target: ProbeTarget, opts?: ProbeOptions): Promise<ProbeResult[]>;
  /** probe() that runs until opts.signal fires (or count is reached, if given). */
  probeStream(from: Vantage, target: ProbeTarget, opts: ProbeOptions & { signal: AbortSignal }): Promise<ProbeResult[]>;
  down(): Promise<void>;
}
