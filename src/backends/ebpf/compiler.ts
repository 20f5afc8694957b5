/**
 * The ebpf mode's compiler: from the planner's IR to element diffs of the BPF maps that the
 * socket-level load balancer (native/bpf/sock_lb.c) reads.
 *
 * Pure: no I/O. It keeps what it last compiled (the maps' contents as ferry wrote them, each
 * service port's share of them, and the endpoint set ids) so a partial sync costs what changed;
 * a full sync diffs the desired state against what the pinned maps actually hold (a dump the
 * applier reads), so a restarted ferry rewrites nothing that is already right.
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
import type { EndpointSet, IPFamily, ProxyTable, ProxyTables, ServiceEntry, ServicePortKey, SyncChanges } from '../../plan/types.js';
import {
  FRONTEND_MAPS,
  XF_MASQ,
  XF_SRCRANGE,
  addrBytes,
  backendKey,
  backendValue,
  decodeSetName,
  decodeU32,
  describeSvcKey,
  memberKey,
  nodeAddrKey,
  setNameKey,
  setNameValue,
  snatKey,
  snatValue,
  srcRangeKey,
  svcKey,
  svcValue,
  u32Value,
  xsvcValue,
  WRITTEN_MAPS,
  type MapName,
} from './layout.js';

/** The contents of the maps ferry writes: key → value, both binary strings (layout.ts). */
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
  };
}

/** Element changes to one map. */
export interface MapOps {
  readonly map: MapName;
  readonly upserts: readonly (readonly [string, string])[];
  readonly deletes: readonly string[];
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

/** What one service port puts into the maps. */
interface Contribution {
  readonly entries: readonly (readonly [MapName, string, string])[];
  readonly sets: readonly string[];
}

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

/**
 * Endpoint set ids: stable per set name, reused from the pinned setname map after a restart.
 * Ids released in a sync are reused only after the sync is applied, so a new set never takes
 * over an id that a live service entry still points to.
 */
class SetIds {
  private byName = new Map<string, number>();
  private used = new Set<number>();
  private free: number[] = [];
  private pendingFree: number[] = [];
  private next = 1;

  reset(known: ReadonlyMap<string, number>): void {
    this.byName = new Map(known);
    this.used = new Set(known.values());
    this.free = [];
    this.pendingFree = [];
    this.next = 1;
  }

