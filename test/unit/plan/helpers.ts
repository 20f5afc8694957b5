/** Test plumbing: API objects → tracker → planner, and readable summaries of EndpointSets. */
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { ChangeTracker } from '../../../src/model/tracker.js';
import type { IPFamily } from '../../../src/model/types.js';
import { planTableReport, type PlanOptions } from '../../../src/plan/planner.js';
import type { EndpointSet, ProxyTable } from '../../../src/plan/types.js';
import { node } from '../model/fixtures.js';

export const NODE = 'n1';
export const NODE_V4 = '198.51.100.1';
export const NODE_V6 = '2001:db8:51::1';

export const quietLog = { info: () => {}, v: () => {}, warn: () => {}, error: () => {} };

export function defaultNode(labels: Record<string, string> = { 'topology.kubernetes.io/zone': 'z1' }): V1Node {
  return node(NODE, [['InternalIP', NODE_V4], ['InternalIP', NODE_V6]], labels);
}

export const OPTS: PlanOptions = {
  masqueradeAll: false,
  clusterCIDRs: [],
  nodePortAddresses: { kind: 'all' },
  localAddresses: [],
};

export interface World {
  services: V1Service[];
  slices: V1EndpointSlice[];
  node?: V1Node | null;
  opts?: Partial<PlanOptions>;
}

export function planWorld(f: IPFamily, w: World): { table: ProxyTable; problems: readonly string[] } {
  const tr = new ChangeTracker({ nodeName: NODE, families: [4, 6], log: quietLog });
  tr.setNode(w.node === null ? undefined : (w.node ?? defaultNode()));
  for (const s of w.services) tr.upsertService(s);
  for (const s of w.slices) tr.upsertEndpointSlice(s);
  const { snapshots } = tr.takeSnapshot();
  return planTableReport(snapshots[f], { ...OPTS, ...w.opts });
}

/** "forward 1,2*" style: endpoint numbers by last address group, * = not ready (fallback). */
export function summarize(set: EndpointSet, num: (ip: string) => string): string {
  if (set.verdict !== 'forward') return set.verdict;
  return `forward ${set.endpoints.map((e) => num(e.ip) + (e.ready ? '' : '*')).join(',')}`;
}
