/**
 * The v1 Service registry strategy: defaulting, validation, ClusterIP / NodePort /
 * healthCheckNodePort allocation and release, and dual-stack family resolution, following the
 * real server's service registry (pkg/registry/core/service) closely enough that kubectl users
 * and kube-proxy see the same objects and the same error messages.
 * It never writes to the store; allocations are settled through Prepared.commit/rollback.
 */
import { AllocationError, IPAllocator, PortAllocator } from './allocators.js';
import { ApiError, fieldErr, type FieldError } from './errors.js';
import { parseCIDR, parseIP, type Family } from './ip.js';
import { clone, type KObject } from './objects.js';
import { metaFieldValue, metaPatchSchema, statusOnly, type Prepared, type ResourceDef } from './resource.js';
import { serviceSchema } from './schema.js';
import {
  dns1035Label,
  dns1123Label,
  dns1123Subdomain,
  IP_MSG,
  ianaSvcName,
  labelErrors,
  PORT_RANGE_MSG,
  specialIPError,
  validPort,
} from './validation.js';

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  appProtocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface ServiceSpec {
  type?: string;
  ports?: ServicePortSpec[];
  selector?: Record<string, string>;
  clusterIP?: string;
  clusterIPs?: string[];
  externalIPs?: string[];
  sessionAffinity?: string;
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
  loadBalancerIP?: string;
  loadBalancerSourceRanges?: string[];
  loadBalancerClass?: string;
  externalName?: string;
  externalTrafficPolicy?: string;
  internalTrafficPolicy?: string;
  healthCheckNodePort?: number;
  publishNotReadyAddresses?: boolean;
  ipFamilies?: string[];
  ipFamilyPolicy?: string;
  allocateLoadBalancerNodePorts?: boolean;
  trafficDistribution?: string;
}

export interface LoadBalancerIngress {
  ip?: string;
  hostname?: string;
  ipMode?: string;
  ports?: unknown[];
}

export interface Service extends KObject {
  spec: ServiceSpec;
  status?: { loadBalancer?: { ingress?: LoadBalancerIngress[] }; conditions?: unknown[] };
}

export interface ServiceRegistryOptions {
  serviceCIDRs: string[];
  nodePortRange: [number, number];
}

const TYPES = ['ClusterIP', 'ExternalName', 'LoadBalancer', 'NodePort'];
const PROTOCOLS = ['SCTP', 'TCP', 'UDP'];
const POLICIES = ['Cluster', 'Local'];
const FAMILY_POLICIES = ['PreferDualStack', 'RequireDualStack', 'SingleStack'];
const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameNode', 'PreferSameZone'];

const isHeadless = (s: ServiceSpec): boolean => s.clusterIP === 'None';
const externallyAccessible = (s: ServiceSpec): boolean =>
  s.type === 'NodePort' || s.type === 'LoadBalancer' || (s.type === 'ClusterIP' && (s.externalIPs?.length ?? 0) > 0);
const needsClusterIP = (s: ServiceSpec): boolean => s.type !== 'ExternalName';
const needsNodePorts = (s: ServiceSpec): boolean =>
  s.type === 'NodePort' || (s.type === 'LoadBalancer' && s.allocateLoadBalancerNodePorts !== false);
const needsHealthCheck = (s: ServiceSpec): boolean => s.type === 'LoadBalancer' && s.externalTrafficPolicy === 'Local';

/** What a stored Service holds in the allocators. */
interface Holdings {
  ips: string[];
  nodePorts: Set<number>;
  healthCheckNodePort: number;
}

function holdings(s: ServiceSpec | undefined): Holdings {
  const h: Holdings = { ips: [], nodePorts: new Set(), healthCheckNodePort: 0 };
  if (!s) return h;
  if (s.type !== 'ExternalName') for (const ip of s.clusterIPs ?? []) if (ip !== 'None' && ip !== '') h.ips.push(ip);
  for (const p of s.ports ?? []) if (p.nodePort) h.nodePorts.add(p.nodePort);
  if (s.healthCheckNodePort) h.healthCheckNodePort = s.healthCheckNodePort;
  return h;
}

