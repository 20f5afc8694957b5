/**
 * The v1 Pod strategy. There is no kubelet: a Pod's status is accepted as given on create
 * (the network-namespace cluster creates pods already Running with their IPs) and through
 * `/status`. Spec updates are limited the way the real server limits them.
 * Never writes to the store.
 */
import { ApiError, fieldErr, type FieldError } from './errors.js';
import { parseIP } from './ip.js';
import { clone, deepEqual, isRecord, type KObject } from './objects.js';
import { metaFieldValue, metaPatchSchema, statusOnly, type Prepared, type ResourceDef } from './resource.js';
import { podSchema } from './schema.js';
import { dns1123Label, dns1123Subdomain, IP_MSG, ianaSvcName, PORT_RANGE_MSG, validPort } from './validation.js';

export interface ContainerPort {
  name?: string;
  containerPort?: number;
  protocol?: string;
  hostPort?: number;
}

export interface Container {
  name?: string;
  image?: string;
  ports?: ContainerPort[];
  [k: string]: unknown;
}

export interface PodCondition {
  type?: string;
  status?: string;
  lastTransitionTime?: string;
  [k: string]: unknown;
}

export interface Pod extends KObject {
  spec: { nodeName?: string; containers?: Container[]; initContainers?: Container[]; hostNetwork?: boolean; [k: string]: unknown };
  status?: {
    phase?: string;
    conditions?: PodCondition[];
    podIP?: string;
    podIPs?: { ip?: string }[];
    hostIP?: string;
    hostIPs?: { ip?: string }[];
    containerStatuses?: { name?: string; ready?: boolean; restartCount?: number; state?: unknown }[];
    reason?: string;
    [k: string]: unknown;
  };
}

const PROTOCOLS = ['SCTP', 'TCP', 'UDP'];

export function isPodReady(p: Pod): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** The pod's IPs in status order (podIPs, falling back to podIP). */
export function podIPs(p: Pod): string[] {
  const ips = (p.status?.podIPs ?? []).map((x) => x.ip ?? '').filter((x) => x !== '');
  if (ips.length === 0 && p.status?.podIP) ips.push(p.status.podIP);
  return ips;
}

function defaultSpec(spec: Pod['spec']): void {
  spec['restartPolicy'] ??= 'Always';
  spec['dnsPolicy'] ??= 'ClusterFirst';
  spec['schedulerName'] ??= 'default-scheduler';
  spec['terminationGracePeriodSeconds'] ??= 30;
  spec['securityContext'] ??= {};
  for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
    for (const p of c.ports ?? []) p.protocol ??= 'TCP';
    c['terminationMessagePath'] ??= '/dev/termination-log';
    c['terminationMessagePolicy'] ??= 'File';
    c['imagePullPolicy'] ??= typeof c.image === 'string' && (c.image.endsWith(':latest') || !/:[^/]+$/.test(c.image)) ? 'Always' : 'IfNotPresent';
    c['resources'] ??= {};
  }
}

function syncStatusIPs(status: NonNullable<Pod['status']>): void {
  if (status.podIP && (!status.podIPs || status.podIPs.length === 0)) status.podIPs = [{ ip: status.podIP }];
  if (!status.podIP && status.podIPs && status.podIPs.length > 0) status.podIP = status.podIPs[0]!.ip;
  if (status.hostIP && (!status.hostIPs || status.hostIPs.length === 0)) status.hostIPs = [{ ip: status.hostIP }];
  if (!status.hostIP && status.hostIPs && status.hostIPs.length > 0) status.hostIP = status.hostIPs[0]!.ip;
}

function validateStatus(status: Pod['status']): FieldError[] {
  const errs: FieldError[] = [];
  if (!status) return errs;
  const ips = status.podIPs ?? [];
  if (ips.length > 2) errs.push(fieldErr.tooMany('status.podIPs', ips.length, 2));
  ips.forEach((x, i) => {
    if (!parseIP(x.ip)) errs.push(fieldErr.invalid(`status.podIPs[${i}].ip`, x.ip ?? '', IP_MSG));
  });
  if (ips.length === 2 && parseIP(ips[0]!.ip)?.family === parseIP(ips[1]!.ip)?.family) {
    errs.push(fieldErr.invalid('status.podIPs', ips.map((x) => x.ip), 'may specify no more than one IP for each IP family'));
  }
  if (status.podIP && ips.length > 0 && ips[0]!.ip !== status.podIP) {
    errs.push(fieldErr.invalid('status.podIPs[0].ip', ips[0]!.ip, 'must match status.podIP'));
  }
  (status.hostIPs ?? []).forEach((x, i) => {
    if (!parseIP(x.ip)) errs.push(fieldErr.invalid(`status.hostIPs[${i}].ip`, x.ip ?? '', IP_MSG));
  });
  const phases = ['Failed', 'Pending', 'Running', 'Succeeded', 'Unknown'];
  if (status.phase !== undefined && !phases.includes(status.phase)) errs.push(fieldErr.notSupported('status.phase', status.phase, phases));
  return errs;
}

