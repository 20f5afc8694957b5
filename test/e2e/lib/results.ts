/**
 * Reading probe results: who answered, what source they saw, what failed. Assertion messages in
 * the suite are built from summarize() so a failure says what happened instead.
 * Pure: no I/O.
 */
import type { ProbeResult } from '../../../src/sim/cluster/index.js';

/** "web-1×20 (saw 198.19.1.2), web-2×18 (saw 198.19.1.2), timeout×2" */
export function summarize(rs: readonly ProbeResult[]): string {
  if (rs.length === 0) return 'no results';
  const groups = new Map<string, { n: number; seen: Set<string> }>();
  for (const r of rs) {
    const key = r.ok ? (r.pod ?? '?') : (r.error ?? 'error');
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { n: 0, seen: new Set() }));
    g.n++;
    if (r.ok && r.seenIP) g.seen.add(r.seenIP);
  }
  const parts: string[] = [];
  for (const [k, g] of groups) parts.push(g.seen.size > 0 ? `${k}×${g.n} (saw ${[...g.seen].join(' ')})` : `${k}×${g.n}`);
  return parts.join(', ');
}

export function failures(rs: readonly ProbeResult[]): ProbeResult[] {
  return rs.filter((r) => !r.ok);
}

export function podsSeen(rs: readonly ProbeResult[]): string[] {
  const s = new Set<string>();
  for (const r of rs) if (r.ok && r.pod) s.add(r.pod);
  return [...s].sort();
}

export function sourcesSeen(rs: readonly ProbeResult[]): string[] {
  const s = new Set<string>();
  for (const r of rs) if (r.ok && r.seenIP) s.add(r.seenIP);
  return [...s].sort();
}

export function errorsSeen(rs: readonly ProbeResult[]): string[] {
  const s = new Set<string>();
  for (const r of rs) if (!r.ok) s.add(r.error ?? 'error');
  return [...s].sort();
}
