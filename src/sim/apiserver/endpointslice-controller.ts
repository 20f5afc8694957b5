/**
 * The in-process EndpointSlice controller: derives discovery.k8s.io/v1 EndpointSlices from
 * each selector Service and the Pods it selects, like kube-controller-manager's
 * endpointslice controller (one slice set per IP family, ≤100 endpoints per slice, pods
 * grouped by resolved port set, placeholder slice when there are no endpoints, in-place
 * updates, no write when nothing changed, topology hints for PreferClose / topology-mode Auto).
 * It writes only through the Registry, so its slices are validated and watched like any other.
 * It never touches slices it does not manage (managed-by label).
 */
import type { EndpointPort, EndpointSlice, Endpoint } from './endpointslices.js';
import { ApiError } from './errors.js';
import { parseIP, type Family } from './ip.js';
import { deepEqual, type KObject } from './objects.js';
import { isPodReady, podIPs, type Pod } from './pods.js';
import { ZONE_LABEL, type Node } from './nodes.js';
import type { Registry } from './registry.js';
import type { ResourceDef } from './resource.js';
import type { Service, ServicePortSpec } from './services.js';
import type { Store, StoreEvent } from './store.js';
import { logger } from '../../util/log.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const CONTROLLER_NAME = 'endpointslice-controller.k8s.io';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';
export const TOPOLOGY_MODE_ANNOTATION = 'service.kubernetes.io/topology-mode';
const MAX_ENDPOINTS = 100;

const log = logger('sim-endpointslice');

const nsKey = (ns: string, name: string): string => `${ns}/${name}`;
const pairKey = (ns: string, k: string, v: string): string => `${ns}\u0000${k}=${v}`;

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

function selectorOf(svc: Service | undefined): Record<string, string> | undefined {
  // Objects written past validation (writeUnvalidated, tests of hostile stores) may have any
  // shape: only a well-formed selector makes the controller act.
  if (!svc || typeof svc.spec !== 'object' || svc.spec === null || svc.spec.type === 'ExternalName') return undefined;
  const sel: unknown = svc.spec.selector;
  if (typeof sel !== 'object' || sel === null || Array.isArray(sel)) return undefined;
  const entries = Object.entries(sel as Record<string, unknown>);
  if (entries.length === 0 || entries.some(([, v]) => typeof v !== 'string')) return undefined;
  return sel as Record<string, string>;
}

function selects(sel: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel)) if (l[k] !== v) return false;
  return true;
}

export class EndpointSliceController {
  private readonly dirty = new Map<string, number>();
  private scheduled: NodeJS.Immediate | undefined;
  private writing = false;
  private unsubscribe: (() => void) | undefined;
  private readonly podsByLabel = new Map<string, Set<string>>();
  private readonly servicesBySelector = new Map<string, Set<string>>();
  private readonly podsByNode = new Map<string, Set<string>>();
  private readonly slicesByService = new Map<string, Set<string>>();
  private readonly sliceDef: ResourceDef;

  constructor(
    private readonly registry: Registry,
    private readonly store: Store,
  ) {
    this.sliceDef = registry.find('discovery.k8s.io', 'endpointslices')!;
  }

  start(): void {
    for (const res of ['services', 'pods', 'endpointslices.discovery.k8s.io']) {
      for (const o of this.store.iterate(res)) this.onEvent({ type: 'ADDED', resource: res, rv: 0, object: o });
    }
    this.unsubscribe = this.store.subscribe((e) => this.onEvent(e));
  }

  stop(): void {
    this.unsubscribe?.();
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }

  /** Resolves once every pending change has been reconciled (tests, the CLI's shutdown). */
  async settled(): Promise<void> {
    while (this.dirty.size > 0 || this.scheduled) await new Promise((r) => setImmediate(r));
  }

