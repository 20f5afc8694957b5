/**
 * One service port's share of the ruleset: the chains it owns (with their rules) and the
 * elements it claims in the shared maps and sets. The compiler diffs two of these
 * (previous and next) to write a partial sync, and lays all of them out for a full sync.
 *
 * Pure and deterministic: the same ServiceEntry and context always give an equal contribution.
 * Translates the IR's decisions; must never re-decide which endpoints or verdicts apply.
 */
import type { EndpointSet, PlannedEndpoint, ServiceEntry } from '../../plan/types.js';
import { affinityId, Chains, endpointChainName, endpointShard, endpointSuffix, GROUPED_FRONTENDS, GROUPED_MAX_ENDPOINTS, GROUPED_NODEPORTS, Maps, serviceNames, Sets, type ServiceNames } from './names.js';
import * as R from './rules.js';
import type { Cond, FamilySyntax, Rule } from './rules.js';
import { canonicalIPv4 } from '../../util/ipv4.js';
import type { FirstAddresses } from './distinct.js';
import { normalizeCIDRs } from './skeleton.js';
import { SLOT_STRIDE, type SlotRole, type SlotTable } from './slots.js';
import { keepShape } from '../../util/shapes.js';

/** One element a service wants in a shared set or map (`value` is '' for set elements). */
export interface ElementClaim {
  readonly container: string;
  /**
   * The element's key as nft spells it, except in `hairpin`: there the endpoint IP alone (the
   * model's own string, no new one per endpoint); the compiler spells it (elementKey) when it
   * writes the element.
   */
  readonly key: string;
  readonly value: string;
}

export interface ServiceContribution {
  /** Chains this service owns, name → rules, in a stable order. */
  readonly chains: ReadonlyMap<string, readonly Rule[]>;
  /** Deduplicated by (container, key). */
  readonly elements: readonly ElementClaim[];
  /** Endpoint-map blocks this contribution uses (the others of the service can be released). */
  readonly slotRoles: ReadonlySet<SlotRole>;
}

/** Table-level facts a service's rules depend on. */
export interface ServiceContext {
  readonly fs: FamilySyntax;
  /** A local-traffic detector exists (rules may reference @local-cidrs). */
  readonly detector: boolean;
  /** Endpoint-map blocks; the table of the claim index being built or moved on. */
  readonly slots: SlotTable;
  /**
   * The caller takes the hairpin claims itself (hairpinClaims): a full compile writes and counts
   * them in a walk of its own instead of through the sink, 440,000 at 44k Services.
   */
  readonly hairpinApart?: boolean;
  /**
   * The caller knows a grouped frontend claim's key without reading it (groupedFrontendKey of the
   * port it is compiling), so the claim may carry '' instead: a full compile spells none of the
   * 44,000 keys on its way to the kernel (compiler.ts FrontendPieces).
   */
  readonly groupedKeysApart?: boolean;
}

const GOTO_REJECT = `goto ${Chains.reject}`;
const NO_CHAINS: ReadonlyMap<string, readonly Rule[]> = new Map();
const NO_ROLES: ReadonlySet<SlotRole> = new Set();

function sameEndpoints(a: EndpointSet, b: EndpointSet): boolean {
  if (a === b) return true;
  if (a.endpoints.length !== b.endpoints.length) return false;
  for (let i = 0; i < a.endpoints.length; i++) {
    const x = a.endpoints[i]!;
    const y = b.endpoints[i]!;
    if (x.ip !== y.ip || x.port !== y.port) return false;
  }
  return true;
}

function forwards(set: EndpointSet): boolean {
  return set.verdict === 'forward' && set.endpoints.length > 0;
}

/**
 * Where a contribution's claims go as they are made (a full compile indexes them at once). An
 * object with methods, not a function: a full compile's sink is made anew each time, and code V8
 * optimized around one closure lost it when that closure was collected (util/shapes.ts).
 */