function validateSpec(spec: Pod['spec']): FieldError[] {
  const errs: FieldError[] = [];
  const containers = spec.containers ?? [];
  if (containers.length === 0) errs.push(fieldErr.required('spec.containers'));
  const names = new Set<string>();
  const check = (list: Container[], field: string): void =>
    list.forEach((c, i) => {
      const path = `${field}[${i}]`;
      if (!c.name) errs.push(fieldErr.required(`${path}.name`));
      else {
        const m = dns1123Label(c.name);
        if (m) errs.push(fieldErr.invalid(`${path}.name`, c.name, m));
        if (names.has(c.name)) errs.push(fieldErr.duplicate(`${path}.name`, c.name));
        names.add(c.name);
      }
      if (!c.image) errs.push(fieldErr.required(`${path}.image`));
      const portNames = new Set<string>();
      (c.ports ?? []).forEach((p, j) => {
        const pp = `${path}.ports[${j}]`;
        if (!validPort(p.containerPort)) errs.push(fieldErr.invalid(`${pp}.containerPort`, p.containerPort ?? 0, PORT_RANGE_MSG));
        if (p.protocol && !PROTOCOLS.includes(p.protocol)) errs.push(fieldErr.notSupported(`${pp}.protocol`, p.protocol, PROTOCOLS));
        if (p.name) {
          const m = ianaSvcName(p.name);
          if (m) errs.push(fieldErr.invalid(`${pp}.name`, p.name, m));
          if (portNames.has(p.name)) errs.push(fieldErr.duplicate(`${pp}.name`, p.name));
          portNames.add(p.name);
        }
      });
    });
  check(containers, 'spec.containers');
  check(spec.initContainers ?? [], 'spec.initContainers');
  if (spec.nodeName) {
    const m = dns1123Subdomain(spec.nodeName);
    if (m) errs.push(fieldErr.invalid('spec.nodeName', spec.nodeName, m));
  }
  return errs;
}

/** The spec with the fields a pod update may change blanked out, for comparison. */
function immutablePart(spec: Pod['spec']): unknown {
  const s = clone(spec) as Record<string, unknown>;
  for (const k of ['containers', 'initContainers']) {
    const list = s[k];
    if (Array.isArray(list)) for (const c of list) if (isRecord(c)) delete c['image'];
  }
  delete s['activeDeadlineSeconds'];
  delete s['tolerations'];
  return s;
}

export function podDef(): ResourceDef {
  const def: ResourceDef = {
    group: '',
    version: 'v1',
    apiVersion: 'v1',
    plural: 'pods',
    singular: 'pod',
    kind: 'Pod',
    namespaced: true,
    shortNames: ['po'],
    hasStatus: true,
    storageKey: 'pods',
    schema: podSchema,
    validateName: dns1123Subdomain,
    fieldSelectors: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
    fieldValue: (o, f) => {
      const p = o as Pod;
      switch (f) {
        case 'spec.nodeName':
          return p.spec?.nodeName ?? '';
        case 'spec.hostNetwork':
          return String(p.spec?.hostNetwork ?? false);
        case 'spec.restartPolicy':
        case 'spec.schedulerName':
        case 'spec.serviceAccountName': {
          const v = p.spec?.[f.slice(5)];
          return typeof v === 'string' ? v : '';
        }
        case 'status.phase':
          return p.status?.phase ?? '';
        case 'status.podIP':
          return p.status?.podIP ?? '';
        case 'status.nominatedNodeName': {
          const v = p.status?.['nominatedNodeName'];
          return typeof v === 'string' ? v : '';
        }
      }
      return metaFieldValue(o, f);
    },
    patchSchema: (path) => {
      const p = path.join('.');
      switch (p) {
        case 'spec.containers':
        case 'spec.initContainers':
        case 'spec.ephemeralContainers':
        case 'spec.volumes':
        case 'spec.imagePullSecrets':
        case 'spec.containers.env':
        case 'spec.initContainers.env':
          return { mergeKey: 'name' };
        case 'spec.containers.ports':
        case 'spec.initContainers.ports':
          return { mergeKey: 'containerPort' };
        case 'spec.containers.volumeMounts':
        case 'spec.initContainers.volumeMounts':
          return { mergeKey: 'mountPath' };
        case 'status.conditions':
          return { mergeKey: 'type' };
        case 'status.podIPs':
        case 'status.hostIPs':
          return { mergeKey: 'ip' };
      }
      return metaPatchSchema(path);
    },
    prepareCreate: (input) => {
      const pod = clone(input) as Pod;
      pod.spec ??= {};
      defaultSpec(pod.spec);
      pod.status ??= {};
      pod.status.phase ??= 'Pending';
      pod.status['qosClass'] ??= 'BestEffort';
      syncStatusIPs(pod.status);
      const errs = [...validateSpec(pod.spec), ...validateStatus(pod.status)];
      if (errs.length) throw ApiError.invalid(def, pod.metadata.name ?? '', errs);
      return { obj: pod };
    },
    prepareUpdate: (input, oldObj) => {
      const old = oldObj as Pod;
      const pod = clone(input) as Pod;
      pod.spec ??= {};
      defaultSpec(pod.spec);
      if (old.status !== undefined) pod.status = old.status;
      const errs = validateSpec(pod.spec);
      if (!deepEqual(immutablePart(pod.spec), immutablePart(old.spec))) {
        errs.push(
          fieldErr.forbidden(
            'spec',
            'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
          ),
        );
      }
      if (errs.length) throw ApiError.invalid(def, pod.metadata.name ?? '', errs);
      return { obj: pod };
    },
    prepareStatusUpdate: (input, old): Prepared => {
      const pod = statusOnly(input, old) as Pod;
      if (pod.status) {
        pod.status = clone(pod.status);
        syncStatusIPs(pod.status);
      }
      const errs = validateStatus(pod.status);
      if (errs.length) throw ApiError.invalid(def, pod.metadata.name ?? '', errs);
      return { obj: pod };
    },
  };
  return def;
}
