/**
 * Endpoint slots: where a service's endpoints live in the shared `endpoints` map.
 *
 * A service port that load-balances over several endpoints used to carry its own anonymous map
 * (`dnat to numgen random mod N map { 0 : a, 1 : b }`). The kernel names every anonymous set by
 * scanning the table's sets for a free `__mapN`, so a full sync of 10k such services spent a
 * minute in the kernel (quadratic). Instead each dispatch owns a block of SLOT_STRIDE keys in
 * one named map and picks an endpoint with `numgen random mod N offset BASE map @endpoints`.
 *
 * Blocks are allocated per (service port, role) and stay put across partial syncs, so changing
 * one endpoint rewrites only that service's elements and rule. A block released in a sync is
 * reused only from the next sync on: within one transaction a key is never deleted for one
 * service and added for another. The table travels with the claim index (claims.ts); a full
 * compile starts a fresh one, allocating in table order, which is what the kernel then holds.
 * Pure data structure; no I/O.
 */
import type { ServicePortKey } from '../../plan/types.js';

/** Endpoints one block can hold; a larger set falls back to an anonymous map (rare, correct). */
export const SLOT_STRIDE = 4096;
/** numgen's result (offset + index) is 32 bits: block ids 1 .. 2^20 - 1 (0 is never used). */
export const MAX_SLOT_ID = 2 ** 32 / SLOT_STRIDE - 1;

/** Which of a service's endpoint sets a block serves (see ServiceEntry in plan/types.ts). */
export type SlotRole = 'internal' | 'external' | 'cluster';

export class SlotTable {
  private readonly byOwner = new Map<ServicePortKey, Map<SlotRole, number>>();
  private readonly free: number[] = [];
  private released: number[] = [];
  private nextId = 1;

  /** The first key of the block of `owner`'s `role`, allocated on first use; undefined when none is left. */
  base(owner: ServicePortKey, role: SlotRole): number | undefined {
    let roles = this.byOwner.get(owner);
    const have = roles?.get(role);
    if (have !== undefined) return have * SLOT_STRIDE;
    let id = this.free.pop();
    if (id === undefined) {
      if (this.nextId > MAX_SLOT_ID) return undefined;
      id = this.nextId++;
    }
    if (!roles) {
      roles = new Map();
      this.byOwner.set(owner, roles);
    }
    roles.set(role, id);
    return id * SLOT_STRIDE;
  }

  /** Releases `owner`'s blocks for roles not in `keep` (all of them for a removed service). */
  retain(owner: ServicePortKey, keep: ReadonlySet<SlotRole>): void {
    const roles = this.byOwner.get(owner);
    if (!roles) return;
    for (const [role, id] of roles) {
      if (keep.has(role)) continue;
      roles.delete(role);
      this.released.push(id);
    }
    if (roles.size === 0) this.byOwner.delete(owner);
  }

  /** Starts a sync: blocks released by earlier syncs become reusable. */
  settle(): void {
    if (this.released.length === 0) return;
    this.free.push(...this.released);
    this.released = [];
  }

  /** Blocks in use (for tests and debugging). */
  get size(): number {
    let n = 0;
    for (const roles of this.byOwner.values()) n += roles.size;
    return n;
  }
}
