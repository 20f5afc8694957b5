/**
 * A NAT backend's conntrack cleanup once a sync's rules are in (nftables and iptables alike): on
 * the first sync after a start, and on the sync after a cleanup that failed, what the kernel holds
 * is listed first (one read per family and connectionless protocol in use) and every entry to a
 * frontend whose reply source is no serving endpoint is deleted (kube-proxy's CleanStaleEntries);
 * otherwise the stale-flow filters of what changed (conntrack-cleanup.ts). Either way the filters
 * go to the kernel in one call. Failures are logged, never thrown: a cleanup never undoes a sync.
 */
import type { IPFamily, ProxyTables, ServicePortKey } from '../plan/types.js';
import { conntrackListings, staleConntrack } from './conntrack-cleanup.js';
import { CONNTRACK_WORDS, deleteStale, listEntries, type Conntrack, type StaleFlowWords } from './kernel/conntrack.js';

/**
 * What a backend keeps between cleanups. `reconcile`: the last cleanup did not finish (its
 * deletions or the listing it needed failed), so its filters are lost — the next sync's own
 * filters only cover what that sync changed, and a UDP client that keeps sending would stay with
 * a removed endpoint for good. The next cleanup lists the table instead, as after a start.
 */
export interface ConntrackCleanupState {
  reconcile: boolean;
}

/**
 * Clears the flows the sync from `prev` (the tables the kernel held; null on the first sync after
 * a start) to `next` made stale, in `families`; `changed` as staleConntrack. Resolves with how
 * many filters were sent. `conntrack` may be anything that lists and deletes flows by those
 * filters (ebpf mode: connected UDP sockets, `words` then says so in the log).
 */
export async function cleanConntrack(
  conntrack: Pick<Conntrack, 'delete' | 'list'>,
  prev: ProxyTables | null,
  next: ProxyTables,
  changed: ReadonlySet<ServicePortKey> | undefined,
  families: readonly IPFamily[],
  state: ConntrackCleanupState = { reconcile: false },
  words: StaleFlowWords = CONNTRACK_WORDS,
): Promise<number> {
  const fromListing = prev === null || state.reconcile;
  // A retry after a failure says so quietly: the failure itself was logged as a warning.
  const quiet = state.reconcile;
  const listed = fromListing ? await listEntries(conntrack, conntrackListings(next, families), quiet, words) : undefined;
  const filters = (listed !== undefined ? staleConntrack(null, next, undefined, listed) : staleConntrack(prev, next, changed)).filter((f) => families.includes(f.family));
  const deleted = await deleteStale(conntrack, filters, quiet, words);
  state.reconcile = !deleted || (fromListing && listed === undefined);
  return filters.length;
}
