/**
 * Bounded cost per Service: which part of a sync's changes goes to the kernel now, so that one
 * huge Service (thousands of ports or endpoints) never holds everyone else's changes behind a
 * transaction of tens of thousands of operations.
 *
 * Every Service whose own change costs at most the budget is applied whole, however many such
 * Services change together (a burst of ordinary changes stays one transaction, and a cold start
 * of an ordinary cluster one atomic full sync). A Service whose change costs more is trickled in:
 * each sync takes as many of its service ports, in key order, as the budget left over allows (at
 * least one), and the syncer runs again at once for the rest. The tables the backend is given
 * are then `base` (what is installed) with exactly the chosen keys moved to their planned
 * entries; the next sync's diff against the plan finds what is still missing by itself.
 *
 * A sync that has ordinary changes too may hold the oversized Services back entirely
 * (`yieldToOthers`), so those changes wait for no piece but the one already in the kernel; the
 * syncer allows it only when the sync before applied a piece, so a stream of ordinary changes
 * cannot starve an oversized Service.
 *
 * Cost is a rough kernel-work estimate per service port: one for the frontends, one per
 * endpoint of its largest path, doubled with ClientIP affinity (a chain and an affinity set per
 * endpoint). Pure; no clock, no I/O.
 */
import { deepEqual } from '../model/equal.js';
import { recordDerivation } from '../plan/diff.js';
import type { ChangeSet, ClusterSnapshot, IPFamily, ServicePort } from '../model/types.js';
import type { ProxyTable, ProxyTables, ServiceEntry, ServicePortKey, SyncChanges } from '../plan/types.js';
import { SortedMap } from '../util/sorted-map.js';

const FAMILIES = [4, 6] as const;

export function entryCost(e: ServiceEntry | undefined): number {
  if (!e) return 0;
  const eps = Math.max(e.internal.endpoints.length, e.external.endpoints.length, e.cluster.endpoints.length);
  return (1 + eps) * (e.affinityTimeoutSeconds > 0 ? 2 : 1);
}

/** `namespace/name` of a service port key (`namespace/name:port/proto`). */
function serviceOf(key: ServicePortKey): string {
  const colon = key.indexOf(':');
  return colon < 0 ? key : key.slice(0, colon);
}

interface KeyCost {
  readonly key: ServicePortKey;
  readonly cost: number;
}

export interface BoundedSync {
  /** What to program now: base with the chosen keys at their planned entries. */
  readonly tables: ProxyTables;
  readonly changes: SyncChanges;
  /** Changed service ports left for later syncs, and the Services they belong to. */
  readonly deferredKeys: number;
  readonly deferredServices: readonly string[];
  /** The estimated cost of what goes now. */
  readonly cost: number;
  /** The oversized Services got no piece: ordinary changes went alone (`yieldToOthers`). */
  readonly withheld: boolean;
}

/**
 * Undefined when every changed Service fits the budget (the common case: sync as planned).
 * `base` is what the kernel holds (null before the first success); `prev` is what the backend
 * is told it holds (null for a full sync).
 */
