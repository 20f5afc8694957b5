/**
 * A Service (decoded JSON, untrusted) → ServicePorts, one per (spec.ports entry × IP family the Service has), as
 * kube-proxy's newBaseServiceInfo builds them. The input comes from the network: every field
 * is validated, bad ones are reported as problem strings naming the field, and the function
 * never throws. Pure: no I/O, no logging (the tracker logs), no per-node decisions (the planner
 * makes those; e.g. externalTrafficPolicy is kept raw).
 */
import { parseCIDR, parseIP, specialIPClass, type ParsedCIDR } from './addr.js';
import { serviceIdProblem } from './names.js';
import { Problems, arr, field, isInt, isRecord, rec, show, str, stringMap } from './untrusted.js';
import {
  servicePortKey,
  type IPFamily,
  type LoadBalancerIngress,
  type Protocol,
  type ServicePort,
  type ServiceType,
  type TrafficPolicy,
} from './types.js';

export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const DEFAULT_AFFINITY_TIMEOUT = 10800;
export const MAX_AFFINITY_TIMEOUT = 86400;

export interface ParsedService {
  readonly ports: ServicePort[];
  readonly problems: string[];
}

const PROTOCOLS: ReadonlySet<string> = new Set(['TCP', 'UDP', 'SCTP']);
const TYPES: ReadonlySet<string> = new Set(['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);

/**
 * `namespace/name` of any object, or undefined when either is missing or not a string. Not
 * validated (a log names even an invalid object by it): keys are built only from names
 * serviceIdProblem accepts.
 */
export function objectName(obj: unknown): { namespace: string; name: string } | undefined {
  const meta = field(obj, 'metadata');
  const namespace = str(meta, 'namespace');
  const name = str(meta, 'name');
  if (!namespace || !name) return undefined;
  return { namespace, name };
}

function isPort(v: unknown): v is number {
  return isInt(v) && v >= 1 && v <= 65535;
}

function policy(spec: unknown, name: string, problems: Problems): TrafficPolicy {
  const v = field(spec, name);
  if (v === undefined || v === null || v === 'Cluster') return 'Cluster';
  if (v === 'Local') return 'Local';
  problems.add(`spec.${name}: ${show(v)} unknown, using Cluster`);
  return 'Cluster';
}

/** The ClusterIP per family, as kube-proxy's GetClusterIPByFamily (clusterIPs + ipFamilies, fallback clusterIP). */
function clusterIPsByFamily(spec: unknown, problems: Problems): Map<IPFamily, string> | undefined {
  const out = new Map<IPFamily, string>();
  const single = field(spec, 'clusterIP');
  const many = arr(spec, 'clusterIPs');
  let ips: readonly unknown[] = many && many.length > 0 ? many : single !== undefined && single !== null && single !== '' ? [single] : [];
  if (ips.length > 2) {
    problems.add(`spec.clusterIPs: ${ips.length} entries, at most 2 allowed`);
    return undefined;
  }
  const fams = arr(spec, 'ipFamilies');
  const families: IPFamily[] = [];
  if (fams && fams.length > 0) {
    if (fams.length > 2) {
      problems.add(`spec.ipFamilies: ${fams.length} entries, at most 2 allowed`);
      return undefined;
    }
    for (let i = 0; i < fams.length; i++) {
      const f = fams[i];
      if (f === 'IPv4') families.push(4);
      else if (f === 'IPv6') families.push(6);
      else {
        problems.add(`spec.ipFamilies[${i}]: ${show(f)} unknown`);
        return undefined;
      }
    }
  }
  ips = ips.slice(0, 2);
  for (let i = 0; i < ips.length; i++) {
    const fieldName = many && many.length > 0 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP';
    const p = parseIP(ips[i]);
    if (!p) {
      problems.add(`${fieldName}: ${show(ips[i])} is not a valid IP`);
      return undefined;
    }
    const special = specialIPClass(p.ip);
    if (special) {
      // The whole Service goes: a ClusterIP of 127.0.0.1 would capture the node's own loopback.
      problems.add(`${fieldName}: ${p.ip} is ${special}, not a usable ClusterIP; Service skipped`);
      return undefined;
    }
    if (families.length > 0) {
      // With ipFamilies set, only the positions it names count (kube-proxy indexes by it).
      if (i >= families.length) continue;
      if (families[i] !== p.family) {
        problems.add(`${fieldName}: ${p.ip} is not IPv${families[i]} as spec.ipFamilies[${i}] says`);
        return undefined;
      }
    }
    if (out.has(p.family)) {
      problems.add(`${fieldName}: second IPv${p.family} ClusterIP`);
      return undefined;
    }
    out.set(p.family, p.ip);
  }
  return out;
}

function ipsByFamily(list: readonly unknown[] | undefined, fieldName: string, problems: Problems): Record<IPFamily, string[]> {
  const out: Record<IPFamily, string[]> = { 4: [], 6: [] };
  if (!list) return out;
  const seen = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const p = parseIP(list[i]);
    if (!p) {
      problems.add(`${fieldName}[${i}]: ${show(list[i])} is not a valid IP, ignored`);
      continue;
    }
    const special = specialIPClass(p.ip);
    if (special) {
      problems.add(`${fieldName}[${i}]: ${p.ip} is ${special}, ignored`);
      continue;
    }
    if (seen.has(p.ip)) continue;
    seen.add(p.ip);
    out[p.family].push(p.ip);
  }
  return out;
}

/** Why no packet's source can lie in `c`, or undefined. */
function neverASource(c: ParsedCIDR): string | undefined {
  const min = c.family === 4 ? 4 : 8; // multicast is 224.0.0.0/4 and ff00::/8
  if (c.bits < min) return undefined;
  const cls = specialIPClass(c.addr.toString());
  return cls !== undefined && (cls.startsWith('multicast') || cls === 'the broadcast address') ? cls : undefined;
}

function sourceRangesByFamily(list: readonly unknown[] | undefined, problems: Problems): Record<IPFamily, string[]> {
  const out: Record<IPFamily, string[]> = { 4: [], 6: [] };
  if (!list) return out;
  const seen = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const raw = list[i];
    // API validation tolerates whitespace padding here; kube-proxy trims it, so do we.
    const c = parseCIDR(typeof raw === 'string' ? raw.trim() : raw);
    if (!c) {
      problems.add(`spec.loadBalancerSourceRanges[${i}]: ${show(raw)} is not a valid CIDR, ignored`);
      continue;
    }
    if (seen.has(c.cidr)) continue;
    // A range no client address can fall in (multicast, broadcast) is reported but kept: dropping
    // it could empty the list, and an empty list means "allow every source". Ranges that merely
    // include special addresses (0.0.0.0/0, 127.0.0.0/8) are harmless: they only widen who the
    // Service owner lets in, which is theirs to decide; the API server checks only the syntax.
    const never = neverASource(c);
    if (never) problems.add(`spec.loadBalancerSourceRanges[${i}]: ${c.cidr} is ${never} and matches no client; kept, so the list does not widen to all sources`);
    seen.add(c.cidr);
    out[c.family].push(c.cidr);
  }
  return out;
}

