/**
 * The ebpf mode's compiler: from the planner's IR to element diffs of the BPF maps that the
 * socket-level load balancer (native/bpf/sock_lb.c) reads.
 *
 * Pure: no I/O. A full sync writes every element straight into per-map buffers (elements.ts)
 * and diffs them against a dump of what the pinned maps actually hold (nothing to diff when the
 * maps are empty, as on a cold start), so a restarted ferry rewrites nothing that is already
 * right and removes what is stale. It keeps no copy of the maps' contents: a partial sync
 * re-derives a changed service port's old share of the maps from the IR entry it last compiled
 * for that port (its set ids are stable), so it costs what changed. What it keeps per port is
 * that entry (a reference), the set ids by name, and which port owns each frontend key.
 *
 * It never decides Kubernetes policy: every frontend gets the IR's verdict and endpoint set.
 * Which set a frontend uses, for the clients socket LB sees (processes on this node: the node
 * itself and its pods): a ClusterIP the `internal` set; NodePorts, externalIPs and LB IPs the
 * `external` set, or the `cluster` set when externalTrafficPolicy is Local — the IR's rule for
 * external traffic that comes from the node or a local pod, which is all socket LB ever sees.
 *
 * The tc data path (packets from the network) has frontends of its own in ferry_xsvc: NodePorts,
 * externalIPs and LB IPs, always with the IR's `external` set (its own set, "outside", when
 * externalTrafficPolicy Local makes it differ from the socket's), the IR's `externalMasquerade`
 * as the MASQ flag, and the LB IPs' loadBalancerSourceRanges in ferry_srcrange.
 */
import { isLoopback } from '../../model/addr.js';
import type { EndpointSet, IPFamily, ProxyTable, ProxyTables, ServiceEntry, ServicePortKey, SyncChanges } from '../../plan/types.js';
import { DumpIndex, Elements, Keys } from './elements.js';
import {
  FRONTEND_MAPS,
  NAME_LEN,
  SF_CLUSTERIP,
  SF_MASQ_ALL,
  SF_MASQ_NONLOCAL,
  SF_NOSOCK,
  XF_MASQ,
  XF_SRCRANGE,
  XF_LOCAL,
  describeSvcKey,
  localSet,
  nodeAddrKey,
  readSetName,
  serviceCIDRSet,
  u32Value,
  writeAddr,
  writeBackendKey,
  writeBackendValue,
  writeMemberKey,
  writeNodeAddrKey,
  writeSetNameValue,
  writeSrcRangeKey,
  writeSvcKey,
  writeSvcValue,
  writeU32,
  writeXsvcValue,
  MAP_CAPACITY,
  MAP_SIZES,
  WRITTEN_MAPS,
  type MapName,
} from './layout.js';

/** The contents of the maps ferry writes: key → value, both binary strings (layout.ts). Tests and the in-memory applier. */
export type MapState = Record<MapName, Map<string, string>>;

export function emptyState(): MapState {
  return {
    ferry_svc: new Map(),
    ferry_backend: new Map(),
    ferry_member: new Map(),
    ferry_nodeaddr: new Map(),
    ferry_setname: new Map(),
    ferry_xsvc: new Map(),
    ferry_srcrange: new Map(),
    ferry_snat: new Map(),
    ferry_svcip: new Map(),
  };
}

/** The contents of the maps ferry writes, in bulk: what a dump gives and a full build makes. */
export type MapContents = Record<MapName, Elements>;

export function emptyContents(): MapContents {
  const c = {} as Record<MapName, Elements>;
  for (const m of WRITTEN_MAPS) c[m] = Elements.empty(m);
  return c;
}

export function contentsOf(state: MapState): MapContents {
  const c = {} as Record<MapName, Elements>;
  for (const m of WRITTEN_MAPS) c[m] = Elements.fromPairs(m, state[m]);
  return c;
}

export function stateOf(contents: MapContents): MapState {
  const s = emptyState();
  for (const m of WRITTEN_MAPS) for (const [k, v] of contents[m]) s[m].set(k, v);
  return s;
}

/** Element changes to one map. */
export interface MapOps {
  readonly map: MapName;
  readonly upserts: Elements;
  readonly deletes: Keys;
}

/**
 * A sync's changes in the order that keeps every connect consistent: (1) endpoint sets and node
 * addresses are written, (2) service entries are written and removed, (3) what no service entry
 * points to any more is removed.
 */
export interface EbpfDiff {
  readonly phases: readonly (readonly MapOps[])[];
  /** Elements written plus elements deleted. */
  readonly size: number;
}

/** A frontend wanted by two service ports; the first in key order keeps it. */
export interface FrontendConflict {
  readonly frontend: string;
  readonly kept: ServicePortKey;
  readonly refused: ServicePortKey;
}

export interface EbpfCompilerOptions {
  readonly families: readonly IPFamily[];
  /** NodePorts also on 127.0.0.1 (IPv4, nodePortAddresses 'all'), as --iptables-localhost-nodeports. */
  readonly localhostNodePorts: boolean;
}

/** ferry_nodeaddr's 4,096 entries (native/bpf/maps.h), half for each family. */
const NODEADDR_PER_FAMILY = 2048;

/** internal: the ClusterIP's; external: socket LB's external frontends; outside: tc's, when it differs. */
const SET_KINDS = ['internal', 'external', 'outside'] as const;

