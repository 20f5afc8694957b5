/**
 * The nftables compiler: (previous IR, next IR, what changed) → one nftables transaction.
 *
 * Full sync assumes nothing about the kernel: it (re)creates the table, every chain, set and map
 * ferry owns, writes all content, and deletes stale chains named by `existingChains` (the one
 * kernel listing the backend does, on full syncs only). Partial sync trusts `prev` to describe
 * the kernel exactly and emits only what differs for the changed service ports: element
 * adds/deletes, rewritten chains, new chains, and deletions of chains no longer used, ordered so
 * the kernel accepts them in one transaction (references are dropped before their target is deleted).
 *
 * Pure: no I/O, no clock. Translates decisions made in the IR; never re-derives policy.
 */
import type { IPFamily, PlannedEndpoint, Protocol, ProxyTable, ProxyTables, ServiceEntry, ServicePortKey, SyncChanges } from '../../plan/types.js';
import { ClaimIndex, CompileState } from './claims.js';
import { Chains, countSetName, countSetOf, endpointShardProtocol, FERRY_TABLE, GROUPED_FRONTENDS, GROUPED_NODEPORTS, groupedMapName, groupedMapOf, groupedMapProtocol, isLegacyAffinitySet, Maps, Sets, type GroupedKind } from './names.js';
import * as R from './rules.js';
import { tableSyntax, type FamilySyntax, type Rule } from './rules.js';
import type { SlotTable } from './slots.js';
import { canonicalIPv4 } from '../../util/ipv4.js';
import { FirstAddresses, IPv4Set, NumberSet } from './distinct.js';
import { keepShape } from '../../util/shapes.js';
import { groupedFrontendKey, hairpinClaims, hairpinInto, serviceContribution, type ClaimSink, type ElementClaim, type ServiceContext, type ServiceContribution } from './service.js';
import { affinitySetSpec, buildSkeleton, countChainRules, countSetSpec, endpointMapSpec, groupedSetSize, type ChainWithRules } from './skeleton.js';
import { tableTarget, Transaction, type ElementRun, type FrontendPieces } from './transaction.js';

export { CompileState } from './claims.js';

export const DEFAULT_MASQUERADE_MARK = 0x4000;

export interface CompileOptions {
  readonly families: readonly IPFamily[];
  /** The masquerade mark bit (kube-proxy's default bit 14: 0x4000). */
  readonly masqueradeMark: number;
  /**
   * Full sync only: chains that exist in the kernel table now (listed by the backend), so stale
   * ones can be deleted. A Set applies to every family; a record gives one set per family.
   */
  readonly existingChains?: ReadonlySet<string> | Partial<Record<IPFamily, ReadonlySet<string>>>;
  /** Full sync only: maps that exist in the kernel table now, so unused endpoint shards can be deleted. */
  readonly existingMaps?: Partial<Record<IPFamily, ReadonlySet<string>>>;
  /** Full sync only: named sets that exist in the kernel table now, so unused count sets can be deleted. */
  readonly existingSets?: Partial<Record<IPFamily, ReadonlySet<string>>>;
  /** Table name; default `ferry`. */
  readonly table?: string;
  /**
   * What the last compile left in the kernel (the backend keeps one). Without it, a partial
   * compile rebuilds the previous table's index, O(services), as a full compile would.
   */
  readonly state?: CompileState;
}

const TABLE_COMMENT = 'ferry: Kubernetes service proxy rules (managed by ferry; do not edit)';

/**
 * A partial sync would put more elements in a grouped endpoints map, a count set or a sized service
 * set (SIZED_SETS) than the size it was created with (skeleton.ts groupedSetSize): the kernel would
 * refuse them (ENFILE). The backend syncs in full instead, which makes the set again with room for
 * what it holds now.
 */
export class SetFullError extends Error {
  constructor(
    readonly set: string,
    readonly elements: number,
    readonly size: number,
  ) {
    super(`${set} would hold ${elements} elements, sized for ${size}: a full sync makes it again`);
    this.name = 'SetFullError';
  }
}

/**
 * The service sets a full sync makes anew with a size, like the grouped maps and count sets: at
 * 44k Services the kernel spent ~140 ms of a full sync's 500 growing the hash tables of the three
 * big ones (hairpin, 64,000 pairs; cluster-ips and masq-nonlocal, 44,000 each) as the batch filled
 * them.
 */
const SIZED_SETS: ReadonlySet<string> = new Set([Sets.clusterIPs, Sets.hairpin, Sets.masqAll, Sets.masqNonLocal, Sets.masqNodePorts]);

/** How many elements sized service set `name` holds, from the index (a partial sync's check). */
function sizedSetElements(index: ClaimIndex, name: string): number {
  return name === Sets.clusterIPs || name === Sets.hairpin ? index.size(name) : (index.masqSetSizes.get(name) ?? 0);
}

/** How many elements grouped endpoints map `name` holds: its count set's frontends × its count. */
function groupedMapElements(index: ClaimIndex, name: string): number {
  const g = groupedMapOf(name);
  if (g === undefined) return 0;
  return (index.countSetSizes.get(countSetName(g.proto, g.n, g.kind)) ?? 0) * g.n;
}

/** Containers whose elements come from services, in the order their elements are written. */
const SERVICE_CONTAINERS: readonly { name: string; kind: 'set' | 'map' }[] = [
  { name: Sets.clusterIPs, kind: 'set' },
  { name: Sets.hairpin, kind: 'set' },
  { name: Maps.serviceIPs, kind: 'map' },
  { name: Maps.serviceNodePorts, kind: 'map' },
  { name: Maps.noEndpointServices, kind: 'map' },
  { name: Maps.noEndpointNodePorts, kind: 'map' },
  { name: Maps.firewallIPs, kind: 'map' },
];

/**
 * `apart`: a full compile's (ServiceContext.hairpinApart, groupedKeysApart). Every context is made
 * here, with the same fields: one hidden class for all, kept alive by the latest context (a
 * full compile's spread copy had one of its own, gone with the compile at the next major
 * collection, and the contribution functions' optimized code with it: util/shapes.ts).
 */
function contextOf(fs: FamilySyntax, table: ProxyTable, slots: SlotTable, apart = false): ServiceContext {
  return keepShape({ fs, detector: table.localTraffic.kind !== 'none', slots, hairpinApart: apart, groupedKeysApart: apart }, contextOf);
}

function existingFor(opts: CompileOptions, family: IPFamily): ReadonlySet<string> {
  const e = opts.existingChains;
  if (!e) return new Set();
  if (e instanceof Set) return e as ReadonlySet<string>;
  return (e as Partial<Record<IPFamily, ReadonlySet<string>>>)[family] ?? new Set();
}

/** The endpoints maps (shards and grouped maps, names.ts) the index has claims in, sorted. */
function shardsOf(index: ClaimIndex): string[] {
  const out: string[] = [];
  for (const name of index.containerNames()) if (endpointShardProtocol(name) !== undefined && index.size(name) > 0) out.push(name);
  return out.sort();
}

/** The count sets (names.ts) in use, by kind (ClusterIP frontends first), protocol, then endpoint count. */
function countSetsOf(index: ClaimIndex): string[] {
  const out: { name: string; kind: GroupedKind; proto: string; n: number }[] = [];
  for (const [name, size] of index.countSetSizes) {
    if (size <= 0) continue;
    const c = countSetOf(name)!;
    out.push({ name, kind: c.kind, proto: c.proto, n: c.n });
  }
  out.sort((a, b) => (a.kind !== b.kind ? (a.kind === 'addr' ? -1 : 1) : a.proto < b.proto ? -1 : a.proto > b.proto ? 1 : a.n - b.n));
  return out.map((x) => x.name);
}

