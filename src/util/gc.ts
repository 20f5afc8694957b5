/**
 * A full collection on request. A full sync at 10,000 Services leaves ~100 MB of garbage (the
 * transaction, its encoding, the superseded plan) that V8 would otherwise keep committed until
 * its heap grows further or the process idles long enough — resident on every node in between.
 * Collecting soon after the few big moments (the first sync, full resyncs) keeps the daemon's
 * resident size at what it actually holds. Partial syncs never call this.
 *
 * `gc` is not exposed by default; the flag is set at run time and the function fetched from a
 * fresh context, which is V8's documented way to reach it without a command-line flag.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gcFn: (() => void) | null | undefined;

function resolveGc(): (() => void) | null {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  try {
    setFlagsFromString('--expose-gc');
    const f: unknown = runInNewContext('gc');
    return typeof f === 'function' ? (f as () => void) : null;
  } catch {
    return null;
  }
}

/** Runs one full garbage collection; returns false when the runtime offers none. */
export function fullCollection(): boolean {
  if (gcFn === undefined) gcFn = resolveGc();
  if (!gcFn) return false;
  gcFn();
  return true;
}

/**
 * Two full collections in a row; false when the runtime offers none. The first frees the
 * garbage's pages into V8's pool, the second hands the pooled pages back to the kernel
 * (measured: RSS falls only after the second). The daemon spreads the two over idle moments
 * instead (src/proxy/idle-collect.ts).
 */
export function collectGarbage(): boolean {
  return fullCollection() && fullCollection();
}