function ingressByFamily(status: unknown, problems: Problems): Record<IPFamily, LoadBalancerIngress[]> {
  const out: Record<IPFamily, LoadBalancerIngress[]> = { 4: [], 6: [] };
  const list = arr(field(status, 'loadBalancer'), 'ingress');
  if (!list) return out;
  const seen = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const ing = list[i];
    const ipText = field(ing, 'ip');
    if (ipText === undefined || ipText === null || ipText === '') continue; // hostname-only entry
    const p = parseIP(ipText);
    if (!p) {
      problems.add(`status.loadBalancer.ingress[${i}].ip: ${show(ipText)} is not a valid IP, ignored`);
      continue;
    }
    const special = specialIPClass(p.ip);
    if (special) {
      problems.add(`status.loadBalancer.ingress[${i}].ip: ${p.ip} is ${special}, ignored`);
      continue;
    }
    const modeRaw = field(ing, 'ipMode');
    let ipMode: LoadBalancerIngress['ipMode'];
    if (modeRaw === undefined || modeRaw === null || modeRaw === 'VIP') ipMode = 'VIP';
    else if (modeRaw === 'Proxy') ipMode = 'Proxy';
    else {
      // kube-proxy treats anything but nil/VIP as "not VIP", i.e. it does not capture the IP.
      problems.add(`status.loadBalancer.ingress[${i}].ipMode: ${show(modeRaw)} unknown, treated as Proxy`);
      ipMode = 'Proxy';
    }
    const id = `${p.ip}|${ipMode}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out[p.family].push({ ip: p.ip, ipMode });
  }
  return out;
}

interface PortSpec {
  portName: string;
  protocol: Protocol;
  port: number;
  nodePort: number;
  targetPort: number | string;
}

function parsePortEntry(entry: unknown, i: number, problems: Problems): PortSpec | undefined {
  const at = `spec.ports[${i}]`;
  if (!isRecord(entry)) {
    problems.add(`${at}: ${show(entry)} is not an object`);
    return undefined;
  }
  const nameRaw = field(entry, 'name');
  if (nameRaw !== undefined && nameRaw !== null && typeof nameRaw !== 'string') {
    problems.add(`${at}.name: ${show(nameRaw)} is not a string`);
    return undefined;
  }
  const portName = typeof nameRaw === 'string' ? nameRaw : '';
  if (portName.length > 63 || /[:/]/.test(portName)) {
    problems.add(`${at}.name: ${show(portName)} is not a valid port name`);
    return undefined;
  }
  const protoRaw = field(entry, 'protocol');
  const protocol = protoRaw === undefined || protoRaw === null ? 'TCP' : protoRaw;
  if (typeof protocol !== 'string' || !PROTOCOLS.has(protocol)) {
    problems.add(`${at}.protocol: ${show(protoRaw)} unknown`);
    return undefined;
  }
  const port = field(entry, 'port');
  if (!isPort(port)) {
    problems.add(`${at}.port: ${show(port)} out of range`);
    return undefined;
  }
  const np = field(entry, 'nodePort');
  let nodePort = 0;
  if (np !== undefined && np !== null && np !== 0) {
    if (!isPort(np)) {
      problems.add(`${at}.nodePort: ${show(np)} out of range`);
      return undefined;
    }
    nodePort = np;
  }
  const tp = field(entry, 'targetPort');
  let targetPort: number | string = port;
  if (tp !== undefined && tp !== null && tp !== 0 && tp !== '') {
    if (isPort(tp) || (typeof tp === 'string' && tp.length <= 63)) targetPort = tp;
    else {
      problems.add(`${at}.targetPort: ${show(tp)} invalid`);
      return undefined;
    }
  }
  return { portName, protocol: protocol as Protocol, port, nodePort, targetPort };
}

/**
 * Parse one Service for the given families. A namespace or name the API server would refuse
 * skips the Service with a problem (names.ts). Skipped without a problem: ExternalName, headless
 * (clusterIP None or unset), and Services whose service.kubernetes.io/service-proxy-name label
 * is not `serviceProxyName` ("" = no label; a labelled Service belongs to another proxy). Any other invalid field is a problem: a bad port entry skips
 * that port, a bad ClusterIP, type or affinity skips the whole Service, and bad entries of
 * externalIPs, LB ingress IPs and loadBalancerSourceRanges are ignored (as kube-proxy ignores them).
 * Addresses are checked for family and class (specialIPClass): a loopback, unspecified,
 * link-local, multicast or broadcast ClusterIP skips the Service; such an external or ingress IP
 * is ignored.
 */
export function parseService(svc: unknown, families: readonly IPFamily[], serviceProxyName = ''): ParsedService {
  const problems = new Problems();
  const ports: ServicePort[] = [];
  const done = (): ParsedService => ({ ports, problems: problems.result() });
  const id = objectName(svc);
  if (!id) {
    problems.add('metadata: namespace and name must be non-empty strings');
    return done();
  }
  // The watch's selector, again: a Service meant for another proxy (or, with serviceProxyName
  // set, one not labelled for this one) is not ours, however it reached the tracker.
  const labels = stringMap(field(field(svc, 'metadata'), 'labels'));
  const proxyName = Object.prototype.hasOwnProperty.call(labels, LABEL_SERVICE_PROXY_NAME) ? labels[LABEL_SERVICE_PROXY_NAME] : undefined;
  if (proxyName !== (serviceProxyName === '' ? undefined : serviceProxyName)) return done();
  const badId = serviceIdProblem(id.namespace, id.name);
  if (badId) {
    problems.add(`${badId}; Service skipped`);
    return done();
  }
  const spec = rec(field(svc, 'spec'));
  if (!spec) {
    problems.add(`spec: ${show(field(svc, 'spec'))} is not an object`);
    return done();
  }
  const typeRaw = field(spec, 'type');
  const type = typeRaw === undefined || typeRaw === null ? 'ClusterIP' : typeRaw;
  if (typeof type !== 'string' || !TYPES.has(type)) {
    problems.add(`spec.type: ${show(typeRaw)} unknown`);
    return done();
  }
  if (type === 'ExternalName') return done();
  const cip = field(spec, 'clusterIP');
  const cips = arr(spec, 'clusterIPs');
  if (cip === 'None' || (cips && cips[0] === 'None')) return done(); // headless
  const byFamily = clusterIPsByFamily(spec, problems);
  if (!byFamily) return done();
  if (byFamily.size === 0) return done(); // no ClusterIP allocated (yet): nothing to proxy

  let affinityTimeoutSeconds = 0;
  const affinity = field(spec, 'sessionAffinity');
  if (affinity === 'ClientIP') {
    const t = field(field(field(spec, 'sessionAffinityConfig'), 'clientIP'), 'timeoutSeconds');
    if (t === undefined || t === null) affinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT;
    else if (isInt(t) && t >= 1 && t <= MAX_AFFINITY_TIMEOUT) affinityTimeoutSeconds = t;
    else {
      problems.add(`spec.sessionAffinityConfig.clientIP.timeoutSeconds: ${show(t)} out of range 1..${MAX_AFFINITY_TIMEOUT}`);
      return done();
    }
  } else if (affinity !== undefined && affinity !== null && affinity !== 'None') {
    problems.add(`spec.sessionAffinity: ${show(affinity)} unknown, using None`);
  }

  const externalTrafficPolicy = policy(spec, 'externalTrafficPolicy', problems);
  const internalTrafficPolicy = policy(spec, 'internalTrafficPolicy', problems);
  let healthCheckNodePort = 0;
  if (type === 'LoadBalancer' && externalTrafficPolicy === 'Local') {
    const hc = field(spec, 'healthCheckNodePort');
    if (isPort(hc)) healthCheckNodePort = hc;
    else problems.add(`spec.healthCheckNodePort: ${show(hc)} out of range, no health check`);
  }
  const tdRaw = field(spec, 'trafficDistribution');
  const trafficDistribution = typeof tdRaw === 'string' ? tdRaw : '';

  const externalIPs = ipsByFamily(arr(spec, 'externalIPs'), 'spec.externalIPs', problems);
  const sourceRanges = sourceRangesByFamily(arr(spec, 'loadBalancerSourceRanges'), problems);
  const ingress = ingressByFamily(field(svc, 'status'), problems);

  const portsRaw = field(spec, 'ports');
  if (portsRaw !== undefined && portsRaw !== null && !Array.isArray(portsRaw)) {
    problems.add(`spec.ports: ${show(portsRaw)} is not an array`);
    return done();
  }
  const specs: PortSpec[] = [];
  const seenKeys = new Set<string>();
  const list = (portsRaw as unknown[] | undefined | null) ?? [];
  for (let i = 0; i < list.length; i++) {
    const p = parsePortEntry(list[i], i, problems);
    if (!p) continue;
    const k = `${p.portName}/${p.protocol}`;
    if (seenKeys.has(k)) {
      problems.add(`spec.ports[${i}]: duplicate port name ${show(p.portName)} for ${p.protocol}, ignored`);
      continue;
    }
    seenKeys.add(k);
    specs.push(p);
  }

  for (const f of [4, 6] as const) {
    // Shared by every port of the family; frozen because snapshots are immutable.
    Object.freeze(externalIPs[f]);
    Object.freeze(sourceRanges[f]);
    for (const ing of ingress[f]) Object.freeze(ing);
    Object.freeze(ingress[f]);
  }
  for (const family of families) {
    const clusterIP = byFamily.get(family);
    if (clusterIP === undefined) continue;
    for (const p of specs) {
      ports.push({
        key: servicePortKey(id.namespace, id.name, p.portName, p.protocol),
        namespace: id.namespace,
        name: id.name,
        portName: p.portName,
        protocol: p.protocol,
        family,
        type: type as ServiceType,
        clusterIP,
        port: p.port,
        nodePort: p.nodePort,
        targetPort: p.targetPort,
        externalIPs: externalIPs[family],
        loadBalancerIngress: ingress[family],
        loadBalancerSourceRanges: sourceRanges[family],
        affinityTimeoutSeconds,
        externalTrafficPolicy,
        internalTrafficPolicy,
        healthCheckNodePort,
        trafficDistribution,
      });
    }
  }
  return done();
}
