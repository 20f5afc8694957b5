/**
 * Follows the tables of successive syncs and keeps the few entries a consumer cares about (the
 * health-check Services, the Local-policy Services without a local endpoint), updated from each
 * sync's changed keys: a partial sync costs what changed, not a walk over every service port.
 *
 * Stage: plan (a pure index over the IR). Each update's `changes` must be relative to the tables
 * of the previous update — what the syncer reports for consecutive successful syncs; a full
 * sync, or a first update, rebuilds from the tables.
 */
import type { IPFamily, ProxyTables, ServiceEntry, ServicePortKey, SyncChanges } from './types.js';

const FAMILIES: readonly IPFamily[] = [4, 6];

export class EntryFollower {
  private readonly kept: Record<IPFamily, Map<ServicePortKey, ServiceEntry>> = { 4: new Map(), 6: new Map() };
  private last: ProxyTables | undefined;

  constructor(private readonly keep: (e: ServiceEntry) => boolean) {}

  update(tables: ProxyTables, changes?: SyncChanges): void {
    if (changes === undefined || changes.full || this.last === undefined) {
      for (const f of FAMILIES) {
        const m = this.kept[f];
        m.clear();
        for (const [k, e] of tables[f].services) if (this.keep(e)) m.set(k, e);
      }
    } else if (tables !== this.last) {
      for (const k of changes.changed) {
        for (const f of FAMILIES) {
          const e = tables[f].services.get(k);
          if (e !== undefined && this.keep(e)) this.kept[f].set(k, e);
          else this.kept[f].delete(k);
        }
      }
    }
    this.last = tables;
  }

  /** The kept entries of one family, in key order. */
  entries(family: IPFamily): ServiceEntry[] {
    const m = this.kept[family];
    return [...m.keys()].sort().map((k) => m.get(k)!);
  }

  count(family: IPFamily, pred: (e: ServiceEntry) => boolean): number {
    let n = 0;
    for (const e of this.kept[family].values()) if (pred(e)) n++;
    return n;
  }
}