/** The count sets of `counts` of one kind, in order. */
function countsOfKind(counts: readonly string[], kind: GroupedKind): string[] {
  return counts.filter((name) => countSetOf(name)!.kind === kind);
}

/** The grouped endpoints maps the count sets `counts` use (one each), sorted. */
function groupedMapsOf(counts: readonly string[]): string[] {
  const out: string[] = [];
  for (const name of counts) {
    const c = countSetOf(name)!;
    out.push(groupedMapName(c.proto, c.n, c.kind));
  }
  return out.sort();
}

/**
 * A grouped frontend's claim value (rules.ts groupedClaim) as the containers its elements go to.
 * The endpoints are the winning claimant's ServiceEntry's (internal set): the compiler reads
 * them from the table when it writes the elements.
 */
interface GroupedFrontend {
  /** ClusterIP frontends (`addr . proto . port`, internal endpoints) or NodePorts (`proto . port`, external endpoints). */
  readonly kind: GroupedKind;
  /** The endpoints are the claimant's external ones (a NodePort, an externalIP or LB IP), else its internal ones. */
  readonly external: boolean;
  readonly countSet: string;
  readonly masqSet: string | undefined;
  readonly map: string;
  readonly n: number;
}

/** Count set names by protocol and endpoint count, spelled once each (a full compile asks 44k times). */
const countSetNames = new Map<Protocol, string[]>();

function countSetNameOf(proto: Protocol, n: number): string {
  let byN = countSetNames.get(proto);
  if (!byN) countSetNames.set(proto, (byN = []));
  return (byN[n] ??= countSetName(proto, n));
}

/** The protocol of a frontend key `addr . proto . port`, read in place. */
function keyProtocol(key: string): Protocol {
  const i = key.indexOf(' . ') + 3;
  const c = key.charCodeAt(i);
  if (c === 0x74 /* t */) return 'TCP';
  if (c === 0x75 /* u */) return 'UDP';
  if (c === 0x73 /* s */) return 'SCTP';
  throw new Error(`grouped frontend key without a protocol: ${key}`);
}

/** The protocol of a NodePort key `proto . port`, read in place. */
function portKeyProtocol(key: string): Protocol {
  const c = key.charCodeAt(0);
  if (c === 0x74 /* t */) return 'TCP';
  if (c === 0x75 /* u */) return 'UDP';
  if (c === 0x73 /* s */) return 'SCTP';
  throw new Error(`grouped NodePort key without a protocol: ${key}`);
}

/** Expanded claims by kind, protocol and claim value: a handful of distinct ones, made once each. */
const groupedFrontends: Readonly<Record<GroupedKind, Readonly<Record<Protocol, Map<string, GroupedFrontend>>>>> = {
  addr: { TCP: new Map(), UDP: new Map(), SCTP: new Map() },
  port: { TCP: new Map(), UDP: new Map(), SCTP: new Map() },
};

/** The kind of a grouped claim container (names.ts GROUPED_FRONTENDS, GROUPED_NODEPORTS). */
function kindOf(container: string): GroupedKind | undefined {
  return container === GROUPED_FRONTENDS ? 'addr' : container === GROUPED_NODEPORTS ? 'port' : undefined;
}

/** A claim of `container` (GROUPED_FRONTENDS or GROUPED_NODEPORTS), expanded. */
function expandGrouped(container: string, key: string, value: string): GroupedFrontend {
  const kind = kindOf(container);
  if (kind === undefined) throw new Error(`not a grouped container: ${container}`);
  return kind === 'addr' ? expandGroupedAs(keyProtocol(key), value) : expandGroupedAs(portKeyProtocol(key), value, 'port');
}

function expandGroupedAs(proto: Protocol, value: string, kind: GroupedKind = 'addr'): GroupedFrontend {
  const cache = groupedFrontends[kind][proto];
  let g = cache.get(value);
  if (g === undefined) {
    const bar = value.indexOf('|');
    const masq = value.slice(0, bar);
    const n = Number(value.slice(bar + 1));
    if (bar < 0 || !Number.isInteger(n) || n < 0 || (kind === 'port' && masq !== 'all')) throw new Error(`not a grouped ${kind === 'addr' ? 'frontend' : 'NodePort'} claim: ${value}`);
    g = {
      kind,
      external: kind === 'port' || masq === 'ext',
      countSet: kind === 'addr' ? countSetNameOf(proto, n) : countSetName(proto, n, 'port'),
      masqSet: kind === 'port' ? Sets.masqNodePorts : masq === 'all' || masq === 'ext' ? Sets.masqAll : masq === 'nonlocal' ? Sets.masqNonLocal : undefined,
      map: groupedMapName(proto, n, kind),
      n,
    };
    cache.set(value, g);
  }
  return g;
}

/**
 * The endpoints a grouped frontend's winning claimant stands for (service.ts claims a ClusterIP
 * frontend from `internal`, a NodePort from `external`).
 */
function groupedEndpoints(table: ProxyTable, owner: ServicePortKey, g: GroupedFrontend, key: string): readonly PlannedEndpoint[] {
  const svc = table.services.get(owner);
  const eps = g.external ? svc?.external.endpoints : svc?.internal.endpoints;
  if (eps === undefined || eps.length !== g.n) throw new Error(`grouped frontend ${key}: claimant ${owner} has ${eps?.length ?? 'no'} endpoints, its claim says ${g.n}`);
  return eps;
}

function sameEndpoint(a: PlannedEndpoint | undefined, b: PlannedEndpoint | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.ip === b.ip && a.port === b.port);
}

/** A claim's key as the element is spelled in the kernel (service.ts ElementClaim). */
function elementKey(container: string, key: string): string {
  return container === Sets.hairpin ? R.hairpinKey(key) : key;
}

/** The elements of `keys` (parallel `values`, '' for none), spelled on demand (ElementRun); not the hairpin set's (addressRun). */
function runOf(keys: readonly string[], values?: readonly string[]): ElementRun {
  return {
    count: keys.length,
    key: (i) => keys[i]!,
    ...(values ? { value: (i: number) => values[i] || undefined } : {}),
  };
}

/** An endpoint's address as a V4Piece (transaction.ts): `v | 0`, or -1 where it has no number. */
function v4Piece(ep: PlannedEndpoint): number {
  const v = ep.v4;
  return v === undefined || v < 0 ? -1 : v | 0;
}

/** The addresses of `list` as a run (the hairpin set: each address twice), in pieces for the encoder. */
function addressRun(container: string, list: FirstAddresses): ElementRun {
  const hairpin = container === Sets.hairpin;
  // The latest kept (util/shapes.ts), as the other runs the encoder reads in pieces.
  return keepShape(
    {
      count: list.count,
      key: hairpin ? (i: number) => R.hairpinKey(list.key(i)) : (i: number) => list.key(i),
      addresses: list.v4Pieces,
    },
    addressRun,
  );
}

function bumpMasq(index: ClaimIndex, name: string, by: number): void {
  const n = (index.masqSetSizes.get(name) ?? 0) + by;
  if (n > 0) index.masqSetSizes.set(name, n);
  else index.masqSetSizes.delete(name);
}

function bumpCount(index: ClaimIndex, name: string, by: number): void {
  const n = (index.countSetSizes.get(name) ?? 0) + by;
  if (n > 0) index.countSetSizes.set(name, n);
  else index.countSetSizes.delete(name);
}