export class ServiceRegistry {
  readonly ipAllocators: IPAllocator[];
  readonly nodePorts: PortAllocator;
  readonly def: ResourceDef;

  constructor(opts: ServiceRegistryOptions) {
    if (opts.serviceCIDRs.length === 0 || opts.serviceCIDRs.length > 2) throw new Error('serviceCIDRs: need one or two CIDRs');
    this.ipAllocators = opts.serviceCIDRs.map((c) => new IPAllocator(c));
    if (this.ipAllocators.length === 2 && this.ipAllocators[0]!.family === this.ipAllocators[1]!.family) {
      throw new Error('serviceCIDRs: two CIDRs must be of different IP families');
    }
    this.nodePorts = new PortAllocator(opts.nodePortRange[0], opts.nodePortRange[1]);
    this.def = {
      group: '',
      version: 'v1',
      apiVersion: 'v1',
      plural: 'services',
      singular: 'service',
      kind: 'Service',
      namespaced: true,
      shortNames: ['svc'],
      hasStatus: true,
      storageKey: 'services',
      schema: serviceSchema,
      validateName: dns1035Label,
      fieldSelectors: ['spec.clusterIP', 'spec.type'],
      fieldValue: (o, f) => {
        const spec = (o as Service).spec ?? {};
        if (f === 'spec.clusterIP') return spec.clusterIP ?? '';
        if (f === 'spec.type') return spec.type ?? '';
        return metaFieldValue(o, f);
      },
      patchSchema: (path) => {
        if (path.length === 2 && path[0] === 'spec' && path[1] === 'ports') return { mergeKey: 'port' };
        if (path.length === 2 && path[0] === 'status' && path[1] === 'conditions') return { mergeKey: 'type' };
        return metaPatchSchema(path);
      },
      prepareCreate: (o) => this.prepareCreate(o as Service),
      prepareUpdate: (o, old) => this.prepareUpdate(o as Service, old as Service),
      prepareStatusUpdate: (o, old) => this.prepareStatusUpdate(o as Service, old as Service),
      released: (o) => this.release(holdings((o as Service).spec)),
    };
  }

  private get families(): Family[] {
    return this.ipAllocators.map((a) => a.family);
  }

  private allocatorFor(f: Family): IPAllocator | undefined {
    return this.ipAllocators.find((a) => a.family === f);
  }

  private invalid(svc: Service, errs: FieldError[]): ApiError {
    return ApiError.invalid(this.def, svc.metadata.name ?? '', errs);
  }

  private release(h: Holdings): void {
    for (const ip of h.ips) {
      const p = parseIP(ip);
      if (p) this.allocatorFor(p.family)?.release(ip);
    }
    for (const np of h.nodePorts) this.nodePorts.release(np);
    if (h.healthCheckNodePort) this.nodePorts.release(h.healthCheckNodePort);
  }

  prepareCreate(input: Service): Prepared {
    const svc: Service = { ...input, spec: clone(input.spec ?? {}) };
    delete svc['status'];
    const spec = svc.spec;
    if (spec.type === 'ExternalName') {
      delete spec.ipFamilies;
      delete spec.ipFamilyPolicy;
    }
    applyDefaults(spec);
    const errs = validateSpec(spec, undefined);
    if (spec.type !== 'ExternalName') errs.push(...this.resolveFamilies(spec, undefined));
    if (errs.length) throw this.invalid(svc, errs);
    const allocated = this.allocate(svc, holdings(undefined));
    return { obj: svc, rollback: () => this.release(allocated) };
  }