  private markDirty(ns: string, name: string, at: number): void {
    const k = nsKey(ns, name);
    const prev = this.dirty.get(k);
    if (prev === undefined || at < prev) this.dirty.set(k, at);
    this.scheduled ??= setImmediate(() => {
      this.scheduled = undefined;
      this.flush();
    });
  }

  private onEvent(e: StoreEvent): void {
    try {
      this.route(e);
    } catch (err) {
      // A malformed object written past validation must not take the store's writer down.
      log.warn('EndpointSlice controller skipped an event', { resource: e.resource, name: String(e.object.metadata?.name), err: err instanceof Error ? err : String(err) });
    }
  }

  private route(e: StoreEvent): void {
    const now = Date.now();
    switch (e.resource) {
      case 'services':
        return this.onService(e, now);
      case 'pods':
        return this.onPod(e, now);
      case 'nodes':
        return this.onNode(e, now);
      case 'endpointslices.discovery.k8s.io':
        return this.onSlice(e, now);
    }
  }

  private onService(e: StoreEvent, now: number): void {
    const ns = e.object.metadata.namespace ?? '';
    const name = e.object.metadata.name ?? '';
    const before = selectorOf(e.prev as Service | undefined);
    const after = e.type === 'DELETED' ? undefined : selectorOf(e.object as Service);
    for (const [k, v] of Object.entries(before ?? {})) removeFrom(this.servicesBySelector, pairKey(ns, k, v), name);
    for (const [k, v] of Object.entries(after ?? {})) addTo(this.servicesBySelector, pairKey(ns, k, v), name);
    this.markDirty(ns, name, now);
  }

  private servicesFor(ns: string, labels: Record<string, string> | undefined, into: Set<string>): void {
    for (const [k, v] of Object.entries(labels ?? {})) {
      for (const svcName of this.servicesBySelector.get(pairKey(ns, k, v)) ?? []) {
        if (into.has(svcName)) continue;
        const sel = selectorOf(this.store.get('services', ns, svcName) as Service | undefined);
        if (sel && selects(sel, labels)) into.add(svcName);
      }
    }
  }

  private onPod(e: StoreEvent, now: number): void {
    const ns = e.object.metadata.namespace ?? '';
    const name = e.object.metadata.name ?? '';
    const prev = e.prev as Pod | undefined;
    const cur = e.type === 'DELETED' ? undefined : (e.object as Pod);
    for (const [k, v] of Object.entries(prev?.metadata.labels ?? {})) removeFrom(this.podsByLabel, pairKey(ns, k, v), name);
    for (const [k, v] of Object.entries(cur?.metadata.labels ?? {})) addTo(this.podsByLabel, pairKey(ns, k, v), name);
    if (prev?.spec?.nodeName) removeFrom(this.podsByNode, prev.spec.nodeName, nsKey(ns, name));
    if (cur?.spec?.nodeName) addTo(this.podsByNode, cur.spec.nodeName, nsKey(ns, name));
    const affected = new Set<string>();
    this.servicesFor(ns, prev?.metadata.labels, affected);
    this.servicesFor(ns, cur?.metadata.labels, affected);
    for (const s of affected) this.markDirty(ns, s, now);
  }

  private onNode(e: StoreEvent, now: number): void {
    const zone = (n: KObject | undefined): string | undefined => n?.metadata.labels?.[ZONE_LABEL];
    if (e.type === 'MODIFIED' && zone(e.prev) === zone(e.object)) return;
    const affected = new Map<string, Set<string>>();
    for (const key of this.podsByNode.get(e.object.metadata.name ?? '') ?? []) {
      const [ns, podName] = key.split('/') as [string, string];
      const pod = this.store.get('pods', ns, podName);
      let set = affected.get(ns);
      if (!set) affected.set(ns, (set = new Set()));
      this.servicesFor(ns, pod?.metadata.labels, set);
    }
    for (const [ns, set] of affected) for (const s of set) this.markDirty(ns, s, now);
  }

