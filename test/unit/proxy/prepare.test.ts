/**
 * The daemon asks its backend to prepare (ebpf: load and attach the programs) as soon as it
 * starts its watches — before the initial lists are in and the first sync runs — and only once.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer } from '../../../src/sim/apiserver/index.js';
import { startProxy } from '../../../src/proxy/daemon.js';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import { loadKubeConfig } from '../../../src/kube/client.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import type { ProxyTables, SyncChanges } from '../../../src/plan/types.js';

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
  const api = await startApiServer({ serviceCIDRs: ['198.18.64.0/18'] });
  const dir = mkdtempSync(join(tmpdir(), 'ferry-unit-prepare-'));
  const kubeconfig = join(dir, 'kubeconfig');
  api.writeKubeconfig(kubeconfig);
  const backend = new PreparingBackend();
  const config = resolveConfig({
    flags: new Map<string, string | boolean>([
      ['kubeconfig', kubeconfig],
      ['hostname-override', 'node-a'],
      ['healthz-bind-address', ''],
      ['metrics-bind-address', ''],
    ]),
    hostname: 'unused',
  });
  const daemon = await startProxy(config, { kubeConfig: loadKubeConfig({ kubeconfig }), backend, nodeWaitMs: 200 });
  t.teardown(async () => {
    await daemon.stop();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  t.same(backend.events, ['prepare'], 'asked at start, before any list is in');
  const end = Date.now() + 10_000;
  while (!backend.events.includes('full sync') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  t.same(backend.events.slice(0, 2), ['prepare', 'full sync'], 'then the first (full) sync');
  t.equal(backend.events.filter((e) => e === 'prepare').length, 1, 'once');
});
