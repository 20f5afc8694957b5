/**
 * The change tracker: kube-proxy's ServiceChangeTracker and EndpointsChangeTracker in one.
 * Informer events (Services, EndpointSlices, this Node, ServiceCIDRs) go in; takeSnapshot() hands out an
 * immutable per-family picture of now plus the exact set of service ports that differ from the
 * previous picture. Events between two snapshots merge: add-then-delete, or an update that
 * changes nothing the proxy uses, reports nothing.
 *
 * Cost model: an event re-parses only the object it carries and compares only that Service's
 * inputs; a snapshot re-merges only Services whose inputs changed and shares every unchanged
 * ServicePort and endpoint list with the previous snapshot (persistent sorted maps: a change
 * copies a few tree nodes, not the map).
 *
 * Must never throw on malformed objects, and a bad object must never affect other Services.
 * In-memory only: no I/O besides the logger.
 */
import type { V1Node } from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { SortedMap, type SortedMapEditor } from '../util/sorted-map.js';
import { endpointsByPort, parseEndpointSlice, type ParsedSlice } from './endpoints.js';
import { deepEqual } from './equal.js';
import { parseNode } from './node.js';
import { serviceIdProblem, sliceIdProblem } from './names.js';
import { objectName, parseService, type ParsedService } from './service.js';
import { parseServiceCIDR } from './servicecidr.js';
import { field, str, stringMap } from './untrusted.js';
import type { ChangeSet, ClusterSnapshot, Endpoint, IPFamily, NodeInfo, ServicePort, ServicePortKey } from './types.js';

export const ANNOTATION_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time';

export interface TrackerOptions {
  /**
   * Trigger times at or before this moment are not reported (default: construction time): as
   * kube-proxy, changes made before the proxy started are not "network programming latency".
   */
  startTime?: Date;
  nodeName: string;
  families: readonly IPFamily[];
  log?: Logger;
  /**
   * Called once per object version with problems, where they are logged ("services" or
   * "endpointslices"): feeds ferry_invalid_objects_total.
   */
  onInvalid?: (resource: 'services' | 'endpointslices') => void;
  /** KubeProxyConfiguration.serviceProxyName ("" or unset: Services without the label are ours). */
  serviceProxyName?: string;
}

/** Everything the tracker knows about one Service name: its object (if any) and its slices. */
interface ServiceState {
  parsed: ParsedService | null;
  slices: Map<string, ParsedSlice>;
  /** Inputs as of the last snapshot, to tell real changes from churn. */
  committedParsed: ParsedService | null;
  committedSlices: Map<string, ParsedSlice>;
  triggerTimes: Date[];
}

const NO_PORTS: ParsedService = { ports: [], problems: [] };
const EMPTY_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);
const FAMILIES: readonly IPFamily[] = [4, 6];

/** The list is frozen; its endpoints are readonly by type only (freezing each one costs a hidden class per object). */
function freezeEndpoints(eps: readonly Endpoint[]): readonly Endpoint[] {
  if (eps.length === 0) return EMPTY_ENDPOINTS;
  return Object.isFrozen(eps) ? eps : Object.freeze(eps);
}

function sliceInputsEqual(a: ParsedSlice, b: ParsedSlice): boolean {
  return a === b || (a.family === b.family && deepEqual(a.ports, b.ports) && deepEqual(a.byPort, b.byPort));
}

/** A port's endpoints into the maps when they differ from what the maps hold; true if they did. */
function setEndpoints(maps: NextMaps, key: ServicePortKey, eps: readonly Endpoint[], changed: Set<ServicePortKey>): boolean {
  const old = maps.endpointsOf(key);
  if (old && deepEqual(old, eps)) return false;
  maps.setEndpoints(key, freezeEndpoints(eps));
  changed.add(key);
  return true;
}

