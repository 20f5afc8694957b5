/** Small statistics helpers for the benchmark. Pure. */
import type { Percentiles } from './types.js';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1]!;
}

export function percentiles(xs: readonly number[]): Percentiles {
  return { n: xs.length, p50: round(percentile(xs, 50)), p90: round(percentile(xs, 90)), p99: round(percentile(xs, 99)) };
}

/** Three significant-ish digits: enough for a summary, small JSON. */
/** A ratio to 3 significant digits: 5 lines vs 11,065 is 0.000452, not 0. */
export function ratio3(x: number): number {
  return Number.isFinite(x) && x !== 0 ? Number(x.toPrecision(3)) : 0;
}

export function round(x: number): number {
  if (!Number.isFinite(x)) return 0;
  const a = Math.abs(x);
  const d = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

/** Percentiles of a Prometheus histogram (cumulative buckets, `le` in seconds) in ms, by linear interpolation. */
export function histogramPercentiles(buckets: readonly { le: number; count: number }[], ps: readonly number[]): number[] {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.length ? sorted[sorted.length - 1]!.count : 0;
  return ps.map((p) => {
    if (total === 0) return 0;
    const want = (p / 100) * total;
    let prevLe = 0;
    let prevCount = 0;
    for (const b of sorted) {
      if (b.count >= want) {
        if (!Number.isFinite(b.le)) return prevLe * 1000;
        const span = b.count - prevCount;
        const frac = span > 0 ? (want - prevCount) / span : 1;
        return (prevLe + (b.le - prevLe) * frac) * 1000;
      }
      prevLe = b.le;
      prevCount = b.count;
    }
    return prevLe * 1000;
  });
}

/** Median and spread of one measurement over interleaved rounds. */
export interface Spread {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** Interquartile range (nearest rank). */
  readonly q1: number;
  readonly q3: number;
}

export function summarize(xs: readonly number[]): Spread {
  if (xs.length === 0) return { n: 0, median: 0, min: 0, max: 0, q1: 0, q3: 0 };
  return {
    n: xs.length,
    median: round(median(xs)),
    min: round(Math.min(...xs)),
    max: round(Math.max(...xs)),
    q1: round(percentile(xs, 25)),
    q3: round(percentile(xs, 75)),
  };
}

/**
 * a / b with the spread of the ratio: from a's lowest over b's highest to a's highest over b's
 * lowest. A ratio whose spread reaches across 1.0 is "no difference": the rounds do not say
 * which is larger.
 */
export interface Comparison {
  readonly ratio: number;
  readonly low: number;
  readonly high: number;
  readonly differs: boolean;
}

export function compare(a: Spread, b: Spread): Comparison | null {
  if (a.n === 0 || b.n === 0 || b.median <= 0 || b.min <= 0) return null;
  const low = a.min / b.max;
  const high = a.max / b.min;
  return { ratio: ratio3(a.median / b.median), low: ratio3(low), high: ratio3(high), differs: !(low <= 1 && high >= 1) };
}

/** How a comparison reads in a table: "1.8 (1.5–2.1)" or "no difference (0.9–1.2)". */
export function verdict(c: Comparison): string {
  return c.differs ? `${c.ratio} (${c.low}–${c.high})` : `no difference (${c.low}–${c.high})`;
}