  prepareUpdate(input: Service, old: Service): Prepared {
    const svc: Service = { ...input, spec: clone(input.spec ?? {}) };
    if (old.status !== undefined) svc.status = old.status;
    else delete svc['status'];
    const spec = svc.spec;
    const oldSpec = old.spec;
    applyDefaults(spec);
    patchAllocatedValues(spec, oldSpec);
    dropTypeDependentFields(spec, oldSpec);
    const errs = validateSpec(spec, oldSpec);
    if (spec.type !== 'ExternalName') errs.push(...this.resolveFamilies(spec, oldSpec));
    if (errs.length) throw this.invalid(svc, errs);
    const oldHeld = holdings(oldSpec);
    const allocated = this.allocate(svc, oldHeld);
    const newHeld = holdings(spec);
    return {
      obj: svc,
      rollback: () => this.release(allocated),
      commit: () => {
        // Release what the old object held and the new one no longer does.
        this.release({
          ips: oldHeld.ips.filter((ip) => !newHeld.ips.includes(ip)),
          nodePorts: new Set([...oldHeld.nodePorts].filter((p) => !newHeld.nodePorts.has(p) && p !== newHeld.healthCheckNodePort)),
          healthCheckNodePort:
            oldHeld.healthCheckNodePort && oldHeld.healthCheckNodePort !== newHeld.healthCheckNodePort && !newHeld.nodePorts.has(oldHeld.healthCheckNodePort)
              ? oldHeld.healthCheckNodePort
              : 0,
        });
      },
    };
  }

  prepareStatusUpdate(input: Service, old: Service): Prepared {
    const svc = statusOnly(input, old) as Service;
    const errs: FieldError[] = [];
    const ingress = svc.status?.loadBalancer?.ingress;
    if (ingress) {
      const fixed = ingress.map((ing, i) => {
        const path = `status.loadBalancer.ingress[${i}]`;
        const out = { ...ing };
        if (out.ip !== undefined && out.ip !== '') {
          if (!parseIP(out.ip)) errs.push(fieldErr.invalid(`${path}.ip`, out.ip, IP_MSG));
          if (out.ipMode === undefined) out.ipMode = 'VIP';
          else if (!['Proxy', 'VIP'].includes(out.ipMode)) errs.push(fieldErr.notSupported(`${path}.ipMode`, out.ipMode, ['Proxy', 'VIP']));
        } else if (out.ipMode !== undefined) {
          errs.push(fieldErr.forbidden(`${path}.ipMode`, 'may not be specified when `ip` is not set'));
        }
        if (out.hostname !== undefined && out.hostname !== '') {
          if (parseIP(out.hostname)) errs.push(fieldErr.invalid(`${path}.hostname`, out.hostname, 'must be a DNS name, not an IP address'));
          else {
            const m = dns1123Subdomain(out.hostname);
            if (m) errs.push(fieldErr.invalid(`${path}.hostname`, out.hostname, m));
          }
        }
        return out;
      });
      svc.status = { ...svc.status, loadBalancer: { ...svc.status!.loadBalancer, ingress: fixed } };
    }
    if (errs.length) throw this.invalid(svc, errs);
    return { obj: svc };
  }

