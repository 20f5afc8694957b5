/**
 * Builders for the API objects the model consumes, and per-family test addresses (documentation
 * ranges only). Shared by the model and plan tests.
 */
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { IPFamily } from '../../../src/model/types.js';

export const FAMILIES: readonly IPFamily[] = [4, 6];

/** Test address n (1..254) of a family: 198.18.net.n / 2001:db8:1net::n (canonical text). */
export function ip(family: IPFamily, n: number, net = 0): string {
  return family === 4 ? `198.18.${net}.${n}` : `2001:db8:${(net + 0x100).toString(16)}::${n.toString(16)}`;
}

/** A ClusterIP of a family (separate ranges from endpoints). */
export function vip(family: IPFamily, n = 1): string {
  return family === 4 ? `203.0.113.${n}` : `2001:db8:ffff::${n.toString(16)}`;
}

export function cidr(family: IPFamily, net = 0): string {
  return family === 4 ? `198.18.${net}.0/24` : `2001:db8:${(net + 0x100).toString(16)}::/64`;
}

export interface SvcOpts {
  ns?: string;
  name?: string;
  type?: string;
  families?: readonly IPFamily[];
  clusterIPs?: string[];
  ports?: Array<{ name?: string; port: number; protocol?: string; nodePort?: number; targetPort?: number | string }>;
  etp?: string;
  itp?: string;
  externalIPs?: string[];
  ingress?: Array<{ ip?: string; hostname?: string; ipMode?: string }>;
  sourceRanges?: string[];
  affinity?: number | 'default';
  hcPort?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  trafficDistribution?: string;
}

export function svc(o: SvcOpts = {}): V1Service {
  const families = o.families ?? [4];
  const clusterIPs = o.clusterIPs ?? families.map((f) => vip(f));
  return {
    metadata: {
      namespace: o.ns ?? 'default',
      name: o.name ?? 'web',
      labels: o.labels,
      annotations: o.annotations,
      resourceVersion: o.resourceVersion ?? '1',
    },
    spec: {
      type: o.type ?? 'ClusterIP',
      clusterIP: clusterIPs[0],
      clusterIPs,
      ipFamilies: families.map((f) => (f === 4 ? 'IPv4' : 'IPv6')),
      ports: (o.ports ?? [{ name: 'http', port: 80 }]).map((p) => ({
        name: p.name,
        port: p.port,
        protocol: p.protocol ?? 'TCP',
        nodePort: p.nodePort,
        targetPort: p.targetPort ?? p.port,
      })),
      externalTrafficPolicy: o.etp,
      internalTrafficPolicy: o.itp,
      externalIPs: o.externalIPs,
      loadBalancerSourceRanges: o.sourceRanges,
      sessionAffinity: o.affinity !== undefined ? 'ClientIP' : 'None',
      sessionAffinityConfig:
        o.affinity !== undefined && o.affinity !== 'default' ? { clientIP: { timeoutSeconds: o.affinity } } : undefined,
      healthCheckNodePort: o.hcPort,
      trafficDistribution: o.trafficDistribution,
    },
    status: { loadBalancer: { ingress: o.ingress as never } },
  } as V1Service;
}

export interface EpOpts {
  ip: string;
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  zone?: string;
  zoneHints?: string[];
  nodeHints?: string[];
}

export interface SliceOpts {
  ns?: string;
  name?: string;
  service?: string;
  family?: IPFamily;
  addressType?: string;
  ports?: Array<{ name?: string | null; port: number; protocol?: string }>;
  endpoints?: EpOpts[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
}

export function slice(o: SliceOpts = {}): V1EndpointSlice {
  const family = o.family ?? 4;
  return {
    metadata: {
      namespace: o.ns ?? 'default',
      name: o.name ?? `${o.service ?? 'web'}-${family === 4 ? 'v4' : 'v6'}`,
      labels: { 'kubernetes.io/service-name': o.service ?? 'web', ...o.labels },
      annotations: o.annotations,
      resourceVersion: o.resourceVersion ?? '1',
    },
    addressType: o.addressType ?? (family === 4 ? 'IPv4' : 'IPv6'),
    ports: (o.ports ?? [{ name: 'http', port: 8080 }]).map((p) => ({
      name: p.name === null ? undefined : (p.name ?? ''),
      port: p.port,
      protocol: p.protocol ?? 'TCP',
    })),
    endpoints: (o.endpoints ?? []).map((e) => ({
      addresses: [e.ip],
      nodeName: e.node,
      zone: e.zone,
      conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating },
      hints:
        e.zoneHints || e.nodeHints
          ? { forZones: e.zoneHints?.map((name) => ({ name })), forNodes: e.nodeHints?.map((name) => ({ name })) }
          : undefined,
    })),
  } as V1EndpointSlice;
}

export function node(name: string, addresses: Array<[string, string]> = [], labels: Record<string, string> = {}): V1Node {
  return {
    metadata: { name, labels },
    status: { addresses: addresses.map(([type, address]) => ({ type, address })) },
  } as V1Node;
}
