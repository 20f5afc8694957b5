/**
 * How the benchmarks start ferry as an operator does: `bin/ferry`'s shebang carries the node
 * flags ferry is meant to run with (the image's ENTRYPOINT passes the same), so a harness that
 * runs `node bin/ferry` itself must pass them too or it measures another configuration.
 */
import { readFileSync } from 'node:fs';

/** The node flags of a launcher's `#!/usr/bin/env -S node FLAGS` line. */
export function shebangFlags(bin: string): string[] {
  const first = readFileSync(bin, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!.*\bnode\b(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : [];
}
