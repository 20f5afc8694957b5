/**
 * Rule bodies: every kind of rule ferry installs is built by exactly one function here, per IP
 * family, as a typed value (`Rule`: the kind and its parameters) carrying its nft text. The text
 * is what scripts (libnftables, `nft -f`) apply and what goldens pin; the typed form is what the
 * netlink encoder (netlink.ts) turns into kernel expressions, so the two can never disagree on
 * which rule is meant. The compiler decides which rules go where; this module only knows syntax.
 * Pure; must never look at Kubernetes semantics (verdicts, policies): callers pass decisions in.
 */
import type { IPFamily, LocalTrafficDetector, PlannedEndpoint, Protocol } from '../../plan/types.js';
import { Chains, Maps, Sets } from './names.js';
import type { NftFamily } from './transaction.js';

export interface FamilySyntax {
  readonly family: IPFamily;
  /** Table family for commands: `ip` / `ip6`. */
  readonly nft: NftFamily;
  /** Payload protocol keyword for addresses: `ip saddr` / `ip6 saddr`. */
  readonly ipX: 'ip' | 'ip6';
  readonly addrType: 'ipv4_addr' | 'ipv6_addr';
  /** Loopback destinations never accept NodePorts (no route_localnet). */
  readonly loopback: string;
  /**
   * Set when local pod traffic is recognized by its incoming interface (detect-local
   * BridgeInterface / InterfaceNamePrefix) instead of by source address in @local-cidrs.
   */
  readonly localIf?: LocalInterface;
}

/** An incoming-interface match: the exact name, or every name starting with it (`"veth*"`). */
export interface LocalInterface {
  readonly name: string;
  readonly prefix: boolean;
}

export const V4: FamilySyntax = { family: 4, nft: 'ip', ipX: 'ip', addrType: 'ipv4_addr', loopback: '127.0.0.0/8' };
export const V6: FamilySyntax = { family: 6, nft: 'ip6', ipX: 'ip6', addrType: 'ipv6_addr', loopback: '::1' };

export function familySyntax(f: IPFamily): FamilySyntax {
  return f === 4 ? V4 : V6;
}

const withInterface = new Map<string, FamilySyntax>();

/** The syntax of one table: its family, and how its local-traffic detector is spelled. */
export function tableSyntax(f: IPFamily, detector: LocalTrafficDetector): FamilySyntax {
  if (detector.kind !== 'bridgeInterface' && detector.kind !== 'interfaceNamePrefix') return familySyntax(f);
  const localIf: LocalInterface =
    detector.kind === 'bridgeInterface' ? { name: detector.name, prefix: false } : { name: detector.prefix, prefix: true };
  const key = `${f}|${localIf.prefix ? 'p' : 'n'}|${localIf.name}`;
  let fs = withInterface.get(key);
  if (!fs) withInterface.set(key, (fs = Object.freeze({ ...familySyntax(f), localIf: Object.freeze(localIf) })));
  return fs;
}

/** nft's spelling of an interface name match: a quoted string, `*` for a prefix. */
export function ifnameText(i: LocalInterface): string {
  return JSON.stringify(i.prefix ? `${i.name}*` : i.name);
}

export function hexMark(mark: number): string {
  return `0x${mark.toString(16)}`;
}

// Constants, not `toLowerCase()`: that made a new string for every key a full compile spells
// (one per frontend, 44,000+ at 44k Services), each kept until the batch is encoded.
const PROTO_NAMES: Readonly<Record<Protocol, string>> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

export function proto(p: Protocol): string {
  return PROTO_NAMES[p] ?? p.toLowerCase();
}

/**
 * `addr . proto . port` — the key of service-ips, no-endpoint-services and firewall-ips. Joined,
 * not a template: a template's result is a chain of concatenation cells (~125 bytes a key at 44k
 * Services, live until the batch is encoded, and flattened again when the encoder reads
 * it); `join` writes the ~25 characters once.
 */
export function addrProtoPortKey(addr: string, p: Protocol, port: number): string {
  return [addr, proto(p), port].join(' . ');
}

/** `proto . port` — the key of service-nodeports and no-endpoint-nodeports. */
export function protoPortKey(p: Protocol, port: number): string {
  return `${proto(p)} . ${port}`;
}

export function hairpinKey(ip: string): string {
  return `${ip} . ${ip}`;
}