/** A service port key names the same port in both families' tables; the maps need them apart. */
function setName(key: ServicePortKey, family: IPFamily, kind: (typeof SET_KINDS)[number]): string {
  return `${key}|${kind}|${family}`;
}

/** A service port of one family: "<family>|<key>". */
type PortId = string;

function portId(family: IPFamily, key: ServicePortKey): PortId {
  return `${family}|${key}`;
}

function keyOf(id: PortId): ServicePortKey {
  return id.slice(2);
}

/** The maps keyed by frontend (layout.ts FRONTEND_MAPS). */
type FrontendMap = 'ferry_svc' | 'ferry_xsvc';

function isFrontend(m: MapName): m is FrontendMap {
  return FRONTEND_MAPS.has(m);
}

/** Per frontend map (ferry_svc and ferry_xsvc share the key layout): key → something. */
type PerFrontend<T> = Record<FrontendMap, T>;

/**
 * Whether the frontend element just added at `index` of `elements` (ferry_svc or ferry_xsvc) is
 * written for service port `id`; false takes it back (another port has that frontend).
 */
type Claim = (id: PortId, map: FrontendMap, elements: Elements, index: number) => boolean;

/**
 * The elements that follow the table, not a service port — node addresses, the SNAT address,
 * the local-traffic CIDRs — as written: a handful, kept as strings.
 */
const TABLE_LEVEL = ['ferry_nodeaddr', 'ferry_snat', 'ferry_srcrange'] as const;
type TableLevel = Record<(typeof TABLE_LEVEL)[number], Map<string, string>>;

function emptyTableLevel(): TableLevel {
  return { ferry_nodeaddr: new Map(), ferry_snat: new Map(), ferry_srcrange: new Map() };
}

/** Set ids stay below this: the local-traffic CIDR sets take 0xffffff04 and 0xffffff06 (layout.ts localSet). */
const SET_ID_CAP = 0xf0000000;

/**
 * Endpoint set ids: stable per set name, reused from the pinned setname map after a restart.
 * A new set takes an id never used before (counting on from the largest one any pinned map
 * holds), not a freed one: a UDP flow's connection tracking entry keeps the id of the set it was
 * balanced over, and a new set under that id (a Service deleted, another created for the same
 * pods) would keep a flow of the deleted Service alive, its endpoints all "still members". Freed
 * ids are handed out again, oldest first, only once the 2^32 space is used up — and only after
 * the sync that freed them is applied, so a new set never takes over an id that a live service
 * entry still points to.
 */
class SetIds {
  private byName = new Map<string, number>();
  private used = new Set<number>();
  private free: number[] = [];
  private pendingFree: number[] = [];
  private next = 1;
  /** Names reset() was given that no get() asked for since (see releaseUnclaimed). */
  private unclaimed = new Set<string>();

  /**
   * `known`: the pinned setname map's names; `alsoUsed`: every set id the other pinned maps refer
   * to, named or not (setname may have been lost alone: re-pinned for a new layout, or removed).
   */
  reset(known: ReadonlyMap<string, number>, alsoUsed: Iterable<number> = []): void {
    this.byName = new Map(known);
    this.used = new Set(known.values());
    for (const id of alsoUsed) if (id < SET_ID_CAP) this.used.add(id);
    this.unclaimed = new Set(known.keys());
    this.free = [];
    this.pendingFree = [];
    let max = 0;
    for (const id of this.used) if (id > max) max = id;
    this.next = max + 1;
  }

  get(name: string): number {
    let id = this.byName.get(name);
    if (id !== undefined) {
      if (this.unclaimed.size > 0) this.unclaimed.delete(name);
      return id;
    }
    while (this.next < SET_ID_CAP && this.used.has(this.next)) this.next++;
    if (this.next < SET_ID_CAP) id = this.next++;
    else {
      id = this.free.shift();
      if (id === undefined) throw new Error(`no BPF endpoint set id left: ${this.used.size} in use`);
    }
    this.byName.set(name, id);
    this.used.add(id);
    return id;
  }

  release(name: string): void {
    const id = this.byName.get(name);
    if (id === undefined) return;
    this.byName.delete(name);
    this.pendingFree.push(id);
  }

  /** The sync that released ids is in the kernel: they may be reused now. */
  commit(): void {
    for (const id of this.pendingFree) this.used.delete(id);
    this.free.push(...this.pendingFree);
    this.pendingFree = [];
  }

  /** After a full build: the names the pins had that the build did not use. */
  releaseUnclaimed(): void {
    for (const name of this.unclaimed) this.release(name);
    this.unclaimed.clear();
  }
}

/** The set ids the pinned maps refer to: service values, backend and member keys (u32 LE first). */
function* setIdsIn(kernel: MapContents): Generator<number> {
  for (const [m, where] of [['ferry_svc', 'values'], ['ferry_xsvc', 'values'], ['ferry_backend', 'keys'], ['ferry_member', 'keys']] as const) {
    const c = kernel[m];
    const size = where === 'values' ? MAP_SIZES[m].value : MAP_SIZES[m].key;
    const buf = c[where];
    for (let i = 0; i < c.count; i++) yield buf.readUInt32LE(i * size);
  }
}