  get(name: string): number {
    let id = this.byName.get(name);
    if (id !== undefined) return id;
    id = this.free.pop();
    if (id === undefined) {
      while (this.used.has(this.next)) this.next++;
      id = this.next++;
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

  names(): IterableIterator<string> {
    return this.byName.keys();
  }
}

export class EbpfCompiler {
  private state: MapState = emptyState();
  private readonly contributions = new Map<PortId, Contribution>();
  /** Which service port holds each frontend key (ownerKey: map and key). */
  private readonly owners = new Map<string, PortId>();
  /** Frontend owner keys more than one service port wanted at the last full build. */
  private contended = new Set<string>();
  private readonly ids = new SetIds();
  conflicts: readonly FrontendConflict[] = [];
  /** Frontends skipped because socket LB cannot honour them (see frontends()). */
  skipped: readonly string[] = [];

  constructor(private readonly opts: EbpfCompilerOptions) {}

  /** What ferry last wrote (tests, intact checks). */
  current(): Readonly<MapState> {
    return this.state;
  }

  /**
   * Everything from scratch: the desired state of `next` diffed against `kernel`, what the
   * pinned maps hold now. Set ids recorded in the kernel's setname map are kept.
   */
  full(next: ProxyTables, kernel: MapState): EbpfDiff {
    const known = new Map<string, number>();
    for (const [k, v] of kernel.ferry_setname) known.set(decodeSetName(v), decodeU32(k));
    this.ids.reset(known);
    this.contributions.clear();
    this.owners.clear();
    const desired = emptyState();
    const conflicts: FrontendConflict[] = [];
    const contended = new Set<string>();
    const skipped: string[] = [];
    const liveSets = new Set<string>();
    for (const family of this.opts.families) {
      const table = next[family];
      for (const [k, v] of this.nodeAddresses(table)) desired.ferry_nodeaddr.set(k, v);
      for (const [k, v] of this.snat(table)) desired.ferry_snat.set(k, v);
      for (const s of table.services.values()) {
        const c = this.contribution(s, skipped);
        const id = portId(family, s.key);
        this.contributions.set(id, c);
        for (const n of c.sets) liveSets.add(n);
        for (const [map, k, v] of c.entries) {
          if (FRONTEND_MAPS.has(map)) {
            const ok = ownerKey(map, k);
            const owner = this.owners.get(ok);
            if (owner !== undefined && owner !== id) {
              if (map === 'ferry_svc') conflicts.push({ frontend: describeSvcKey(k), kept: keyOf(owner), refused: s.key });
              contended.add(ok);
              continue;
            }
            this.owners.set(ok, id);
          }
          desired[map].set(k, v);
        }
      }
    }
    for (const name of [...this.ids.names()]) if (!liveSets.has(name)) this.ids.release(name);
    this.conflicts = conflicts;
    this.contended = contended;
    this.skipped = skipped;
    const d = diffStates(kernel, desired);
    this.state = desired;
    return d;
  }

  /**
   * Only the service ports in `changes.changed` (and the node addresses when the table changed).
   * Falls back to a full build against what ferry last wrote when a changed port touches a
   * frontend another port also wants, so the conflict is resolved the same way a full sync would.
   */
  partial(next: ProxyTables, changes: SyncChanges): EbpfDiff {
    const delta = new Map<MapName, Map<string, string | null>>();
    for (const m of WRITTEN_MAPS) delta.set(m, new Map());
    const put = (map: MapName, k: string, v: string | null): void => {
      delta.get(map)?.set(k, v);
    };
    const skipped: string[] = [];
    const wanted = new Map<PortId, Contribution | undefined>();
    const claimed = new Set<string>();
    const changedIds = new Set<PortId>();
    for (const key of changes.changed) for (const family of this.opts.families) changedIds.add(portId(family, key));
    for (const key of changes.changed) {
      for (const family of this.opts.families) {
        const id = portId(family, key);
        const s = next[family].services.get(key);
        const c = s ? this.contribution(s, skipped) : undefined;
        for (const [map, k] of c?.entries ?? []) {
          if (!FRONTEND_MAPS.has(map)) continue;
          const ok = ownerKey(map, k);
          const owner = this.owners.get(ok);
          if (this.contended.has(ok) || claimed.has(ok) || (owner !== undefined && owner !== id && !changedIds.has(owner))) return this.rebuild(next);
          claimed.add(ok);
        }
        for (const [map, k] of this.contributions.get(id)?.entries ?? []) {
          if (FRONTEND_MAPS.has(map) && this.contended.has(ownerKey(map, k))) return this.rebuild(next);
        }
        wanted.set(id, c);
      }
    }
    // Old shares out first, new ones in: an element both remove and add ends as the new value.
    for (const key of wanted.keys()) {
      for (const [map, k] of this.contributions.get(key)?.entries ?? []) put(map, k, null);
    }
    for (const [key, c] of wanted) {
      const old = this.contributions.get(key);
      const keep = new Set(c?.sets ?? []);
      for (const n of old?.sets ?? []) if (!keep.has(n)) this.ids.release(n);
      for (const [map, k, v] of c?.entries ?? []) put(map, k, v);
      if (c) this.contributions.set(key, c);
      else this.contributions.delete(key);
    }
    if (changes.tableChanged) {
      const addrs = new Map<string, string>();
      const snat = new Map<string, string>();
      for (const family of this.opts.families) {
        for (const [k, v] of this.nodeAddresses(next[family])) addrs.set(k, v);
        for (const [k, v] of this.snat(next[family])) snat.set(k, v);
      }
      for (const k of this.state.ferry_nodeaddr.keys()) if (!addrs.has(k)) put('ferry_nodeaddr', k, null);
      for (const [k, v] of addrs) put('ferry_nodeaddr', k, v);
      for (const k of this.state.ferry_snat.keys()) if (!snat.has(k)) put('ferry_snat', k, null);
      for (const [k, v] of snat) put('ferry_snat', k, v);
    }
    const upserts = new Map<MapName, [string, string][]>();
    const deletes = new Map<MapName, string[]>();
    for (const m of WRITTEN_MAPS) {
      const cur = this.state[m];
      const ups: [string, string][] = [];
      const dels: string[] = [];
      for (const [k, v] of delta.get(m) ?? []) {
        if (v === null) {
          if (cur.has(k)) {
            dels.push(k);
            cur.delete(k);
            if (FRONTEND_MAPS.has(m)) this.owners.delete(ownerKey(m, k));
          }
        } else if (cur.get(k) !== v) {
          ups.push([k, v]);
          cur.set(k, v);
        }
      }
      upserts.set(m, ups);
      deletes.set(m, dels);
    }
    // Owners of entries deleted above were dropped; restore those the new shares hold.
    for (const [key, c] of wanted) for (const [map, k] of c?.entries ?? []) if (FRONTEND_MAPS.has(map)) this.owners.set(ownerKey(map, k), key);
    this.skipped = skipped;
    return phased(upserts, deletes);
  }

  /** The last diff is in the kernel. */
  commit(): void {
    this.ids.commit();
  }

  private rebuild(next: ProxyTables): EbpfDiff {
    const kernelView = this.state;
    return this.full(next, kernelView);
  }

  /** Node addresses that accept NodePorts (the wildcard entries), as nodeaddr elements. */
  private nodeAddresses(table: ProxyTable): [string, string][] {
    const family = table.family;
    const addrs =
      table.nodePortAddresses.kind === 'list'
        ? [...table.nodePortAddresses.addresses]
        : [...table.nodeIPs, ...(family === 4 && this.opts.localhostNodePorts ? ['127.0.0.1'] : [])];
    const out: [string, string][] = [];
    for (const a of addrs) {
      const b = addrBytes(a, family);
      if (b) out.push([nodeAddrKey(b, family), u32Value(1)]);
    }
    return out;
  }

  /** The address masqueraded traffic from the network leaves with: the node's primary address. */
  private snat(table: ProxyTable): [string, string][] {
    const primary = table.nodeIPs[0];
    const b = primary === undefined ? undefined : addrBytes(primary, table.family);
    return b ? [[snatKey(table.family), snatValue(b)]] : [];
  }

  private contribution(s: ServiceEntry, skipped: string[]): Contribution {
    const entries: [MapName, string, string][] = [];
    const sets: string[] = [];
    if (s.protocol === 'SCTP') {
      skipped.push(`${s.key}: SCTP (socket LB handles TCP and UDP)`);
      return { entries, sets };
    }
    const family = s.family;
    const addSet = (kind: (typeof SET_KINDS)[number], set: EndpointSet): { id: number; count: number } => {
      const name = setName(s.key, family, kind);
      const id = this.ids.get(name);
      sets.push(name);
      entries.push(['ferry_setname', setNameKey(id), setNameValue(name)]);
      let slot = 0;
      if (set.verdict === 'forward') {
        for (const ep of set.endpoints) {
          const a = addrBytes(ep.ip, family);
          if (!a) continue;
          entries.push(['ferry_backend', backendKey(id, slot), backendValue(a, ep.port, family)]);
          entries.push(['ferry_member', memberKey(id, a, ep.port, family), u32Value(slot)]);
          slot++;
        }
      }
      return { id, count: slot };
    };
    const frontend = (ip: string | undefined, port: number, id: number, count: number, set: EndpointSet): void => {
      let addr: Buffer | undefined;
      if (ip !== undefined) {
        addr = addrBytes(ip, family);
        if (!addr) {
          skipped.push(`${s.key}: ${ip} is not an IPv${family} address`);
          return;
        }
      }
      // A forward set whose every address failed to parse has nothing to forward to.
      const verdict = set.verdict === 'forward' && count === 0 ? 'reject' : set.verdict;
      entries.push(['ferry_svc', svcKey(addr, port, s.protocol, family), svcValue(id, count, s.affinityTimeoutSeconds, verdict)]);
    };
    if (s.clusterIP !== '' && s.clusterIP !== 'None') {
      const i = addSet('internal', s.internal);
      frontend(s.clusterIP, s.port, i.id, i.count, s.internal);
    }
    const lbIPs = s.loadBalancerSourceRanges.length > 0 ? [] : s.loadBalancerIPs;
    if (s.loadBalancerSourceRanges.length > 0 && s.loadBalancerIPs.length > 0) {
      // The source address is unknown at connect() time: these stay on the (future) tc path.
      skipped.push(`${s.key}: LB IPs with loadBalancerSourceRanges (the source is unknown at connect time)`);
    }
    if (s.externalIPs.length > 0 || s.loadBalancerIPs.length > 0 || s.nodePort > 0) {
      const set = s.externalPolicyLocal ? s.cluster : s.external;
      const e = addSet('external', set);
      for (const ip of s.externalIPs) frontend(ip, s.port, e.id, e.count, set);
      for (const ip of lbIPs) frontend(ip, s.port, e.id, e.count, set);
      if (s.nodePort > 0) frontend(undefined, s.nodePort, e.id, e.count, set);

      // The tc path: traffic from the network uses the external set as the IR has it.
      const o = set === s.external ? e : addSet('outside', s.external);
      const masq = s.externalMasquerade ? XF_MASQ : 0;
      const verdict = s.external.verdict === 'forward' && o.count === 0 ? 'reject' : s.external.verdict;
      const packet = (ip: string | undefined, port: number, flags: number): void => {
        const addr = ip === undefined ? undefined : addrBytes(ip, family);
        if (ip !== undefined && !addr) return; // reported by frontend() above
        entries.push(['ferry_xsvc', svcKey(addr, port, s.protocol, family), xsvcValue(o.id, o.count, s.affinityTimeoutSeconds, verdict, flags)]);
      };
      for (const ip of s.externalIPs) packet(ip, s.port, masq);
      const ranged = s.loadBalancerSourceRanges.length > 0;
      for (const ip of s.loadBalancerIPs) {
        if (ranged && !addrBytes(ip, family)) skipped.push(`${s.key}: ${ip} is not an IPv${family} address`);
        packet(ip, s.port, masq | (ranged ? XF_SRCRANGE : 0));
      }
      if (s.nodePort > 0) packet(undefined, s.nodePort, masq);
      if (ranged) {
        const sources = [...s.loadBalancerSourceRanges, ...(s.allowLoadBalancerIPSources ? s.loadBalancerIPs : [])];
        for (const cidr of sources) {
          const k = srcRangeKey(o.id, cidr, family);
          if (k) entries.push(['ferry_srcrange', k, u32Value(1)]);
          else skipped.push(`${s.key}: source range ${cidr} is not an IPv${family} CIDR`);
        }
      }
    }
    return { entries, sets };
  }
}

/** Owners are per map: ferry_svc and ferry_xsvc share the key layout. */
function ownerKey(map: MapName, k: string): string {
  return `${map}\0${k}`;
}

/** Element diff from `current` to `desired`, in the safe order. */
export function diffStates(current: MapState, desired: MapState): EbpfDiff {
  const upserts = new Map<MapName, [string, string][]>();
  const deletes = new Map<MapName, string[]>();
  for (const m of WRITTEN_MAPS) {
    const cur = current[m];
    const want = desired[m];
    const ups: [string, string][] = [];
    const dels: string[] = [];
    for (const [k, v] of want) if (cur.get(k) !== v) ups.push([k, v]);
    for (const k of cur.keys()) if (!want.has(k)) dels.push(k);
    upserts.set(m, ups);
    deletes.set(m, dels);
  }
  return phased(upserts, deletes);
}

function phased(upserts: Map<MapName, [string, string][]>, deletes: Map<MapName, string[]>): EbpfDiff {
  const ops = (map: MapName, withUpserts: boolean, withDeletes: boolean): MapOps => ({
    map,
    upserts: withUpserts ? (upserts.get(map) ?? []) : [],
    deletes: withDeletes ? (deletes.get(map) ?? []) : [],
  });
  const phases: MapOps[][] = [
    [
      ops('ferry_setname', true, false),
      ops('ferry_backend', true, false),
      ops('ferry_member', true, false),
      ops('ferry_nodeaddr', true, false),
      ops('ferry_srcrange', true, false),
      ops('ferry_snat', true, false),
    ],
    [ops('ferry_svc', true, true), ops('ferry_xsvc', true, true)],
    [
      ops('ferry_backend', false, true),
      ops('ferry_member', false, true),
      ops('ferry_setname', false, true),
      ops('ferry_nodeaddr', false, true),
      ops('ferry_srcrange', false, true),
      ops('ferry_snat', false, true),
    ],
  ];
  let size = 0;
  const nonEmpty = phases.map((p) => p.filter((o) => o.upserts.length + o.deletes.length > 0)).filter((p) => p.length > 0);
  for (const p of nonEmpty) for (const o of p) size += o.upserts.length + o.deletes.length;
  return { phases: nonEmpty, size };
}