function endpointAddr(fs: FamilySyntax, ep: PlannedEndpoint): string {
  return fs.family === 6 ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

/**
 * A rule's precondition on the packet's source: none, from a local pod (`@local-cidrs`, or the
 * incoming interface when the table's syntax has `localIf`), not from one, or from the node
 * itself (`fib saddr type local`).
 */
export type Cond = '' | 'localSrc' | 'notLocalSrc' | 'fromNode';

/** Where a NodePort dispatch applies: every local address but loopback (`fib` in nat, a plain
 * check in the input hook), or the addresses of @nodeport-ips. */
export type PortDispatchScope = 'fibLocalNotLoopback' | 'notLoopback' | 'nodePortIPs';

/** A rule of ferry's, by kind; `text` is its nft spelling (rendered once, when built). */
export type Rule =
  | { readonly k: 'verdict'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly verdict: 'jump' | 'goto' | 'return' | 'drop'; readonly chain: string }
  | { readonly k: 'ctNewJump'; readonly text: string; readonly chain: string }
  | { readonly k: 'reject'; readonly text: string; readonly daddrSet: string }
  | { readonly k: 'daddrSetDrop'; readonly text: string; readonly set: string }
  | { readonly k: 'markOr' | 'markXor' | 'markUnsetReturn'; readonly text: string; readonly mark: number }
  | { readonly k: 'masqFullyRandom'; readonly text: string }
  | { readonly k: 'hairpin'; readonly text: string; readonly set: string; readonly chain: string }
  | { readonly k: 'dispatch'; readonly text: string; readonly map: string }
  | { readonly k: 'portDispatch'; readonly text: string; readonly scope: PortDispatchScope; readonly map: string }
  | { readonly k: 'portScopeJump'; readonly text: string; readonly scope: PortDispatchScope; readonly chain: string }
  | { readonly k: 'dnat'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly proto: Protocol; readonly ip: string; readonly port: number }
  | { readonly k: 'dnatAnon'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly proto: Protocol; readonly eps: readonly PlannedEndpoint[] }
  | { readonly k: 'dnatSlot'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly proto: Protocol; readonly n: number; readonly base: number; readonly map: string }
  | { readonly k: 'frontendJump'; readonly text: string; readonly set: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly chain: string; readonly byPort?: true }
  | { readonly k: 'dnatCount'; readonly text: string; readonly set: string; readonly proto: Protocol; readonly n: number; readonly map: string; readonly byPort?: true }
  | { readonly k: 'affinityCheck'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly set: string; readonly id: readonly [number, number]; readonly chain: string }
  | { readonly k: 'randomChain'; readonly text: string; readonly cond: Cond; readonly iif?: LocalInterface; readonly chains: readonly string[] }
  | { readonly k: 'affinityUpdate'; readonly text: string; readonly set: string; readonly id: readonly [number, number]; readonly timeoutSeconds: number }
  | { readonly k: 'firewallDrop'; readonly text: string; readonly sources: readonly string[] };

export type RuleKind = Rule['k'];

function condText(fs: FamilySyntax, cond: Cond): string {
  switch (cond) {
    case '':
      return '';
    case 'localSrc':
      return fs.localIf ? `iifname ${ifnameText(fs.localIf)} ` : `${fs.ipX} saddr @${Sets.localCIDRs} `;
    case 'notLocalSrc':
      return fs.localIf ? `iifname != ${ifnameText(fs.localIf)} ` : `${fs.ipX} saddr != @${Sets.localCIDRs} `;
    case 'fromNode':
      return 'fib saddr type local ';
  }
}

/** The interface a local-source condition matches, for the netlink encoder (absent: @local-cidrs). */
function ifOf(fs: FamilySyntax, cond: Cond): { iif?: LocalInterface } {
  return fs.localIf && (cond === 'localSrc' || cond === 'notLocalSrc') ? { iif: fs.localIf } : {};
}

// ---- skeleton rules ----

export function jumpIfNew(chain: string): Rule {
  return { k: 'ctNewJump', text: `ct state new jump ${chain}`, chain };
}

/** A verdict, optionally under a source condition: `jump X`, `ip saddr != @local-cidrs jump X`, `return`, `drop`. */
export function verdict(fs: FamilySyntax, cond: Cond, v: 'jump' | 'goto' | 'return' | 'drop', chain = ''): Rule {
  const word = v === 'jump' || v === 'goto' ? `${v} ${chain}` : v;
  return { k: 'verdict', text: `${condText(fs, cond)}${word}`, cond, ...ifOf(fs, cond), verdict: v, chain };
}

export function jump(chain: string): Rule {
  return { k: 'verdict', text: `jump ${chain}`, cond: '', verdict: 'jump', chain };
}

export const RETURN: Rule = { k: 'verdict', text: 'return', cond: '', verdict: 'return', chain: '' };
export const DROP: Rule = { k: 'verdict', text: 'drop', cond: '', verdict: 'drop', chain: '' };
export const REJECT: Rule = { k: 'reject', text: 'reject', daddrSet: '' };

export function markForMasquerade(mark: number): Rule {
  return { k: 'markOr', text: `meta mark set meta mark | ${hexMark(mark)}`, mark };
}

/** The masquerading chain: only marked packets; the mark bit is cleared before masquerading. */
export function masqueradingRules(mark: number): Rule[] {
  return [
    { k: 'markUnsetReturn', text: `meta mark & ${hexMark(mark)} == 0 return`, mark },
    { k: 'markXor', text: `meta mark set meta mark ^ ${hexMark(mark)}`, mark },
    { k: 'masqFullyRandom', text: 'masquerade fully-random' },
  ];
}

/**
 * Hairpin: a connection DNAT-ed back to its own source (a pod reaching itself through its
 * Service) must be masqueraded or the reply would bypass conntrack. With map-based endpoint
 * selection there is no per-endpoint chain to check `saddr == endpoint` in, so postrouting looks
 * up `saddr . daddr` in a set holding `ep . ep` for every endpoint IP.
 */
export function hairpinRule(fs: FamilySyntax): Rule {
  return {
    k: 'hairpin',
    text: `ct status dnat ${fs.ipX} saddr . ${fs.ipX} daddr @${Sets.hairpin} jump ${Chains.markForMasquerade}`,
    set: Sets.hairpin,
    chain: Chains.markForMasquerade,
  };
}

export function serviceIPsDispatch(fs: FamilySyntax, map: string = Maps.serviceIPs): Rule {
  return { k: 'dispatch', text: `${fs.ipX} daddr . meta l4proto . th dport vmap @${map}`, map };
}

/** NodePort dispatch (nat) — `all`: every local address but loopback; `list`: @nodeport-ips. */
export function nodePortDispatch(fs: FamilySyntax, all: boolean, map: string = Maps.serviceNodePorts): Rule {
  return all
    ? { k: 'portDispatch', text: `fib daddr type local ${fs.ipX} daddr != ${fs.loopback} meta l4proto . th dport vmap @${map}`, scope: 'fibLocalNotLoopback', map }
    : { k: 'portDispatch', text: `${fs.ipX} daddr @${Sets.nodePortIPs} meta l4proto . th dport vmap @${map}`, scope: 'nodePortIPs', map };
}

/**
 * Grouped NodePorts (endpoint-count layout, port kind): the NodePort addresses `nodePortDispatch`
 * accepts jump to `chain`, where the count rules match `proto . port` alone.
 */
export function nodePortGroupsJump(fs: FamilySyntax, all: boolean, chain: string): Rule {
  return all
    ? { k: 'portScopeJump', text: `fib daddr type local ${fs.ipX} daddr != ${fs.loopback} jump ${chain}`, scope: 'fibLocalNotLoopback', chain }
    : { k: 'portScopeJump', text: `${fs.ipX} daddr @${Sets.nodePortIPs} jump ${chain}`, scope: 'nodePortIPs', chain };
}

/** NodePort reject check, in the input hook (where daddr is always local). */
export function nodePortRejectCheck(fs: FamilySyntax, all: boolean): Rule {
  const map = Maps.noEndpointNodePorts;
  return all
    ? { k: 'portDispatch', text: `${fs.ipX} daddr != ${fs.loopback} meta l4proto . th dport vmap @${map}`, scope: 'notLoopback', map }
    : { k: 'portDispatch', text: `${fs.ipX} daddr @${Sets.nodePortIPs} meta l4proto . th dport vmap @${map}`, scope: 'nodePortIPs', map };
}

/** Traffic to a ClusterIP that no service port DNAT-ed (a port that is not a service port). */
export function clusterIPsReject(fs: FamilySyntax): Rule {
  return { k: 'reject', text: `${fs.ipX} daddr @${Sets.clusterIPs} reject`, daddrSet: Sets.clusterIPs };
}

/**
 * Traffic to an address inside a service CIDR that no Service holds (kube-proxy's nftables
 * mode: "Drop traffic to unallocated ClusterIPs"). Only after DNAT: real Service traffic has
 * been rewritten by then, and a ClusterIP on a port it does not serve was rejected just before.
 */
export function serviceCIDRsDrop(fs: FamilySyntax): Rule {
  return { k: 'daddrSetDrop', text: `${fs.ipX} daddr @${Sets.serviceCIDRs} drop`, set: Sets.serviceCIDRs };
}

// ---- per-service rules ----

/**
 * DNAT to one endpoint picked at random: a single rule with an anonymous map from
 * `numgen random mod N` to `addr . port` (no per-endpoint chains).
 */
export function dnatRandom(fs: FamilySyntax, p: Protocol, eps: readonly PlannedEndpoint[], cond: Cond): Rule {
  if (eps.length === 1) return dnatTo(fs, p, eps[0]!, cond);
  const items: string[] = [];
  for (let i = 0; i < eps.length; i++) items.push(`${i} : ${eps[i]!.ip} . ${eps[i]!.port}`);
  return {
    k: 'dnatAnon',
    text: `${condText(fs, cond)}meta l4proto ${proto(p)} dnat ${fs.ipX} to numgen random mod ${eps.length} map { ${items.join(', ')} }`,
    cond,
    ...ifOf(fs, cond),
    proto: p,
    eps,
  };
}

/**
 * Several endpoints in the shared endpoints map: keys base .. base+n-1 (slots.ts). One named
 * map for all services, because every anonymous map costs the kernel a scan of all sets.
 */
export function dnatSlot(fs: FamilySyntax, p: Protocol, n: number, base: number, map: string, cond: Cond): Rule {
  return {
    k: 'dnatSlot',
    text: `${condText(fs, cond)}meta l4proto ${proto(p)} dnat ${fs.ipX} to numgen random mod ${n} offset ${base} map @${map}`,
    cond,
    ...ifOf(fs, cond),
    proto: p,
    n,
    base,
    map,
  };
}

/**
 * `addr . proto . port` of the packet: the frontend key of the count and masquerade sets; with
 * `byPort`, `proto . port` (grouped NodePorts).
 */
function frontendKeyText(fs: FamilySyntax, byPort = false): string {
  return byPort ? 'meta l4proto . th dport' : `${fs.ipX} daddr . meta l4proto . th dport`;
}

/**
 * Endpoint-count layout (names.ts): a frontend whose key is in `set` jumps to `chain` (a
 * masquerade variant), optionally under a source condition.
 */
export function frontendJump(fs: FamilySyntax, set: string, cond: Cond, chain: string, byPort = false): Rule {
  return { k: 'frontendJump', text: `${frontendKeyText(fs, byPort)} @${set} ${condText(fs, cond)}jump ${chain}`, set, cond, ...ifOf(fs, cond), chain, ...(byPort ? { byPort: true as const } : {}) };
}

/**
 * Endpoint-count layout: every frontend in count set `set` (n endpoints) is DNAT-ed to the
 * element `key . index` of `map`. nft lists the map key's `th dport` as `tcp dport` and folds the
 * `meta l4proto` match into it; the kernel holds the same expressions either way.
 */
export function dnatCount(fs: FamilySyntax, p: Protocol, n: number, set: string, map: string, byPort = false): Rule {
  const key = frontendKeyText(fs, byPort);
  return {
    k: 'dnatCount',
    text: `${key} @${set} meta l4proto ${proto(p)} dnat ${fs.ipX} to ${key} . numgen random mod ${n} map @${map}`,
    set,
    proto: p,
    n,
    map,
    ...(byPort ? { byPort: true as const } : {}),
  };
}

/**
 * A grouped frontend's masquerade variant: none, all, non-local sources — or `ext`, an externalIP
 * or LB IP of a Cluster-policy Service: all masqueraded, and its endpoints are the external ones.
 */
export type GroupedMasq = '' | 'all' | 'nonlocal' | 'ext';

/** groupedClaim's values, spelled once: [masquerade variant][endpoint count]. */
const GROUPED_CLAIMS: Record<GroupedMasq, string[]> = { '': [], all: [], nonlocal: [], ext: [] };

/**
 * A grouped frontend as one claim value (names.ts GROUPED_FRONTENDS, GROUPED_NODEPORTS): the
 * masquerade variant (GroupedMasq) and the number of endpoints, `masq|n`. The endpoints themselves
 * are the winning claimant's (internal, or external for `ext` and NodePorts), read from its
 * ServiceEntry when the elements are written: the
 * index keeps no second copy of them (at 44k Services a joined list per frontend was 10 MB).
 */
export function groupedClaim(masq: GroupedMasq, n: number): string {
  return (GROUPED_CLAIMS[masq][n] ??= `${masq}|${n}`);
}

/** A key of a grouped endpoints map: the frontend key and the endpoint's index. */
export function groupedEndpointKey(frontendKey: string, i: number): string {
  return `${frontendKey} . ${i}`;
}

/** An element of the endpoints map: `ip . port`. */
export function endpointValue(ep: PlannedEndpoint): string {
  return `${ep.ip} . ${ep.port}`;
}

/**
 * The key of the shared affinity set (names.ts affinityId): `client . id0 . id1`. nft 1.0.6
 * refuses a constant inside a lookup's key ("Can't parse symbolic invalid expressions"), but
 * `numgen random mod 1 offset C` is an expression that always yields C (0 + offset), and nft
 * parses, applies and lists it in a key on both sides (lookup and `update`); the kernel draws a
 * per-CPU random number it then discards. See docs/nftables.md, "ClientIP affinity".
 */
export function affinityKeyText(fs: FamilySyntax, id: readonly [number, number]): string {
  return `${fs.ipX} saddr . numgen random mod 1 offset ${id[0]} . numgen random mod 1 offset ${id[1]}`;
}

/** Affinity: a client seen recently (by this service port, for this endpoint) goes back to it. */
export function affinityCheck(fs: FamilySyntax, id: readonly [number, number], epChain: string, cond: Cond, set: string = Sets.affinity): Rule {
  return { k: 'affinityCheck', text: `${condText(fs, cond)}${affinityKeyText(fs, id)} @${set} goto ${epChain}`, cond, ...ifOf(fs, cond), set, id, chain: epChain };
}

/** Affinity: otherwise pick an endpoint chain at random. */
export function randomEndpointChain(fs: FamilySyntax, epChains: readonly string[], cond: Cond): Rule {
  if (epChains.length === 1) return verdict(fs, cond, 'goto', epChains[0]!);
  const items: string[] = [];
  for (let i = 0; i < epChains.length; i++) items.push(`${i} : goto ${epChains[i]!}`);
  return { k: 'randomChain', text: `${condText(fs, cond)}numgen random mod ${epChains.length} vmap { ${items.join(', ')} }`, cond, ...ifOf(fs, cond), chains: epChains };
}

/**
 * Affinity: record (or refresh) the client for this endpoint with the service port's timeout,
 * as kube-proxy's `update @affinity-… { ip saddr }` does; the timeout is per element here.
 */
export function affinityUpdate(fs: FamilySyntax, id: readonly [number, number], timeoutSeconds: number, set: string = Sets.affinity): Rule {
  return { k: 'affinityUpdate', text: `update @${set} { ${affinityKeyText(fs, id)} timeout ${timeoutSeconds}s }`, set, id, timeoutSeconds };
}

export function dnatTo(fs: FamilySyntax, p: Protocol, ep: PlannedEndpoint, cond: Cond = ''): Rule {
  return { k: 'dnat', text: `${condText(fs, cond)}meta l4proto ${proto(p)} dnat to ${endpointAddr(fs, ep)}`, cond, ...ifOf(fs, cond), proto: p, ip: ep.ip, port: ep.port };
}

/** loadBalancerSourceRanges: drop every source outside the allowed ones. */
export function firewallDrop(fs: FamilySyntax, sources: readonly string[]): Rule {
  return { k: 'firewallDrop', text: `${fs.ipX} saddr != { ${sources.join(', ')} } drop`, sources };
}