export class EbpfCompiler {
  /** Per family, each service port's IR entry as last compiled: its share of the maps, re-derivable. */
  private readonly compiled = new Map<IPFamily, Map<ServicePortKey, ServiceEntry>>();
  private tableLevel: TableLevel = emptyTableLevel();
  /** Which service port holds each frontend key, per map. */
  private readonly owners: PerFrontend<Map<string, PortId>> = { ferry_svc: new Map(), ferry_xsvc: new Map() };
  /** Frontend keys more than one service port wanted at the last full build, per map. */
  private contended: PerFrontend<Set<string>> = { ferry_svc: new Set(), ferry_xsvc: new Set() };
  private readonly ids = new SetIds();
  /** One address, parsed once per endpoint and copied into its backend and member elements. */
  private readonly addr = Buffer.alloc(16);
  /** Where share() builds one port's elements (reused: a partial sync allocates no buffers for it). */
  private readonly scratch = emptyContents();
  conflicts: readonly FrontendConflict[] = [];
  /** Frontends skipped because socket LB cannot honour them (see emit()). */
  skipped: readonly string[] = [];
  /** Service ports not programmed at all: a map they need is full (Room). */
  refused: readonly string[] = [];
  /**
   * How many compiled service ports have each ClusterIP (ferry_svcip key): its element is
   * written while one does. Many ports share one ClusterIP, so it belongs to none of them.
   */
  private readonly clusterIPs = new Map<string, number>();
  /** What the compiled service ports (and the table level's ranges) may hold of each bounded map. */
  private usage: Record<Bounded, number> = { ferry_setname: 0, ferry_backend: 0, ferry_member: 0, ferry_svc: 0, ferry_xsvc: 0, ferry_srcrange: 0 };

  constructor(private readonly opts: EbpfCompilerOptions) {}

  /** What ferry last wrote, re-derived from what it compiled (tests, intact checks): O(maps). */
  current(): MapState {
    const s = stateOf(this.written());
    for (const m of TABLE_LEVEL) for (const [k, v] of this.tableLevel[m]) s[m].set(k, v);
    return s;
  }

  /**
   * Everything from scratch: the desired state of `next` diffed against `kernel`, what the
   * pinned maps hold now. Set ids recorded in the kernel's setname map are kept. One diff: the
   * parts of fullInParts() one after the other.
   */
  full(next: ProxyTables, kernel: MapContents): EbpfDiff {
    const phases: (readonly MapOps[])[] = [];
    let size = 0;
    for (const part of this.fullInParts(next, kernel)) {
      phases.push(...part.phases);
      size += part.size;
    }
    return { phases, size };
  }

  /**
   * full() in parts, so that an applier can write one part while the next is compiled (a full
   * build of 44k Services × 10 endpoints is a million elements: compiling and writing them one
   * after the other costs both). Each part holds the writes for the next `portsPerPart` service
   * ports — their sets and backends, then their frontends — and the last part the deletes —
   * frontends, then what they pointed at — so every frontend is written after what it points
   * to, as within one diff. A part is compiled when it is taken from the generator; the
   * compiler's bookkeeping is complete once the last one is.
   */
  *fullInParts(next: ProxyTables, kernel: MapContents, portsPerPart = FULL_PART_PORTS): Generator<EbpfDiff, void, undefined> {
    const known = new Map<string, number>();
    const names = kernel.ferry_setname;
    for (let i = 0; i < names.count; i++) known.set(readSetName(names.values, i * NAME_LEN), names.keys.readUInt32LE(i * 4));
    this.ids.reset(known, setIdsIn(kernel));
    this.compiled.clear();
    this.clusterIPs.clear();
    this.owners.ferry_svc.clear();
    this.owners.ferry_xsvc.clear();
    const index = {} as Record<MapName, DumpIndex>;
    for (const m of WRITTEN_MAPS) index[m] = new DumpIndex(kernel[m]);
    const conflicts: FrontendConflict[] = [];
    const contended: PerFrontend<Set<string>> = { ferry_svc: new Set(), ferry_xsvc: new Set() };
    const skipped: string[] = [];
    // First come, first served: a frontend another port already holds is refused and recorded.
    const claim: Claim = (id, map, elements, index) => {
      const k = elements.key(index);
      const owners = this.owners[map];
      const owner = owners.get(k);
      if (owner !== undefined && owner !== id) {
        if (map === 'ferry_svc') conflicts.push({ frontend: describeSvcKey(k), kept: keyOf(owner), refused: keyOf(id) });
        contended[map].add(k);
        return false;
      }
      owners.set(k, id);
      return true;
    };
    /** The part's elements the maps do not hold as they are. */
    const writes = (desired: MapContents): EbpfDiff => {
      const upserts = new Map<MapName, Elements>();
      for (const m of WRITTEN_MAPS) if (desired[m].count > 0) upserts.set(m, index[m].probe(desired[m]));
      return phased(upserts, new Map());
    };
    // The table-level elements go with the first part.
    let desired = emptyContents();
    for (const family of this.opts.families) {
      this.tableElements(next[family], desired, skipped);
      this.compiled.set(family, new Map());
    }
    this.tableLevel = { ferry_nodeaddr: new Map(desired.ferry_nodeaddr), ferry_snat: new Map(desired.ferry_snat), ferry_srcrange: new Map(desired.ferry_srcrange) };
    const room = new Room();
    room.spend('ferry_srcrange', desired.ferry_srcrange.count);
    const refused: string[] = [];
    let batch: ServiceEntry[] = [];
    const emitBatch = (): void => {
      reserve(batch, desired);
      for (const s of batch) {
        this.compiled.get(s.family)?.set(s.key, s);
        this.countClusterIP(s, 1);
        this.emit(s, portId(s.family, s.key), desired, skipped, claim, undefined);
      }
      batch = [];
    };
    for (const family of this.opts.families) {
      for (const s of next[family].services.values()) {
        const full = room.take(s);
        if (full !== undefined) {
          refused.push(full);
          continue;
        }
        batch.push(s);
        if (batch.length < portsPerPart) continue;
        emitBatch();
        yield writes(desired);
        desired = emptyContents();
      }
    }
    emitBatch();
    // The ClusterIPs once every port is counted: with the last part, as auxiliaries of its frontends.
    desired.ferry_svcip = this.clusterIPElements();
    const last = writes(desired);
    if (last.size > 0) yield last;
    this.ids.releaseUnclaimed();
    this.refused = refused;
    this.usage = room.used();
    this.conflicts = conflicts;
    this.contended = contended;
    this.skipped = skipped;
    const deletes = new Map<MapName, Keys>();
    for (const m of WRITTEN_MAPS) deletes.set(m, index[m].gone());
    const gone = phased(new Map(), deletes);
    if (gone.size > 0) yield gone;
  }

