/**
 * Where the loadgen agent finds its prober (native/tools/connprobe.c, built by scripts/setup).
 * A module of its own: loadgen.ts runs its command line when imported.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CONNPROBE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'native', 'tools', 'out', 'connprobe');

/** For the report: who probed a latency run. */
export function proberNote(): string {
  return existsSync(CONNPROBE)
    ? 'latency probes: native/tools/out/connprobe (no JavaScript per connection attempt)'
    : 'latency probes: the loadgen agent in JavaScript (native/tools/out/connprobe not built: make -C native/tools); a burst\'s probing then costs about half a core more';
}