  private onSlice(e: StoreEvent, now: number): void {
    const managedSvc = (o: KObject | undefined): string | undefined =>
      o && o.metadata.labels?.[MANAGED_BY_LABEL] === CONTROLLER_NAME ? o.metadata.labels?.[SERVICE_NAME_LABEL] : undefined;
    const ns = e.object.metadata.namespace ?? '';
    const name = e.object.metadata.name ?? '';
    const before = managedSvc(e.prev);
    const after = e.type === 'DELETED' ? undefined : managedSvc(e.object);
    if (before !== undefined) removeFrom(this.slicesByService, nsKey(ns, before), name);
    if (after !== undefined) addTo(this.slicesByService, nsKey(ns, after), name);
    // Someone else changed a slice we manage: put it back the way it should be.
    if (!this.writing && (before !== undefined || after !== undefined)) this.markDirty(ns, (after ?? before)!, now);
  }

  private flush(): void {
    const work = [...this.dirty];
    this.dirty.clear();
    this.writing = true;
    try {
      for (const [key, at] of work) {
        const slash = key.indexOf('/');
        try {
          this.reconcile(key.slice(0, slash), key.slice(slash + 1), at);
        } catch (err) {
          log.warn('reconciling EndpointSlices failed', { service: key, err: err instanceof Error ? err : String(err) });
        }
      }
    } finally {
      this.writing = false;
    }
  }