  /**
   * Only the service ports in `changes.changed` (and the node addresses when the table changed):
   * each one's old share (from the entry last compiled for it) against its new one. Falls back to
   * a full build against what ferry last wrote when a changed port touches a frontend another
   * port also wants, so the conflict is resolved the same way a full sync would.
   */
  partial(next: ProxyTables, changes: SyncChanges): EbpfDiff {
    const skipped: string[] = [];
    const claimed = new Set<string>();
    const changedIds = new Set<PortId>();
    for (const key of changes.changed) for (const family of this.opts.families) changedIds.add(portId(family, key));
    const shares: { id: PortId; family: IPFamily; key: ServicePortKey; entry: ServiceEntry | undefined; before: ServiceEntry | undefined; old: Share; now: Share }[] = [];
    for (const key of changes.changed) {
      for (const family of this.opts.families) {
        const id = portId(family, key);
        const entry = next[family].services.get(key);
        const now = entry ? this.share(entry, id, skipped) : NO_SHARE;
        for (const [map, k] of now.elements) {
          if (!isFrontend(map)) continue;
          const owner = this.owners[map].get(k);
          const ck = `${map}\0${k}`;
          if (this.contended[map].has(k) || claimed.has(ck) || (owner !== undefined && owner !== id && !changedIds.has(owner))) return this.rebuild(next);
          claimed.add(ck);
        }
        const before = this.compiled.get(family)?.get(key);
        const old = before ? this.share(before, id, []) : NO_SHARE;
        for (const [map, k] of old.elements) {
          if (isFrontend(map) && this.contended[map].has(k)) return this.rebuild(next);
        }
        shares.push({ id, family, key, entry, before, old, now });
      }
    }
    // Room: a partial sync that would take a bounded map past its size, or any while a port is
    // refused for want of room (it may fit now), is made as a full build, which admits service
    // ports in key order.
    if (this.refused.length > 0) return this.rebuild(next);
    const usage = { ...this.usage };
    for (const { family, key, entry } of shares) {
      const before = this.compiled.get(family)?.get(key);
      const add = entry ? upperBound(entry) : undefined;
      const sub = before ? upperBound(before) : undefined;
      for (const m of BOUNDED) usage[m] += (add?.[m] ?? 0) - (sub?.[m] ?? 0);
    }
    if (BOUNDED.some((m) => usage[m] > MAP_CAPACITY[m])) return this.rebuild(next);
    // What the maps hold for these ports, and what they should: an element both have with the
    // same value is left alone; one only the old share has is deleted.
    const had = new Map<MapName, Map<string, string>>();
    const want = new Map<MapName, Map<string, string>>();
    for (const m of WRITTEN_MAPS) {
      had.set(m, new Map());
      want.set(m, new Map());
    }
    for (const { id, old } of shares) {
      for (const [map, k, v] of old.elements) {
        // A frontend this port lost to another was never written (and contention rebuilt above).
        if (isFrontend(map) && this.owners[map].get(k) !== id) continue;
        had.get(map)?.set(k, v);
      }
    }
    for (const { now } of shares) for (const [map, k, v] of now.elements) want.get(map)?.set(k, v);
    for (const { id, family, key, entry, old, now } of shares) {
      const keep = new Set(now.sets);
      for (const n of old.sets) if (!keep.has(n)) this.ids.release(n);
      for (const [map, k] of old.elements) if (isFrontend(map) && this.owners[map].get(k) === id) this.owners[map].delete(k);
      let compiled = this.compiled.get(family);
      if (!compiled) this.compiled.set(family, (compiled = new Map()));
      if (entry) compiled.set(key, entry);
      else compiled.delete(key);
    }
    for (const { id, now } of shares) for (const [map, k] of now.elements) if (isFrontend(map)) this.owners[map].set(k, id);
    // A ClusterIP's element comes with its first port and goes with its last.
    const hadIP = new Map<string, boolean>();
    for (const { entry, before } of shares) {
      const was = before ? this.clusterIPKey(before) : undefined;
      const is = entry ? this.clusterIPKey(entry) : undefined;
      if (was === is) continue;
      for (const [k, d] of [[was, -1], [is, 1]] as const) {
        if (k === undefined) continue;
        if (!hadIP.has(k)) hadIP.set(k, this.clusterIPs.has(k));
        this.countKey(k, d);
      }
    }
    for (const [k, was] of hadIP) {
      if (was) had.get('ferry_svcip')?.set(k, ONE);
      if (this.clusterIPs.has(k)) want.get('ferry_svcip')?.set(k, ONE);
    }
    this.usage = usage;
    if (changes.tableChanged) {
      const level = emptyContents();
      for (const family of this.opts.families) this.tableElements(next[family], level, skipped);
      this.usage.ferry_srcrange += level.ferry_srcrange.count - this.tableLevel.ferry_srcrange.size;
      for (const m of TABLE_LEVEL) {
        const now = new Map(level[m]);
        for (const [k, v] of this.tableLevel[m]) had.get(m)?.set(k, v);
        for (const [k, v] of now) want.get(m)?.set(k, v);
        this.tableLevel[m] = now;
      }
    }
    const upserts = new Map<MapName, Elements>();
    const deletes = new Map<MapName, Keys>();
    for (const m of WRITTEN_MAPS) {
      const before = had.get(m) ?? new Map<string, string>();
      const after = want.get(m) ?? new Map<string, string>();
      const ups: [string, string][] = [];
      const dels: string[] = [];
      for (const [k, v] of after) if (before.get(k) !== v) ups.push([k, v]);
      for (const k of before.keys()) if (!after.has(k)) dels.push(k);
      if (ups.length > 0) upserts.set(m, Elements.fromPairs(m, ups));
      if (dels.length > 0) deletes.set(m, Keys.fromStrings(m, dels));
    }
    this.skipped = skipped;
    return phased(upserts, deletes);
  }

