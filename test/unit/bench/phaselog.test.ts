/**
 * The daemon bench reads the phases of ferry's full syncs from its log (PhaseLog): these lines
 * are made by ferry's own logger and backends, so a change to what they log breaks this test
 * rather than silently emptying the bench's columns.
 */
import t from 'tap';
import { createEbpfBackend } from '../../../src/backends/ebpf/backend.js';
import { FakeBpfMaps } from '../../../src/backends/kernel/bpf.js';
import { PhaseLog } from '../../../src/bench/daemon.js';
import { getVerbosity, logger, setLogSink, setVerbosity } from '../../../src/util/log.js';
import { changesOf, ep, FULL, fwd, svc, table, tables } from '../backends/ir-builders.js';

t.test('an ebpf full sync: attach, dump and maps times reach the bench', async (t) => {
  const lines: string[] = [];
  const verbosity = getVerbosity();
  setVerbosity(2);
  setLogSink((l) => lines.push(l));
  t.teardown(() => {
    setLogSink((l) => process.stderr.write(`${l}\n`));
    setVerbosity(verbosity);
  });
  const t0 = Date.now() - 1000;
  const b = createEbpfBackend({ maps: new FakeBpfMaps(), families: [4], localhostNodePorts: true });
  const web = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', internal: fwd(ep('10.0.1.2', 80)) });
  await b.sync(null, tables(table(4, [web])), FULL);
  logger('sync').v(1, 'full sync done', { n: 1, durationMs: 12, planMs: 3 });
  // A partial sync logs no phases; it must not leave any behind for the next full one.
  await b.sync(null, tables(table(4, [web])), changesOf([web.key]));
  logger('sync').v(2, 'partial sync done', { n: 2, durationMs: 1, planMs: 0 });

  const phases = new PhaseLog(t0);
  for (const l of lines) phases.line(l);
  t.equal(phases.fullSyncs.length, 1, `one full sync in: ${lines.join(' | ')}`);
  const s = phases.fullSyncs[0]!;
  t.equal(s.durationMs, 12);
  t.equal(s.planMs, 3);
  for (const k of ['attachMs', 'dumpMs', 'mapsMs'] as const) t.ok(typeof s[k] === 'number' && s[k] >= 0, `${k} read (${s[k]})`);
  t.equal(s.compileMs, undefined, 'no nftables phases');
  // The partial sync's end, for the bench's change during a repair.
  t.equal(phases.partialEnds.length, 1, 'one partial sync end');
  t.ok(phases.partialEnds[0]! >= t0 && phases.partialEnds[0]! <= Date.now(), 'its epoch time, read from the line');
});