/**
 * The winning grouped claims, in parallel (a full compile reads 44k of them): claim i's key is
 * key(i), spelled only where needed (the index after the rules are in, the text paths), and in
 * pieces for the netlink encoder.
 */
interface GroupedClaims {
  readonly count: number;
  key(i: number): string;
  readonly pieces: FrontendPieces;
  readonly owners: ServicePortKey[];
  readonly frontends: GroupedFrontend[];
}

/**
 * A full compile's grouped claims as made, in claim order, each with its claimant's entry: the
 * key is the entry's groupedFrontendKey (service.ts), spelled only when read (keyOf), and the
 * endpoints its `internal` ones. What the rest of the compile and the encoder read of the entry
 * is taken as the claim is made (GroupedMade.add), while the entry is in the cache: at 44k
 * Services in the daemon the entries lie scattered, and each later visit was a cache miss.
 */
class GroupedMade {
  // Made at full size (a port makes at most one grouped claim) and cut to `count` by done():
  // grown by push, five arrays of 44,000 were copied over and over, a third of the compile's
  // allocation.
  readonly owners: ServicePortKey[];
  readonly values: string[];
  readonly entries: ServiceEntry[];
  readonly frontends: GroupedFrontend[];
  readonly endpoints: (readonly PlannedEndpoint[])[];
  /**
   * The ClusterIP as a V4Piece (`v | 0`: a small integer to V8 where the unsigned value of an
   * address from 128.0.0.0 up would be a heap number each time it is read); -1: not IPv4 (or
   * 255.255.255.255), or a port out of range — compared by key, and read from it by the encoder.
   */
  v4s: Int32Array;
  /** The IP protocol number and the port (read where v4s is not -1). */
  protos: Uint8Array;
  ports: Int32Array;
  count = 0;

  constructor(capacity: number) {
    this.owners = new Array<ServicePortKey>(capacity);
    this.values = new Array<string>(capacity);
    this.entries = new Array<ServiceEntry>(capacity);
    this.frontends = new Array<GroupedFrontend>(capacity);
    this.endpoints = new Array<readonly PlannedEndpoint[]>(capacity);
    this.v4s = new Int32Array(Math.max(capacity, 16));
    this.protos = new Uint8Array(this.v4s.length);
    this.ports = new Int32Array(this.v4s.length);
    // The latest is kept (util/shapes.ts): 2.3 MB of lists at 44k Services until the next full compile.
    keepShape(this);
  }

  /**
   * The keys of the claims that are not their entry's ClusterIP frontend (externalIPs and LB IPs
   * of Cluster-policy Services), by claim: few, so the rest are never spelled until read.
   */
  readonly otherKeys = new Map<number, string>();

  /**
   * Claim `value` of `svc`: its ClusterIP frontend (the ClusterIP as a number already, or -1 if
   * not known), or with an external claim (`ext`) the frontend `key` of an externalIP or LB IP.
   */
  add(owner: ServicePortKey, svc: ServiceEntry, value: string, clusterV4: number, key: string): void {
    const i = this.count++;
    const g = expandGroupedAs(svc.protocol, value);
    const eps = g.external ? svc.external.endpoints : svc.internal.endpoints;
    if (g.external) {
      this.otherKeys.set(i, key);
      clusterV4 = canonicalIPv4(key.slice(0, key.indexOf(' . ')));
    }
    if (eps.length !== g.n) throw new Error(`grouped frontend ${g.external ? key : groupedFrontendKey(svc)}: claimant ${owner} has ${eps.length} endpoints, its claim says ${g.n}`);
    if (i === this.v4s.length) this.grow();
    // Past the capacity (never expected) these grow as a push would.
    this.owners[i] = owner;
    this.values[i] = value;
    this.entries[i] = svc;
    this.frontends[i] = g;
    this.endpoints[i] = eps;
    const port = svc.port;
    const ok = Number.isInteger(port) && port >= 0 && port <= 0xffff;
    this.v4s[i] = ok ? (clusterV4 >= 0 ? clusterV4 : g.external ? -1 : canonicalIPv4(svc.clusterIP)) | 0 : -1;
    this.protos[i] = IP_PROTOCOL[svc.protocol];
    this.ports[i] = ok ? port : -1;
  }

  /** Empties the lists in place (FullSink.release): what is kept of this (util/shapes.ts) reaches no IR. */
  release(): void {
    this.cut(0);
    this.otherKeys.clear();
    this.count = 0;
  }

  /** Cuts the lists to the claims made (the compile has made them all). */
  done(): void {
    this.cut(this.count);
  }

  private cut(n: number): void {
    for (const list of [this.owners, this.values, this.entries, this.frontends, this.endpoints] as unknown[][]) list.length = n;
  }

  private grow(): void {
    const n = this.v4s.length * 2;
    const v4s = new Int32Array(n);
    v4s.set(this.v4s);
    const protos = new Uint8Array(n);
    protos.set(this.protos);
    const ports = new Int32Array(n);
    ports.set(this.ports);
    this.v4s = v4s;
    this.protos = protos;
    this.ports = ports;
  }
}

const PROTOCOL_CODE: Readonly<Record<Protocol, number>> = { TCP: 1, UDP: 2, SCTP: 3 };
const IP_PROTOCOL: Readonly<Record<Protocol, number>> = { TCP: 6, UDP: 17, SCTP: 132 };

/** Claim i's frontend key, spelled from its entry; the last one spelled is kept (runs ask in order). */
function madeKeys(made: GroupedMade): (i: number) => string {
  let last = -1;
  let lastKey = '';
  return (i) => {
    if (i !== last) {
      last = i;
      lastKey = made.otherKeys.get(i) ?? groupedFrontendKey(made.entries[i]!);
    }
    return lastKey;
  };
}

/**
 * Whether no two grouped claims name one frontend: IPv4 ones compared as numbers, others by key.
 * Only claims whose address another claim has too are compared by protocol and port: most
 * Services have one port, and a bitmap of addresses (IPv4Set) answers for those.
 */
function frontendsDistinct(made: GroupedMade, keyOf: (i: number) => string): boolean {
  const v4s = made.v4s;
  const n = made.count;
  const addresses = new IPv4Set();
  let shared: IPv4Set | undefined;
  let others: Set<string> | undefined;
  for (let i = 0; i < n; i++) {
    const v = v4s[i]!;
    if (v !== -1) {
      const u = v >>> 0;
      if (!addresses.add(u)) (shared ??= new IPv4Set()).add(u);
      continue;
    }
    others ??= new Set();
    const before = others.size;
    others.add(keyOf(i));
    if (others.size === before) return false;
  }
  if (shared === undefined) return true;
  const seen = new NumberSet();
  for (let i = 0; i < n; i++) {
    const v = v4s[i]!;
    if (v === -1 || !shared.has(v >>> 0)) continue;
    // Address, protocol and port in one integer under 2^50.
    if (!seen.add((v >>> 0) * 0x40000 + PROTOCOL_CODE[made.entries[i]!.protocol] * 0x10000 + made.ports[i]!)) return false;
  }
  return true;
}

/** FrontendPieces of spelled keys only (the encoder reads each key). */
function spelledPieces(key: (i: number) => string): FrontendPieces {
  return { key };
}

/**
 * The winning grouped claims and their endpoints, with the count set sizes, from the claims as
 * made — when no two claimed one key, each claim is its key's winner, in the index's order — or
 * else from the index and the table (recountGrouped, groupedEndpoints). At 44k Services the
 * common case skips a walk of the index, a table lookup per frontend, and every key string.
 */
