/**
 * Bench helper (not a test): applies encoded nf_tables batches sent by its parent over IPC and
 * answers [wall ms, CPU ms]. A process with a tiny heap, so no garbage collection lands inside the
 * timing; CPU is the sum of every thread's sum_exec_runtime (/proc/self/task/* /schedstat, in ns:
 * exact, unlike getrusage's ticks), which is the kernel's commit when nothing else runs here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { loadNative } from '../../../../src/native/index.js';

const addon = loadNative()!;

function cpuNs(): number {
  let ns = 0;
  for (const t of readdirSync('/proc/self/task')) {
    try {
      ns += Number(readFileSync(`/proc/self/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // thread gone
    }
  }
  return ns;
}

process.on('message', (m: { bytes: number[] | Uint8Array; id: number }) => {
  void (async () => {
    const bytes = Uint8Array.from(Buffer.from(m.bytes as Uint8Array));
    const c0 = cpuNs();
    const t0 = performance.now();
    const r = await addon.nfnlBatch!(bytes);
    const wall = performance.now() - t0;
    const cpu = (cpuNs() - c0) / 1e6;
    process.send!({ id: m.id, ok: r.ok, err: r.ok ? '' : JSON.stringify(r.errors.slice(0, 2)) + r.sysError, wall, cpu });
  })();
});
process.send!({ id: 0, ready: true });
