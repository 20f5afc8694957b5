/**
 * Telling an API server about the simulated cluster: a Node object per node namespace and a Pod
 * per echo pod, with the status a kubelet would report (addresses, podIPs, Ready). The object
 * builders are pure; `ApiRegistrar` is the only part that talks to the API server.
 * Never invents addresses: everything comes from the SimNode/SimPod the topology built.
 */
import { ApiException, CoreV1Api, KubeConfig, type V1Node, type V1Pod, type V1ContainerPort } from '@kubernetes/client-node';
import { readFileSync, writeFileSync } from 'node:fs';
import YAML from 'yaml';
import type { SimNode, SimPod } from './types.js';

export class RegistrationError extends Error {
  readonly code = 'FERRY_ERR_SIM_REGISTER';
  constructor(
    readonly kind: 'Node' | 'Pod',
    readonly object: string,
    readonly action: string,
    cause: unknown,
  ) {
    super(`${action} ${kind} ${object} on the API server failed: ${describe(cause)}`, { cause });
    this.name = 'RegistrationError';
  }
}

function describe(e: unknown): string {
  if (e instanceof ApiException) {
    const body: unknown = e.body;
    const msg = typeof body === 'string' ? body : JSON.stringify(body);
    return `HTTP ${e.code}: ${msg.slice(0, 300)}`;
  }
  return e instanceof Error ? e.message : String(e);
}

function httpCode(e: unknown): number | undefined {
  return e instanceof ApiException ? e.code : undefined;
}

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export function nodeObject(node: SimNode, zone?: string): V1Node {
  const labels: Record<string, string> = {
    'kubernetes.io/hostname': node.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
  };
  if (zone) labels[ZONE_LABEL] = zone;
  const addresses = [{ type: 'InternalIP', address: node.ip }];
  if (node.ip6) addresses.push({ type: 'InternalIP', address: node.ip6 });
  addresses.push({ type: 'Hostname', address: node.name });
  const podCIDRs = node.podCIDR6 ? [node.podCIDR, node.podCIDR6] : [node.podCIDR];
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: node.name, labels },
    spec: { podCIDR: node.podCIDR, podCIDRs },
    status: {
      addresses,
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'simulated node' }],
    },
  };
}

export interface PodSpecInput {
  containerPorts: { name?: string; containerPort: number; protocol?: string }[];
  ready: boolean;
}

export function readyConditions(ready: boolean, at: string): NonNullable<NonNullable<V1Pod['status']>['conditions']> {
  const s = ready ? 'True' : 'False';
  // The client types want Date, the wire wants RFC 3339; the API server only ever sees the JSON.
  const t = at as unknown as Date;
  return [
    { type: 'PodScheduled', status: 'True', lastTransitionTime: t },
    { type: 'Initialized', status: 'True', lastTransitionTime: t },
    { type: 'ContainersReady', status: s, lastTransitionTime: t },
    { type: 'Ready', status: s, lastTransitionTime: t },
  ];
}

export function podObject(pod: SimPod, hostIP: string, hostIP6: string | undefined, input: PodSpecInput): V1Pod {
  const ports: V1ContainerPort[] = input.containerPorts.map((p) => {
    const cp: V1ContainerPort = { containerPort: p.containerPort, protocol: p.protocol ?? 'TCP' };
    if (p.name) cp.name = p.name;
    return cp;
  });
  const podIPs = [{ ip: pod.ip }];
  if (pod.ip6) podIPs.push({ ip: pod.ip6 });
  const hostIPs = [{ ip: hostIP }];
  if (hostIP6) hostIPs.push({ ip: hostIP6 });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod.name, namespace: pod.namespace, labels: { ...pod.labels } },
    spec: {
      nodeName: pod.node,
      containers: [{ name: 'echo', image: 'ferry.sim/echo:latest', ports }],
      ...(pod.hostNetwork ? { hostNetwork: true } : {}),
    },
    status: {
      phase: 'Running',
      hostIP,
      hostIPs,
      podIP: pod.ip,
      podIPs,
      conditions: readyConditions(input.ready, new Date().toISOString()),
    },
  };
}

/**
 * client-node 1.x refuses an http:// server unless the cluster entry skips TLS verification;
 * the simulated API server speaks plain HTTP, so such entries are allowed here.
 */
