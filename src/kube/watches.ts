/**
 * The three watches kube-proxy keeps, with kube-proxy's selectors: Services and EndpointSlices
 * not claimed by another service proxy and not headless, and this node's Node object. Events
 * go to a ClusterSink (the model's ChangeTracker has this shape).
 *
 * Stage: kube. Never decides anything about the objects.
 */
import {
  CoreV1Api,
  DiscoveryV1Api,
  type KubeConfig,
  type V1EndpointSlice,
  type V1Node,
  type V1Service,
} from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { ResilientInformer, type Backoff } from './informer.js';

export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';

export interface ClusterSink {
  upsertService(svc: V1Service): void;
  deleteService(svc: V1Service): void;
  upsertEndpointSlice(s: V1EndpointSlice): void;
  deleteEndpointSlice(s: V1EndpointSlice): void;
  setNode(n: V1Node | undefined): void;
}

export interface ClusterWatchOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  readonly sink: ClusterSink;
  /** KubeProxyConfiguration.serviceProxyName; "" = objects without the label. */
  readonly serviceProxyName?: string;
  readonly backoff?: Backoff;
  readonly log?: Logger;
}

/** kube-proxy's selector, applied to Services and EndpointSlices alike. */
export function proxyLabelSelector(serviceProxyName = ''): string {
  const proxyName = serviceProxyName ? `${LABEL_SERVICE_PROXY_NAME}=${serviceProxyName}` : `!${LABEL_SERVICE_PROXY_NAME}`;
  return `${proxyName},!${LABEL_HEADLESS}`;
}

export class ClusterWatches {
  readonly services: ResilientInformer<V1Service>;
  readonly endpointSlices: ResilientInformer<V1EndpointSlice>;
  readonly node: ResilientInformer<V1Node>;
  private readonly log: Logger;
  private nodePresent = false;
  private nodeWaiters: (() => void)[] = [];

  constructor(opts: ClusterWatchOptions) {
    const log = (this.log = opts.log ?? logger('kube'));
    const core = opts.kubeConfig.makeApiClient(CoreV1Api);
    const discovery = opts.kubeConfig.makeApiClient(DiscoveryV1Api);
    const labelSelector = proxyLabelSelector(opts.serviceProxyName);
    const fieldSelector = `metadata.name=${opts.nodeName}`;
    const common = { kubeConfig: opts.kubeConfig, backoff: opts.backoff, log };
    this.services = new ResilientInformer<V1Service>({
      ...common,
      resource: 'services',
      path: '/api/v1/services',
      labelSelector,
      list: () => core.listServiceForAllNamespaces({ labelSelector }),
      sink: { upsert: (s) => opts.sink.upsertService(s), remove: (s) => opts.sink.deleteService(s) },
    });
    this.endpointSlices = new ResilientInformer<V1EndpointSlice>({
      ...common,
      resource: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      labelSelector,
      list: () => discovery.listEndpointSliceForAllNamespaces({ labelSelector }),
      sink: { upsert: (s) => opts.sink.upsertEndpointSlice(s), remove: (s) => opts.sink.deleteEndpointSlice(s) },
    });
    this.node = new ResilientInformer<V1Node>({
      ...common,
      resource: 'nodes',
      path: '/api/v1/nodes',
      fieldSelector,
      list: () => core.listNode({ fieldSelector }),
      sink: {
        upsert: (n) => {
          this.nodePresent = true;
          for (const w of this.nodeWaiters.splice(0)) w();
          opts.sink.setNode(n);
        },
        remove: () => {
          this.nodePresent = false;
          opts.sink.setNode(undefined);
        },
      },
    });
  }

  start(): void {
    this.services.start();
    this.endpointSlices.start();
    this.node.start();
  }

  async stop(): Promise<void> {
    for (const w of this.nodeWaiters.splice(0)) w();
    await Promise.all([this.services.stop(), this.endpointSlices.stop(), this.node.stop()]);
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
