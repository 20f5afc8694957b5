/**
 * The daemon asks its backend to prepare (ebpf: load and attach the programs) as soon as it
 * starts its watches — before the initial lists are in and the first sync runs — and only once.
 */
import t from 'tap';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import type { ProxyTables, SyncChanges } from '../../../src/plan/types.js';
import { simDaemon, until } from './sim-daemon.js';

class PreparingBackend extends FakeBackend {
  readonly events: string[] = [];
  prepare(): void {
    this.events.push('prepare');
  }
  override async sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
    this.events.push(changes.full ? 'full sync' : 'partial sync');
    await super.sync(prev, next, changes);
  }
}

t.test('prepare() comes once, before the first sync', async (t) => {
  const backend = new PreparingBackend();
  await simDaemon(t, { deps: { backend, nodeWaitMs: 200 } });
  t.same(backend.events, ['prepare'], 'asked at start, before any list is in');
  await until('the first sync', () => backend.events.includes('full sync'));
  t.same(backend.events.slice(0, 2), ['prepare', 'full sync'], 'then the first (full) sync');
  t.equal(backend.events.filter((e) => e === 'prepare').length, 1, 'once');
});