  private selectedPods(ns: string, sel: Record<string, string>): Pod[] {
    let smallest: Set<string> | undefined;
    for (const [k, v] of Object.entries(sel)) {
      const s = this.podsByLabel.get(pairKey(ns, k, v));
      if (!s) return [];
      if (!smallest || s.size < smallest.size) smallest = s;
    }
    const out: Pod[] = [];
    for (const name of smallest ?? []) {
      const p = this.store.get('pods', ns, name) as Pod | undefined;
      if (p && selects(sel, p.metadata.labels)) out.push(p);
    }
    out.sort((a, b) => ((a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1));
    return out;
  }

  private managedSlices(ns: string, svcName: string): EndpointSlice[] {
    const out: EndpointSlice[] = [];
    for (const n of this.slicesByService.get(nsKey(ns, svcName)) ?? []) {
      const s = this.store.get(this.sliceDef.storageKey, ns, n) as EndpointSlice | undefined;
      if (s) out.push(s);
    }
    return out;
  }

  private reconcile(ns: string, name: string, triggerMs: number): void {
    const svc = this.store.get('services', ns, name) as Service | undefined;
    const existing = this.managedSlices(ns, name);
    const sel = selectorOf(svc);
    if (!svc || !sel) {
      for (const s of existing) this.deleteSlice(s);
      return;
    }
    const families = serviceFamilies(svc);
    const pods = this.selectedPods(ns, sel);
    const triggerTime = new Date(triggerMs).toISOString();
    const keep = new Set<string>();
    for (const family of families) {
      const groups = this.desiredGroups(svc, pods, family);
      const mine = existing.filter((s) => s.addressType === family && ownedBy(s, svc));
      const usedHere = this.applyFamily(svc, family, groups, mine, triggerTime);
      for (const n of usedHere) keep.add(n);
    }
    for (const s of existing) if (!keep.has(s.metadata.name ?? '')) this.deleteSlice(s);
  }

  /** Endpoints of one family grouped by their resolved port list. */
  private desiredGroups(svc: Service, pods: Pod[], family: Family): Map<string, { ports: EndpointPort[]; endpoints: Endpoint[] }> {
    const groups = new Map<string, { ports: EndpointPort[]; endpoints: Endpoint[] }>();
    const hints = svc.spec.trafficDistribution !== undefined || svc.metadata.annotations?.[TOPOLOGY_MODE_ANNOTATION] === 'Auto';
    const nodeHints = svc.spec.trafficDistribution === 'PreferSameNode';
    for (const pod of pods) {
      const phase = pod.status?.phase;
      if (phase === 'Succeeded' || phase === 'Failed') continue;
      const ip = podIPs(pod).find((x) => parseIP(x)?.family === family);
      if (!ip) continue;
      const ports = resolvePorts(svc.spec.ports ?? [], pod);
      if (!ports) continue;
      const key = JSON.stringify(ports);
      let g = groups.get(key);
      if (!g) groups.set(key, (g = { ports, endpoints: [] }));
      const serving = isPodReady(pod);
      const terminating = !!pod.metadata.deletionTimestamp;
      const ep: Endpoint = {
        addresses: [parseIP(ip)!.text],
        conditions: { ready: svc.spec.publishNotReadyAddresses === true || (serving && !terminating), serving, terminating },
        targetRef: { kind: 'Pod', namespace: pod.metadata.namespace ?? '', name: pod.metadata.name ?? '', uid: pod.metadata.uid ?? '' },
      };
      const nodeName = pod.spec?.nodeName;
      if (nodeName) {
        ep.nodeName = nodeName;
        const zone = (this.store.get('nodes', undefined, nodeName) as Node | undefined)?.metadata.labels?.[ZONE_LABEL];
        if (zone) {
          ep.zone = zone;
          if (hints) ep.hints = nodeHints ? { forZones: [{ name: zone }], forNodes: [{ name: nodeName }] } : { forZones: [{ name: zone }] };
        }
      }
      g.endpoints.push(ep);
    }
    return groups;
  }

  /** Write the slices of one family; returns the names of the slices that remain. */
  private applyFamily(
    svc: Service,
    family: Family,
    groups: Map<string, { ports: EndpointPort[]; endpoints: Endpoint[] }>,
    mine: EndpointSlice[],
    triggerTime: string,
  ): string[] {
    const kept: string[] = [];
    const unused = new Set(mine);
    for (const [, g] of groups) {
      const candidates = mine.filter((s) => unused.has(s) && deepEqual(s.ports ?? [], g.ports));
      const byAddr = new Map(g.endpoints.map((e) => [e.addresses[0]!, e]));
      const placed = new Set<string>();
      const plans: { slice?: EndpointSlice; endpoints: Endpoint[] }[] = [];
      // Endpoints stay in the slice they are already in.
      for (const s of candidates) {
        const eps: Endpoint[] = [];
        for (const old of s.endpoints ?? []) {
          const a = old.addresses?.[0];
          const want = a !== undefined ? byAddr.get(a) : undefined;
          if (want && !placed.has(a!) && eps.length < MAX_ENDPOINTS) {
            eps.push(want);
            placed.add(a!);
          }
        }
        plans.push({ slice: s, endpoints: eps });
      }
      const rest = g.endpoints.filter((e) => !placed.has(e.addresses[0]!));
      for (const p of plans) {
        while (p.endpoints.length < MAX_ENDPOINTS && rest.length > 0) p.endpoints.push(rest.shift()!);
      }
      while (rest.length > 0) plans.push({ endpoints: rest.splice(0, MAX_ENDPOINTS) });
      for (const p of plans) {
        if (p.endpoints.length === 0 && p.slice) continue; // emptied: deleted by the caller
        const name = this.writeSlice(svc, family, g.ports, p.endpoints, p.slice, triggerTime);
        if (p.slice) unused.delete(p.slice);
        if (name) kept.push(name);
      }
    }
    if (kept.length === 0) {
      // No endpoints of this family: keep (or create) one empty placeholder slice.
      const placeholder = mine.find((s) => (s.endpoints ?? []).length === 0 && (s.ports ?? []).length === 0) ?? mine[0];
      const name = this.writeSlice(svc, family, [], [], placeholder, triggerTime);
      if (name) kept.push(name);
    }
    return kept;
  }

  private writeSlice(
    svc: Service,
    family: Family,
    ports: EndpointPort[],
    endpoints: Endpoint[],
    existing: EndpointSlice | undefined,
    triggerTime: string,
  ): string | undefined {
    const ns = svc.metadata.namespace ?? '';
    const svcName = svc.metadata.name ?? '';
    const labels: Record<string, string> = { ...(svc.metadata.labels ?? {}) };
    delete labels[HEADLESS_LABEL];
    labels[SERVICE_NAME_LABEL] = svcName;
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME;
    if (svc.spec.clusterIP === 'None') labels[HEADLESS_LABEL] = '';
    const owner = { apiVersion: 'v1', kind: 'Service', name: svcName, uid: svc.metadata.uid ?? '', controller: true, blockOwnerDeletion: true };
    const desired = { addressType: family, endpoints, ports };
    if (existing) {
      const same =
        deepEqual(existing.metadata.labels ?? {}, labels) &&
        deepEqual(existing.metadata.ownerReferences ?? [], [owner]) &&
        existing.addressType === family &&
        deepEqual(existing.endpoints ?? [], endpoints) &&
        deepEqual(existing.ports ?? [], ports);
      if (same) return existing.metadata.name;
      const next: KObject = {
        ...existing,
        metadata: {
          ...existing.metadata,
          labels,
          annotations: { ...(existing.metadata.annotations ?? {}), [TRIGGER_TIME_ANNOTATION]: triggerTime },
          ownerReferences: [owner],
        },
        ...desired,
      };
      try {
        return this.registry.update(this.sliceDef, ns, existing.metadata.name ?? '', next).metadata.name;
      } catch (e) {
        if (!(e instanceof ApiError) || e.httpCode !== 404) throw e;
      }
    }
    const created = this.registry.create(this.sliceDef, ns, {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        generateName: `${svcName}-`,
        namespace: ns,
        labels,
        annotations: { [TRIGGER_TIME_ANNOTATION]: triggerTime },
        ownerReferences: [owner],
      },
      ...desired,
    });
    return created.metadata.name;
  }