export function loadKubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  if (!kc.clusters.some((c) => c.server.startsWith('http://') && !c.skipTLSVerify)) return kc;
  const fixed = new KubeConfig();
  fixed.loadFromOptions({
    clusters: kc.clusters.map((c) => (c.server.startsWith('http://') ? { ...c, skipTLSVerify: true } : c)),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return fixed;
}

/**
 * The same allowance written into a kubeconfig file, for processes that load it themselves
 * (ferry daemons, kubectl accepts it too). No-op when nothing is plain HTTP.
 */
export function allowPlainHttpInKubeconfig(path: string): void {
  const doc: unknown = YAML.parse(readFileSync(path, 'utf8'));
  const clusters = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>).clusters : undefined;
  if (!Array.isArray(clusters)) return;
  let changed = false;
  for (const entry of clusters as unknown[]) {
    const cl = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>).cluster : undefined;
    if (typeof cl !== 'object' || cl === null) continue;
    const c = cl as Record<string, unknown>;
    if (typeof c.server === 'string' && c.server.startsWith('http://') && c['insecure-skip-tls-verify'] !== true) {
      c['insecure-skip-tls-verify'] = true;
      changed = true;
    }
  }
  if (changed) writeFileSync(path, YAML.stringify(doc), { mode: 0o600 });
}

/** Talks to one API server; every failure names the object it was about. */
export class ApiRegistrar {
  private readonly api: CoreV1Api;
  private readonly namespaces = new Map<string, Promise<void>>();

  constructor(kubeconfigPath: string) {
    this.api = loadKubeConfig(kubeconfigPath).makeApiClient(CoreV1Api);
  }

  async registerNode(body: V1Node): Promise<void> {
    const name = body.metadata?.name ?? '?';
    try {
      let created: V1Node;
      try {
        created = await this.api.createNode({ body });
      } catch (e) {
        if (httpCode(e) !== 409) throw e;
        // A node of that name survived an earlier run against the same API server: take it over.
        await this.api.deleteNode({ name });
        created = await this.api.createNode({ body });
      }
      if (!created.status?.addresses?.length && body.status) {
        // An API server that drops status on create (as a real one does) gets it through /status.
        await this.api.replaceNodeStatus({ name, body: { ...created, status: body.status } });
      }
    } catch (e) {
      throw new RegistrationError('Node', name, 'creating', e);
    }
  }

  /** Pods may go to namespaces nobody created yet; a real API server would refuse them. */
  private ensureNamespace(name: string): Promise<void> {
    let p = this.namespaces.get(name);
    if (!p) {
      p = this.api
        .createNamespace({ body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name } } })
        .then(
          () => undefined,
          (e: unknown) => {
            if (httpCode(e) === 409) return;
            this.namespaces.delete(name);
            throw e;
          },
        );
      this.namespaces.set(name, p);
    }
    return p;
  }

  async registerPod(body: V1Pod): Promise<void> {
    const name = body.metadata?.name ?? '?';
    const namespace = body.metadata?.namespace ?? 'default';
    try {
      await this.ensureNamespace(namespace);
      let created: V1Pod;
      try {
        created = await this.api.createNamespacedPod({ namespace, body });
      } catch (e) {
        if (httpCode(e) !== 409) throw e;
        await this.api.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
        created = await this.api.createNamespacedPod({ namespace, body });
      }
      if (!created.status?.podIP && body.status) {
        await this.api.replaceNamespacedPodStatus({ name, namespace, body: { ...created, status: body.status } });
      }
    } catch (e) {
      throw new RegistrationError('Pod', `${namespace}/${name}`, 'creating', e);
    }
  }

  async setPodReady(name: string, namespace: string, ready: boolean): Promise<void> {
    const now = new Date().toISOString();
    for (let attempt = 0; ; attempt++) {
      try {
        const pod = await this.api.readNamespacedPod({ name, namespace });
        const status = pod.status ?? {};
        const conds = (status.conditions ?? []).filter((c) => c.type !== 'Ready' && c.type !== 'ContainersReady');
        const s = ready ? 'True' : 'False';
        const t = now as unknown as Date;
        conds.push({ type: 'ContainersReady', status: s, lastTransitionTime: t }, { type: 'Ready', status: s, lastTransitionTime: t });
        await this.api.replaceNamespacedPodStatus({ name, namespace, body: { ...pod, status: { ...status, conditions: conds } } });
        return;
      } catch (e) {
        if (httpCode(e) === 409 && attempt < 5) continue; // lost a race with another writer; re-read
        throw new RegistrationError('Pod', `${namespace}/${name}`, `setting Ready=${ready} of`, e);
      }
    }
  }

  async deletePod(name: string, namespace: string): Promise<void> {
    try {
      await this.api.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
    } catch (e) {
      if (httpCode(e) === 404) return;
      throw new RegistrationError('Pod', `${namespace}/${name}`, 'deleting', e);
    }
  }

  async deleteNode(name: string): Promise<void> {
    try {
      await this.api.deleteNode({ name });
    } catch (e) {
      if (httpCode(e) === 404) return;
      throw new RegistrationError('Node', name, 'deleting', e);
    }
  }
}
