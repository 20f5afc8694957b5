/**
 * Small builders for what the suite sends to the API server and where it probes from, so test
 * bodies read as the behaviour they prove. Pure: no I/O.
 */
import type { ProbeTarget, Vantage } from '../../../src/sim/cluster/index.js';

/** Every Service in the suite listens on 80 and forwards to the echo servers' 8080. */
export const SVC_PORT = 80;
export const ECHO_PORT = 8080;

export interface ServiceDocOptions {
  selector: Record<string, string>;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  /** Default TCP only. Port names are the lower-cased protocol. */
  protocols?: ('TCP' | 'UDP')[];
  /** RequireDualStack with IPv4 first; default single-stack (the cluster's primary family). */
  dualStack?: boolean;
  /** Merged into spec last (traffic policies, affinity, externalIPs, source ranges...). */
  spec?: Record<string, unknown>;
  labels?: Record<string, string>;
}

export function serviceDoc(name: string, o: ServiceDocOptions): Record<string, unknown> {
  const spec: Record<string, unknown> = {
    type: o.type ?? 'ClusterIP',
    selector: o.selector,
    ports: (o.protocols ?? ['TCP']).map((p) => ({ name: p.toLowerCase(), protocol: p, port: SVC_PORT, targetPort: ECHO_PORT })),
  };
  if (o.dualStack) {
    spec.ipFamilyPolicy = 'RequireDualStack';
    spec.ipFamilies = ['IPv4', 'IPv6'];
  }
  Object.assign(spec, o.spec ?? {});
  const metadata: Record<string, unknown> = { name };
  if (o.labels) metadata.labels = o.labels;
  return { apiVersion: 'v1', kind: 'Service', metadata, spec };
}

export const fromPod = (pod: string): Vantage => ({ kind: 'pod', pod });
/** A process in the pod's network namespace but not in its cgroup: ebpf mode's socket LB does not see it. */
export const fromPodOutsideCgroup = (pod: string): Vantage => ({ kind: 'pod', pod, outsideCgroup: true });
export const fromNode = (node: string): Vantage => ({ kind: 'node', node });
export const fromClient: Vantage = { kind: 'client' };

export const tcp = (addr: string, port: number = SVC_PORT): ProbeTarget => ({ proto: 'tcp', addr, port });
export const udp = (addr: string, port: number = SVC_PORT): ProbeTarget => ({ proto: 'udp', addr, port });