export interface ClaimSink {
  claim(container: string, key: string, value: string): void;
  /**
   * Where a full compile takes a block of endpoint shard claims whole: elements base, base + 1, …
   * of shard `map` are `endpoints` in order (claims `String(base + i)` → `endpointValue`). Neither
   * string is made: the encoder reads the slot and the endpoint as they are (transaction.ts
   * SlotPieces). Without it, shard claims go to claim() one by one.
   */
  block?(map: string, base: number, endpoints: readonly PlannedEndpoint[]): void;
}

/**
 * With `sink`, every claim goes to it as it is made and the returned `elements` is empty: a full
 * compile at 44k Services makes half a million claims, and an object and an array slot for each
 * made a good part of its garbage. With its `block` too, endpoint shard claims go there a block
 * at a time.
 */
export function serviceContribution(svc: ServiceEntry, ctx: ServiceContext, sink?: ClaimSink): ServiceContribution {
  return groupedClusterIPOnly(svc, ctx, sink) ?? generalContribution(svc, ctx, sink);
}

/**
 * The most common service port — a ClusterIP only, one set of up to GROUPED_MAX_ENDPOINTS
 * endpoints, no affinity — without the general path's closures and arrays: a full compile at
 * 44k Services makes tens of thousands of these. The same claims in the same order as the
 * general path (hairpin, cluster-ips, the grouped frontend); undefined for any other port.
 */
export function groupedClusterIPOnly(svc: ServiceEntry, ctx: ServiceContext, sink?: ClaimSink): ServiceContribution | undefined {
  const internal = svc.internal;
  const eps = internal.endpoints;
  if (
    !svc.clusterIP ||
    svc.affinityTimeoutSeconds > 0 ||
    svc.nodePort > 0 ||
    svc.externalIPs.length > 0 ||
    svc.loadBalancerIPs.length > 0 ||
    !forwards(internal) ||
    eps.length > GROUPED_MAX_ENDPOINTS ||
    (svc.external !== internal && forwards(svc.external)) ||
    (svc.cluster !== internal && forwards(svc.cluster))
  ) {
    return undefined;
  }
  // No list and no closure with a sink (a full compile: tens of thousands of these). Nothing here
  // may capture a local either: V8 would then make a context for every call, closure or not.
  if (!sink) return groupedListed(svc, ctx);
  claimGrouped(svc, ctx, sink);
  return SUNK;
}

/** groupedClusterIPOnly's claims as a list (a partial sync's contribution, not a full compile's). */
function groupedListed(svc: ServiceEntry, ctx: ServiceContext): ServiceContribution {
  const list = new ListSink();
  claimGrouped(svc, ctx, list);
  return { chains: NO_CHAINS, elements: list.elements, slotRoles: NO_ROLES };
}

/**
 * A contribution's claims as a list (a partial sync's). A class, and its latest instance kept
 * (util/shapes.ts): the functions that hand claims to a sink are a full compile's too, and code
 * optimized around a sink whose hidden class died with a partial sync was thrown away.
 */
class ListSink implements ClaimSink {
  readonly elements: ElementClaim[] = [];
  constructor() {
    keepShape(this);
  }
  claim(container: string, key: string, value: string): void {
    this.elements.push({ container, key, value });
  }
}

function claimGrouped(svc: ServiceEntry, ctx: ServiceContext, sink: ClaimSink): void {
  if (!ctx.hairpinApart) hairpinClaimsTo(svc, sink);
  clusterIPClaim(svc, sink);
  const masq = svc.clusterIPMasquerade === 'all' ? 'all' : svc.clusterIPMasquerade === 'nonLocal' && ctx.detector ? 'nonlocal' : '';
  sink.claim(GROUPED_FRONTENDS, ctx.groupedKeysApart ? '' : groupedFrontendKey(svc), R.groupedClaim(masq, svc.internal.endpoints.length));
}

/**
 * A service port's claim in the ClusterIP set: its ClusterIP, once, if it has one. Its
 * contribution claims it through this; a full compile counts the claims with it after the
 * rules are in (ClaimIndex.deferCounts).
 */
