/**
 * The difference between what userspace mode holds now (addresses on ferry0, open sockets) and
 * what the IR wants: what to add, what to remove, what to re-point. Unchanged sockets are not in
 * the plan at all, so their connections are never disturbed.
 *
 * Pure: no I/O. The order of execution (add addresses → open → close → remove addresses) is the
 * backend's; a socket can only bind an address that is already local.
 */
import type { DesiredFrontends, Frontend } from './frontends.js';

export interface HeldFrontends {
  /** Addresses on ferry0 (only ferry0 is ever touched). */
  readonly addresses: ReadonlySet<string>;
  /** Sockets open now. */
  readonly frontends: ReadonlyMap<string, Frontend>;
}

export interface ReconcilePlan {
  readonly addAddresses: readonly string[];
  readonly removeAddresses: readonly string[];
  /** Sockets to open (bind + listen). */
  readonly open: readonly Frontend[];
  /** Keys of sockets to close (their connections and sessions end). */
  readonly close: readonly string[];
  /** Open sockets that now serve another service port or role: re-pointed in place, not reopened. */
  readonly retarget: readonly Frontend[];
}

export function planReconcile(held: HeldFrontends, want: DesiredFrontends): ReconcilePlan {
  const addAddresses: string[] = [];
  const removeAddresses: string[] = [];
  const open: Frontend[] = [];
  const close: string[] = [];
  const retarget: Frontend[] = [];
  for (const a of want.addresses) if (!held.addresses.has(a)) addAddresses.push(a);
  for (const a of held.addresses) if (!want.addresses.has(a)) removeAddresses.push(a);
  for (const [key, f] of want.frontends) {
    const cur = held.frontends.get(key);
    if (!cur) open.push(f);
    else if (cur.service !== f.service || cur.role !== f.role) retarget.push(f);
  }
  for (const key of held.frontends.keys()) if (!want.frontends.has(key)) close.push(key);
  addAddresses.sort();
  removeAddresses.sort();
  close.sort();
  return { addAddresses, removeAddresses, open, close, retarget };
}

export function isEmptyPlan(p: ReconcilePlan): boolean {
  return (
    p.addAddresses.length === 0 &&
    p.removeAddresses.length === 0 &&
    p.open.length === 0 &&
    p.close.length === 0 &&
    p.retarget.length === 0
  );
}
