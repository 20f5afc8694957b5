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
