/**
 * EndpointSlices → endpoints per service port, as kube-proxy's EndpointSliceCache merges them:
 * all slices of a Service (label kubernetes.io/service-name, same namespace), per address
 * family, matched to a service port by port name AND protocol, deduplicated by ip:port.
 * Input is untrusted; bad entries are skipped with a problem string. Pure: no I/O, no logging.
 */
import { parseIP, specialIPClass } from './addr.js';
import { isDNSLabel, sliceIdProblem } from './names.js';
import { Problems, arr, field, isInt, isRecord, show, str, stringMap } from './untrusted.js';
import type { Endpoint, IPFamily, Protocol } from './types.js';

export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';

/** One endpoint of a slice, before it is crossed with the slice's ports. */
export type SliceEndpoint = Omit<Endpoint, 'port'>;

export interface SlicePort {
  readonly name: string;
  readonly protocol: Protocol;
  readonly port: number;
}

export interface ParsedSlice {
  readonly namespace: string;
  /** The slice's own name (merge order and identity). */
  readonly name: string;
  /** Owning Service (label kubernetes.io/service-name); "" when missing. */
  readonly serviceName: string;
  /** Address family; null when the slice is ignored (FQDN, unknown type, headless, unowned). */
  readonly family: IPFamily | null;
  readonly ports: readonly SlicePort[];
  /**
   * The slice's endpoints crossed with each of its ports (byPort[i] for ports[i]): deduplicated
   * by address (`replaces` picks the copy), sorted by address, frozen.
   * These Endpoint objects are the ones the snapshot hands to the planner — a Service with one
   * slice shares them instead of copying them.
   */
  readonly byPort: readonly (readonly Endpoint[])[];
  readonly problems: readonly string[];
}

const PROTOCOLS: ReadonlySet<string> = new Set(['TCP', 'UDP', 'SCTP']);
const NO_HINTS: readonly string[] = Object.freeze([]);

/** Sorted, deduplicated non-empty names from hints.forZones / hints.forNodes. */
function hintNames(list: readonly unknown[] | undefined, at: string, problems: Problems): readonly string[] {
  if (!list || list.length === 0) return NO_HINTS;
  const names = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const n = field(list[i], 'name');
    if (typeof n === 'string' && n !== '') names.add(n);
    else problems.add(`${at}[${i}].name: ${show(n)} invalid, ignored`);
  }
  return names.size === 0 ? NO_HINTS : Object.freeze([...names].sort().map(intern));
}

/**
 * Node and zone names repeat across every endpoint of the cluster: one string per distinct name,
 * not one per endpoint. The table only grows with distinct names (nodes and zones), and is
 * bounded so hostile input cannot grow it without limit.
 */
const interned = new Map<string, string>();
const INTERN_LIMIT = 100_000;
export function intern(s: string): string {
  if (s === '') return '';
  const had = interned.get(s);
  if (had !== undefined) return had;
  if (interned.size < INTERN_LIMIT) interned.set(s, s);
  return s;
}

/**
 * Every endpoint object is built by these two functions, always with the same fields in the same
 * order: V8 then gives all of them one hidden class. (Spreading or freezing them one by one gave
 * each of 100,000 endpoints a hidden class of its own — a quarter of the heap at 10k × 10.)
 */
function sliceEndpoint(
  ip: string,
  v4: number,
  ready: boolean,
  serving: boolean,
  terminating: boolean,
  nodeName: string,
  zone: string,
  zoneHints: readonly string[],
  nodeHints: readonly string[],
  isLocal: boolean,
): SliceEndpoint {
  return { ip, v4, ready, serving, terminating, nodeName, zone, zoneHints, nodeHints, isLocal };
}

export function withPort(e: SliceEndpoint, port: number): Endpoint {
  return {
    ip: e.ip,
    v4: e.v4,
    port,
    ready: e.ready,
    serving: e.serving,
    terminating: e.terminating,
    nodeName: e.nodeName,
    zone: e.zone,
    zoneHints: e.zoneHints,
    nodeHints: e.nodeHints,
    isLocal: e.isLocal,
  };
}

function cond(conditions: unknown, name: string, dflt: boolean): boolean {
  const v = field(conditions, name);
  return typeof v === 'boolean' ? v : dflt;
}

/**
 * Parse one slice for this node. Conditions: ready = ready ?? true, serving = serving ?? ready,
 * terminating = terminating ?? false. Endpoints without addresses are skipped; addresses[0] is
 * used, and must be of the slice's address family. A namespace or name the API server would
 * refuse, or a service-name label no Service can carry as its name, ignores the slice with a
 * problem (names.ts).
 */