export function clusterIPClaim(svc: ServiceEntry, sink: ClaimSink): void {
  if (svc.clusterIP) sink.claim(Sets.clusterIPs, svc.clusterIP, '');
}

/** hairpinClaims as claims in the hairpin set (a function of its own: its closure's context is made only here). */
function hairpinClaimsTo(svc: ServiceEntry, sink: ClaimSink): void {
  hairpinClaims(svc, (ip) => sink.claim(Sets.hairpin, ip, ''));
}

/**
 * The key of a service port's grouped frontend claim: its ClusterIP, protocol and port, always —
 * a full compile checks that no two claims name one frontend from these parts (compiler.ts
 * frontendsDistinct), without the key strings.
 */
export function groupedFrontendKey(svc: ServiceEntry): string {
  return R.addrProtoPortKey(svc.clusterIP, svc.protocol, svc.port);
}

/**
 * The forwarding sets whose endpoints are hairpin claims — internal, external, cluster, each
 * distinct set once: the set itself when there is one (nearly every port; no array made for
 * it), undefined when there is none.
 */
function hairpinSets(svc: ServiceEntry): EndpointSet | readonly EndpointSet[] | undefined {
  const internal = svc.internal;
  const a = forwards(internal) ? internal : undefined;
  const b = svc.external !== a && forwards(svc.external) ? svc.external : undefined;
  const c = svc.cluster !== a && svc.cluster !== b && forwards(svc.cluster) ? svc.cluster : undefined;
  const n = (a ? 1 : 0) + (b ? 1 : 0) + (c ? 1 : 0);
  if (n <= 1) return a ?? b ?? c;
  const sets: EndpointSet[] = [];
  for (const x of [a, b, c]) if (x) sets.push(x);
  return sets;
}

/**
 * A service port's hairpin claims (`ip`, the endpoint IP: ElementClaim): every endpoint any of
 * its forwarding sets may use, each IP once, in set order (internal, external, cluster). Its
 * contribution claims them through this; a full compile, which sets `hairpinApart`, calls it
 * itself. A sorted set has a repeated IP (two ports) adjacent: no Set for the common case.
 */
export function hairpinClaims(svc: ServiceEntry, claim: (ip: string, v4?: number) => void): void {
  const sets = hairpinSets(svc);
  if (sets === undefined) return;
  if ('endpoints' in sets) {
    const eps = sets.endpoints;
    // IPv4 endpoints are compared by their number (PlannedEndpoint.v4): the walk then never
    // reads the address text, 440,000 strings scattered over the heap at 44k Services.
    let lastIP = '';
    let lastV4 = -1;
    for (let i = 0; i < eps.length; i++) {
      const ep = eps[i]!;
      const ip = ep.ip;
      const v4 = ep.v4;
      if (v4 !== undefined && v4 >= 0) {
        if (v4 === lastV4) continue;
      } else if (ip === lastIP) continue;
      lastIP = ip;
      lastV4 = v4 ?? canonicalIPv4(ip);
      claim(ip, v4);
    }
    return;
  }
  const seen = new Set<string>();
  for (const set of sets) {
    for (const ep of set.endpoints) {
      const size = seen.size;
      seen.add(ep.ip);
      if (seen.size !== size) claim(ep.ip, ep.v4);
    }
  }
}

/**
 * hairpinClaims into a full compile's hairpin elements: the same addresses in the same order. A
 * port with one forwarding set (nearly all) is walked here without a call per endpoint: IPv4
 * values from 2^31 up (every 128.0.0.0 and above) are not small integers to V8, and passing one
 * to a callback boxed it — 440,000 heap numbers, 7 MB a compile at 44k Services.
 */