function groupedWinners(index: ClaimIndex, table: ProxyTable, made: GroupedMade): { claims: GroupedClaims; endpoints: (readonly PlannedEndpoint[])[] } {
  const keyOf = madeKeys(made);
  // Indexed when first read (ClaimIndex.deferClaims): after the rules are in, or right below.
  index.deferClaims(GROUPED_FRONTENDS, { key: madeKeys(made), owners: made.owners, values: made.values });
  if (!frontendsDistinct(made, keyOf)) {
    const claims = recountGrouped(index);
    const endpoints = new Array<readonly PlannedEndpoint[]>(claims.count);
    for (let i = 0; i < claims.count; i++) endpoints[i] = groupedEndpoints(table, claims.owners[i]!, claims.frontends[i]!, claims.key(i));
    return { claims, endpoints };
  }
  // Each claim is its key's winner: the count sets' sizes are how many claims each has.
  index.countSetSizes.clear();
  for (const [g, k] of frontendCounts(made.frontends)) bumpCount(index, g.countSet, k);
  const pieces: FrontendPieces = keepShape({ key: keyOf, v4s: made.v4s, protos: made.protos, ports: made.ports }, 'frontendPieces');
  return { claims: { count: made.count, key: keyOf, pieces, owners: made.owners, frontends: made.frontends }, endpoints: made.endpoints };
}

const NO_FRONTENDS = new Int32Array(0);

/** How many grouped claims each frontend object stands for. */
function frontendCounts(grouped: readonly GroupedFrontend[]): Map<GroupedFrontend, number> {
  // Neighbours mostly share their frontend object (Services of one kind): counted in runs.
  const per = new Map<GroupedFrontend, number>();
  for (let i = 0; i < grouped.length; ) {
    const g = grouped[i]!;
    let j = i + 1;
    while (j < grouped.length && grouped[j] === g) j++;
    per.set(g, (per.get(g) ?? 0) + (j - i));
    i = j;
  }
  return per;
}

/**
 * The grouped frontends (indices into `grouped`, in order) of each masquerade set and count set
 * (a count set's endpoints map has the same frontends). Few distinct GroupedFrontend objects stand
 * for all of them (one per protocol, count and masquerade variant): the lists are sized from their
 * counts and filled in one pass.
 */
function frontendLists(grouped: readonly GroupedFrontend[]): { byMasq: Map<string, Int32Array>; byCount: Map<string, Int32Array> } {
  const per = frontendCounts(grouped);
  const sizes = { byMasq: new Map<string, number>(), byCount: new Map<string, number>() };
  const bump = (m: Map<string, number>, name: string, k: number): void => void m.set(name, (m.get(name) ?? 0) + k);
  for (const [g, k] of per) {
    if (g.masqSet !== undefined) bump(sizes.byMasq, g.masqSet, k);
    bump(sizes.byCount, g.countSet, k);
  }
  type Slot = { readonly list: Int32Array; at: number };
  const slots = (m: Map<string, number>): Map<string, Slot> => new Map([...m].map(([name, n]) => [name, { list: new Int32Array(n), at: 0 }]));
  const masq = slots(sizes.byMasq);
  const count = slots(sizes.byCount);
  // Each frontend object's slots, found once per run of equal neighbours.
  let last: GroupedFrontend | undefined;
  let inCount: Slot | undefined;
  let inMasq: Slot | undefined;
  for (let i = 0; i < grouped.length; i++) {
    const g = grouped[i]!;
    if (g !== last) {
      last = g;
      inCount = count.get(g.countSet)!;
      inMasq = g.masqSet !== undefined ? masq.get(g.masqSet)! : undefined;
    }
    inCount!.list[inCount!.at++] = i;
    if (inMasq !== undefined) inMasq.list[inMasq.at++] = i;
  }
  const lists = (m: Map<string, Slot>): Map<string, Int32Array> => new Map([...m].map(([name, x]) => [name, x.list]));
  return { byMasq: lists(masq), byCount: lists(count) };
}

/** A full compile's blocks of one endpoint shard (ShardBlockSink): block b is sets[b] at slots bases[b]…. */
interface ShardBlocks {
  readonly bases: number[];
  readonly sets: (readonly PlannedEndpoint[])[];
  count: number;
}

/** A shard's blocks as one run, in pieces (SlotPieces) and spelled on demand. */
function shardRun(b: ShardBlocks): ElementRun {
  // Element e: endpoint at[e] of block of[e].
  const of = new Int32Array(b.count);
  const at = new Int32Array(b.count);
  let e = 0;
  for (let k = 0; k < b.sets.length; k++) {
    const n = b.sets[k]!.length;
    for (let j = 0; j < n; j++) {
      of[e] = k;
      at[e++] = j;
    }
  }
  const ep = (x: number): PlannedEndpoint => b.sets[of[x]!]![at[x]!]!;
  const slot = (x: number): number => b.bases[of[x]!]! + at[x]!;
  return {
    count: b.count,
    key: (x) => String(slot(x)),
    value: (x) => R.endpointValue(ep(x)),
    slots: { slot, ip: (x) => ep(x).ip, v4: (x) => v4Piece(ep(x)), port: (x) => ep(x).port },
  };
}

/** Recomputes the count set sizes from the winning grouped claims (full compile, rebuilt index). */
function recountGrouped(index: ClaimIndex): GroupedClaims {
  index.countSetSizes.clear();
  const keys: string[] = [];
  const owners: ServicePortKey[] = [];
  const frontends: GroupedFrontend[] = [];
  index.forEachWinner(GROUPED_FRONTENDS, (k, v, owner) => {
    const g = expandGrouped(GROUPED_FRONTENDS, k, v);
    bumpCount(index, g.countSet, 1);
    keys.push(k);
    owners.push(owner);
    frontends.push(g);
  });
  const key = (i: number): string => keys[i]!;
  return { count: keys.length, key, pieces: spelledPieces(key), owners, frontends };
}

/**
 * The grouped NodePorts that won their keys (few: one per NodePort, at most ~2,800 a protocol),
 * in the index's order, with their winners' endpoints; their count sets are counted (after the
 * ClusterIP frontends': those recounts start from zero).
 */
interface NodePortGroups {
  readonly keys: string[];
  readonly frontends: GroupedFrontend[];
  readonly endpoints: (readonly PlannedEndpoint[])[];
}

function nodePortWinners(index: ClaimIndex, table: ProxyTable | undefined): NodePortGroups {
  const out: NodePortGroups = { keys: [], frontends: [], endpoints: [] };
  index.forEachWinner(GROUPED_NODEPORTS, (k, v, owner) => {
    const g = expandGrouped(GROUPED_NODEPORTS, k, v);
    bumpCount(index, g.countSet, 1);
    out.keys.push(k);
    out.frontends.push(g);
    if (table !== undefined) out.endpoints.push(groupedEndpoints(table, owner, g, k));
  });
  return out;
}

/** Skeleton rules of `c`, plus the count rules when `c` holds them. */
function chainRules(fs: FamilySyntax, table: ProxyTable, c: ChainWithRules, countSets: readonly string[]): readonly Rule[] {
  return c.chain.name === Chains.servicesByCount || c.chain.name === Chains.nodePortsByCount ? countChainRules(fs, table, c.chain.name, countSets) : c.rules;
}