const NO_SERVICE_PORTS: readonly ServicePort[] = [];
/** A parsed Service's ports by `portName/protocol` (both families), built once per parsed object. */
const portIndex = new WeakMap<ParsedService, Map<string, ServicePort[]>>();
function portsById(parsed: ParsedService): ReadonlyMap<string, readonly ServicePort[]> {
  let m = portIndex.get(parsed);
  if (!m) {
    m = new Map();
    for (const sp of parsed.ports) {
      const id = `${sp.portName}/${sp.protocol}`;
      const list = m.get(id);
      if (list) list.push(sp);
      else m.set(id, [sp]);
    }
    portIndex.set(parsed, m);
  }
  return m;
}

/** `name/protocol` of every port of a slice that differs (by object) between the two maps. */
function touchedSlicePorts(now: ReadonlyMap<string, ParsedSlice>, before: ReadonlyMap<string, ParsedSlice>): Set<string> {
  const out = new Set<string>();
  const add = (s: ParsedSlice): void => {
    for (const p of s.ports) out.add(`${p.name}/${p.protocol}`);
  };
  for (const [name, s] of now) {
    const o = before.get(name);
    if (o === s) continue;
    add(s);
    if (o) add(o);
  }
  for (const [name, o] of before) if (!now.has(name)) add(o);
  return out;
}

function slicesEqual(a: ReadonlyMap<string, ParsedSlice>, b: ReadonlyMap<string, ParsedSlice>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, s] of a) {
    const o = b.get(name);
    if (!o || !sliceInputsEqual(s, o)) return false;
  }
  return true;
}

/**
 * Whether a Service's parsed object holds nothing a snapshot shows. Skipped Services (ExternalName,
 * headless, no ClusterIP yet, invalid) parse to no ports; their state is kept no longer than a
 * deleted Service's, or each one would stay for its lifetime and each proxied → skipped → deleted
 * sequence for the process's.
 */
function noPorts(p: ParsedService | null): boolean {
  return p === null || p.ports.length === 0;
}

function portsEqual(a: ParsedService | null, b: ParsedService | null): boolean {
  return deepEqual((a ?? NO_PORTS).ports, (b ?? NO_PORTS).ports);
}

interface ObjectId {
  readonly namespace: string;
  readonly name: string;
}

/** Longer than any valid `namespace/name` (63 + 1 + 253): only an invalid name is cut. */
const MAX_DISPLAY_NAME = 320;

/**
 * `namespace/name` for logs and problems(), also of an object whose name is invalid; bounded, so
 * a hostile name cannot make a megabyte key or log line.
 */
function displayName(id: ObjectId): string {
  const s = `${id.namespace}/${id.name}`;
  return s.length > MAX_DISPLAY_NAME ? `${s.slice(0, MAX_DISPLAY_NAME)}…` : s;
}