  /**
   * Decide ipFamilyPolicy, ipFamilies and the clusterIPs to request, like the registry's
   * initIPFamilyFields. Leaves spec.clusterIPs with '' for addresses still to allocate.
   */
  private resolveFamilies(spec: ServiceSpec, oldSpec: ServiceSpec | undefined): FieldError[] {
    const errs: FieldError[] = [];
    const cluster = this.families;
    const dualStackCluster = cluster.length === 2;
    const ips = spec.clusterIPs ?? [];
    if (oldSpec && needsClusterIP(oldSpec)) {
      // Unchanged addresses keep their families unless the user says otherwise.
      if (spec.ipFamilyPolicy === undefined && oldSpec.ipFamilyPolicy !== undefined && ips.length <= (oldSpec.clusterIPs?.length ?? 0)) {
        spec.ipFamilyPolicy = oldSpec.ipFamilyPolicy;
      }
      if (spec.ipFamilies === undefined && oldSpec.ipFamilies !== undefined) spec.ipFamilies = [...oldSpec.ipFamilies];
    }
    if (isHeadless(spec) && Object.keys(spec.selector ?? {}).length === 0) {
      // Headless without selector allocates nothing; it simply covers every family of the cluster.
      spec.ipFamilyPolicy ??= 'RequireDualStack';
      if (!spec.ipFamilies || spec.ipFamilies.length === 0) spec.ipFamilies = spec.ipFamilyPolicy === 'SingleStack' ? [cluster[0]!] : [...cluster];
      spec.clusterIPs = ['None'];
      return errs;
    }
    const fromIPs: (Family | undefined)[] = ips.map((ip) => (ip === 'None' ? undefined : parseIP(ip)?.family));
    const families: string[] = [...(spec.ipFamilies ?? [])];
    fromIPs.forEach((f, i) => {
      if (!f) return;
      if (families[i] === undefined) families[i] = f;
      else if (families[i] !== f) {
        errs.push(fieldErr.invalid(`spec.ipFamilies[${i}]`, families[i], `does not match IP family of spec.clusterIPs[${i}]`));
      }
    });
    if (spec.ipFamilyPolicy === undefined) spec.ipFamilyPolicy = families.length === 2 || ips.length === 2 ? 'RequireDualStack' : 'SingleStack';
    const policy = spec.ipFamilyPolicy;
    if (!FAMILY_POLICIES.includes(policy)) {
      errs.push(fieldErr.notSupported('spec.ipFamilyPolicy', policy, FAMILY_POLICIES));
      return errs;
    }
    if (policy === 'SingleStack' && (families.length > 1 || ips.length > 1)) {
      errs.push(fieldErr.invalid('spec.ipFamilyPolicy', policy, 'must be RequireDualStack or PreferDualStack when multiple IP families are specified'));
    }
    if (policy === 'RequireDualStack' && !dualStackCluster) {
      errs.push(fieldErr.invalid('spec.ipFamilyPolicy', policy, 'this cluster is not configured for dual-stack services'));
    }
    families.forEach((f, i) => {
      if (f !== 'IPv4' && f !== 'IPv6') errs.push(fieldErr.notSupported(`spec.ipFamilies[${i}]`, f, ['IPv4', 'IPv6']));
      else if (!cluster.includes(f)) {
        if (!(i === 1 && policy === 'PreferDualStack')) errs.push(fieldErr.invalid(`spec.ipFamilies[${i}]`, f, 'not configured on this cluster'));
      }
    });
    if (families.length === 2 && families[0] === families[1]) errs.push(fieldErr.duplicate('spec.ipFamilies[1]', families[1]));
    if (families.length > 2) errs.push(fieldErr.tooMany('spec.ipFamilies', families.length, 2));
    if (errs.length) return errs;
    const resolved: Family[] = families.filter((f): f is Family => cluster.includes(f as Family));
    if (resolved.length === 0) resolved.push(cluster[0]!);
    if (policy !== 'SingleStack' && resolved.length === 1 && dualStackCluster) {
      resolved.push(cluster.find((f) => f !== resolved[0])!);
    }
    if (policy === 'SingleStack' && resolved.length > 1) resolved.length = 1;
    spec.ipFamilies = resolved;
    if (isHeadless(spec)) {
      spec.clusterIP = 'None';
      spec.clusterIPs = ['None'];
      return errs;
    }
    const want = resolved.map((_, i) => ips[i] ?? '');
    spec.clusterIPs = want;
    spec.clusterIP = want[0] ?? '';
    if (oldSpec && needsClusterIP(oldSpec) && (oldSpec.clusterIPs?.length ?? 0) > 0) {
      const before = oldSpec.clusterIPs!;
      if (before[0] !== 'None' && want[0] !== before[0]) {
        errs.push(fieldErr.invalid('spec.clusterIPs[0]', want, 'may not change once set'));
      }
      if (before.length === 2 && want.length === 2 && want[1] !== before[1] && before[1] !== 'None') {
        errs.push(fieldErr.invalid('spec.clusterIPs[1]', want, 'may not change once set'));
      }
      if (before[0] === 'None' && want[0] !== 'None') {
        errs.push(fieldErr.invalid('spec.clusterIPs[0]', want, 'may not change once set'));
      }
    }
    return errs;
  }

