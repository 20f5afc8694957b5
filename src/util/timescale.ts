/**
 * How much slower than real hardware this machine runs, from FERRY_TIME_SCALE (default 1).
 * Fixed waits that guard against hangs (the simulator's pod start, tests' polling deadlines)
 * multiply by it, so an emulated VM (qemu TCG, 10-50x slower) runs the same code without
 * failing on speed alone. Never used to make anything faster: values below 1 count as 1.
 */
export function timeScale(): number {
  const raw = process.env['FERRY_TIME_SCALE'];
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  return Number.isFinite(n) && n > 1 ? n : 1;
}

/** `ms` stretched by timeScale(). */
export function scaledMs(ms: number): number {
  return Math.round(ms * timeScale());
}
