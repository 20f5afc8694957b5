/**
 * The watches kube-proxy keeps, with kube-proxy's selectors: Services and EndpointSlices
 * not claimed by another service proxy and not headless, this node's Node object, and the
 * cluster's ServiceCIDRs. Events go to a ClusterSink (the model's ChangeTracker has this shape).
 *
 * Stage: kube. Never decides anything about the objects.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { ResilientInformer, type Backoff, type InformerSink } from './informer.js';

export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';

/** Objects arrive as decoded JSON, untrusted: the sink decodes what it needs and keeps nothing else. */
export interface ClusterSink {
  upsertService(svc: unknown): void;
  deleteService(svc: unknown): void;
  upsertEndpointSlice(s: unknown): void;
  deleteEndpointSlice(s: unknown): void;
  /** The Node's object, or undefined once it is deleted (the model then keeps the last facts). */
  setNode(n: unknown): void;
  upsertServiceCIDR(c: unknown): void;
  deleteServiceCIDR(c: unknown): void;
}

export interface ClusterWatchOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly sink: ClusterSink;
  /** KubeProxyConfiguration.serviceProxyName; "" = objects without the label. */
  readonly serviceProxyName?: string;
  readonly backoff?: Backoff;
  readonly log?: Logger;
  /** Called for each listed or watched item skipped as malformed (a metric counts them). */
  readonly onBadItem?: (resource: string, reason: string) => void;
}

/** ServiceCIDRs: 200 ms doubling to 30 s (±20%), reset on success (see the constructor). */
export const SERVICE_CIDR_BACKOFF: Backoff = { initialMs: 200, maxMs: 30_000 };

/** kube-proxy's selector, applied to Services and EndpointSlices alike. */
export function proxyLabelSelector(serviceProxyName = ''): string {
  const proxyName = serviceProxyName ? `${LABEL_SERVICE_PROXY_NAME}=${serviceProxyName}` : `!${LABEL_SERVICE_PROXY_NAME}`;
  return `${proxyName},!${LABEL_HEADLESS}`;
}

function nameOf(obj: unknown): string | undefined {
  const meta = typeof obj === 'object' && obj !== null ? (obj as { metadata?: unknown }).metadata : undefined;
  const name = typeof meta === 'object' && meta !== null ? (meta as { name?: unknown }).name : undefined;
  return typeof name === 'string' ? name : undefined;
}

/**
 * The Node informer's sink. Only this node's object counts, as kube-proxy's
 * OnNodeAdd/Update/Delete check (a proxy or aggregation layer that ignores the field selector
 * would otherwise make every node's addresses and podCIDRs ours in turn, and another node's
 * deletion ours). A deletion reaches the sink as `setNode(undefined)`: the model keeps the last
 * node facts (kube-proxy never drops node IPs or podCIDRs), /healthz reports the Node unknown.
 */
export function nodeSink(nodeName: string, sink: Pick<ClusterSink, 'setNode'>, log: Logger, present: (p: boolean) => void): InformerSink {
  const ours = (obj: unknown, op: string): boolean => {
    const name = nameOf(obj);
    if (name === nodeName) return true;
    log.warn(`ignoring a Node ${op} for ${JSON.stringify(name?.slice(0, 253) ?? null)}: this proxy serves Node ${nodeName}`);
    return false;
  };
  return {
    upsert: (n) => {
      if (!ours(n, 'update')) return;
      present(true);
      sink.setNode(n);
    },
    remove: (n) => {
      if (!ours(n, 'deletion')) return;
      present(false);
      log.warn(`Node ${nodeName} deleted; keeping its last addresses, labels and podCIDRs in the rules (as kube-proxy)`);
      sink.setNode(undefined);
    },
  };
}

export class ClusterWatches {
  readonly services: ResilientInformer;
  readonly endpointSlices: ResilientInformer;
  readonly node: ResilientInformer;
  readonly serviceCIDRs: ResilientInformer;
  private readonly log: Logger;
  private nodePresent = false;
  private nodeWaiters: (() => void)[] = [];