/** The chains of count rules, with the kind of count set each dispatches. */
const COUNT_CHAINS: readonly { chain: string; kind: GroupedKind }[] = [
  { chain: Chains.servicesByCount, kind: 'addr' },
  { chain: Chains.nodePortsByCount, kind: 'port' },
];

/**
 * The index (and endpoint blocks) a full compile of `table` produces. Exact for the kernel only
 * if `table` was last compiled in full: blocks allocated by partial syncs cannot be recovered,
 * which is why the backend syncs in full when its CompileState does not know the previous table.
 */
function buildIndex(fs: FamilySyntax, table: ProxyTable): ClaimIndex {
  const index = new ClaimIndex();
  const ctx = contextOf(fs, table, index.slots);
  let owner: ServicePortKey = '' as ServicePortKey;
  const sink: ClaimSink = { claim: (container, key, value) => index.add(container, key, owner, value) };
  for (const [key, svc] of table.services) {
    owner = key;
    serviceContribution(svc, ctx, sink);
  }
  recountGrouped(index);
  nodePortWinners(index, undefined);
  return index;
}

function writeSkeletonRules(tx: Transaction, target: string, chains: readonly ChainWithRules[], rulesOf: (c: ChainWithRules) => readonly Rule[] = (c) => c.rules): void {
  for (const c of chains) for (const r of rulesOf(c)) tx.addRule(target, c.chain.name, r);
}

/**
 * Where a full compile's claims go as they are made (service.ts ClaimSink): grouped frontends to
 * `made`, ClusterIPs to `clusterIPs`, endpoint shard blocks to `byShard` (per shard, in compile
 * order), every other map claim to the index. `owner` and `current` are the port being compiled.
 * A class, kept alive between compiles (util/shapes.ts): the contribution functions' optimized
 * code survives the collections between full syncs.
 */
class FullSink implements ClaimSink {
  owner = '' as ServicePortKey;
  current: ServiceEntry | undefined = undefined;
  readonly byShard = new Map<string, ShardBlocks>();
  // The last ClusterIP claimed and its number: the next grouped claim's (a port claims its
  // ClusterIP, then its frontend).
  private lastClusterIP = '';
  private lastClusterV4 = -1;

  constructor(
    private readonly index: ClaimIndex,
    private readonly made: GroupedMade,
    private readonly clusterIPs: FirstAddresses,
  ) {
    keepShape(this);
  }

  /** Lists of IR objects (endpoint lists) that objects kept for their shape reach, besides `made`'s. */
  private readonly reaching: unknown[][] = [];

  /** `list` is emptied by release(). */
  reaches(list: unknown[]): void {
    this.reaching.push(list);
  }

  /**
   * Lets go of every IR object this compile's kept objects reach (util/shapes.ts): the latest of
   * each is kept for its hidden class until the next full compile, and would otherwise hold the
   * compile's table — a second copy of every entry changed since. For the backend, once the
   * transaction is applied, its claims indexed (CompileState.settle) and no one will render it.
   */
  release(): void {
    this.current = undefined;
    this.byShard.clear();
    for (const list of this.reaching) list.length = 0;
    this.reaching.length = 0;
    this.made.release();
  }

  claim(container: string, key: string, value: string): void {
    if (container === GROUPED_FRONTENDS) {
      // `key` is read for external claims only (ServiceContext.groupedKeysApart): a ClusterIP
      // frontend's is the entry's groupedFrontendKey.
      const svc = this.current!;
      this.made.add(this.owner, svc, value, svc.clusterIP === this.lastClusterIP ? this.lastClusterV4 : -1, key);
      return;
    }
    if (container === Sets.clusterIPs) {
      // Not kept: the index counts them after the rules are in, from a walk of the table.
      this.lastClusterIP = key;
      this.lastClusterV4 = canonicalIPv4(key);
      this.clusterIPs.add(key, this.lastClusterV4);
      return;
    }
    // The hairpin claims are taken apart (hairpinInto); no other set has claims.
    if (value === '') throw new Error(`full compile: a set claim in ${container}, which is not a service set with elements (${key})`);
    if (this.index.isShard(container)) throw new Error(`full compile: a claim of endpoint shard ${container} outside a block (${key})`);
    this.index.add(container, key, this.owner, value);
  }

  block(map: string, base: number, endpoints: readonly PlannedEndpoint[]): void {
    let b = this.byShard.get(map);
    if (!b) this.byShard.set(map, (b = { bases: [], sets: [], count: 0 }));
    b.bases.push(base);
    b.sets.push(endpoints);
    b.count += endpoints.length;
    this.index.addShardClaims(map, endpoints.length);
  }
}

/**
 * The frontends `list` of `claims` as a run (a count or masquerade set). A function of its own,
 * not one inside compileFull: the latest run is kept (util/shapes.ts), and a closure made there
 * would keep all of compileFull's scope with it — the table among it.
 */
function frontendRun(list: ArrayLike<number>, claims: GroupedClaims): ElementRun {
  return keepShape({ count: list.length, key: (k: number) => claims.key(list[k]!), frontends: keepShape({ frontends: claims.pieces, members: list }, 'frontendList') }, frontendRun);
}