export function parseEndpointSlice(slice: unknown, nodeName: string): ParsedSlice {
  const problems = new Problems();
  const meta = field(slice, 'metadata');
  const namespace = str(meta, 'namespace') ?? '';
  const name = str(meta, 'name') ?? '';
  const labels = stringMap(field(meta, 'labels'));
  const serviceName = labels[LABEL_SERVICE_NAME] ?? '';
  const ignored = (family: IPFamily | null = null): ParsedSlice => ({
    namespace,
    name,
    serviceName,
    family,
    ports: [],
    byPort: [],
    problems: problems.result(),
  });
  if (!namespace || !name) {
    problems.add('metadata: namespace and name must be non-empty strings');
    return ignored();
  }
  const badId = sliceIdProblem(namespace, name);
  if (badId) {
    problems.add(`${badId}; slice ignored`);
    return ignored();
  }
  if (!serviceName) return ignored(); // not owned by a Service: not ours to proxy
  // The owner's key is built from it: no Service can have a name that is no Service name.
  if (!isDNSLabel(serviceName)) {
    problems.add(`metadata.labels["${LABEL_SERVICE_NAME}"]: ${show(serviceName)} is not a valid Service name; slice ignored`);
    return ignored();
  }
  if (Object.prototype.hasOwnProperty.call(labels, LABEL_HEADLESS)) return ignored();
  const addressType = field(slice, 'addressType');
  let family: IPFamily;
  if (addressType === 'IPv4') family = 4;
  else if (addressType === 'IPv6') family = 6;
  else {
    if (addressType !== 'FQDN') problems.add(`addressType: ${show(addressType)} unknown`);
    return ignored();
  }

  const ports: SlicePort[] = [];
  const portsRaw = field(slice, 'ports');
  if (portsRaw !== undefined && portsRaw !== null && !Array.isArray(portsRaw)) {
    problems.add(`ports: ${show(portsRaw)} is not an array`);
  }
  const portList = Array.isArray(portsRaw) ? portsRaw : [];
  for (let i = 0; i < portList.length; i++) {
    const p = portList[i];
    if (!isRecord(p)) {
      problems.add(`ports[${i}]: ${show(p)} is not an object`);
      continue;
    }
    const pname = field(p, 'name');
    // kube-proxy ignores ports with a nil name; the controller always sets "" for unnamed ports.
    if (typeof pname !== 'string') {
      problems.add(`ports[${i}].name: ${show(pname)} is not a string`);
      continue;
    }
    const protoRaw = field(p, 'protocol');
    const protocol = protoRaw === undefined || protoRaw === null ? 'TCP' : protoRaw;
    if (typeof protocol !== 'string' || !PROTOCOLS.has(protocol)) {
      problems.add(`ports[${i}].protocol: ${show(protoRaw)} unknown`);
      continue;
    }
    const port = field(p, 'port');
    if (!isInt(port) || port < 1 || port > 65535) {
      problems.add(`ports[${i}].port: ${show(port)} out of range`);
      continue;
    }
    ports.push({ name: pname, protocol: protocol as Protocol, port });
  }

  const endpoints: SliceEndpoint[] = [];
  const epsRaw = field(slice, 'endpoints');
  if (epsRaw !== undefined && epsRaw !== null && !Array.isArray(epsRaw)) {
    problems.add(`endpoints: ${show(epsRaw)} is not an array`);
  }
  const epList = Array.isArray(epsRaw) ? epsRaw : [];
  for (let i = 0; i < epList.length; i++) {
    const e = epList[i];
    if (!isRecord(e)) {
      problems.add(`endpoints[${i}]: ${show(e)} is not an object`);
      continue;
    }
    const addrs = arr(e, 'addresses');
    if (!addrs || addrs.length === 0) continue; // kube-proxy skips these silently-ish, so do we
    const ip = parseIP(addrs[0]);
    if (!ip) {
      problems.add(`endpoints[${i}].addresses[0]: ${show(addrs[0])} is not a valid IP`);
      continue;
    }
    if (ip.family !== family) {
      problems.add(`endpoints[${i}].addresses[0]: ${ip.ip} is not ${addressType}`);
      continue;
    }
    // As the API server's ValidateEndpointIP (and stricter: multicast, broadcast): traffic must
    // never be sent to the node's own loopback or a link-local neighbour in a Service's name.
    const special = specialIPClass(ip.ip);
    if (special) {
      problems.add(`endpoints[${i}].addresses[0]: ${ip.ip} is ${special}, endpoint ignored`);
      continue;
    }
    const conditions = field(e, 'conditions');
    const ready = cond(conditions, 'ready', true);
    const epNode = str(e, 'nodeName') ?? '';
    const hints = field(e, 'hints');
    endpoints.push(
      sliceEndpoint(
        ip.ip,
        ip.v4,
        ready,
        cond(conditions, 'serving', ready),
        cond(conditions, 'terminating', false),
        intern(epNode),
        intern(str(e, 'zone') ?? ''),
        hintNames(arr(hints, 'forZones'), `endpoints[${i}].hints.forZones`, problems),
        hintNames(arr(hints, 'forNodes'), `endpoints[${i}].hints.forNodes`, problems),
        nodeName !== '' && epNode === nodeName,
      ),
    );
  }
  const byPort = ports.map((p) => portEndpoints(endpoints, p.port));
  return { namespace, name, serviceName, family, ports, byPort, problems: problems.result() };
}