export function hairpinInto(svc: ServiceEntry, into: FirstAddresses): void {
  const sets = hairpinSets(svc);
  if (sets === undefined) return;
  if (!('endpoints' in sets)) {
    hairpinClaims(svc, (ip, v4) => into.add(ip, v4));
    return;
  }
  const eps = sets.endpoints;
  const v4s = sets.v4;
  if (v4s !== undefined) {
    // The planner's packed addresses (EndpointSet.v4): in the daemon, where the lists left the
    // endpoint objects scattered, reading each one was most of a full compile's time.
    let last = -1;
    for (let i = 0; i < v4s.length; i++) {
      const v = v4s[i]!;
      if (v < 0) {
        last = -1;
        into.add(eps[i]!.ip, v);
      } else if (v !== last) {
        last = v;
        into.addV4(v);
      }
    }
    return;
  }
  let lastIP = '';
  let lastV4 = -1;
  for (let i = 0; i < eps.length; i++) {
    const ep = eps[i]!;
    const ip = ep.ip;
    const v4 = ep.v4;
    if (v4 !== undefined && v4 >= 0) {
      if (v4 === lastV4) continue;
      lastIP = ip;
      lastV4 = v4;
      into.addV4(v4);
      continue;
    }
    if (ip === lastIP) continue;
    lastIP = ip;
    lastV4 = v4 ?? canonicalIPv4(ip);
    into.add(ip, v4);
  }
}

const SUNK: ServiceContribution = Object.freeze({ chains: NO_CHAINS, elements: Object.freeze([]) as readonly ElementClaim[], slotRoles: NO_ROLES });