  /** Allocate every address and port the spec needs that `held` (the old object) does not hold. */
  private allocate(svc: Service, held: Holdings): Holdings {
    const spec = svc.spec;
    const got: Holdings = { ips: [], nodePorts: new Set(), healthCheckNodePort: 0 };
    const fail = (errs: FieldError[]): never => {
      this.release(got);
      throw this.invalid(svc, errs);
    };
    if (needsClusterIP(spec) && !isHeadless(spec)) {
      const ips = spec.clusterIPs ?? [];
      const fams = spec.ipFamilies ?? [];
      for (let i = 0; i < fams.length; i++) {
        const alloc = this.allocatorFor(fams[i] as Family)!;
        const want = ips[i] ?? '';
        if (want !== '' && held.ips.includes(parseIP(want)?.text ?? want)) continue;
        try {
          ips[i] = want === '' ? alloc.allocateNext() : alloc.allocate(want);
          got.ips.push(ips[i]!);
        } catch (e) {
          if (!(e instanceof AllocationError)) throw e;
          if (e.kind === 'full') {
            this.release(got);
            throw new ApiError(500, 'InternalError', `Internal error occurred: failed to allocate a serviceIP: range is full`);
          }
          fail([fieldErr.invalid(`spec.clusterIPs[${i}]`, want, e.message)]);
        }
      }
      spec.clusterIPs = ips;
      spec.clusterIP = ips[0] ?? '';
    }
    const ports = spec.ports ?? [];
    const byPort = new Map<number, number>();
    const need = needsNodePorts(spec);
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i]!;
      if (!p.nodePort && !need) continue;
      const already = byPort.get(p.port!);
      if (p.nodePort && (held.nodePorts.has(p.nodePort) || got.nodePorts.has(p.nodePort))) {
        byPort.set(p.port!, p.nodePort);
        continue;
      }
      if (!p.nodePort && already) {
        p.nodePort = already;
        continue;
      }
      try {
        p.nodePort = p.nodePort ? this.nodePorts.allocate(p.nodePort) : this.nodePorts.allocateNext();
        got.nodePorts.add(p.nodePort);
        byPort.set(p.port!, p.nodePort);
      } catch (e) {
        if (!(e instanceof AllocationError)) throw e;
        if (e.kind === 'full') {
          this.release(got);
          throw new ApiError(500, 'InternalError', `Internal error occurred: failed to allocate a nodePort: range is full`);
        }
        fail([fieldErr.invalid(`spec.ports[${i}].nodePort`, p.nodePort, e.message)]);
      }
    }
    if (needsHealthCheck(spec)) {
      const want = spec.healthCheckNodePort ?? 0;
      if (!(want && held.healthCheckNodePort === want)) {
        try {
          spec.healthCheckNodePort = want ? this.nodePorts.allocate(want) : this.nodePorts.allocateNext();
          got.healthCheckNodePort = spec.healthCheckNodePort;
        } catch (e) {
          if (!(e instanceof AllocationError)) throw e;
          fail([fieldErr.invalid('spec.healthCheckNodePort', want, e.message)]);
        }
      }
    }
    return got;
  }
}

function applyDefaults(spec: ServiceSpec): void {
  spec.type ??= 'ClusterIP';
  if (spec.type === '') spec.type = 'ClusterIP';
  spec.sessionAffinity ??= 'None';
  if (spec.sessionAffinity === 'ClientIP') {
    spec.sessionAffinityConfig ??= {};
    spec.sessionAffinityConfig.clientIP ??= {};
    spec.sessionAffinityConfig.clientIP.timeoutSeconds ??= 10800;
  }
  for (const p of spec.ports ?? []) {
    p.protocol ??= 'TCP';
    if (p.targetPort === undefined || p.targetPort === 0 || p.targetPort === '') p.targetPort = p.port;
  }
  if (spec.clusterIP && spec.clusterIP !== '' && (!spec.clusterIPs || spec.clusterIPs.length === 0)) spec.clusterIPs = [spec.clusterIP];
  if ((!spec.clusterIP || spec.clusterIP === '') && spec.clusterIPs && spec.clusterIPs.length > 0) spec.clusterIP = spec.clusterIPs[0];
  if (externallyAccessible(spec)) spec.externalTrafficPolicy ??= 'Cluster';
  if (spec.type !== 'ExternalName') spec.internalTrafficPolicy ??= 'Cluster';
  if (spec.type === 'LoadBalancer') spec.allocateLoadBalancerNodePorts ??= true;
}

