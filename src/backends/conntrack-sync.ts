/**
 * A NAT backend's conntrack cleanup once a sync's rules are in (nftables and iptables alike): on
 * the first sync after a start, what the kernel holds is listed first (one read per family and
 * connectionless protocol in use); then the stale-flow filters (conntrack-cleanup.ts) go to the
 * kernel in one call. Failures are logged, never thrown: a cleanup never undoes a sync.
 */
import type { IPFamily, ProxyTables, ServicePortKey } from '../plan/types.js';
import { conntrackListings, staleConntrack } from './conntrack-cleanup.js';
import { deleteStale, listEntries, type Conntrack } from './kernel/conntrack.js';

/**
 * Clears the flows the sync from `prev` (the tables the kernel held; null on the first sync after
 * a start) to `next` made stale, in `families`; `changed` as staleConntrack. Resolves with how
 * many filters were sent.
 */
export async function cleanConntrack(
  conntrack: Pick<Conntrack, 'delete' | 'list'>,
  prev: ProxyTables | null,
  next: ProxyTables,
  changed: ReadonlySet<ServicePortKey> | undefined,
  families: readonly IPFamily[],
): Promise<number> {
  const listed = prev === null ? await listEntries(conntrack, conntrackListings(next, families)) : undefined;
  const filters = staleConntrack(prev, next, changed, listed).filter((f) => families.includes(f.family));
  await deleteStale(conntrack, filters);
  return filters.length;
}
