/**
 * Run by backend.test.ts under `prlimit --nofile=N`: a userspace backend with one UDP and one TCP
 * frontend (argv: /24 prefix, UDP port, its endpoint's port, TCP port, its endpoint's port), the
 * clients and endpoints living in the parent, whose descriptors do not count here. Commands on
 * stdin, one per line, each answered by one JSON line on stdout:
 *   stats     → the backend's stats, and how many times each descriptor line was logged
 *   fill N    → opens /dev/null until EMFILE, then closes N of them (N descriptors left free)
 *   unfill    → closes them all
 *   exit
 * Not a test file itself (no tap); the in-memory holder stands in for ferry0, as in backend.test.ts.
 */
import { closeSync, openSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createUserspaceBackend, type AddressHolder } from '../../../../src/backends/userspace/index.js';
import { setLogSink } from '../../../../src/util/log.js';
import { FULL, ep, fwd, svc, tables } from './fixtures.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const [net, udpPort, udpEp, tcpPort, tcpEp] = [process.argv[2]!, ...process.argv.slice(3, 7).map(Number)] as [string, number, number, number, number];
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
const b = createUserspaceBackend({ families: [4] }, { holder, connectTimeoutsMs: [2000] });
await b.sync(
  null,
  tables(
    [
      svc({ name: 'dns', protocol: 'UDP', clusterIP: `${net}.10`, port: udpPort, internal: fwd(ep(`${net}.21`, udpEp)) }),
      svc({ name: 'web', clusterIP: `${net}.10`, port: tcpPort, internal: fwd(ep(`${net}.21`, tcpEp)) }),
    ],
    [],
    { nodePortAddresses: { kind: 'list', addresses: [] } },
  ),
  FULL,
);
const count = (what: string): number => lines.filter((l) => l.includes(what)).length;
const filler: number[] = [];
const reply = (v: unknown): void => void process.stdout.write(JSON.stringify(v) + '\n');
reply({ ready: b.frontends() });

for await (const cmd of createInterface({ input: process.stdin })) {
  const [verb, arg] = cmd.split(' ');
  if (verb === 'stats') {
    reply({
      ...b.stats(),
      budgetLines: count('UDP sessions at the descriptor budget'),
      budgetEndLines: count('below the descriptor budget again'),
      dataPathLines: count('out of file descriptors on the data path'),
      log: lines.filter((l) => l.startsWith('E') || l.startsWith('W')),
    });
  } else if (verb === 'fill') {
    try {
      for (;;) filler.push(openSync('/dev/null', 'r'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EMFILE') throw e;
    }
    for (let i = 0; i < Number(arg); i++) closeSync(filler.pop()!);
    reply({ filled: filler.length });
  } else if (verb === 'unfill') {
    for (const fd of filler.splice(0)) closeSync(fd);
    reply({ unfilled: true });
  } else {
    break;
  }
}
await b.cleanup();
process.exit(0);
