/**
 * The simulated Kubernetes API server: plain HTTP, no auth, faithful enough for kubectl and
 * @kubernetes/client-node informers. Serves v1 Namespaces, Services, Pods, Nodes,
 * discovery.k8s.io/v1 EndpointSlices and networking.k8s.io/v1 ServiceCIDRs, and runs an in-process EndpointSlice controller.
 * This module only wires the parts together and owns the listening socket.
 * It must never be exposed beyond the machine or test namespaces: there is no authentication.
 */
import { createServer, type Server } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import YAML from 'yaml';
import { EndpointSliceController } from './endpointslice-controller.js';
import { endpointSliceDef } from './endpointslices.js';
import { createHandler } from './http.js';
import { namespaceDef, nodeDef } from './nodes.js';
import { podDef } from './pods.js';
import { Registry } from './registry.js';
import { ServiceRegistry } from './services.js';
import { DEFAULT_SERVICE_CIDR_NAME, serviceCIDRDef } from './servicecidrs.js';
import { Store, type StoreEvent } from './store.js';
import type { KObject } from './objects.js';
import type { WatchSession } from './watch.js';
import { logger } from '../../util/log.js';

const log = logger('sim-apiserver');

export interface ApiServerOptions {
  /** Default '127.0.0.1'; may be any local address (e.g. '0.0.0.0'). */
  host?: string;
  /** 0 = pick a free port (default 0). */
  port?: number;
  /** One per family, default ['10.96.0.0/16']; e.g. ['198.18.64.0/18', '2001:db8:2::/112']. */
  serviceCIDRs?: string[];
  /** Default [30000, 32767]. */
  nodePortRange?: [number, number];
  /** Events retained for watch resumption, default 10000 (older resourceVersions → 410 Gone). */
  watchHistory?: number;
  /** Interval between BOOKMARK events on watches that allow them; default 5000 ms. */
  bookmarkIntervalMs?: number;
  /** Fills the store before the server listens (benchmarks preload thousands of objects without HTTP). */
  seed?: (core: ApiCore) => void;
  /**
   * Serve this core instead of creating one (tests: an API server that goes down and comes back
   * on the same port with its store intact, as etcd outlives a restarted kube-apiserver).
   * close() then leaves the core running; stop it with stopApiCore().
   */
  core?: ApiCore;
}

export interface ApiServer {
  /** e.g. 'http://127.0.0.1:38211' */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Write a kubeconfig (cluster 'ferry-sim', user with no credentials, context 'ferry-sim') pointing at `server` (default this.url). */
  writeKubeconfig(path: string, server?: string): void;
  /** Drop all retained watch history so any client watching from an older resourceVersion gets 410 Gone. */
  compact(): void;
  /** Close open watches (clients see the stream end) without stopping the server; used to test reconnects. */
  dropWatches(): void;
  /** Resolves once the EndpointSlice controller has reconciled every change made so far. */
  settled(): Promise<void>;
  /**
   * Calls `fn` for every change as the store commits it, before any watch hears of it
   * (benchmarks time a change from the moment its object exists); returns the unsubscribe.
   */
  onStored(fn: (e: StoreEvent) => void): () => void;
  close(): Promise<void>;
}

export const DEFAULT_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

export function kubeconfigYAML(server: string): string {
  return YAML.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    // client-node refuses plain http unless insecure-skip-tls-verify is set; kubectl accepts it too.
    clusters: [{ name: 'ferry-sim', cluster: { server, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'ferry-sim', user: {} }],
    contexts: [{ name: 'ferry-sim', context: { cluster: 'ferry-sim', user: 'ferry-sim', namespace: 'default' } }],
    'current-context': 'ferry-sim',
    preferences: {},
  });
}

/** The server without HTTP: store, registry (with the bootstrap namespaces) and the EndpointSlice controller. */
export interface ApiCore {
  store: Store;
  registry: Registry;
  services: ServiceRegistry;
  controller: EndpointSliceController;
}

export function createApiCore(opts: Pick<ApiServerOptions, 'serviceCIDRs' | 'nodePortRange' | 'watchHistory'> = {}): ApiCore {
  const store = new Store(opts.watchHistory ?? 10000);
  const services = new ServiceRegistry({
    serviceCIDRs: opts.serviceCIDRs ?? ['10.96.0.0/16'],
    nodePortRange: opts.nodePortRange ?? [30000, 32767],
  });
  const nsDef = namespaceDef();
  const cidrDef = serviceCIDRDef();
  const registry = new Registry(store, [nsDef, services.def, podDef(), nodeDef(), endpointSliceDef(), cidrDef]);
  for (const name of DEFAULT_NAMESPACES) registry.create(nsDef, undefined, { metadata: { name } });
  // The default ServiceCIDR, as kube-apiserver creates it from --service-cluster-ip-range.
  registry.create(cidrDef, undefined, { metadata: { name: DEFAULT_SERVICE_CIDR_NAME }, spec: { cidrs: services.ipAllocators.map((a) => a.cidr.text) } });
  const controller = new EndpointSliceController(registry, store);
  controller.start();
  return { store, registry, services, controller };
}

/** Stops the core's controller and timers (for a core passed to startApiServer as `core`). */
export function stopApiCore(core: ApiCore): void {
  core.controller.stop();
  core.registry.close();
}

/**
 * Test-only: stores `obj` as it is, past every decoder, default and validation — an object that
 * reached etcd some other way (an older server, a bug, a hand edit). It may lack metadata, have
 * wrong types anywhere, or be no object at all; the store stamps a resourceVersion and watchers
 * see it. `resource` is the storage key ('services', 'endpointslices.discovery.k8s.io', ...).
 */
export function writeUnvalidated(core: ApiCore, resource: string, obj: unknown, type: 'ADDED' | 'MODIFIED' | 'DELETED' = 'ADDED'): void {
  const o = (typeof obj === 'object' && obj !== null && !Array.isArray(obj) ? obj : { value: obj }) as Record<string, unknown>;
  const metadata = typeof o['metadata'] === 'object' && o['metadata'] !== null && !Array.isArray(o['metadata']) ? o['metadata'] : {};
  // The store files objects by metadata.namespace/name and stamps metadata.resourceVersion; what
  // a client receives is the object with those stamped fields, as etcd would return it.
  const prev = core.store.get(resource, (metadata as Record<string, unknown>)['namespace'] as string | undefined, String((metadata as Record<string, unknown>)['name'] ?? ''));
  core.store.write(type, resource, { ...o, metadata } as KObject, prev);
}

export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const host = opts.host ?? '127.0.0.1';
  const ownCore = opts.core === undefined;
  const core = opts.core ?? createApiCore(opts);
  const { store, registry, controller } = core;
  opts.seed?.(core);

  const watches = new Set<WatchSession>();
  let port = 0;
  const server: Server = createServer(
    createHandler({
      registry,
      store,
      watches,
      bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 5000,
      serverAddress: () => `${urlHost(host)}:${port}`,
    }),
  );
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  const url = `http://${urlHost(host)}:${port}`;
  log.v(1, 'simulated API server listening', { url });

  const dropWatches = (): void => {
    for (const w of [...watches]) w.close();
  };
  let closed: Promise<void> | undefined;
  return {
    url,
    host,
    port,
    writeKubeconfig(path, srv = url) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, kubeconfigYAML(srv), { mode: 0o600 });
    },
    compact: () => store.compact(),
    dropWatches,
    settled: () => controller.settled(),
    onStored: (fn) => store.subscribe(fn),
    close() {
      closed ??= new Promise<void>((resolve) => {
        if (ownCore) {
          controller.stop();
          registry.close();
        }
        dropWatches();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
