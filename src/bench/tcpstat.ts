/**
 * What the load generator reports about one open-loop run, and the parser for the kernel's TCP
 * counters (/proc/net/snmp and /proc/net/netstat, per network namespace). Pure.
 */

/**
 * Kernel TCP counters of this process's network namespace (/proc/net is per namespace): the
 * evidence for stalls that a connection count cannot show (a SYN retransmit costs 1 s).
 */
export const COUNTERS: Record<string, readonly string[]> = {
  Tcp: ['ActiveOpens', 'AttemptFails', 'EstabResets', 'RetransSegs', 'OutRsts'],
  TcpExt: ['TCPSynRetrans', 'TCPTimeouts', 'ListenOverflows', 'ListenDrops', 'TW', 'TWRecycled', 'PAWSActive', 'TCPChallengeACK'],
};

export function readTcpCounters(texts: readonly string[]): Record<string, number> {
  return readNetCounters(texts, COUNTERS);
}

/** The counters `want` names (table → counter names) out of /proc/net/snmp or netstat text. */
export function readNetCounters(texts: readonly string[], want: Record<string, readonly string[]>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const text of texts) {
    const lines = text.split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const head = lines[i]!.split(/\s+/);
      const vals = lines[i + 1]!.split(/\s+/);
      const names = want[head[0]?.replace(/:$/, '') ?? ''];
      if (!names) continue;
      for (let k = 1; k < head.length; k++) if (names.includes(head[k]!)) out[head[k]!] = Number(vals[k]);
    }
  }
  return out;
}

/** What `rate` answers, one JSON line. Times in ms. */
export interface RateResult {
  readonly offered: number;
  readonly seconds: number;
  readonly launched: number;
  readonly ok: number;
  readonly timeouts: number;
  /** Failures other than timeouts, by errno-like code (ECONNREFUSED, ECONNRESET, closed, …). */
  readonly errors: Record<string, number>;
  /** ok connections per second over the offered window (SECONDS). */
  readonly okPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Connections that took ≥ 900 ms: what a lost SYN (retransmitted after 1 s) looks like. */
  readonly stalls: number;
  /** How far the generator fell behind its schedule at the end: > 0 means it could not offer the load. */
  readonly lagMs: number;
  /** CPU this agent spent (user + system), ms. */
  readonly genCpuMs: number;
  /** Deltas of the namespace's TCP counters over the run. */
  readonly tcp: Record<string, number>;
}


/**
 * Sums the per-CPU rows of /proc/net/stat/nf_conntrack (hex) into the counters that say a
 * connection was dropped by conntrack itself: insert_failed (a clash on insert), drop, and
 * clash_resolve (a clash it could resolve).
 */
export function readConntrackStat(text: string): Record<string, number> {
  const lines = text.trim().split('\n');
  const head = (lines[0] ?? '').trim().split(/\s+/);
  const out: Record<string, number> = { insert_failed: 0, drop: 0, clashres: 0 };
  for (const line of lines.slice(1)) {
    const vals = line.trim().split(/\s+/);
    for (const k of Object.keys(out)) {
      const i = head.indexOf(k);
      if (i >= 0 && vals[i] !== undefined) out[k]! += parseInt(vals[i]!, 16);
    }
  }
  return out;
}