  constructor(opts: ClusterWatchOptions) {
    const log = (this.log = opts.log ?? logger('kube'));
    const labelSelector = proxyLabelSelector(opts.serviceProxyName);
    const fieldSelector = `metadata.name=${opts.nodeName}`;
    const bad = (resource: string) => (reason: string) => opts.onBadItem?.(resource, reason);
    const common = { kubeConfig: opts.kubeConfig, backoff: opts.backoff, log };
    this.services = new ResilientInformer({
      ...common,
      resource: 'services',
      path: '/api/v1/services',
      labelSelector,
      onBadItem: bad('services'),
      sink: { upsert: (s) => opts.sink.upsertService(s), remove: (s) => opts.sink.deleteService(s) },
    });
    this.endpointSlices = new ResilientInformer({
      ...common,
      resource: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      labelSelector,
      onBadItem: bad('endpointslices'),
      sink: { upsert: (s) => opts.sink.upsertEndpointSlice(s), remove: (s) => opts.sink.deleteEndpointSlice(s) },
    });
    this.node = new ResilientInformer({
      ...common,
      resource: 'nodes',
      path: '/api/v1/nodes',
      fieldSelector,
      onBadItem: bad('nodes'),
      sink: nodeSink(opts.nodeName, opts.sink, log, (p) => {
        this.nodePresent = p;
        if (p) for (const w of this.nodeWaiters.splice(0)) w();
      }),
    });
    // networking.k8s.io/v1 ServiceCIDRs, as kube-proxy watches them (nftables mode drops traffic
    // to unallocated IPs inside them). Not waited for before the first sync, and retried on a
    // slower backoff: an API server older than 1.33 does not serve them (404 on every attempt:
    // taken as none, not as a failure, as client-go takes it), and a fleet of nodes retrying
    // every 1.6 s would load it for nothing. A recovered server is
    // still listed again at once on the next attempt; the ranges change rarely.
    this.serviceCIDRs = new ResilientInformer({
      ...common,
      backoff: SERVICE_CIDR_BACKOFF,
      mayBeAbsent: true,
      resource: 'servicecidrs',
      path: '/apis/networking.k8s.io/v1/servicecidrs',
      onBadItem: bad('servicecidrs'),
      sink: { upsert: (c) => opts.sink.upsertServiceCIDR(c), remove: (c) => opts.sink.deleteServiceCIDR(c) },
    });
  }

  start(): void {
    this.services.start();
    this.endpointSlices.start();
    this.node.start();
    this.serviceCIDRs.start();
  }

  async stop(): Promise<void> {
    for (const w of this.nodeWaiters.splice(0)) w();
    await Promise.all([this.services.stop(), this.endpointSlices.stop(), this.node.stop(), this.serviceCIDRs.stop()]);
  }

  /** Resolves true once this node's Node object has been seen, false after `timeoutMs`. */
  waitForNode(timeoutMs: number): Promise<boolean> {
    if (this.nodePresent) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(this.nodePresent);
      };
      const timer = setTimeout(() => {
        this.nodeWaiters = this.nodeWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      this.nodeWaiters.push(done);
    });
  }

  /**
   * Waits for Services and EndpointSlices (as kube-proxy does, without limit) and for this
   * node's Node object for at most `nodeTimeoutMs` (kube-proxy, too, goes on without it after a
   * while). Resolves early, with false values, if the watches are stopped.
   */
  async waitForInitialSync(nodeTimeoutMs: number): Promise<{ servicesAndSlices: boolean; node: boolean }> {
    const [svc, eps] = await Promise.all([this.services.waitForSync(), this.endpointSlices.waitForSync()]);
    const node = await this.waitForNode(nodeTimeoutMs);
    if (!node) this.log.warn(`Node object not found after ${nodeTimeoutMs}ms; proceeding without node information`);
    return { servicesAndSlices: svc && eps, node };
  }
}