export function boundSync(
  base: ProxyTables | null,
  prev: ProxyTables | null,
  next: ProxyTables,
  changes: SyncChanges,
  budget: number,
  yieldToOthers = false,
): BoundedSync | undefined {
  // A full sync lists every key: before a lookup or a record per key, one walk of each table
  // bounds every Service at once (44k Services: 20-40 ms against 50-300 ms for the pass below;
  // nothing at all for a repair with nothing changed).
  if (changes.full && fullSyncFits(base, next, budget)) return undefined;
  // First, cheaply, an upper bound per Service (what base already holds costs nothing below,
  // so this only overestimates): a cold start of 44k Services need not compare 44k entries with
  // base nor keep a record per key when no Service comes near the budget. (When one does, the
  // pass below costs each key again: rare, and cheaper than a record per key on every sync.)
  const bound = new Map<string, number>();
  let near = false;
  for (const k of changes.changed) {
    let c = 0;
    for (const f of FAMILIES) c += Math.max(entryCost(base?.[f].services.get(k)), entryCost(next[f].services.get(k)));
    const svc = serviceOf(k);
    const total = (bound.get(svc) ?? 0) + c;
    bound.set(svc, total);
    if (total > budget) near = true;
  }
  if (!near) return undefined;

  // Per Service: its total and each changed key with its own cost, computed once.
  const costs = new Map<string, { cost: number; keys: KeyCost[] }>();
  // A full sync lists every key; what base already holds as planned is kept whatever happens,
  // so it costs this decision nothing and is always in.
  const kept = new Set<ServicePortKey>();
  let oversized = false;
  for (const k of changes.changed) {
    if (changes.full && base && FAMILIES.every((f) => sameEntry(base[f].services.get(k), next[f].services.get(k)))) {
      kept.add(k);
      continue;
    }
    let c = 0;
    for (const f of FAMILIES) c += Math.max(entryCost(base?.[f].services.get(k)), entryCost(next[f].services.get(k)));
    const svc = serviceOf(k);
    let g = costs.get(svc);
    if (!g) costs.set(svc, (g = { cost: 0, keys: [] }));
    g.cost += c;
    g.keys.push({ key: k, cost: c });
    if (g.cost > budget) oversized = true;
  }
  if (!oversized) return undefined;

  const chosen = kept;
  const { spent, deferredKeys, deferredServices, withheld } = choose(costs, budget, chosen, yieldToOthers && prev !== null);
  if (deferredKeys === 0) return undefined;

  // A partial sync's changes cover every difference between base and next, so the merged tables
  // differ from next exactly at the changed keys left out: recorded, the next sync's diff against
  // its plan costs those keys, not a walk over the table. (A full sync's do not cover keys that
  // only base holds; its merged tables get no record.)
  let deferred: Set<ServicePortKey> | undefined;
  if (prev !== null) {
    deferred = new Set();
    for (const k of changes.changed) if (!chosen.has(k)) deferred.add(k);
  }
  const tables = {
    4: mergeTable(base?.[4], next[4], chosen, deferred),
    6: mergeTable(base?.[6], next[6], chosen, deferred),
  } as ProxyTables;
  const out: SyncChanges =
    prev === null
      ? { full: true, changed: new Set([...tables[4].services.keys(), ...tables[6].services.keys()]), tableChanged: true }
      : { full: false, changed: chosen, tableChanged: changes.tableChanged };
  return { tables, changes: out, deferredKeys, deferredServices, cost: spent, withheld };
}

/**
 * Whether no Service can cost more than the budget in a full sync: a Service's cost there is at
 * most what its entries cost in base plus what they cost in next, in each family, so the sum of
 * each table's largest Service bounds them all. Known only for sorted tables (the planner's),
 * whose key order keeps a Service's ports together; false for others (the pass below decides).
 */
function fullSyncFits(base: ProxyTables | null, next: ProxyTables, budget: number): boolean {
  // A repair of the kernel with nothing changed meanwhile: all of it is kept as installed.
  if (base && FAMILIES.every((f) => base[f].services === next[f].services)) return true;
  let sum = 0;
  for (const f of FAMILIES) {
    for (const m of [next[f].services, base?.[f].services]) {
      if (m === undefined) continue;
      const c = largestService(m);
      if (c === undefined) return false;
      sum += c;
      if (sum > budget) return false;
    }
  }
  return true;
}

/** The cost of the Service whose entries cost most in m; undefined unless m walks in key order. */
function largestService(m: ReadonlyMap<ServicePortKey, ServiceEntry>): number | undefined {
  if (m.size === 0) return 0;
  if (!(m instanceof SortedMap)) return undefined;
  let max = 0;
  let run = 0;
  let prev = '';
  let prevColon = -2;
  m.forEach((e: ServiceEntry, k: string) => {
    const colon = k.indexOf(':');
    if (colon !== prevColon || !samePrefix(k, prev, colon)) run = 0;
    run += entryCost(e);
    if (run > max) max = run;
    prev = k;
    prevColon = colon;
  });
  return max;
}

/** a and b agree in their first n code units (n < 0: a key without a Service part, never). */
function samePrefix(a: string, b: string, n: number): boolean {
  if (n < 0) return false;
  for (let i = 0; i < n; i++) if (a.charCodeAt(i) !== b.charCodeAt(i)) return false;
  return true;
}

type Groups = Map<string, { cost: number; keys: KeyCost[] }>;

interface Choice {
  readonly spent: number;
  readonly deferredKeys: number;
  readonly deferredServices: string[];
  readonly withheld: boolean;
}

/**
 * Into `chosen`: every Service within the budget whole; the oversized ones share what the budget
 * has left, smallest first, each in key order (the first piece takes at least one key). With
 * `yieldToOthers`, when any Service within the budget changed, the oversized ones get nothing.
 */