/** Everything ferry owns, from scratch. */
export function compileFull(next: ProxyTables, opts: CompileOptions): Transaction {
  const tx = new Transaction();
  const tableName = opts.table ?? FERRY_TABLE;
  for (const family of opts.families) {
    const table = next[family];
    const fs = tableSyntax(family, table.localTraffic);
    const target = tableTarget(fs.nft, tableName);
    const sk = buildSkeleton(fs, table, opts.masqueradeMark);

    // Each contribution is used up at once (its claims indexed; its chains and endpoint-shard
    // elements, which the index does not keep, set aside): none is held for the whole compile.
    const index = new ClaimIndex();
    const ctx = contextOf(fs, table, index.slots, true);
    const owned: (readonly [string, readonly Rule[]])[] = [];
    // Hairpin elements, each once, in the order of first claim (one pod behind several
    // Services is one element: 440,000 claims name 64,000 addresses in the benchmark's 44k
    // cluster). Not counted here (ClaimIndex.deferCounts).
    const hairpins = new FirstAddresses(table.services.size);
    const made = new GroupedMade(table.services.size);
    // ClusterIPs, deduplicated as addresses as they are claimed (distinct.ts).
    const clusterIPs = new FirstAddresses(table.services.size);
    const sink = new FullSink(index, made, clusterIPs);
    // forEach, not for…of: no iterator result and entry pair per Service (44k of each).
    table.services.forEach((svc, key) => {
      sink.owner = key;
      sink.current = svc;
      const c = serviceContribution(svc, ctx, sink);
      if (c.chains.size > 0) for (const entry of c.chains) owned.push(entry);
      hairpinInto(svc, hairpins);
    });
    made.done();
    opts.state?.store(family, table, index);
    opts.state?.holdFull(family, sink);

    tx.addTable(target, TABLE_COMMENT);
    // Base chains are recreated (add, delete, add with spec) so that a changed hook or priority
    // applies; the kernel refuses to change them in place. Atomic: no packet sees the gap.
    for (const b of sk.baseChains) {
      tx.addChain(target, { name: b.chain.name });
      tx.deleteChain(target, b.chain.name);
      tx.addChain(target, b.chain);
    }
    const desired = new Set<string>();
    for (const b of sk.baseChains) desired.add(b.chain.name);
    for (const c of sk.chains) {
      desired.add(c.chain.name);
      tx.addChain(target, c.chain);
      tx.flushChain(target, c.chain.name);
    }
    // Indexed loops over the big lists: compileFull runs once a sync, mostly below V8's optimizing
    // tier, where a for…of makes an iterator result per element (44,000 frontends, 60,000 rules).
    for (let i = 0; i < owned.length; i++) {
      const name = owned[i]![0];
      desired.add(name);
      tx.addChain(target, { name });
      tx.flushChain(target, name);
    }
    // Stale chains (an earlier ferry's, or a Service's gone since) are flushed here, before any
    // set or map is deleted and made again with its size below: a rule left in one could still
    // bind such a set, and the kernel refuses to delete a bound set. Deleted at the end.
    const stale = [...existingFor(opts, family)].filter((n) => !desired.has(n)).sort();
    for (const n of stale) tx.flushChain(target, n);
    for (const s of sk.sets) {
      if (SIZED_SETS.has(s.name)) continue; // made below, with their sizes
      tx.addSet(target, s);
      tx.flushSet(target, s.name);
    }
    for (const m of sk.maps) {
      tx.addMap(target, m);
      tx.flushSet(target, m.name, 'map');
    }
    const shards = shardsOf(index);
    const { claims: groupedClaims, endpoints: groupedEps } = groupedWinners(index, table, made);
    const nodePorts = nodePortWinners(index, table);
    sink.reaches(groupedEps);
    sink.reaches(nodePorts.endpoints);
    const countSets = countSetsOf(index);
    const groupedMaps = groupedMapsOf(countSets);
    for (const name of shards) {
      tx.addMap(target, endpointMapSpec(fs, name));
      tx.flushSet(target, name, 'map');
    }
    // Grouped maps and count sets are made anew with room for what they hold (a size cannot
    // change in place): deleted where they exist — no rule binds them now, their chains were
    // flushed above — and added with their size. Where the kernel's names are not known, added
    // and flushed as before; an existing one then keeps whatever size it has, so none is recorded.
    const sized = (kind: 'set' | 'map', name: string, size: number, kernel: ReadonlySet<string> | undefined, add: () => void): void => {
      if (kernel?.has(name)) tx.deleteSet(target, name, kind);
      add();
      if (kernel === undefined) tx.flushSet(target, name, kind);
      else index.setSizes.set(name, size);
    };
    for (const name of groupedMaps) {
      const size = groupedSetSize(groupedMapElements(index, name));
      sized('map', name, size, opts.existingMaps?.[family], () => tx.addMap(target, endpointMapSpec(fs, name, size)));
    }
    for (const name of countSets) {
      const size = groupedSetSize(index.countSetSizes.get(name) ?? 0);
      sized('set', name, size, opts.existingSets?.[family], () => tx.addSet(target, countSetSpec(fs, name, size)));
    }
    // The service sets, sized for what this compile puts in them (their rules' chains were
    // recreated or flushed above). Their counts are the compile's own: the index counts the
    // hairpin and cluster-ips claims only after the rules are in (deferCounts).
    const { frontends: grouped, pieces } = groupedClaims;
    const { byMasq, byCount } = frontendLists(grouped);
    index.masqSetSizes.clear();
    for (const [name, list] of byMasq) if (list.length > 0) index.masqSetSizes.set(name, list.length);
    if (nodePorts.keys.length > 0) index.masqSetSizes.set(Sets.masqNodePorts, nodePorts.keys.length);
    const sizedCount = (name: string): number => (name === Sets.hairpin ? hairpins.count : name === Sets.clusterIPs ? clusterIPs.count : (index.masqSetSizes.get(name) ?? 0));
    for (const spec of sk.sets) {
      if (!SIZED_SETS.has(spec.name)) continue;
      const size = groupedSetSize(sizedCount(spec.name));
      sized('set', spec.name, size, opts.existingSets?.[family], () => tx.addSet(target, { ...spec, size }));
    }
    // The affinity set is added, never flushed: client affinity survives a resync or restart.
    tx.addSet(target, affinitySetSpec(fs));

    writeSkeletonRules(tx, target, sk.baseChains);
    writeSkeletonRules(tx, target, sk.chains, (c) => chainRules(fs, table, c, countSets));
    for (let i = 0; i < owned.length; i++) {
      const [name, rules] = owned[i]!;
      for (let j = 0; j < rules.length; j++) tx.addRule(target, name, rules[j]!);
    }

    for (const [set, keys] of sk.tableElements) for (const k of keys) tx.addElement(target, set, k);
    // Elements go in runs spelled as they are encoded (transaction.ts ElementRun): at 44k
    // Services a full sync has ~700k elements, and an op object and a kept string for each made
    // most of the compile's time and of the daemon's peak.
    for (const { name, kind } of SERVICE_CONTAINERS) {
      if (kind === 'map') {
        const keys: string[] = [];
        const values: string[] = [];
        index.forEach(name, (k, v) => {
          keys.push(k);
          values.push(v);
        });
        tx.addElementRun(target, name, runOf(keys, values));
      } else if (name === Sets.hairpin) {
        tx.addElementRun(target, name, addressRun(name, hairpins));
        index.deferCounts(name, (emit) => table.services.forEach((svc) => hairpinClaims(svc, emit)));
      } else {
        if (name !== Sets.clusterIPs) throw new Error(`full compile: no element list for set ${name}`);
        tx.addElementRun(target, name, addressRun(name, clusterIPs));
        // clusterIPClaim's condition, walked here without a sink: a sink made per count would
        // cost clusterIPClaim, which a full compile inlines, its optimized code (util/shapes.ts).
        index.deferCounts(name, (emit) => table.services.forEach((svc) => void (svc.clusterIP && emit(svc.clusterIP))));
      }
    }
    // Grouped frontends: masquerade sets, count sets, endpoints maps (each container in one run),
    // as lists of frontends (the encoder reads their keys in pieces).
    for (const masqSet of [Sets.masqAll, Sets.masqNonLocal]) tx.addElementRun(target, masqSet, frontendRun(byMasq.get(masqSet) ?? NO_FRONTENDS, groupedClaims));
    for (const name of countSets) if (countSetOf(name)!.kind === 'addr') tx.addElementRun(target, name, frontendRun(byCount.get(name) ?? NO_FRONTENDS, groupedClaims));
    // The frontends of each map (those of its count set), in claim order.
    for (const name of groupedMaps) {
      const m = groupedMapOf(name)!;
      if (m.kind !== 'addr') continue;
      const members = byCount.get(countSetName(m.proto, m.n)) ?? NO_FRONTENDS;
      if (members.length === 0) continue;
      tx.addElementRun(target, name, groupedMapRun(members, m.n, groupedClaims.key, pieces, groupedEps));
    }
    writeNodePortGroups(tx, target, nodePorts);
    // Shard elements are not kept in the index (claims.ts): they come from the contributions,
    // in the order the services were compiled.
    for (const name of shards) {
      const b = sink.byShard.get(name);
      if (b) tx.addElementRun(target, name, shardRun(b));
    }

    // Stale chains, flushed above (dropping their references to each other), deleted.
    for (const n of stale) tx.deleteChain(target, n);
    // Endpoint shards nothing uses any more: every rule that used one was flushed above.
    const used = new Set([...shards, ...groupedMaps]);
    for (const name of [...(opts.existingMaps?.[family] ?? [])].sort()) {
      if ((endpointShardProtocol(name) === undefined && groupedMapProtocol(name) === undefined) || used.has(name)) continue;
      tx.deleteSet(target, name, 'map');
    }
    // Count sets no frontend uses any more: their rules were flushed with their chain above.
    // Per-endpoint affinity sets of an earlier ferry (`aff-…`): every chain that used one was
    // flushed above (a wanted one was rewritten, a stale one deleted).
    const usedCounts = new Set(countSets);
    for (const name of [...(opts.existingSets?.[family] ?? [])].sort()) {
      if (isLegacyAffinitySet(name) || (countSetOf(name) !== undefined && !usedCounts.has(name))) tx.deleteSet(target, name);
    }
  }
  return tx;
}