function triggerTime(obj: unknown): Date | undefined {
  const v = stringMap(field(field(obj, 'metadata'), 'annotations'))[ANNOTATION_TRIGGER_TIME];
  if (v === undefined) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function emptySnapshot(family: IPFamily, node: NodeInfo): ClusterSnapshot {
  return { family, services: SortedMap.empty(), endpoints: SortedMap.empty(), node };
}

/**
 * The next snapshot's maps: new versions of the previous snapshot's persistent maps, made on
 * first write only. A family (or a map) nothing changed in keeps sharing the previous one, which
 * stays untouched; a changed one copies only the tree paths it changes.
 */
class NextMaps {
  private services: SortedMapEditor<ServicePort> | undefined;
  private endpoints: SortedMapEditor<readonly Endpoint[]> | undefined;
  private readonly prevServices: SortedMap<ServicePort>;
  private readonly prevEndpoints: SortedMap<readonly Endpoint[]>;

  constructor(prev: ClusterSnapshot) {
    // Snapshots are always made here, so these are SortedMaps; from() is a no-op for them.
    this.prevServices = SortedMap.from(prev.services);
    this.prevEndpoints = SortedMap.from(prev.endpoints);
  }

  service(key: ServicePortKey): ServicePort | undefined {
    return (this.services ?? this.prevServices).get(key);
  }

  endpointsOf(key: ServicePortKey): readonly Endpoint[] | undefined {
    return (this.endpoints ?? this.prevEndpoints).get(key);
  }

  setService(key: ServicePortKey, sp: ServicePort): void {
    (this.services ??= this.prevServices.edit()).set(key, sp);
  }

  setEndpoints(key: ServicePortKey, eps: readonly Endpoint[]): void {
    (this.endpoints ??= this.prevEndpoints.edit()).set(key, eps);
  }

  delete(key: ServicePortKey): void {
    if (this.service(key) !== undefined) (this.services ??= this.prevServices.edit()).delete(key);
    if (this.endpointsOf(key) !== undefined) (this.endpoints ??= this.prevEndpoints.edit()).delete(key);
  }

  finish(): { services: SortedMap<ServicePort>; endpoints: SortedMap<readonly Endpoint[]> } {
    return { services: this.services?.finish() ?? this.prevServices, endpoints: this.endpoints?.finish() ?? this.prevEndpoints };
  }
}

export class ChangeTracker {
  private readonly nodeName: string;
  private readonly families: readonly IPFamily[];
  private readonly log: Logger;
  private readonly onInvalid: TrackerOptions['onInvalid'];

  private readonly states = new Map<string, ServiceState>();
  /** `namespace/sliceName` → the Service key the slice is filed under. */
  private readonly sliceOwner = new Map<string, string>();
  private readonly dirty = new Set<string>();

  private node: NodeInfo;
  private committedNode: NodeInfo;
  private snapshots: Record<IPFamily, ClusterSnapshot>;

  /** ServiceCIDR name → its ranges; `cidrsDirty` until the next snapshot carries them. */
  private readonly serviceCIDRs = new Map<string, readonly { readonly cidr: string; readonly family: IPFamily }[]>();
  private cidrsDirty = false;

  private readonly problemMap = new Map<string, readonly string[]>();
  /** Object id → the version whose problems were last logged (log once per version). */
  private readonly loggedVersion = new Map<string, string>();

  private readonly startTime: number;
  private readonly serviceProxyName: string;

  private sinceStart(t: Date | undefined): Date | undefined {
    return t && t.getTime() > this.startTime ? t : undefined;
  }

  constructor(opts: TrackerOptions) {
    this.startTime = (opts.startTime ?? new Date()).getTime();
    this.nodeName = opts.nodeName;
    this.serviceProxyName = opts.serviceProxyName ?? '';
    this.families = [...new Set(opts.families)].filter((f) => f === 4 || f === 6);
    this.log = opts.log ?? logger('model');
    this.onInvalid = opts.onInvalid;
    this.node = parseNode(undefined, this.nodeName);
    this.committedNode = this.node;
    this.snapshots = { 4: emptySnapshot(4, this.node), 6: emptySnapshot(6, this.node) };
  }

  upsertService(svc: unknown): void {
    const id = objectName(svc);
    let parsed: ParsedService;
    try {
      parsed = parseService(svc, this.families, this.serviceProxyName);
    } catch (err) {
      // parseService is written not to throw; this is the last line of defence.
      parsed = { ports: [], problems: [`unexpected parse failure: ${String(err)}`] };
    }
    this.noteProblems('Service', id, svc, parsed.problems);
    // An invalid name is reported by parseService; it never becomes a key.
    if (!id || serviceIdProblem(id.namespace, id.name) !== undefined) return;
    const key = `${id.namespace}/${id.name}`;
    const st = this.state(key);
    st.parsed = parsed;
    const t = this.sinceStart(triggerTime(svc));
    if (this.touch(key, st) && t) st.triggerTimes.push(t);
  }

  deleteService(svc: unknown): void {
    const id = objectName(svc);
    if (!id) return;
    this.forget('Service', id);
    if (serviceIdProblem(id.namespace, id.name) !== undefined) return;
    const key = `${id.namespace}/${id.name}`;
    const st = this.states.get(key);
    if (!st) return;
    st.parsed = null;
    this.touch(key, st);
  }

  upsertEndpointSlice(slice: unknown): void {
    let parsed: ParsedSlice;
    try {
      parsed = parseEndpointSlice(slice, this.nodeName);
    } catch (err) {
      const meta = field(slice, 'metadata');
      parsed = {
        namespace: str(meta, 'namespace') ?? '',
        name: str(meta, 'name') ?? '',
        serviceName: '',
        family: null,
        ports: [],
        byPort: [],
        problems: [`unexpected parse failure: ${String(err)}`],
      };
    }
    const id = parsed.namespace && parsed.name ? { namespace: parsed.namespace, name: parsed.name } : undefined;
    this.noteProblems('EndpointSlice', id, slice, parsed.problems);
    if (!id || sliceIdProblem(id.namespace, id.name) !== undefined) return;
    const sliceId = `${parsed.namespace}/${parsed.name}`;
    const owner = parsed.family !== null && parsed.serviceName ? `${parsed.namespace}/${parsed.serviceName}` : undefined;
    const prevOwner = this.sliceOwner.get(sliceId);
    if (prevOwner !== undefined && prevOwner !== owner) this.removeSlice(sliceId, prevOwner, parsed.name);
    if (owner === undefined) return; // ignored slice (headless, FQDN, unowned): as if deleted
    this.sliceOwner.set(sliceId, owner);
    const st = this.state(owner);
    st.slices.set(parsed.name, parsed);
    const t = this.sinceStart(triggerTime(slice));
    if (this.touch(owner, st) && t) st.triggerTimes.push(t);
  }

  deleteEndpointSlice(slice: unknown): void {
    const meta = field(slice, 'metadata');
    const namespace = str(meta, 'namespace');
    const name = str(meta, 'name');
    if (!namespace || !name) return;
    this.forget('EndpointSlice', { namespace, name });
    if (sliceIdProblem(namespace, name) !== undefined) return;
    const sliceId = `${namespace}/${name}`;
    const owner = this.sliceOwner.get(sliceId);
    if (owner !== undefined) this.removeSlice(sliceId, owner, name);
  }

  setNode(node: unknown): void {
    // The Node deleted: keep its last addresses, zone and podCIDRs. kube-proxy never drops them
    // (its NodeManager exits and leaves the rules as they are; older proxiers kept IPs and
    // podCIDRs from start-up); emptied, `primary` NodePorts would open on every address and
    // detect-local NodeCIDR would lose its detector while the node's pods still run.
    if (node === undefined || node === null) return;
    // parseNode validates every field it reads; the type is a hint only.
    const next = parseNode(node as V1Node | undefined, this.nodeName);
    // Only what the planner reads: as kube-proxy's NodeTopologyConfig, which passes on the zone
    // label alone, another label's change (a controller's heartbeat) re-plans nothing.
    const same =
      deepEqual(next.addresses, this.committedNode.addresses) &&
      next.zone === this.committedNode.zone &&
      deepEqual(next.podCIDRs ?? [], this.committedNode.podCIDRs ?? []);
    this.node = same ? this.committedNode : next;
  }

  upsertServiceCIDR(obj: unknown): void {
    const parsed = parseServiceCIDR(obj);
    if (parsed.problems.length > 0) {
      // Not counted in ferry_invalid_objects_total's services/endpointslices: logged once per version.
      const version = `${str(field(obj, 'metadata'), 'resourceVersion') ?? ''}/${parsed.problems.join('\n')}`;
      const id = `ServiceCIDR ${parsed.name || '<unnamed>'}`;
      if (this.loggedVersion.get(id) !== version) {
        this.loggedVersion.set(id, version);
        this.log.warn('ServiceCIDR has invalid fields; skipping them', { object: parsed.name || '<unnamed>', problems: parsed.problems });
      }
    }
    if (!parsed.name) return;
    const before = this.serviceCIDRs.get(parsed.name);
    if (before && deepEqual(before, parsed.cidrs)) return;
    this.serviceCIDRs.set(parsed.name, parsed.cidrs);
    this.cidrsDirty = true;
  }

  deleteServiceCIDR(obj: unknown): void {
    const name = str(field(obj, 'metadata'), 'name');
    if (!name) return;
    this.loggedVersion.delete(`ServiceCIDR ${name}`);
    if (this.serviceCIDRs.delete(name)) this.cidrsDirty = true;
  }

  /** The union of every ServiceCIDR's ranges of one family, sorted; undefined when none. */
  private cidrsOf(family: IPFamily): readonly string[] | undefined {
    const out = new Set<string>();
    for (const list of this.serviceCIDRs.values()) for (const c of list) if (c.family === family) out.add(c.cidr);
    return out.size === 0 ? undefined : Object.freeze([...out].sort());
  }

  pending(): boolean {
    return this.dirty.size > 0 || this.node !== this.committedNode || this.cidrsDirty;
  }

  takeSnapshot(): { snapshots: Record<IPFamily, ClusterSnapshot>; changes: Record<IPFamily, ChangeSet>; triggerTimes: Date[] } {
    const cidrsChanged = this.cidrsDirty;
    this.cidrsDirty = false;
    const nodeChanged = this.node !== this.committedNode || cidrsChanged;
    if (this.node !== this.committedNode) this.committedNode = Object.freeze(this.node);
    const node = this.committedNode;
    const triggerTimes: Date[] = [];
    const changed: Record<IPFamily, Set<ServicePortKey>> = { 4: new Set(), 6: new Set() };
    const maps: Record<IPFamily, NextMaps> = { 4: new NextMaps(this.snapshots[4]), 6: new NextMaps(this.snapshots[6]) };
    for (const key of this.dirty) {
      const st = this.states.get(key);
      if (!st) continue;
      let any = false;
      for (const f of this.families) {
        if (this.rebuild(st, f, maps[f], changed[f])) any = true;
      }
      if (any) triggerTimes.push(...st.triggerTimes);
      st.triggerTimes = [];
      st.committedParsed = st.parsed;
      st.committedSlices = new Map(st.slices);
      if (noPorts(st.parsed) && st.slices.size === 0) this.states.delete(key);
    }
    this.dirty.clear();

    const changes = {} as Record<IPFamily, ChangeSet>;
    const snapshots = {} as Record<IPFamily, ClusterSnapshot>;
    for (const f of FAMILIES) {
      const prev = this.snapshots[f];
      if (changed[f].size === 0 && !nodeChanged) snapshots[f] = prev;
      else {
        const serviceCIDRs = cidrsChanged ? this.cidrsOf(f) : prev.serviceCIDRs;
        const base = { family: f, ...maps[f].finish(), node };
        snapshots[f] = Object.freeze(serviceCIDRs ? { ...base, serviceCIDRs } : base);
      }
      changes[f] = { changed: changed[f], nodeChanged };
    }
    this.snapshots = snapshots;
    return { snapshots, changes, triggerTimes };
  }

  problems(): ReadonlyMap<string, readonly string[]> {
    return this.problemMap;
  }

  /**
   * Recompute one Service's ports and endpoints in one family into the (already copied) maps.
   * Unchanged objects are kept as they were, so consumers can compare with ===.
   */
  private rebuild(st: ServiceState, family: IPFamily, maps: NextMaps, changed: Set<ServicePortKey>): boolean {
    let any = false;
    const now = new Set<ServicePortKey>();
    let byPort: ReturnType<typeof endpointsByPort> | undefined;
    // Only slices changed (the Service object is the one committed): a port no changed slice
    // names, before or after, keeps its endpoints. A Service of thousands of ports whose slices
    // arrive a few at a time then costs per sync what those slices hold, not all its ports.
    const sameService = st.parsed === st.committedParsed && st.parsed !== null;
    if (sameService) {
      const touched = touchedSlicePorts(st.slices, st.committedSlices);
      const ports = portsById(st.parsed!);
      const byId = endpointsByPort(st.slices.values(), family, touched);
      for (const id of touched) {
        for (const sp of ports.get(id) ?? NO_SERVICE_PORTS) {
          if (sp.family === family && setEndpoints(maps, sp.key, byId.of(sp.portName, sp.protocol), changed)) any = true;
        }
      }
      return any; // the same ports: none went away, none changed its spec
    }
    for (const sp of (st.parsed ?? NO_PORTS).ports) {
      if (sp.family !== family) continue;
      now.add(sp.key);
      const oldSp = maps.service(sp.key);
      if (!oldSp || !deepEqual(oldSp, sp)) {
        maps.setService(sp.key, Object.freeze(sp));
        changed.add(sp.key);
        any = true;
      }
      byPort ??= endpointsByPort(st.slices.values(), family);
      if (setEndpoints(maps, sp.key, byPort.of(sp.portName, sp.protocol), changed)) any = true;
    }
    for (const sp of (st.committedParsed ?? NO_PORTS).ports) {
      if (sp.family !== family || now.has(sp.key)) continue;
      maps.delete(sp.key);
      changed.add(sp.key);
      any = true;
    }
    return any;
  }

  private state(key: string): ServiceState {
    let st = this.states.get(key);
    if (!st) {
      st = { parsed: null, slices: new Map(), committedParsed: null, committedSlices: new Map(), triggerTimes: [] };
      this.states.set(key, st);
    }
    return st;
  }

  private removeSlice(sliceId: string, owner: string, name: string): void {
    this.sliceOwner.delete(sliceId);
    const st = this.states.get(owner);
    if (!st) return;
    st.slices.delete(name);
    this.touch(owner, st);
  }

  /** Re-evaluate whether a Service's inputs differ from the last snapshot; returns that. */
  private touch(key: string, st: ServiceState): boolean {
    const differs = !portsEqual(st.parsed, st.committedParsed) || !slicesEqual(st.slices, st.committedSlices);
    if (differs) this.dirty.add(key);
    else {
      this.dirty.delete(key);
      st.triggerTimes = [];
      // Not dirty: the committed slices equal the (empty) current ones.
      if (noPorts(st.parsed) && noPorts(st.committedParsed) && st.slices.size === 0) this.states.delete(key);
    }
    return differs;
  }

  private noteProblems(kind: 'Service' | 'EndpointSlice', id: ObjectId | undefined, obj: unknown, problems: readonly string[]): void {
    const object = id ? displayName(id) : '<unnamed>';
    const objId = `${kind} ${object}`;
    if (problems.length === 0) {
      this.problemMap.delete(objId);
      this.loggedVersion.delete(objId);
      return;
    }
    this.problemMap.set(objId, problems);
    const meta = field(obj, 'metadata');
    const version = `${str(meta, 'uid') ?? ''}/${str(meta, 'resourceVersion') ?? ''}/${problems.join('\n')}`;
    if (this.loggedVersion.get(objId) === version) return;
    this.loggedVersion.set(objId, version);
    this.onInvalid?.(kind === 'Service' ? 'services' : 'endpointslices');
    this.log.warn(`${kind} has invalid fields; skipping what they affect`, { object, problems });
  }

  private forget(kind: 'Service' | 'EndpointSlice', id: ObjectId): void {
    const objId = `${kind} ${displayName(id)}`;
    this.problemMap.delete(objId);
    this.loggedVersion.delete(objId);
  }
}
