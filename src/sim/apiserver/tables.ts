/**
 * Server-side printing: meta.k8s.io/v1 Table objects with the columns the real server's
 * printers produce (pkg/printers/internalversion), so `kubectl get` and `kubectl get -o wide`
 * look the same against the simulator. Ages are formatted like duration.HumanDuration.
 * Pure: no I/O.
 */
import type { EndpointSlice } from './endpointslices.js';
import type { KObject } from './objects.js';
import type { Node } from './nodes.js';
import type { Pod } from './pods.js';
import type { ResourceDef } from './resource.js';
import { formatLabels } from './selectors.js';
import type { Service } from './services.js';

export interface TableColumn {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

export interface TableRow {
  cells: unknown[];
  object?: unknown;
}

export interface Table {
  kind: 'Table';
  apiVersion: 'meta.k8s.io/v1';
  metadata: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
  columnDefinitions: TableColumn[];
  rows: TableRow[];
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

const col = (name: string, description: string, priority = 0, format = ''): TableColumn => ({
  name,
  type: 'string',
  format,
  description,
  priority,
});

const NAME = col('Name', 'Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.', 0, 'name');
const AGE = col('Age', 'CreationTimestamp is a timestamp representing the server time when this object was created.');

const COLUMNS: Record<string, TableColumn[]> = {
  Service: [
    NAME,
    col('Type', 'type determines how the Service is exposed.'),
    col('Cluster-IP', 'clusterIP is the IP address of the service and is usually assigned randomly.'),
    col('External-IP', 'externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.'),
    col('Port(s)', 'The list of ports that are exposed by this service.'),
    AGE,
    col('Selector', 'Route service traffic to pods with label keys and values matching this selector.', 1),
  ],
  Pod: [
    NAME,
    col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
    col('Status', 'The aggregate status of the containers in this pod.'),
    col('Restarts', 'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.'),
    AGE,
    col('IP', 'IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.', 1),
    col('Node', 'NodeName is a request to schedule this pod onto a specific node.', 1),
    col('Nominated Node', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1),
    col('Readiness Gates', 'If specified, all readiness gates will be evaluated for pod readiness.', 1),
  ],
  Node: [
    NAME,
    col('Status', 'The status of the node'),
    col('Roles', 'The roles of the node'),
    AGE,
    col('Version', 'Kubelet Version reported by the node.'),
    col('Internal-IP', 'List of addresses reachable to the node. Queried from cloud provider, if available.', 1),
    col('External-IP', 'List of addresses reachable to the node. Queried from cloud provider, if available.', 1),
    col('OS-Image', 'OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).', 1),
    col('Kernel-Version', "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
    col('Container-Runtime', 'Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).', 1),
  ],
  Namespace: [NAME, col('Status', 'The status of the namespace'), AGE],
  ServiceCIDR: [NAME, col('CIDRs', 'cidrs defines the IP blocks in CIDR notation (e.g. "192.168.0.0/24" or "2001:db8::/64") from which to assign service cluster IPs.'), AGE],
  EndpointSlice: [
    NAME,
    col('AddressType', 'addressType specifies the type of address carried by this EndpointSlice.'),
    col('Ports', 'ports specifies the list of network ports exposed by each endpoint in this slice.'),
    col('Endpoints', 'endpoints is a list of unique endpoints in this slice.'),
    AGE,
  ],
};

export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.floor(hours / 24) % 365;
    return dy === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${dy}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

function age(o: KObject): string {
  const ts = o.metadata.creationTimestamp;
  if (!ts) return '<unknown>';
  return humanDuration(Date.now() - Date.parse(ts));
}

function servicePorts(s: Service): string {
  const ports = s.spec?.ports ?? [];
  if (ports.length === 0) return '<none>';
  return ports.map((p) => (p.nodePort ? `${p.port}:${p.nodePort}/${p.protocol ?? 'TCP'}` : `${p.port}/${p.protocol ?? 'TCP'}`)).join(',');
}

function serviceExternalIP(s: Service, wide: boolean): string {
  const spec = s.spec ?? {};
  const external = spec.externalIPs ?? [];
  switch (spec.type ?? 'ClusterIP') {
    case 'ClusterIP':
    case 'NodePort':
      return external.length > 0 ? external.join(',') : '<none>';
    case 'LoadBalancer': {
      const ing = (s.status?.loadBalancer?.ingress ?? []).map((i) => i.ip || i.hostname || '').filter((x) => x !== '');
      let lb = ing.join(',');
      if (!wide && lb.length > 16) lb = lb.slice(0, 13) + '...';
      if (external.length > 0) return [...(lb ? lb.split(',') : []), ...external].join(',');
      return lb || '<pending>';
    }
    case 'ExternalName':
      return spec.externalName ?? '';
  }
  return '<unknown>';
}

function serviceRow(s: Service): unknown[] {
  return [
    s.metadata.name,
    s.spec?.type ?? 'ClusterIP',
    s.spec?.clusterIP || '<none>',
    serviceExternalIP(s, false),
    servicePorts(s),
    age(s),
    formatLabels(s.spec?.selector),
  ];
}

function podRow(p: Pod): unknown[] {
  const total = (p.spec?.containers ?? []).length;
  const statuses = p.status?.containerStatuses ?? [];
  let ready = statuses.filter((c) => c.ready).length;
  // Without a kubelet there may be no container statuses: derive them from the Ready condition.
  if (statuses.length === 0 && (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True')) ready = total;
  let reason = p.status?.reason || p.status?.phase || 'Unknown';
  if (p.metadata.deletionTimestamp) reason = 'Terminating';
  const restarts = statuses.reduce((n, c) => n + (c.restartCount ?? 0), 0);
  const nominated = p.status?.['nominatedNodeName'];
  return [
    p.metadata.name,
    `${ready}/${total}`,
    reason,
    String(restarts),
    age(p),
    p.status?.podIP || '<none>',
    p.spec?.nodeName || '<none>',
    typeof nominated === 'string' && nominated ? nominated : '<none>',
    '<none>',
  ];
}

function nodeRow(n: Node): unknown[] {
  const status: string[] = [];
  const ready = (n.status?.conditions ?? []).find((c) => c.type === 'Ready');
  if (ready) status.push(ready.status === 'True' ? 'Ready' : 'NotReady');
  else status.push('Unknown');
  if (n.spec?.unschedulable) status.push('SchedulingDisabled');
  const roles = new Set<string>();
  for (const [k, v] of Object.entries(n.metadata.labels ?? {})) {
    if (k.startsWith('node-role.kubernetes.io/')) {
      const r = k.slice('node-role.kubernetes.io/'.length);
      if (r) roles.add(r);
    } else if (k === 'kubernetes.io/role' && v) roles.add(v);
  }
  const addr = (t: string): string => (n.status?.addresses ?? []).find((a) => a.type === t)?.address || '<none>';
  const info = n.status?.nodeInfo ?? {};
  return [
    n.metadata.name,
    status.join(','),
    roles.size > 0 ? [...roles].sort().join(',') : '<none>',
    age(n),
    info.kubeletVersion ?? '',
    addr('InternalIP'),
    addr('ExternalIP'),
    info.osImage || '<unknown>',
    info.kernelVersion || '<unknown>',
    info.containerRuntimeVersion || '<unknown>',
  ];
}

function listWithMore(list: string[], more: boolean, count: number, max: number): string {
  const s = list.join(',');
  if (more) return `${s} + ${count - max} more...`;
  return s === '' ? '<unset>' : s;
}

function sliceRow(s: EndpointSlice): unknown[] {
  const ports: string[] = [];
  let pmore = false;
  let pcount = 0;
  for (const p of s.ports ?? []) {
    if (ports.length < 3) ports.push(p.port !== undefined ? String(p.port) : p.name ? p.name : '*');
    else pmore = true;
    pcount++;
  }
  const addrs: string[] = [];
  let amore = false;
  let acount = 0;
  for (const e of s.endpoints ?? []) {
    for (const a of e.addresses ?? []) {
      if (addrs.length < 3) addrs.push(a);
      else amore = true;
      acount++;
    }
  }
  return [s.metadata.name, s.addressType, listWithMore(ports, pmore, pcount, 3), listWithMore(addrs, amore, acount, 3), age(s)];
}

function namespaceRow(o: KObject): unknown[] {
  const status = o['status'];
  const phase = typeof status === 'object' && status !== null && 'phase' in status ? String((status as { phase: unknown }).phase) : '';
  return [o.metadata.name, phase, age(o)];
}

export function rowCells(kind: string, o: KObject): unknown[] {
  switch (kind) {
    case 'Service':
      return serviceRow(o as Service);
    case 'Pod':
      return podRow(o as Pod);
    case 'Node':
      return nodeRow(o as Node);
    case 'EndpointSlice':
      return sliceRow(o as EndpointSlice);
    case 'Namespace':
      return namespaceRow(o);
    case 'ServiceCIDR': {
      const spec = o['spec'];
      const cidrs = typeof spec === 'object' && spec !== null && Array.isArray((spec as { cidrs?: unknown }).cidrs) ? (spec as { cidrs: unknown[] }).cidrs : [];
      return [o.metadata.name, cidrs.join(','), age(o)];
    }
  }
  return [o.metadata.name, age(o)];
}

export function partialMetadata(o: KObject): Record<string, unknown> {
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata };
}

export function toTable(
  def: ResourceDef,
  objs: readonly KObject[],
  include: IncludeObject,
  meta: Table['metadata'],
  withColumns = true,
): Table {
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: meta,
    columnDefinitions: withColumns ? (COLUMNS[def.kind] ?? [NAME, AGE]) : [],
    rows: objs.map((o) => {
      const row: TableRow = { cells: rowCells(def.kind, o) };
      if (include === 'Object') row.object = o;
      else if (include === 'Metadata') row.object = partialMetadata(o);
      return row;
    }),
  };
}
