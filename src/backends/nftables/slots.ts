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

/** An owner's block ids by role; 0 where it has none (ids start at 1). */
interface RoleIds {
  internal: number;
  external: number;
  cluster: number;
}

const ROLES: readonly SlotRole[] = ['internal', 'external', 'cluster'];

export class SlotTable {
  // A fixed-shape record per owner, not a Map: a full compile at 44k Services allocates
  // thousands of these, and a Map each cost most of the allocation's time.
  private readonly byOwner = new Map<ServicePortKey, RoleIds>();
  private readonly free: number[] = [];
  private released: number[] = [];
  private nextId = 1;

  /** The first key of the block of `owner`'s `role`, allocated on first use; undefined when none is left. */
  base(owner: ServicePortKey, role: SlotRole): number | undefined {
    let roles = this.byOwner.get(owner);
    const have = roles?.[role] ?? 0;
    if (have !== 0) return have * SLOT_STRIDE;
    let id = this.free.pop();
    if (id === undefined) {
      if (this.nextId > MAX_SLOT_ID) return undefined;
      id = this.nextId++;
    }
    if (!roles) {
      roles = { internal: 0, external: 0, cluster: 0 };
      this.byOwner.set(owner, roles);
    }
    roles[role] = id;
    return id * SLOT_STRIDE;
  }

  /** Releases `owner`'s blocks for roles not in `keep` (all of them for a removed service). */
  retain(owner: ServicePortKey, keep: ReadonlySet<SlotRole>): void {
    const roles = this.byOwner.get(owner);
    if (!roles) return;
    let left = 0;
    for (const role of ROLES) {
      const id = roles[role];
      if (id === 0) continue;
      if (keep.has(role)) {
        left++;
        continue;
      }
      roles[role] = 0;
      this.released.push(id);
    }
    if (left === 0) this.byOwner.delete(owner);
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
    for (const roles of this.byOwner.values()) for (const role of ROLES) if (roles[role] !== 0) n++;
    return n;
  }
}