/** A full compile's grouped NodePort elements: `masq-nodeports`, then each `np-` count set and its map. */
function writeNodePortGroups(tx: Transaction, target: string, np: NodePortGroups): void {
  tx.addElementRun(target, Sets.masqNodePorts, runOf(np.keys));
  const byCount = new Map<GroupedFrontend, number[]>();
  for (let i = 0; i < np.keys.length; i++) {
    const g = np.frontends[i]!;
    let list = byCount.get(g);
    if (!list) byCount.set(g, (list = []));
    list.push(i);
  }
  const groups = [...byCount].sort(([a], [b]) => (a.countSet < b.countSet ? -1 : a.countSet > b.countSet ? 1 : 0));
  const key = (f: number): string => np.keys[f]!;
  const pieces = spelledPieces(key);
  for (const [g, list] of groups) {
    tx.addElementRun(target, g.countSet, runOf(list.map((i) => np.keys[i]!)));
    tx.addElementRun(target, g.map, groupedMapRun(list, g.n, key, pieces, np.endpoints));
  }
}

/**
 * A grouped endpoints map's elements as one run: the frontends `members` (indices into `eps`, in
 * claim order), each with `n` endpoints — all of one count set, whose name carries n; each list
 * was checked against its claim's count where it was taken (GroupedMade.add, groupedEndpoints).
 * In pieces for the encoder (ElementParts), spelled only on the text paths: at 44k Services a full
 * sync writes 440,000 of these, and a string apiece was most of the compile's garbage.
 */
function groupedMapRun(members: ArrayLike<number>, n: number, key: (f: number) => string, pieces: FrontendPieces, eps: readonly (readonly PlannedEndpoint[])[]): ElementRun {
  const frontendOf = (x: number): number => members[Math.floor(x / n)]!;
  return keepShape(
    {
      count: members.length * n,
      key: (x: number) => R.groupedEndpointKey(key(frontendOf(x)), x % n),
      value: (x: number) => R.endpointValue(eps[frontendOf(x)]![x % n]!),
      parts: keepShape({ frontends: pieces, members, n, endpoints: eps }, 'groupedParts'),
    },
    groupedMapRun,
  );
}

function sameRules(a: readonly Rule[], b: readonly Rule[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.text !== b[i]!.text) return false;
  return true;
}

const EMPTY: ServiceContribution = { chains: new Map(), elements: [], slotRoles: new Set() };

/**
 * Whether a partial compile from `prev` knows exactly what the kernel holds: `prev` is the table
 * the last compile with this state produced (its claim index and endpoint blocks are kept).
 */
export function partialBaseKnown(prev: ProxyTables, families: readonly IPFamily[], state: CompileState): boolean {
  return families.every((f) => state.knows(f, prev[f]));
}

/**
 * Only what changed between `prev` (what the kernel holds) and `next`. `changes.full` is not
 * looked at: the caller picks compileFull for full syncs.
 */