function choose(groups: Groups, budget: number, chosen: Set<ServicePortKey>, yieldToOthers: boolean): Choice {
  const big: [string, { cost: number; keys: KeyCost[] }][] = [];
  let spent = 0;
  let ordinary = 0;
  for (const [svc, g] of groups) {
    if (g.cost <= budget) {
      for (const k of g.keys) chosen.add(k.key);
      spent += g.cost;
      ordinary++;
    } else big.push([svc, g]);
  }
  big.sort((a, b) => a[1].cost - b[1].cost || (a[0] < b[0] ? -1 : 1));
  const deferredServices: string[] = [];
  let deferredKeys = 0;
  const withheld = yieldToOthers && ordinary > 0 && big.length > 0;
  if (withheld) {
    for (const [svc, g] of big) {
      deferredKeys += g.keys.length;
      deferredServices.push(svc);
    }
    return { spent, deferredKeys, deferredServices, withheld };
  }
  for (const [svc, g] of big) {
    if (!inKeyOrder(g.keys)) g.keys.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    let i = 0;
    for (; i < g.keys.length; i++) {
      const { key, cost } = g.keys[i]!;
      if (spent + cost > budget && (spent > 0 || i > 0)) break;
      chosen.add(key);
      spent += cost;
    }
    if (i < g.keys.length) {
      deferredKeys += g.keys.length - i;
      deferredServices.push(svc);
    }
  }
  return { spent, deferredKeys, deferredServices, withheld };
}

/** Change sets usually list keys in order already (diffs walk sorted maps): then no sort. */
function inKeyOrder(keys: readonly KeyCost[]): boolean {
  for (let i = 1; i < keys.length; i++) if (keys[i - 1]!.key > keys[i]!.key) return false;
  return true;
}

/** A port's cost as the snapshot shows it (before planning): entryCost's estimate. */
function snapshotCost(sp: ServicePort | undefined, endpoints: number): number {
  return sp ? (1 + endpoints) * (sp.affinityTimeoutSeconds > 0 ? 2 : 1) : 0;
}

/**
 * Changed service ports left for later syncs, with each one's cost as it was computed: still
 * right while the port appears in no later snapshot's changes (its snapshot entry is the same,
 * and a deferred port was not installed), so a sync carrying thousands of them does not cost
 * them all again (at 15,000 carried ports that was most of each piece's sync).
 */
export interface PlanDebt {
  readonly keys: Record<IPFamily, ReadonlySet<ServicePortKey>>;
  readonly costs: ReadonlyMap<ServicePortKey, number>;
}

export interface PlanPiece {
  /** What to plan now: the snapshot's changes and the keys left from before, within the budget. */
  readonly changes: Record<IPFamily, ChangeSet>;
  /** Changed keys left for later syncs (planned then, from the snapshot of then). */
  readonly later: PlanDebt;
  readonly deferredKeys: number;
  readonly deferredServices: readonly string[];
  /** The oversized Services got no piece: ordinary changes are planned alone (`yieldToOthers`). */
  readonly withheld: boolean;
}

/** One service port's cost per family (snapshotCost or what is installed, the larger) and whether it has a health check node port. */
interface KeyInfo {
  readonly share: Record<IPFamily, number>;
  hc: boolean;
}

export const NO_DEBT: PlanDebt = { keys: { 4: new Set(), 6: new Set() }, costs: new Map() };

/**
 * The same bound one step earlier, on what to plan: a Service of thousands of ports arriving
 * costs planning, diffing and bounding every port in the sync it arrives in, hundreds of
 * milliseconds in which nothing else moves, even though only a budget's worth of them is then
 * applied. Here its changed ports are split before planning, costed from the snapshot (what is
 * installed counts too, for ports going away); the rest is carried to the next sync. Services
 * with a health check node port are planned whole by the planner anyway, so they are never
 * split. A family whose table-level inputs changed is planned whole (its carried keys with it).
 */
