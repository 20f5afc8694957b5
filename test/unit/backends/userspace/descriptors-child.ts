/**
 * Run by backend.test.ts under `prlimit --nofile=N`: syncs more frontends than the process has
 * descriptors for, then fewer, and prints what the backend reported (JSON on the last line).
 * Not a test file itself (no tap); the in-memory holder stands in for ferry0, as in backend.test.ts.
 */
import { createUserspaceBackend, type AddressHolder } from '../../../../src/backends/userspace/index.js';
import { setLogSink } from '../../../../src/util/log.js';
import { FULL, ep, fwd, partial, svc, tables } from './fixtures.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const [net, base, count] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4])];
const held = new Set<string>();
const holder: AddressHolder = {
  name: 'fake0',
  ensure: async () => 'existing',
  exists: async () => true,
  addresses: async () => new Set(held),
  apply: async (add, remove) => {
    for (const a of add) held.add(a);
    for (const a of remove) held.delete(a);
  },
  remove: async () => held.clear(),
  localAddresses: async () => ({ 4: ['127.0.0.1'], 6: [] }),
};
const b = createUserspaceBackend({ families: [4] }, { holder, connectTimeoutsMs: [500] });
const services = (n: number) =>
  tables(
    Array.from({ length: n }, (_, i) => svc({ name: `s${i}`, clusterIP: `${net}.10`, port: base + i, internal: fwd(ep(`${net}.21`, 9)) })),
    [],
    { nodePortAddresses: { kind: 'list', addresses: [] } },
  );
const count0 = (what: string) => lines.filter((l) => l.includes(what)).length;
const out: Record<string, number> = {};
await b.sync(null, services(count), FULL);
out.failedFirst = b.stats().failedFrontends.length;
out.summaryFirst = count0('out of file descriptors');
out.limitNamed = lines.filter((l) => l.includes('out of file descriptors') && l.includes('128/128')).length;
out.perFrontend = count0('cannot open frontend');
await b.sync(services(count), services(count), partial());
out.summaryAgain = count0('out of file descriptors');
await b.sync(services(count), services(10), FULL);
out.failedAfter = b.stats().failedFrontends.length;
out.openAgain = count0('frontends open again');
await b.cleanup();
console.log(JSON.stringify(out));
