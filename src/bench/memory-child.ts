/**
 * Runs as its own process (`node --expose-gc memory-child.js SERVICES ENDPOINTS`): builds one
 * synthetic cluster (tracker + IR) and prints how much RSS and heap it added, after GC, as one
 * JSON line. A fresh process per size so sizes do not pollute each other.
 */
import { buildCluster } from './synthetic.js';

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

const services = Number(process.argv[2]);
const endpoints = Number(process.argv[3]);
gc();
const before = process.memoryUsage();
const c = buildCluster(services, endpoints);
gc();
const after = process.memoryUsage();
process.stdout.write(
  JSON.stringify({
    services,
    endpoints,
    held: c.tables[4].services.size,
    rssMB: (after.rss - before.rss) / 1048576,
    heapMB: (after.heapUsed - before.heapUsed) / 1048576,
    totalRssMB: after.rss / 1048576,
  }) + '\n',
);