  /** The last diff is in the kernel. */
  commit(): void {
    this.ids.commit();
  }

  /** A full build over what ferry last wrote (re-derived), for a conflict a partial sync cannot settle. */
  private rebuild(next: ProxyTables): EbpfDiff {
    const kernelView = this.written();
    for (const m of TABLE_LEVEL) kernelView[m] = Elements.fromPairs(m, [...kernelView[m], ...this.tableLevel[m]]);
    return this.full(next, kernelView);
  }

  /** The service ports' elements as ferry wrote them: each frontend only where its port owns it. */
  private written(): MapContents {
    const out = emptyContents();
    const claim: Claim = (id, map, elements, index) => this.owners[map].get(elements.key(index)) === id;
    for (const [family, entries] of this.compiled) for (const s of entries.values()) this.emit(s, portId(family, s.key), out, [], claim, undefined);
    out.ferry_svcip = this.clusterIPElements();
    return out;
  }

  /** One service port's elements as strings (partial syncs). */
  private share(s: ServiceEntry, id: PortId, skipped: string[]): Share {
    const out = this.scratch;
    for (const m of WRITTEN_MAPS) out[m].clear();
    const sets: string[] = [];
    this.emit(s, id, out, skipped, () => true, sets);
    const elements: [MapName, string, string][] = [];
    for (const m of WRITTEN_MAPS) for (const [k, v] of out[m]) elements.push([m, k, v]);
    return { elements, sets };
  }

  /**
   * Node addresses that accept NodePorts (the wildcard entries), as nodeaddr elements. With
   * nodePortAddresses 'all': every address the host has (the planner's `local`, kept current by
   * the daemon's address watch), the Node's listed ones (also when the host does not list them:
   * a listing may lag) and 127.0.0.1 as --iptables-localhost-nodeports.
   */
  private nodeAddresses(table: ProxyTable, out: Elements, skipped: string[]): void {
    const family = table.family;
    const addrs = nodePortAddressList(table, this.opts.localhostNodePorts === true);
    const seen = new Set<string>();
    for (const a of addrs) {
      if (seen.has(a)) continue;
      if (seen.size >= NODEADDR_PER_FAMILY) {
        skipped.push(`NodePorts on ${new Set(addrs).size - seen.size} more IPv${family} addresses of the host: ferry_nodeaddr holds ${NODEADDR_PER_FAMILY} per family`);
        break;
      }
      if (!writeAddr(this.addr, 0, a, family)) continue;
      seen.add(a);
      const i = out.add();
      writeNodeAddrKey(out.keys, i * out.keySize, this.addr, family);
      writeU32(out.values, i * out.valueSize, 1);
    }
  }

  /** A table's own elements: its NodePort addresses, its SNAT address, its local-traffic CIDRs, its service CIDRs. */
  private tableElements(table: ProxyTable, out: MapContents, skipped: string[]): void {
    this.nodeAddresses(table, out.ferry_nodeaddr, skipped);
    this.snat(table, out.ferry_snat);
    this.localCIDRs(table, out.ferry_srcrange);
    this.serviceCIDRs(table, out.ferry_srcrange);
  }

  /**
   * The service CIDRs, where what no frontend takes is dropped (service_ip_verdict in maps.h):
   * the planner's outermost ranges of the family, so none lies inside another.
   */
  private serviceCIDRs(table: ProxyTable, out: Elements): void {
    for (const cidr of table.serviceCIDRs ?? []) {
      const i = out.add();
      if (writeSrcRangeKey(out.keys, i * out.keySize, serviceCIDRSet(table.family), cidr, table.family)) writeU32(out.values, i * out.valueSize, 1);
      else out.pop();
    }
  }

  /** The ferry_svcip key of an entry's ClusterIP; undefined without one. */
  private clusterIPKey(s: ServiceEntry): string | undefined {
    if (s.clusterIP === '' || s.clusterIP === 'None' || !writeAddr(this.addr, 0, s.clusterIP, s.family)) return undefined;
    return nodeAddrKey(this.addr, s.family);
  }