export function boundPlan(
  snaps: Record<IPFamily, ClusterSnapshot>,
  changes: Record<IPFamily, ChangeSet>,
  debt: PlanDebt,
  applied: ProxyTables | null,
  budget: number,
  yieldToOthers = false,
): PlanPiece {
  const carried = FAMILIES.some((f) => debt.keys[f].size > 0);
  const merged = carried ? withDebt(changes, debt.keys) : changes;
  const none: PlanPiece = { changes: merged, later: NO_DEBT, deferredKeys: 0, deferredServices: [], withheld: false };
  const splittable = FAMILIES.filter((f) => !merged[f].nodeChanged);
  // A carried cost holds only if it was counted over the same families (it always is, unless a
  // family is planned whole now) and the key has not changed since.
  const reuse = splittable.length === FAMILIES.length;
  const fresh = (k: ServicePortKey): boolean => FAMILIES.some((f) => changes[f].changed.has(k));
  // Each key's share per family and whether it has a health check node port, from one set of
  // lookups (both passes below need them; at 15,000 new ports the lookups were most of this).
  const infos = new Map<ServicePortKey, KeyInfo>();
  const info = (k: ServicePortKey): KeyInfo => {
    let i = infos.get(k);
    if (i) return i;
    i = { share: { 4: 0, 6: 0 }, hc: false };
    for (const f of FAMILIES) {
      const sp = snaps[f].services.get(k);
      const e = applied?.[f].services.get(k);
      i.share[f] = Math.max(snapshotCost(sp, sp ? (snaps[f].endpoints.get(k)?.length ?? 0) : 0), entryCost(e));
      if ((sp?.healthCheckNodePort ?? 0) !== 0 || (e?.healthCheckNodePort ?? 0) !== 0) i.hc = true;
    }
    infos.set(k, i);
    return i;
  };
  const cost = (k: ServicePortKey): number => {
    const known = reuse && !fresh(k) ? debt.costs.get(k) : undefined;
    if (known !== undefined) return known;
    const i = info(k);
    let c = 0;
    for (const f of splittable) c += i.share[f];
    return c;
  };
  // The cheap pass first: the common sync has no Service near the budget and nothing carried
  // (a carried key is left from a Service that was over it). Each family's key costs its own
  // family's share, so a dual-stack key counts once.
  if (!carried) {
    const bound = new Map<string, number>();
    let near = false;
    for (const f of splittable) {
      for (const k of merged[f].changed) {
        const svc = serviceOf(k);
        const total = (bound.get(svc) ?? 0) + info(k).share[f];
        bound.set(svc, total);
        if (total > budget) near = true;
      }
    }
    if (!near) return none;
  }

  const groups: Groups = new Map();
  const whole = new Set<string>();
  const seen = new Set<ServicePortKey>();
  for (const f of splittable) {
    for (const k of merged[f].changed) {
      if (seen.has(k)) continue;
      seen.add(k);
      const svc = serviceOf(k);
      // A carried key that has not changed has no health check node port: its Service was split.
      if ((!carried || fresh(k)) && info(k).hc) whole.add(svc);
      let g = groups.get(svc);
      if (!g) groups.set(svc, (g = { cost: 0, keys: [] }));
      const c = cost(k);
      g.cost += c;
      g.keys.push({ key: k, cost: c });
    }
  }
  const chosen = new Set<ServicePortKey>();
  for (const svc of whole) {
    for (const k of groups.get(svc)!.keys) chosen.add(k.key);
    groups.delete(svc);
  }
  const { deferredKeys, deferredServices, withheld } = choose(groups, budget, chosen, yieldToOthers);
  if (deferredKeys === 0) return none;
  const now = {} as Record<IPFamily, ChangeSet>;
  const later = {} as Record<IPFamily, Set<ServicePortKey>>;
  for (const f of FAMILIES) {
    later[f] = new Set();
    if (merged[f].nodeChanged) {
      now[f] = merged[f];
      continue;
    }
    const mine = new Set<ServicePortKey>();
    for (const k of merged[f].changed) (chosen.has(k) ? mine : later[f]).add(k);
    now[f] = { changed: mine, nodeChanged: false };
  }
  const costs = new Map<ServicePortKey, number>();
  if (reuse) for (const g of groups.values()) for (const k of g.keys) if (!chosen.has(k.key)) costs.set(k.key, k.cost);
  return { changes: now, later: { keys: later, costs }, deferredKeys, deferredServices, withheld };
}

/** The changes plus the keys carried from before (not for a family planned whole anyway). */
function withDebt(changes: Record<IPFamily, ChangeSet>, debt: Record<IPFamily, ReadonlySet<ServicePortKey>>): Record<IPFamily, ChangeSet> {
  const out = {} as Record<IPFamily, ChangeSet>;
  for (const f of FAMILIES) {
    const c = changes[f];
    if (debt[f].size === 0 || c.nodeChanged) out[f] = c;
    else out[f] = { changed: new Set([...c.changed, ...debt[f]]), nodeChanged: false };
  }
  return out;
}

function sameEntry(a: ServiceEntry | undefined, b: ServiceEntry | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && deepEqual(a, b));
}

/**
 * next's table-level fields; services: base's entries, with the chosen keys taken from next
 * (absent there: removed). A new version of base's persistent map: O(chosen × log n).
 */
function mergeTable(base: ProxyTable | undefined, next: ProxyTable, chosen: ReadonlySet<ServicePortKey>, deferred: ReadonlySet<ServicePortKey> | undefined): ProxyTable {
  const out = (base ? SortedMap.from(base.services) : SortedMap.empty<ServiceEntry>()).edit();
  for (const k of chosen) {
    const e = next.services.get(k);
    if (e === undefined) out.delete(k);
    else out.set(k, e);
  }
  const table: ProxyTable = { ...next, services: out.finish() };
  if (deferred) recordDerivation(table, next, deferred);
  return table;
}