  private deleteSlice(s: EndpointSlice): void {
    try {
      this.registry.delete(this.sliceDef, s.metadata.namespace, s.metadata.name ?? '');
    } catch (e) {
      if (!(e instanceof ApiError) || e.httpCode !== 404) throw e;
    }
  }
}

function ownedBy(s: EndpointSlice, svc: Service): boolean {
  return (s.metadata.ownerReferences ?? []).some((r) => r.kind === 'Service' && r.uid === svc.metadata.uid);
}

function serviceFamilies(svc: Service): Family[] {
  const fams = (svc.spec.ipFamilies ?? []).filter((f): f is Family => f === 'IPv4' || f === 'IPv6');
  if (fams.length > 0) return fams;
  const primary = parseIP(svc.spec.clusterIP)?.family;
  return [primary ?? 'IPv4'];
}

/** The endpoint ports for one pod, or undefined when a named targetPort does not resolve. */
export function resolvePorts(svcPorts: readonly ServicePortSpec[], pod: Pod): EndpointPort[] | undefined {
  const out: EndpointPort[] = [];
  for (const sp of svcPorts) {
    const protocol = sp.protocol ?? 'TCP';
    let port: number | undefined;
    const tp = sp.targetPort ?? sp.port;
    if (typeof tp === 'number') port = tp;
    else {
      for (const c of pod.spec?.containers ?? []) {
        const cp = (c.ports ?? []).find((p) => p.name === tp && (p.protocol ?? 'TCP') === protocol);
        if (cp) {
          port = cp.containerPort;
          break;
        }
      }
      if (port === undefined) return undefined;
    }
    const ep: EndpointPort = { name: sp.name ?? '', protocol, port };
    if (sp.appProtocol !== undefined) ep.appProtocol = sp.appProtocol;
    out.push(ep);
  }
  return out;
}
