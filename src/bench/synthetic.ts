/**
 * Synthetic clusters for the benchmark: V1Service / V1EndpointSlice objects of a given size,
 * fed through the real ChangeTracker and planner so that planner cost is part of what is
 * measured. Addresses come from test ranges only: ClusterIPs 198.18.128.0/17 and up (wrapping
 * inside 198.18.0.0/15), pods 198.19.0.0/16, node 198.18.0.11.
 *
 * In-memory only: never touches the kernel or the network.
 */
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { ChangeTracker } from '../model/tracker.js';
import type { ChangeSet, ClusterSnapshot, IPFamily } from '../model/types.js';
import { planTables, diffTables, type PlanOptions } from '../plan/planner.js';
import type { ProxyTables, SyncChanges } from '../plan/types.js';

export const BENCH_NAMESPACE = 'bench';
export const NODE_NAME = 'node-1';
export const NODE_IP = '198.18.0.11';
export const POD_CIDR = '198.19.0.0/16';
/** NodePorts are scarce (30000-32767): every 10th service gets one, up to this many. */
export const MAX_NODEPORTS = 2500;
const POD_POOL = 60000;

export const PLAN_OPTIONS: PlanOptions = {
  masqueradeAll: false,
  clusterCIDRs: [POD_CIDR],
  nodePortAddresses: { kind: 'all' },
  localAddresses: [NODE_IP],
};

function ipFromInt(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

const CLUSTER_IP_BASE = (198 << 24) | (18 << 16) | (128 << 8);
const TEST_NET_SIZE = 1 << 17; // 198.18.0.0/15

/** The ClusterIP of service i: from 198.18.128.0 upwards, wrapping within 198.18.0.0/15. */
export function clusterIPOf(i: number): string {
  const base = ((198 << 24) | (18 << 16)) >>> 0;
  const off = ((CLUSTER_IP_BASE >>> 0) - base + i) % TEST_NET_SIZE;
  return ipFromInt((base + off) >>> 0);
}

/** The j-th endpoint address of service i, from a pool of pod addresses in 198.19.0.0/16. */
export function podIPOf(i: number, j: number, k: number): string {
  const n = (i * k + j) % POD_POOL;
  return ipFromInt(((198 << 24) | (19 << 16) | (Math.floor(n / 250) << 8) | (2 + (n % 250))) >>> 0);
}

export function serviceName(i: number): string {
  return `svc-${String(i).padStart(5, '0')}`;
}

export function nodePortOf(i: number): number {
  if (i % 10 !== 0 || i / 10 >= MAX_NODEPORTS) return 0;
  return 30000 + i / 10;
}

export function serviceObject(i: number): V1Service {
  const nodePort = nodePortOf(i);
  const ip = clusterIPOf(i);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: serviceName(i), namespace: BENCH_NAMESPACE, resourceVersion: '1' },
    spec: {
      type: nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP: ip,
      clusterIPs: [ip],
      ipFamilies: ['IPv4'],
      selector: { app: serviceName(i) },
      ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', ...(nodePort ? { nodePort } : {}) }],
    },
  };
}

/** One slice for service i with k endpoints; `generation` varies the addresses for change tests. */
export function sliceObject(i: number, k: number, generation = 0): V1EndpointSlice {
  const endpoints = [];
  for (let j = 0; j < k; j++) {
    endpoints.push({
      addresses: [j === 0 && generation > 0 ? podIPOf(i + generation * 7919, 0, k) : podIPOf(i, j, k)],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: j % 2 === 0 ? NODE_NAME : 'node-2',
    });
  }
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: `${serviceName(i)}-abcde`,
      namespace: BENCH_NAMESPACE,
      labels: { 'kubernetes.io/service-name': serviceName(i) },
      resourceVersion: String(1 + generation),
    },
    addressType: 'IPv4',
    endpoints,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

export function nodeObject(): V1Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE_NAME, labels: { 'kubernetes.io/hostname': NODE_NAME } },
    status: { addresses: [{ type: 'InternalIP', address: NODE_IP }] },
  };
}

export interface SyntheticCluster {
  readonly services: number;
  readonly endpointsPerService: number;
  readonly tracker: ChangeTracker;
  tables: ProxyTables;
  /** Milliseconds spent feeding the objects into the tracker (parsing) and taking the snapshot. */
  readonly trackMs: number;
  /** Milliseconds spent in planTables for the full cluster. */
  readonly planMs: number;
}

export function buildCluster(services: number, k: number): SyntheticCluster {
  const tracker = new ChangeTracker({ nodeName: NODE_NAME, families: [4] });
  tracker.setNode(nodeObject());
  let t0 = performance.now();
  for (let i = 0; i < services; i++) {
    tracker.upsertService(serviceObject(i));
    tracker.upsertEndpointSlice(sliceObject(i, k));
  }
  const { snapshots, changes } = tracker.takeSnapshot();
  const trackMs = performance.now() - t0;
  t0 = performance.now();
  const tables = planTables(snapshots, PLAN_OPTIONS, null, changes);
  const planMs = performance.now() - t0;
  return { services, endpointsPerService: k, tracker, tables, trackMs, planMs };
}

export interface Step {
  readonly prev: ProxyTables;
  readonly next: ProxyTables;
  readonly changes: SyncChanges;
  /** Tracker snapshot + incremental planTables + diffTables, in ms. */
  readonly planMs: number;
}

function step(c: SyntheticCluster): Step {
  const prev = c.tables;
  const t0 = performance.now();
  const { snapshots, changes } = c.tracker.takeSnapshot() as { snapshots: Record<IPFamily, ClusterSnapshot>; changes: Record<IPFamily, ChangeSet> };
  const next = planTables(snapshots, PLAN_OPTIONS, prev, changes);
  const diff = diffTables(prev, next);
  const planMs = performance.now() - t0;
  c.tables = next;
  return { prev, next, changes: { ...diff, full: false }, planMs };
}

/** Changes one endpoint address of service `i` (one-endpoint change) and re-plans incrementally. */
export function changeOneEndpoint(c: SyntheticCluster, i: number, generation: number): Step {
  c.tracker.upsertEndpointSlice(sliceObject(i, c.endpointsPerService, generation));
  return step(c);
}

/** Adds service `i` (past the end of the cluster) with its slice, and re-plans incrementally. */
export function addService(c: SyntheticCluster, i: number): Step {
  c.tracker.upsertService(serviceObject(i));
  c.tracker.upsertEndpointSlice(sliceObject(i, c.endpointsPerService));
  return step(c);
}
