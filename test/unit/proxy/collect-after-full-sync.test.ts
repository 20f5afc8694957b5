/**
 * The daemon's full collections after a full sync wait for the changes that arrived during it:
 * a Service created while the first full sync is in the kernel is synced before either
 * collection runs, and partial syncs owe none (src/proxy/idle-collect.ts). With the collections
 * run inside the full sync's completion, as before, the first test fails.
 */
import t from 'tap';
import { createApiCore, stopApiCore } from '../../../src/sim/apiserver/index.js';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import { simDaemon, until } from './sim-daemon.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

t.test('a change that arrives during a full sync is synced before the collections', async (t) => {
  const core = createApiCore({ serviceCIDRs: ['198.18.64.0/18'] });
  const createService = (name: string) => core.registry.create(core.services.def, 'default', { metadata: { name }, spec: { selector: { app: name }, ports: [{ port: 80 }] } });

  const timeline: string[] = [];
  const backend = new FakeBackend();
  const sync = backend.sync.bind(backend);
  backend.sync = async (prev, next, changes) => {
    await sync(prev, next, changes);
    const names = [...changes.changed].map((k) => k.split('/')[1]).join(',');
    timeline.push(changes.full ? 'full' : `partial:${names}`);
  };
  // Only full syncs cost time here: the first one stays in the "kernel" for 800 ms, and a
  // Service is created meanwhile, as a change that arrives while a large full sync applies.
  backend.fullCostMs = 800;
  let fulls = 0;
  backend.wait = async (ms) => {
    if (++fulls === 1) createService('during');
    await sleep(ms);
  };

  // Teardowns run last first: the core stops after the daemon and the server it serves through.
  t.teardown(() => stopApiCore(core));
  await simDaemon(t, { api: { core }, deps: { backend, nodeWaitMs: 200, collectGarbage: () => (timeline.push('gc'), true) } });

  await until('the first sync, the change and both collections', () => timeline.filter((e) => e === 'gc').length >= 2 && timeline.some((e) => e.startsWith('partial:')));
  const firstGc = timeline.indexOf('gc');
  const during = timeline.findIndex((e) => e.startsWith('partial:') && e.includes('during'));
  t.equal(timeline[0], 'full', 'the first sync is full');
  t.ok(during > 0, `the Service created during the full sync is synced (${timeline.join(' ')})`);
  t.ok(during < firstGc, `before any collection (${timeline.join(' ')})`);
  t.equal(timeline.filter((e) => e === 'gc').length, 2, 'two collections for the one full sync');

  // A partial sync owes nothing.
  const n = timeline.length;
  createService('later');
  await until('the later change', () => timeline.slice(n).some((e) => e.includes('later')));
  await sleep(300);
  t.same(
    timeline.slice(n).filter((e) => e === 'gc'),
    [],
    'no collection after a partial sync',
  );
});
