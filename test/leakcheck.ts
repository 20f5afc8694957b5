/**
 * Run by scripts/test after every suite: fails if any simulator run left a network namespace or
 * a host interface, a cgroup or a bpffs pin directory behind (every name the simulator creates starts with "fy"), or if
 * ferry's tc program sits on any of the host's own interfaces. Plain TAP, no tap
 * import, so it runs even when the test framework is what broke.
 */
import { listLeftovers } from '../src/sim/cluster/cleanup.js';

async function main(): Promise<void> {
  process.stdout.write('TAP version 14\n1..1\n');
  let leaked: string[];
  try {
    leaked = await listLeftovers('fy');
  } catch (e) {
    process.stdout.write(`not ok 1 - could not list namespaces and interfaces: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
    return;
  }
  if (leaked.length === 0) {
    process.stdout.write('ok 1 - no leaked network namespaces, interfaces, cgroups, bpffs pins or host tc programs\n');
    return;
  }
  process.stdout.write(`not ok 1 - leaked: ${leaked.join(' ')}\n`);
  process.stdout.write('# remove them with: ferry sim cluster down\n');
  process.exitCode = 1;
}

void main();