/** Every service port (serviceContribution takes the fast path first; tests compare the two). */
export function generalContribution(svc: ServiceEntry, ctx: ServiceContext, sink?: ClaimSink): ServiceContribution {
  const { fs } = ctx;
  // Spelled only for a port that owns a chain: most (ClusterIP only, endpoint-count layout) own none.
  let names: ServiceNames | undefined;
  const nameOf = (): ServiceNames => (names ??= serviceNames(svc));
  const p = svc.protocol;
  const affinity = svc.affinityTimeoutSeconds > 0;
  // Made only when needed: most service ports (ClusterIP only, no affinity) own no chain, and a
  // full sync at 44k Services makes one contribution per port.
  let chains: Map<string, Rule[]> | undefined;
  const setChain = (name: string, rules: Rule[]): void => {
    (chains ??= new Map()).set(name, rules);
  };
  // No list with a sink (a full compile: every claim goes to it).
  const list = sink ? undefined : new ListSink();
  // Only external addresses (an IP listed as both externalIP and LB IP) can repeat within one
  // service (hairpinClaims makes each IP once); those claims go through claimOnce.
  let seen: Set<string> | undefined;
  const out: ClaimSink = sink ?? list!;
  const claim = (container: string, key: string, value: string): void => out.claim(container, key, value);
  const claimOnce = (container: string, key: string, value: string): void => {
    seen ??= new Set();
    const id = `${container} ${key}`;
    if (seen.has(id)) return;
    seen.add(id);
    claim(container, key, value);
  };

  if (!ctx.hairpinApart) hairpinClaimsTo(svc, out);
  // Affinity only (empty otherwise): every endpoint any path may use, once, with its endpoint
  // chain's suffix. The three sets are often the same object: visit each distinct set once.
  const epSuffix = affinity ? new Map<string, string>() : undefined;
  const usedEndpoints: PlannedEndpoint[] = [];
  if (epSuffix) {
    const sets: EndpointSet[] = [];
    if (forwards(svc.internal)) sets.push(svc.internal);
    if (forwards(svc.external) && !sets.includes(svc.external)) sets.push(svc.external);
    if (forwards(svc.cluster) && !sets.includes(svc.cluster)) sets.push(svc.cluster);
    for (const set of sets) {
      for (const ep of set.endpoints) {
        const id = `${ep.ip}|${ep.port}`;
        if (epSuffix.has(id)) continue;
        epSuffix.set(id, endpointSuffix(svc, ep));
        usedEndpoints.push(ep);
      }
    }
  }

  const suffixOf = (ep: PlannedEndpoint): string => epSuffix!.get(`${ep.ip}|${ep.port}`)!;
  // A set shared by several roles (the usual case: internal === cluster, or equal lists) uses one block.
  const roleOf = (set: EndpointSet): SlotRole =>
    sameEndpoints(set, svc.internal) ? 'internal' : sameEndpoints(set, svc.external) ? 'external' : 'cluster';
  let slotRoles: Set<SlotRole> | undefined;
  const dispatch = (set: EndpointSet, cond: Cond): Rule[] => {
    if (!affinity) {
      const n = set.endpoints.length;
      const role = roleOf(set);
      const base = n > 1 && n <= SLOT_STRIDE ? ctx.slots.base(svc.key, role) : undefined;
      if (base === undefined) return [R.dnatRandom(fs, p, set.endpoints, cond)];
      const map = endpointShard(p, base / SLOT_STRIDE);
      if (!slotRoles?.has(role)) {
        (slotRoles ??= new Set()).add(role);
        if (sink?.block) sink.block(map, base, set.endpoints);
        else for (let i = 0; i < n; i++) claim(map, String(base + i), R.endpointValue(set.endpoints[i]!));
      }
      return [R.dnatSlot(fs, p, n, base, map, cond)];
    }
    const rules: Rule[] = [];
    const epChains: string[] = [];
    for (const ep of set.endpoints) {
      const sfx = suffixOf(ep);
      epChains.push(endpointChainName(sfx));
      rules.push(R.affinityCheck(fs, affinityId(svc, ep), endpointChainName(sfx), cond));
    }
    rules.push(R.randomEndpointChain(fs, epChains, cond));
    return rules;
  };

  // Internal traffic: the ClusterIP.
  if (svc.clusterIP) {
    clusterIPClaim(svc, out);
    const key = groupedFrontendKey(svc);
    const n = svc.internal.endpoints.length;
    if (forwards(svc.internal) && !affinity && n <= GROUPED_MAX_ENDPOINTS) {
      // Endpoint-count layout (names.ts): no chain. One claim carries the whole frontend (count
      // and masquerade variant; the endpoints are svc.internal's): if two service ports claim one
      // key, the winner's whole frontend is installed (claims.ts), as the winner's verdict is in
      // service-ips.
      const masq = svc.clusterIPMasquerade === 'all' ? 'all' : svc.clusterIPMasquerade === 'nonLocal' && ctx.detector ? 'nonlocal' : '';
      claim(GROUPED_FRONTENDS, key, R.groupedClaim(masq, n));
    } else if (forwards(svc.internal)) {
      const rules: Rule[] = [];
      if (svc.clusterIPMasquerade === 'all') rules.push(R.jump(Chains.markForMasquerade));
      else if (svc.clusterIPMasquerade === 'nonLocal' && ctx.detector) rules.push(R.verdict(fs, 'notLocalSrc', 'jump', Chains.markForMasquerade));
      rules.push(...dispatch(svc.internal, ''));
      setChain(nameOf().svc, rules);
      claim(Maps.serviceIPs, key, `goto ${nameOf().svc}`);
    } else if (svc.internal.verdict === 'drop') {
      claim(Maps.serviceIPs, key, 'drop');
    } else {
      claim(Maps.noEndpointServices, key, GOTO_REJECT);
    }
  }

  // External traffic: NodePort, externalIPs, LoadBalancer IPs.
  if (svc.nodePort > 0 || svc.externalIPs.length > 0 || svc.loadBalancerIPs.length > 0) {
    const externalIPs = [...svc.externalIPs, ...svc.loadBalancerIPs];
    // Local policy: pods and the node itself reach the service through the cluster-wide set.
    const shortCircuit = svc.externalPolicyLocal && forwards(svc.cluster);
    const useChain = forwards(svc.external) || (shortCircuit && svc.external.verdict === 'drop');
    // Endpoint-count layout for every external frontend (names.ts): Cluster policy (always
    // masqueraded, no short-circuit), no affinity, a count in range. The NodePort is a grouped
    // NodePort (kind 'port'), each externalIP and LB IP a grouped frontend like a ClusterIP (with
    // the external endpoints): no ext- chain, so an endpoint change is element changes only.
    const grouped = svc.externalMasquerade && !affinity && forwards(svc.external) && svc.external.endpoints.length <= GROUPED_MAX_ENDPOINTS;
    let verdict: string | undefined; // in service-ips / service-nodeports
    let rejectVerdict: string | undefined; // in no-endpoint-*
    if (useChain) {
      if (!grouped) {
        const rules: Rule[] = [];
        if (svc.externalMasquerade) rules.push(R.jump(Chains.markForMasquerade));
        if (shortCircuit) {
          if (ctx.detector) rules.push(...dispatch(svc.cluster, 'localSrc'));
          // The node's own traffic has a local source address that endpoints elsewhere could not answer.
          rules.push(R.verdict(fs, 'fromNode', 'jump', Chains.markForMasquerade));
          rules.push(...dispatch(svc.cluster, 'fromNode'));
        }
        if (forwards(svc.external)) rules.push(...dispatch(svc.external, ''));
        else rules.push(R.DROP);
        setChain(nameOf().ext, rules);
        verdict = `goto ${nameOf().ext}`;
      }
    } else if (svc.external.verdict === 'drop') {
      verdict = 'drop';
    } else {
      rejectVerdict = GOTO_REJECT;
    }
    for (const ip of externalIPs) {
      if (ip === svc.clusterIP) continue; // already claimed as the ClusterIP
      const key = R.addrProtoPortKey(ip, p, svc.port);
      if (grouped) claimOnce(GROUPED_FRONTENDS, key, R.groupedClaim('ext', svc.external.endpoints.length));
      else if (verdict !== undefined) claimOnce(Maps.serviceIPs, key, verdict);
      else claimOnce(Maps.noEndpointServices, key, rejectVerdict!);
    }
    if (svc.nodePort > 0) {
      const key = R.protoPortKey(p, svc.nodePort);
      if (grouped) claim(GROUPED_NODEPORTS, key, R.groupedClaim('all', svc.external.endpoints.length));
      else if (verdict !== undefined) claim(Maps.serviceNodePorts, key, verdict);
      else claim(Maps.noEndpointNodePorts, key, rejectVerdict!);
    }

    // loadBalancerSourceRanges, for LB IPs only (NodePorts and externalIPs are not filtered,
    // as in kube-proxy), plus the LB IPs themselves when the IR says so.
    if (svc.loadBalancerIPs.length > 0 && svc.loadBalancerSourceRanges.length > 0) {
      const fam = ctx.fs.family;
      const sources = normalizeCIDRs(fam, svc.allowLoadBalancerIPSources ? [...svc.loadBalancerSourceRanges, ...svc.loadBalancerIPs] : svc.loadBalancerSourceRanges);
      setChain(nameOf().fw, [sources.length ? R.firewallDrop(fs, sources) : R.DROP]);
      for (const ip of svc.loadBalancerIPs) claimOnce(Maps.firewallIPs, R.addrProtoPortKey(ip, p, svc.port), `goto ${nameOf().fw}`);
    }
  }

  if (affinity) {
    for (const ep of usedEndpoints) {
      const sfx = suffixOf(ep);
      // The shared `affinity` set (skeleton.ts) records client . (service port, endpoint): no
      // set of its own, so adding an affinity port adds no named set to the table.
      setChain(endpointChainName(sfx), [R.affinityUpdate(fs, affinityId(svc, ep), svc.affinityTimeoutSeconds), R.dnatTo(fs, p, ep)]);
    }
  }
  return { chains: chains ?? NO_CHAINS, elements: list?.elements ?? SUNK.elements, slotRoles: slotRoles ?? NO_ROLES };
}