  private countClusterIP(s: ServiceEntry, d: 1 | -1): void {
    const k = this.clusterIPKey(s);
    if (k !== undefined) this.countKey(k, d);
  }

  private countKey(k: string, d: 1 | -1): void {
    const n = (this.clusterIPs.get(k) ?? 0) + d;
    if (n > 0) this.clusterIPs.set(k, n);
    else this.clusterIPs.delete(k);
  }

  /** Every compiled ClusterIP as ferry_svcip elements. */
  private clusterIPElements(): Elements {
    const e = Elements.empty('ferry_svcip');
    e.reserve(this.clusterIPs.size);
    for (const k of this.clusterIPs.keys()) {
      const i = e.add();
      e.keys.write(k, i * e.keySize, 'latin1');
      writeU32(e.values, i * e.valueSize, 1);
    }
    return e;
  }

  /**
   * The sources the tc program takes for local pods when a ClusterIP masquerades "nonLocal":
   * the local-traffic detector's CIDRs. An interface-based detector has none here (tc cannot
   * name the interface), so through tc such traffic is masqueraded.
   */
  private localCIDRs(table: ProxyTable, out: Elements): void {
    if (table.localTraffic.kind !== 'clusterCIDR') return;
    for (const cidr of table.localTraffic.cidrs) {
      const i = out.add();
      if (writeSrcRangeKey(out.keys, i * out.keySize, localSet(table.family), cidr, table.family)) writeU32(out.values, i * out.valueSize, 1);
      else out.pop();
    }
  }

  /**
   * The address masqueraded traffic from the network leaves with: the node's primary address of
   * the family, else one the host has (a Node that lists no address of this family, on a host
   * that has one: nftables mode masquerades with the egress interface's address there, and
   * without a SNAT address the tc program drops what it should masquerade).
   */
  private snat(table: ProxyTable, out: Elements): void {
    const np = table.nodePortAddresses;
    const host = np.kind === 'all' ? (np.local ?? []) : np.addresses;
    const usable = (a: string): boolean => !isLoopback(a) && !/^fe[89ab]/i.test(a) && writeAddr(this.addr, 0, a, table.family);
    const primary = table.nodeIPs.find(usable) ?? host.find(usable);
    if (primary === undefined) return;
    writeAddr(this.addr, 0, primary, table.family);
    const i = out.add();
    writeU32(out.keys, i * out.keySize, table.family);
    out.values.set(this.addr, i * out.valueSize);
  }