const NO_ENDPOINTS: readonly Endpoint[] = Object.freeze([]);

/**
 * Whether `e` replaces `prev` for the same address. As kube-proxy (EndpointSliceCache.addEndpoints):
 * a copy that is not terminating wins over a terminating one — a pod network may reuse a
 * terminating pod's IP before its Pod object is gone, and the running pod must get the traffic.
 * Between copies alike in that, kube-proxy's pick is its map order (undefined); ferry keeps the
 * local copy, then the first.
 */
function replaces(prev: Endpoint, e: { isLocal: boolean; terminating: boolean }): boolean {
  if (prev.terminating !== e.terminating) return prev.terminating;
  return !prev.isLocal && e.isLocal;
}

function portEndpoints(eps: readonly SliceEndpoint[], port: number): readonly Endpoint[] {
  if (eps.length === 0) return NO_ENDPOINTS;
  // The common case: distinct addresses — sorted as they are, without a Map (a duplicate
  // address falls through to the merge below, where `replaces` picks the copy).
  const out: Endpoint[] = [];
  let ordered = true;
  for (let i = 0; i < eps.length; i++) {
    out.push(withPort(eps[i]!, port));
    if (i > 0 && !(eps[i - 1]!.ip < eps[i]!.ip)) ordered = false;
  }
  if (!ordered) out.sort(compareEndpoints);
  let distinct = true;
  for (let i = 1; i < out.length && distinct; i++) distinct = out[i - 1]!.ip !== out[i]!.ip;
  if (distinct) return Object.freeze(out);
  const found = new Map<string, Endpoint>();
  for (const e of eps) {
    const prev = found.get(e.ip);
    if (prev && !replaces(prev, e)) continue;
    found.set(e.ip, withPort(e, port));
  }
  return Object.freeze([...found.values()].sort(compareEndpoints));
}

function byName(a: ParsedSlice, b: ParsedSlice): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

export function compareEndpoints(a: { ip: string; port: number }, b: { ip: string; port: number }): number {
  if (a.ip !== b.ip) return a.ip < b.ip ? -1 : 1;
  return a.port - b.port;
}

/**
 * The endpoints of one service port in one family, from all slices of its Service. Slices are
 * visited in name order; of the copies of an ip:port, one that is not terminating wins, then a
 * local one, then the first (`replaces`). Sorted by ip, then port.
 */
export function mergeEndpoints(
  slices: Iterable<ParsedSlice>,
  family: IPFamily,
  portName: string,
  protocol: Protocol,
): readonly Endpoint[] {
  return endpointsByPort(slices, family).of(portName, protocol);
}

/**
 * mergeEndpoints for every port of a Service at once: the slices are indexed by port once, so
 * a Service with P ports in slices of P ports each costs O(P), not O(P²) (three hostile
 * Services of 5,000 ports took most of a second to merge port by port). `only`: the
 * `name/protocol` ids asked for (the others are not indexed).
 */
export function endpointsByPort(slices: Iterable<ParsedSlice>, family: IPFamily, only?: ReadonlySet<string>): { of(portName: string, protocol: Protocol): readonly Endpoint[] } {
  const ordered = [...slices].filter((s) => s.family === family).sort(byName);
  // `name/protocol` → the lists of every slice port that matches, in slice name order.
  const index = new Map<string, (readonly Endpoint[])[]>();
  for (const s of ordered) {
    for (let i = 0; i < s.ports.length; i++) {
      const p = s.ports[i]!;
      if (s.byPort[i]!.length === 0) continue;
      const id = `${p.name}/${p.protocol}`;
      if (only && !only.has(id)) continue;
      const lists = index.get(id);
      if (lists) lists.push(s.byPort[i]!);
      else index.set(id, [s.byPort[i]!]);
    }
  }
  return { of: (portName, protocol) => mergeLists(index.get(`${portName}/${protocol}`)) };
}

function mergeLists(lists: readonly (readonly Endpoint[])[] | undefined): readonly Endpoint[] {
  if (lists === undefined || lists.length === 0) return NO_ENDPOINTS;
  // The common case: one slice, one matching port — its list already is the answer.
  if (lists.length === 1) return lists[0]!;
  const found = new Map<string, Endpoint>();
  for (const list of lists) {
    for (const e of list) {
      const id = `${e.ip}|${e.port}`;
      const prev = found.get(id);
      if (prev && !replaces(prev, e)) continue;
      found.set(id, e);
    }
  }
  return Object.freeze([...found.values()].sort(compareEndpoints));
}
