/**
 * Structural diff of two ProxyTables pairs: what a sync must rewrite. Entries that are the same
 * object (the planner reuses unchanged ones) cost one comparison; others are compared field by
 * field. When next was planned incrementally from prev itself (the usual partial sync), or both
 * were made from one table (a Service applied in pieces: what went to the kernel, and the next
 * plan), only the keys recorded as touched are compared, so the diff costs what changed, not the
 * table.
 * Pure (the derivation record is a cache: without it the answer is the same, only slower).
 */
import { deepEqual } from '../model/equal.js';
import type { IPFamily, ServicePortKey } from '../model/types.js';
import type { ProxyTable, ProxyTables, SyncChanges } from './types.js';

const FAMILIES: readonly IPFamily[] = [4, 6];

interface Derivation {
  readonly base: ProxyTable;
  /** Every key whose entry may differ from base's (added, removed or re-planned). */
  readonly touched: ReadonlySet<ServicePortKey>;
}

const derivations = new WeakMap<ProxyTable, Derivation>();

/**
 * Notes that `table` equals `base` except perhaps at `touched`. One level only: base's own
 * record is dropped, so a table never keeps a chain of older versions alive.
 */
export function recordDerivation(table: ProxyTable, base: ProxyTable, touched: ReadonlySet<ServicePortKey>): void {
  derivations.delete(base);
  derivations.set(table, { base, touched });
}

function headerChanged(a: ProxyTable, b: ProxyTable): boolean {
  return (
    a.family !== b.family ||
    a.nodeName !== b.nodeName ||
    a.masqueradeAll !== b.masqueradeAll ||
    !deepEqual(a.nodeIPs, b.nodeIPs) ||
    !deepEqual(a.nodePortAddresses, b.nodePortAddresses) ||
    !deepEqual(a.localTraffic, b.localTraffic) ||
    !deepEqual(a.serviceCIDRs ?? [], b.serviceCIDRs ?? [])
  );
}

/**
 * Every key at which a and b may differ, when their records tell: b derived from a, a from b, or
 * both from one table (what was applied in pieces and the next plan, both made from the last
 * plan). Undefined: unknown, walk everything.
 */
function touchedBetween(a: ProxyTable, b: ProxyTable): Iterable<ServicePortKey> | undefined {
  const db = derivations.get(b);
  if (db?.base === a) return db.touched;
  const da = derivations.get(a);
  if (da?.base === b) return da.touched;
  if (da !== undefined && db !== undefined && da.base === db.base) return new Set([...da.touched, ...db.touched]);
  return undefined;
}

/**
 * `changed` holds every key whose entry was added, removed or differs in either family (keys
 * do not carry the family, so one set serves both). full=true when there is no prev.
 */
export function diffTables(prev: ProxyTables | null, next: ProxyTables): SyncChanges {
  const changed = new Set<ServicePortKey>();
  if (prev === null) {
    for (const f of FAMILIES) for (const k of next[f].services.keys()) changed.add(k);
    return { full: true, changed, tableChanged: true };
  }
  let tableChanged = false;
  for (const f of FAMILIES) {
    const a = prev[f];
    const b = next[f];
    if (a === b) continue;
    if (headerChanged(a, b)) tableChanged = true;
    if (a.services === b.services) continue;
    const candidates = touchedBetween(a, b);
    if (candidates !== undefined) {
      for (const k of candidates) {
        const old = a.services.get(k);
        const e = b.services.get(k);
        if (old !== e && (old === undefined || e === undefined || !deepEqual(old, e))) changed.add(k);
      }
      continue;
    }
    for (const [k, e] of b.services) {
      const old = a.services.get(k);
      if (old !== e && (old === undefined || !deepEqual(old, e))) changed.add(k);
    }
    for (const k of a.services.keys()) if (!b.services.has(k)) changed.add(k);
  }
  return { full: false, changed, tableChanged };
}