  /**
   * Writes what service port `id` (entry `s`) puts into the maps into `out`, and the names of
   * its endpoint sets into `sets` when given. Frontend elements go through `claim`.
   */
  private emit(s: ServiceEntry, id: PortId, out: MapContents, skipped: string[], claim: Claim, sets: string[] | undefined): void {
    if (s.protocol === 'SCTP') {
      skipped.push(`${s.key}: SCTP (socket LB handles TCP and UDP)`);
      return;
    }
    const family = s.family;
    const addr = this.addr;
    const addSet = (kind: (typeof SET_KINDS)[number], set: EndpointSet, members: boolean): { id: number; count: number } => {
      const name = setName(s.key, family, kind);
      const setId = this.ids.get(name);
      sets?.push(name);
      const names = out.ferry_setname;
      const n = names.add();
      writeU32(names.keys, n * names.keySize, setId);
      writeSetNameValue(names.values, n * names.valueSize, name);
      let slot = 0;
      if (set.verdict === 'forward') {
        const backends = out.ferry_backend;
        const memberElements = out.ferry_member;
        for (const ep of set.endpoints) {
          if (!writeAddr(addr, 0, ep.ip, family)) continue;
          const b = backends.add();
          writeBackendKey(backends.keys, b * backends.keySize, setId, slot);
          writeBackendValue(backends.values, b * backends.valueSize, addr, ep.port, family);
          if (members) {
            const m = memberElements.add();
            writeMemberKey(memberElements.keys, m * memberElements.keySize, setId, addr, ep.port, family);
            writeU32(memberElements.values, m * memberElements.valueSize, slot);
          }
          slot++;
        }
      }
      return { id: setId, count: slot };
    };
    /** A frontend element of `map` keyed (ip or the NodePort wildcard, port); false if `ip` does not parse. */
    const frontendKey = (map: 'ferry_svc' | 'ferry_xsvc', ip: string | undefined, port: number): number | undefined => {
      const e = out[map];
      const i = e.add();
      if (ip !== undefined && !writeAddr(e.keys, i * e.keySize, ip, family)) {
        e.pop();
        return undefined;
      }
      // The address is in place (or stays 0: the wildcard); port, protocol and family follow it.
      writeSvcKey(e.keys, i * e.keySize, undefined, port, s.protocol, family);
      return i;
    };
    const frontend = (ip: string | undefined, port: number, setId: number, count: number, set: EndpointSet, flags = 0): void => {
      const i = frontendKey('ferry_svc', ip, port);
      if (i === undefined) {
        skipped.push(`${s.key}: ${ip} is not an IPv${family} address`);
        return;
      }
      const e = out.ferry_svc;
      // A forward set whose every address failed to parse has nothing to forward to.
      const verdict = set.verdict === 'forward' && count === 0 ? 'reject' : set.verdict;
      writeSvcValue(e.values, i * e.valueSize, setId, count, s.affinityTimeoutSeconds, verdict, flags);
      if (!claim(id, 'ferry_svc', e, i)) e.pop();
    };
    if (s.clusterIP !== '' && s.clusterIP !== 'None') {
      const i = addSet('internal', s.internal, socketSetMembers(s));
      frontend(s.clusterIP, s.port, i.id, i.count, s.internal, SF_CLUSTERIP | CLUSTER_MASQ[s.clusterIPMasquerade]);
    }
    const ranged = s.loadBalancerSourceRanges.length > 0;
    const lbIPs = ranged ? [] : s.loadBalancerIPs;
    if (ranged && s.loadBalancerIPs.length > 0) {
      // The source address is unknown at connect() time: these are served by the tc program only.
      skipped.push(`${s.key}: LB IPs with loadBalancerSourceRanges (the source is unknown at connect time)`);
    }
    // An externalIP that is also an LB IP with source ranges is that LB IP, ranges and all (as the
    // nftables backend's firewall-ips, keyed by address): one frontend, never two that the map
    // holds in turn.
    const rangedLB = ranged ? new Set(s.loadBalancerIPs) : undefined;
    const externalIPs = rangedLB ? s.externalIPs.filter((ip) => !rangedLB.has(ip)) : s.externalIPs;
    if (s.externalIPs.length > 0 || s.loadBalancerIPs.length > 0 || s.nodePort > 0) {
      const set = s.externalPolicyLocal ? s.cluster : s.external;
      // Always with members: when it is also tc's set (below), every packet checks them.
      const e = addSet('external', set, true);
      for (const ip of externalIPs) frontend(ip, s.port, e.id, e.count, set);
      for (const ip of lbIPs) frontend(ip, s.port, e.id, e.count, set);
      // With externalTrafficPolicy Local the tc program short-circuits a local pod to socket LB's
      // entry of the frontend (XF_LOCAL): a ranged LB IP gets one too, flagged for tc alone.
      if (ranged && s.externalPolicyLocal) for (const ip of s.loadBalancerIPs) frontend(ip, s.port, e.id, e.count, set, SF_NOSOCK);
      if (s.nodePort > 0) frontend(undefined, s.nodePort, e.id, e.count, set);

      // The tc path: traffic from the network uses the external set as the IR has it.
      const o = set === s.external ? e : addSet('outside', s.external, true);
      const masq = (s.externalMasquerade ? XF_MASQ : 0) | (s.externalPolicyLocal ? XF_LOCAL : 0);
      const verdict = s.external.verdict === 'forward' && o.count === 0 ? 'reject' : s.external.verdict;
      const packet = (ip: string | undefined, port: number, flags: number): void => {
        const i = frontendKey('ferry_xsvc', ip, port);
        if (i === undefined) return; // reported by frontend() above
        const x = out.ferry_xsvc;
        writeXsvcValue(x.values, i * x.valueSize, o.id, o.count, s.affinityTimeoutSeconds, verdict, flags);
        if (!claim(id, 'ferry_xsvc', x, i)) x.pop();
      };
      for (const ip of externalIPs) packet(ip, s.port, masq);
      for (const ip of s.loadBalancerIPs) {
        // (Reported by frontend() above when it wrote the SF_NOSOCK entry.)
        if (ranged && !s.externalPolicyLocal && !writeAddr(addr, 0, ip, family)) skipped.push(`${s.key}: ${ip} is not an IPv${family} address`);
        packet(ip, s.port, masq | (ranged ? XF_SRCRANGE : 0));
      }
      if (s.nodePort > 0) packet(undefined, s.nodePort, masq);
      if (ranged) {
        const sources = [...s.loadBalancerSourceRanges, ...(s.allowLoadBalancerIPSources ? s.loadBalancerIPs : [])];
        const r = out.ferry_srcrange;
        for (const cidr of sources) {
          const i = r.add();
          if (writeSrcRangeKey(r.keys, i * r.keySize, o.id, cidr, family)) writeU32(r.values, i * r.valueSize, 1);
          else {
            r.pop();
            skipped.push(`${s.key}: source range ${cidr} is not an IPv${family} CIDR`);
          }
        }
      }
    }
  }
}

/**
 * The addresses ferry_nodeaddr holds for `table` (duplicates possible): where NodePorts are
 * accepted, and which endpoints the tc program takes for the node's own.
 */
export function nodePortAddressList(table: ProxyTable, localhostNodePorts: boolean): string[] {
  const spec = table.nodePortAddresses;
  const localhost = table.family === 4 && localhostNodePorts;
  return spec.kind === 'list'
    ? // Loopback only with localhost NodePorts, IPv4 (as the other modes: never [::1]).
      spec.addresses.filter((a) => localhost || !isLoopback(a))
    : [...table.nodeIPs, ...(localhost ? ['127.0.0.1'] : []), ...(spec.local ?? [])];
}

/** clusterIPMasquerade as the tc program reads it (svc_val flags). */
const CLUSTER_MASQ: Record<ServiceEntry['clusterIPMasquerade'], number> = { all: SF_MASQ_ALL, nonLocal: SF_MASQ_NONLOCAL, none: 0 };