export function compilePartial(prev: ProxyTables, next: ProxyTables, changes: SyncChanges, opts: CompileOptions): Transaction {
  const tx = new Transaction();
  const tableName = opts.table ?? FERRY_TABLE;
  for (const family of opts.families) {
    const prevT = prev[family];
    const nextT = next[family];
    const fs = tableSyntax(family, nextT.localTraffic);
    const prevFs = tableSyntax(family, prevT.localTraffic);
    const target = tableTarget(fs.nft, tableName);
    const tableChanged = changes.tableChanged;

    let keys: ServicePortKey[];
    if (tableChanged) {
      const all = new Set<ServicePortKey>(prevT.services.keys());
      for (const k of nextT.services.keys()) all.add(k);
      keys = [...all];
    } else {
      keys = [];
      for (const k of changes.changed) if (prevT.services.has(k) || nextT.services.has(k)) keys.push(k);
    }
    keys.sort();

    const index = opts.state?.take(family, prevT) ?? buildIndex(prevFs, prevT);
    index.slots.settle();
    const countsBefore = countSetsOf(index);
    const prevCtx = contextOf(prevFs, prevT, index.slots);
    const nextCtx = contextOf(fs, nextT, index.slots);
    // container → key → value installed before this sync (undefined: absent).
    const before = new Map<string, Map<string, string | undefined>>();
    // Endpoint shards: container → key → value before and after, straight from the previous and
    // next contributions (a block belongs to one service port; claims.ts keeps no copy).
    const shardDiff = new Map<string, Map<string, { was: string | undefined; now: string | undefined }>>();
    const noteShard = (el: ElementClaim, side: 'was' | 'now'): void => {
      let m = shardDiff.get(el.container);
      if (!m) shardDiff.set(el.container, (m = new Map()));
      let d = m.get(el.key);
      if (!d) m.set(el.key, (d = { was: undefined, now: undefined }));
      d[side] = el.value;
    };
    // Grouped frontends and NodePorts: container → key → claim and winner before this sync (the
    // winner's endpoints are its entry's in prevT).
    const groupedBefore = new Map<string, Map<string, { value: string | undefined; owner: ServicePortKey | undefined }>>();
    const noteBefore = (el: ElementClaim): void => {
      if (el.container === GROUPED_FRONTENDS || el.container === GROUPED_NODEPORTS) {
        let g = groupedBefore.get(el.container);
        if (!g) groupedBefore.set(el.container, (g = new Map()));
        if (!g.has(el.key)) g.set(el.key, { value: index.value(el.container, el.key), owner: index.winner(el.container, el.key) });
        return;
      }
      let m = before.get(el.container);
      if (!m) {
        m = new Map();
        before.set(el.container, m);
      }
      if (!m.has(el.key)) m.set(el.key, index.value(el.container, el.key));
    };

    const newChains: string[] = [];
    const rewrite: [string, readonly Rule[], boolean][] = []; // name, rules, existed before
    const goneChains: string[] = [];

    for (const key of keys) {
      const ps = prevT.services.get(key);
      const ns = nextT.services.get(key);
      if (ps === ns && !tableChanged) continue;
      const pc = ps ? serviceContribution(ps, prevCtx) : EMPTY;
      const nc = ns ? serviceContribution(ns, nextCtx) : EMPTY;
      index.slots.retain(key, nc.slotRoles);
      for (const el of pc.elements) {
        if (index.isShard(el.container)) noteShard(el, 'was');
        else noteBefore(el);
        index.remove(el.container, el.key, key);
      }
      for (const el of nc.elements) {
        if (index.isShard(el.container)) noteShard(el, 'now');
        else noteBefore(el);
        index.add(el.container, el.key, key, el.value);
      }
      for (const [name, rules] of nc.chains) {
        const old = pc.chains.get(name);
        if (old === undefined) {
          newChains.push(name);
          rewrite.push([name, rules, false]);
        } else if (!sameRules(old, rules)) {
          rewrite.push([name, rules, true]);
        }
      }
      for (const name of pc.chains.keys()) if (!nc.chains.has(name)) goneChains.push(name);
    }
    opts.state?.store(family, nextT, index);
    // Grouped frontends whose winning claim changed: the elements they stand for, diffed.
    const groupedDeletes: [string, string][] = [];
    const groupedAdds: [string, string, string][] = [];
    for (const [container, keysBefore] of groupedBefore) for (const [k, { value: was, owner: wasOwner }] of keysBefore) {
      const now = index.value(container, k);
      const nowOwner = index.winner(container, k);
      const w = was === undefined ? undefined : expandGrouped(container, k, was);
      const n = now === undefined ? undefined : expandGrouped(container, k, now);
      if (w?.masqSet !== n?.masqSet) {
        if (w?.masqSet) {
          groupedDeletes.push([w.masqSet, k]);
          bumpMasq(index, w.masqSet, -1);
        }
        if (n?.masqSet) {
          groupedAdds.push([n.masqSet, k, '']);
          bumpMasq(index, n.masqSet, 1);
        }
      }
      if (w?.countSet !== n?.countSet) {
        if (w) {
          groupedDeletes.push([w.countSet, k]);
          bumpCount(index, w.countSet, -1);
        }
        if (n) {
          groupedAdds.push([n.countSet, k, '']);
          bumpCount(index, n.countSet, 1);
        }
      }
      const wEps = w ? groupedEndpoints(prevT, wasOwner!, w, k) : [];
      const nEps = n ? groupedEndpoints(nextT, nowOwner!, n, k) : [];
      if (w !== undefined && n !== undefined && w.map === n.map) {
        // The same count: only the endpoints that differ.
        for (let i = 0; i < nEps.length; i++) {
          const a = wEps[i];
          const b = nEps[i]!;
          if (sameEndpoint(a, b)) continue;
          groupedDeletes.push([w.map, R.groupedEndpointKey(k, i)]);
          groupedAdds.push([n.map, R.groupedEndpointKey(k, i), R.endpointValue(b)]);
        }
      } else {
        // Another count (or none): the endpoints move to that count's map.
        if (w !== undefined) for (let i = 0; i < wEps.length; i++) groupedDeletes.push([w.map, R.groupedEndpointKey(k, i)]);
        if (n !== undefined) for (let i = 0; i < nEps.length; i++) groupedAdds.push([n.map, R.groupedEndpointKey(k, i), R.endpointValue(nEps[i]!)]);
      }
    }
    const countsAfter = countSetsOf(index);
    const countsChanged = countsAfter.length !== countsBefore.length || countsAfter.some((n, i) => n !== countsBefore[i]);
    const hadCounts = new Set(countsBefore);
    const hasCounts = new Set(countsAfter);
    const mapsBefore = groupedMapsOf(countsBefore);
    const mapsAfter = groupedMapsOf(countsAfter);
    // A map or count set that stays must have room for what it will hold (its size is fixed at
    // creation).
    for (const name of mapsAfter) {
      const size = index.setSizes.get(name);
      if (size === undefined || !mapsBefore.includes(name)) continue;
      const elements = groupedMapElements(index, name);
      if (elements > size) throw new SetFullError(name, elements, size);
    }
    for (const name of countsAfter) {
      const size = index.setSizes.get(name);
      if (size === undefined || !hadCounts.has(name)) continue;
      const elements = index.countSetSizes.get(name) ?? 0;
      if (elements > size) throw new SetFullError(name, elements, size);
    }
    for (const name of SIZED_SETS) {
      const size = index.setSizes.get(name);
      if (size === undefined) continue;
      const elements = sizedSetElements(index, name);
      if (elements > size) throw new SetFullError(name, elements, size);
    }

    if (tableChanged) {
      const sk = buildSkeleton(fs, nextT, opts.masqueradeMark);
      for (const [set, elements] of sk.tableElements) {
        tx.flushSet(target, set);
        for (const k of elements) tx.addElement(target, set, k);
      }
    }
    for (const name of newChains) tx.addChain(target, { name });
    // Count sets and endpoint maps that gain their first element are created; emptied ones are deleted last.
    for (const name of countsAfter) {
      if (hadCounts.has(name)) continue;
      const size = groupedSetSize(index.countSetSizes.get(name) ?? 0);
      index.setSizes.set(name, size);
      tx.addSet(target, countSetSpec(fs, name, size));
    }
    for (const name of mapsAfter) {
      if (mapsBefore.includes(name)) continue;
      const size = groupedSetSize(groupedMapElements(index, name));
      index.setSizes.set(name, size);
      tx.addMap(target, endpointMapSpec(fs, name, size));
    }
    const touchedShards = [...shardDiff.keys()].sort();
    for (const name of touchedShards) if (index.size(name) > 0) tx.addMap(target, endpointMapSpec(fs, name));

    // Elements: deletes (and the delete half of a value change) before adds.
    const adds: [string, string, string][] = [];
    for (const [container, k] of groupedDeletes) tx.deleteElement(target, container, k);
    for (const { name: container } of SERVICE_CONTAINERS) {
      const m = before.get(container);
      if (!m) continue;
      for (const [k, was] of m) {
        const now = index.value(container, k);
        if (was === now) continue;
        if (was !== undefined) tx.deleteElement(target, container, elementKey(container, k));
        if (now !== undefined) adds.push([container, elementKey(container, k), now]);
      }
    }
    for (const container of touchedShards) {
      for (const [k, { was, now }] of shardDiff.get(container)!) {
        if (was === now) continue;
        if (was !== undefined) tx.deleteElement(target, container, k);
        if (now !== undefined) adds.push([container, k, now]);
      }
    }
    if (tableChanged) {
      // Skeleton rules depend on table fields (NodePort addresses): rewrite them all; small.
      const sk = buildSkeleton(fs, nextT, opts.masqueradeMark);
      for (const c of [...sk.baseChains, ...sk.chains]) {
        tx.flushChain(target, c.chain.name);
        for (const r of chainRules(fs, nextT, c, countsAfter)) tx.addRule(target, c.chain.name, r);
      }
    } else if (countsChanged) {
      // A count came into use or went out of use: its rule is added or deleted in place where the
      // applier knows the chain's handles, else the chain is rewritten (CountRulesOp). Each kind
      // of count set has its own chain.
      for (const { chain, kind } of COUNT_CHAINS) {
        const added = countsOfKind(countsAfter, kind).filter((n) => !hadCounts.has(n));
        const removed = countsOfKind(countsBefore, kind).filter((n) => !hasCounts.has(n));
        if (added.length > 0 || removed.length > 0) tx.countRules(target, chain, countChainRules(fs, nextT, chain, countsAfter), added, removed);
      }
    }
    for (const [name, rules, existed] of rewrite) {
      if (existed) tx.flushChain(target, name);
      for (const r of rules) tx.addRule(target, name, r);
    }
    for (const [container, k, v] of adds) tx.addElement(target, container, k, v || undefined);
    for (const [container, k, v] of groupedAdds) tx.addElement(target, container, k, v || undefined);

    goneChains.sort();
    for (const name of goneChains) tx.flushChain(target, name);
    for (const name of goneChains) tx.deleteChain(target, name);
    for (const name of touchedShards) if (index.size(name) === 0) tx.deleteSet(target, name, 'map');
    for (const name of countsBefore) {
      if (hasCounts.has(name)) continue;
      tx.deleteSet(target, name);
      index.setSizes.delete(name);
    }
    for (const name of mapsBefore) {
      if (mapsAfter.includes(name)) continue;
      tx.deleteSet(target, name, 'map');
      index.setSizes.delete(name);
    }
  }
  return tx;
}