/** PUT without allocated values (e.g. kubectl replace of an edited manifest) keeps them, like patchAllocatedValues. */
function patchAllocatedValues(spec: ServiceSpec, old: ServiceSpec): void {
  if (needsClusterIP(old) && needsClusterIP(spec)) {
    if (!spec.clusterIP) spec.clusterIP = old.clusterIP;
    if ((!spec.clusterIPs || spec.clusterIPs.length === 0) && old.clusterIPs && old.clusterIPs.length > 0) {
      spec.clusterIPs = spec.clusterIP === old.clusterIP ? [...old.clusterIPs] : spec.clusterIP ? [spec.clusterIP] : [...old.clusterIPs];
    }
  }
  if (needsNodePorts(old) && needsNodePorts(spec)) {
    const usedNew = new Set((spec.ports ?? []).map((p) => p.nodePort).filter((n): n is number => !!n));
    const byName = new Map<string, number>();
    for (const p of old.ports ?? []) if (p.nodePort) byName.set(p.name ?? '', p.nodePort);
    for (const p of spec.ports ?? []) {
      if (!p.nodePort) {
        const v = byName.get(p.name ?? '');
        if (v && !usedNew.has(v)) {
          p.nodePort = v;
          usedNew.add(v);
        }
      }
    }
  }
  if (needsHealthCheck(old) && needsHealthCheck(spec) && !spec.healthCheckNodePort) spec.healthCheckNodePort = old.healthCheckNodePort;
}