/**
 * Whether a set only socket LB reads (the ClusterIP's) needs its `ferry_member` elements: only
 * an affinity entry (ClientIP affinity) or a UDP flow entry (unconnected UDP) is checked against
 * them (sock_lb.c is_member). A TCP port without affinity — most of a cluster's — never asks,
 * and leaving its members out halves what a full sync writes. Sets tc reads (a NodePort's,
 * externalIPs', LB IPs') always have them: its connection tracking checks them on every packet.
 */
function socketSetMembers(s: ServiceEntry): boolean {
  return s.affinityTimeoutSeconds > 0 || s.protocol === 'UDP';
}

/** One service port's elements, as strings, and its set names. */
interface Share {
  readonly elements: readonly (readonly [MapName, string, string])[];
  readonly sets: readonly string[];
}

const NO_SHARE: Share = { elements: [], sets: [] };

/** The value of a ferry_svcip element. */
const ONE = u32Value(1);

/** Service ports per part of a full sync (fullInParts): about 90,000 elements at 10 endpoints each. */
const FULL_PART_PORTS = 4096;

type Bounded = keyof typeof MAP_CAPACITY;
const BOUNDED: readonly Bounded[] = ['ferry_setname', 'ferry_backend', 'ferry_member', 'ferry_svc', 'ferry_xsvc', 'ferry_srcrange'];

/** At most how many elements one service port puts in each bounded map, as emit() makes them. */
function upperBound(s: ServiceEntry): Record<Bounded, number> {
  // The ClusterIP's set, the external one, tc's own with ETP Local.
  const ext = s.externalIPs.length + s.loadBalancerIPs.length + (s.nodePort > 0 ? 1 : 0);
  let endpoints = s.internal.endpoints.length;
  let members = socketSetMembers(s) ? s.internal.endpoints.length : 0;
  if (ext > 0) {
    const n = s.external.endpoints.length + (s.externalPolicyLocal ? s.cluster.endpoints.length : 0);
    endpoints += n;
    members += n;
  }
  return {
    ferry_setname: 1 + (ext > 0 ? 2 : 0),
    ferry_backend: endpoints,
    ferry_member: members,
    ferry_svc: 1 + ext,
    ferry_xsvc: ext,
    ferry_srcrange: s.loadBalancerSourceRanges.length + s.loadBalancerIPs.length,
  };
}

/**
 * Room left in the bounded maps. A service port is admitted only while all it may write fits:
 * one that does not is refused and named, and the ports before it (in key order) are written
 * whole. Without it, the first batch update past a full map failed at the same place in every
 * retry, and what came after it — later Services' changes, the deletes of Services gone — was
 * never written.
 */
class Room {
  private readonly left: Record<Bounded, number> = { ...MAP_CAPACITY };

  take(s: ServiceEntry): string | undefined {
    const need = upperBound(s);
    for (const m of BOUNDED) {
      if (need[m] > this.left[m]) return `${s.key}: not programmed: ${m} holds ${MAP_CAPACITY[m]} elements, and the Services before it in key order leave room for ${this.left[m]} of its ${need[m]}`;
    }
    for (const m of BOUNDED) this.left[m] -= need[m];
    return undefined;
  }

  /** Elements outside the service ports (the table level's source ranges). */
  spend(m: Bounded, n: number): void {
    this.left[m] -= n;
  }

  used(): Record<Bounded, number> {
    const out = { ...MAP_CAPACITY };
    for (const m of BOUNDED) out[m] -= this.left[m];
    return out;
  }
}

/**
 * Makes room in `out` for everything `entries` can put there (an upper bound per map), so a full
 * build fills buffers allocated once instead of doubling and copying them.
 */
function reserve(entries: readonly ServiceEntry[], out: MapContents): void {
  const total: Record<Bounded, number> = { ferry_setname: 0, ferry_backend: 0, ferry_member: 0, ferry_svc: 0, ferry_xsvc: 0, ferry_srcrange: 0 };
  for (const s of entries) {
    const b = upperBound(s);
    for (const m of BOUNDED) total[m] += b[m];
  }
  for (const m of BOUNDED) out[m].reserve(total[m]);
}

/** Maps the frontends point into (sets, backends) or that qualify them (node addresses, ranges, SNAT). */
const AUX_MAPS: readonly MapName[] = WRITTEN_MAPS.filter((m) => !isFrontend(m));
const FRONTEND_ORDER: readonly MapName[] = WRITTEN_MAPS.filter(isFrontend);

function phased(upserts: ReadonlyMap<MapName, Elements>, deletes: ReadonlyMap<MapName, Keys>): EbpfDiff {
  const ops = (map: MapName, withUpserts: boolean, withDeletes: boolean): MapOps => ({
    map,
    upserts: (withUpserts ? upserts.get(map) : undefined) ?? Elements.empty(map),
    deletes: (withDeletes ? deletes.get(map) : undefined) ?? new Keys(map, Buffer.alloc(0), 0),
  });
  const phases: MapOps[][] = [
    // What the new frontends will point at exists before they do…
    AUX_MAPS.map((m) => ops(m, true, false)),
    FRONTEND_ORDER.map((m) => ops(m, true, true)),
    // …and what the old ones pointed at goes only after they are gone.
    AUX_MAPS.map((m) => ops(m, false, true)),
  ];
  let size = 0;
  const nonEmpty = phases.map((p) => p.filter((o) => o.upserts.length + o.deletes.length > 0)).filter((p) => p.length > 0);
  for (const p of nonEmpty) for (const o of p) size += o.upserts.length + o.deletes.length;
  return { phases: nonEmpty, size };
}