/** Fields that only make sense for some types are cleared on a type change if the user left them as they were. */
function dropTypeDependentFields(spec: ServiceSpec, old: ServiceSpec): void {
  if (spec.type === old.type) return;
  if (spec.type === 'ExternalName') {
    if (sameList(spec.clusterIPs, old.clusterIPs)) {
      delete spec.clusterIP;
      delete spec.clusterIPs;
    }
    if (sameList(spec.ipFamilies, old.ipFamilies)) delete spec.ipFamilies;
    if (spec.ipFamilyPolicy === old.ipFamilyPolicy) delete spec.ipFamilyPolicy;
    if (spec.internalTrafficPolicy === old.internalTrafficPolicy) delete spec.internalTrafficPolicy;
  }
  if (!needsNodePorts(spec)) {
    const oldByPort = new Map((old.ports ?? []).map((p) => [`${p.port}/${p.protocol}`, p.nodePort]));
    for (const p of spec.ports ?? []) {
      if (p.nodePort && oldByPort.get(`${p.port}/${p.protocol}`) === p.nodePort) delete p.nodePort;
    }
  }
  if (!needsHealthCheck(spec) && spec.healthCheckNodePort === old.healthCheckNodePort) delete spec.healthCheckNodePort;
  if (spec.type !== 'LoadBalancer') {
    if (spec.allocateLoadBalancerNodePorts === old.allocateLoadBalancerNodePorts) delete spec.allocateLoadBalancerNodePorts;
    if (spec.loadBalancerClass === old.loadBalancerClass) delete spec.loadBalancerClass;
  }
  if (!externallyAccessible(spec) && spec.externalTrafficPolicy === old.externalTrafficPolicy) delete spec.externalTrafficPolicy;
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  const x = a ?? [];
  const y = b ?? [];
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Static validation of a (defaulted) spec; allocation errors come later. */
export function validateSpec(spec: ServiceSpec, old: ServiceSpec | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const type = spec.type ?? 'ClusterIP';
  if (!TYPES.includes(type)) {
    errs.push(fieldErr.notSupported('spec.type', type, TYPES));
    return errs;
  }
  if (type === 'ExternalName') {
    if (!spec.externalName) errs.push(fieldErr.required('spec.externalName'));
    else {
      const m = dns1123Subdomain(spec.externalName.replace(/\.$/, ''));
      if (m) errs.push(fieldErr.invalid('spec.externalName', spec.externalName, m));
    }
    if (spec.clusterIP) errs.push(fieldErr.forbidden('spec.clusterIP', 'may not be set for ExternalName services'));
    if (spec.clusterIPs && spec.clusterIPs.length) errs.push(fieldErr.forbidden('spec.clusterIPs', 'may not be set for ExternalName services'));
  }
  const ports = spec.ports ?? [];
  if (ports.length === 0 && !isHeadless(spec) && type !== 'ExternalName') errs.push(fieldErr.required('spec.ports'));
  const names = new Set<string>();
  const portProto = new Set<string>();
  const nodePortProto = new Set<string>();
  ports.forEach((p, i) => {
    const path = `spec.ports[${i}]`;
    if (ports.length > 1 && !p.name) errs.push(fieldErr.required(`${path}.name`));
    if (p.name) {
      const m = dns1123Label(p.name);
      if (m) errs.push(fieldErr.invalid(`${path}.name`, p.name, m));
      if (names.has(p.name)) errs.push(fieldErr.duplicate(`${path}.name`, p.name));
      names.add(p.name);
    }
    if (!validPort(p.port)) errs.push(fieldErr.invalid(`${path}.port`, p.port ?? 0, PORT_RANGE_MSG));
    const proto = p.protocol ?? 'TCP';
    if (!PROTOCOLS.includes(proto)) errs.push(fieldErr.notSupported(`${path}.protocol`, proto, PROTOCOLS));
    if (typeof p.targetPort === 'number') {
      if (!validPort(p.targetPort)) errs.push(fieldErr.invalid(`${path}.targetPort`, p.targetPort, PORT_RANGE_MSG));
    } else if (typeof p.targetPort === 'string') {
      const m = ianaSvcName(p.targetPort);
      if (m) errs.push(fieldErr.invalid(`${path}.targetPort`, p.targetPort, m));
    }
    const key = `${p.port}/${proto}`;
    if (portProto.has(key)) errs.push(fieldErr.duplicate(path, { port: p.port, protocol: proto }));
    portProto.add(key);
    if (p.nodePort) {
      if (type === 'ClusterIP' || type === 'ExternalName') {
        errs.push(fieldErr.forbidden(`${path}.nodePort`, `may not be used when \`type\` is '${type}'`));
      } else if (!validPort(p.nodePort)) {
        errs.push(fieldErr.invalid(`${path}.nodePort`, p.nodePort, PORT_RANGE_MSG));
      }
      const nk = `${p.nodePort}/${proto}`;
      if (nodePortProto.has(nk)) errs.push(fieldErr.duplicate(`${path}.nodePort`, p.nodePort));
      nodePortProto.add(nk);
    }
  });
  errs.push(...labelErrors(spec.selector, 'spec.selector'));
  if (spec.sessionAffinity !== 'None' && spec.sessionAffinity !== 'ClientIP') {
    errs.push(fieldErr.notSupported('spec.sessionAffinity', spec.sessionAffinity, ['ClientIP', 'None']));
  } else if (spec.sessionAffinity === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 0;
    if (!(t >= 1 && t <= 86400)) {
      errs.push(fieldErr.invalid('spec.sessionAffinityConfig.clientIP.timeoutSeconds', t, 'must be greater than 0 and less than 86400'));
    }
  } else if (spec.sessionAffinityConfig !== undefined && Object.keys(spec.sessionAffinityConfig).length > 0) {
    errs.push(fieldErr.invalid('spec.sessionAffinityConfig', spec.sessionAffinityConfig, "must not be set when session affinity is None"));
  }
  (spec.externalIPs ?? []).forEach((ip, i) => {
    if (!parseIP(ip)) errs.push(fieldErr.invalid(`spec.externalIPs[${i}]`, ip, IP_MSG));
    else {
      const m = specialIPError(ip);
      if (m) errs.push(fieldErr.invalid(`spec.externalIPs[${i}]`, ip, m));
    }
  });
  const ips = spec.clusterIPs ?? [];
  if (spec.clusterIP && ips.length > 0 && ips[0] !== spec.clusterIP) {
    errs.push(fieldErr.invalid('spec.clusterIPs[0]', ips[0], 'must match clusterIP when set'));
  }
  if (ips.length > 2) errs.push(fieldErr.tooMany('spec.clusterIPs', ips.length, 2));
  ips.forEach((ip, i) => {
    if (ip === 'None') {
      if (i !== 0) errs.push(fieldErr.invalid(`spec.clusterIPs[${i}]`, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
      else if (type === 'NodePort' || type === 'LoadBalancer') {
        errs.push(fieldErr.invalid('spec.clusterIPs[0]', ip, `may not be set to 'None' for ${type} services`));
      }
      return;
    }
    if (ip === '') return;
    if (!parseIP(ip)) errs.push(fieldErr.invalid(`spec.clusterIPs[${i}]`, ip, IP_MSG));
  });
  if (ips.length === 2 && parseIP(ips[0])?.family !== undefined && parseIP(ips[0])?.family === parseIP(ips[1])?.family) {
    errs.push(fieldErr.invalid('spec.clusterIPs', ips, 'may specify no more than one IP for each IP family'));
  }
  if (type === 'LoadBalancer') {
    (spec.loadBalancerSourceRanges ?? []).forEach((c, i) => {
      if (!parseCIDR(c.trim())) {
        errs.push(fieldErr.invalid(`spec.loadBalancerSourceRanges[${i}]`, c, 'must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 '));
      }
    });
    if (spec.loadBalancerIP && !parseIP(spec.loadBalancerIP)) errs.push(fieldErr.invalid('spec.loadBalancerIP', spec.loadBalancerIP, IP_MSG));
    if (spec.allocateLoadBalancerNodePorts === undefined) errs.push(fieldErr.required('spec.allocateLoadBalancerNodePorts'));
  } else {
    if (spec.loadBalancerSourceRanges && spec.loadBalancerSourceRanges.length) {
      errs.push(fieldErr.forbidden('spec.loadBalancerSourceRanges', "may only be used when `type` is 'LoadBalancer'"));
    }
    if (spec.loadBalancerIP) errs.push(fieldErr.forbidden('spec.loadBalancerIP', "may only be used when `type` is 'LoadBalancer'"));
    if (spec.allocateLoadBalancerNodePorts !== undefined) {
      errs.push(fieldErr.forbidden('spec.allocateLoadBalancerNodePorts', "may only be used when `type` is 'LoadBalancer'"));
    }
    if (spec.loadBalancerClass !== undefined) errs.push(fieldErr.forbidden('spec.loadBalancerClass', "may only be used when `type` is 'LoadBalancer'"));
  }
  if (!externallyAccessible(spec)) {
    if (spec.externalTrafficPolicy) {
      errs.push(fieldErr.invalid('spec.externalTrafficPolicy', spec.externalTrafficPolicy, 'may only be set for externally-accessible services'));
    }
  } else if (!POLICIES.includes(spec.externalTrafficPolicy ?? '')) {
    errs.push(fieldErr.notSupported('spec.externalTrafficPolicy', spec.externalTrafficPolicy, POLICIES));
  }
  if (type !== 'ExternalName') {
    if (!POLICIES.includes(spec.internalTrafficPolicy ?? '')) {
      errs.push(fieldErr.notSupported('spec.internalTrafficPolicy', spec.internalTrafficPolicy, POLICIES));
    }
  }
  if (spec.healthCheckNodePort) {
    if (!needsHealthCheck(spec)) {
      errs.push(fieldErr.invalid('spec.healthCheckNodePort', spec.healthCheckNodePort, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"));
    } else if (!validPort(spec.healthCheckNodePort)) {
      errs.push(fieldErr.invalid('spec.healthCheckNodePort', spec.healthCheckNodePort, PORT_RANGE_MSG));
    }
  }
  if (spec.trafficDistribution !== undefined && !TRAFFIC_DISTRIBUTIONS.includes(spec.trafficDistribution)) {
    errs.push(fieldErr.notSupported('spec.trafficDistribution', spec.trafficDistribution, TRAFFIC_DISTRIBUTIONS));
  }
  if (old && old.type !== 'ExternalName' && type !== 'ExternalName' && old.clusterIP === 'None' && spec.clusterIP !== 'None') {
    errs.push(fieldErr.invalid('spec.clusterIPs[0]', spec.clusterIPs ?? [], 'may not change once set'));
  }
  return errs;
}
