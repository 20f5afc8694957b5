/**
 * What other modes or kube-proxy left is removed once ferry's own first sync has succeeded, not
 * before: until then those rules are all that serve the node's Services (a switch from
 * kube-proxy). A real daemon against the simulated API server; the mode table's entries are
 * fakes that touch nothing.
 */
import t from 'tap';
import type { BackendEntry } from '../../../src/proxy/backends.js';
import type { ProxyMode } from '../../../src/config/types.js';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import { simDaemon, until } from './sim-daemon.js';

t.test("other modes' leftovers go after the first successful sync, once", async (t) => {
  const backend = new FakeBackend();
  backend.failNextSyncs(1);
  const removals: { running: ProxyMode; owner: ProxyMode; successfulSyncs: number }[] = [];
  const entry = (owner: ProxyMode): BackendEntry => ({
    create: async () => backend,
    probe: async () => undefined,
    cleanup: async () => undefined,
    removeForeign: async (running) => {
      removals.push({ running, owner, successfulSyncs: backend.calls.filter((c) => c.ok).length });
      return [];
    },
  });
  const backends: Record<ProxyMode, BackendEntry> = { nftables: entry('nftables'), iptables: entry('iptables'), ebpf: entry('ebpf'), userspace: entry('userspace') };
  const { daemon } = await simDaemon(t, { deps: { backends, nodeWaitMs: 0 } });
  await until('a failed first sync', () => backend.calls.length >= 1);
  t.same(removals, [], 'nothing removed while ferry has no rules of its own (its first sync failed)');
  await until('a successful sync', () => backend.calls.some((c) => c.ok));
  await until('the removal', () => removals.length === 4);
  t.same(
    removals.map((r) => `${r.owner} for ${r.running}`),
    ['nftables for nftables', 'iptables for nftables', 'ebpf for nftables', 'userspace for nftables'],
    'every entry asked, for the running mode',
  );
  t.ok(removals.every((r) => r.successfulSyncs >= 1), `each after a successful sync of ferry's own (${JSON.stringify(removals)})`);
  daemon.syncer.requestFullSync();
  await until('another sync', () => backend.calls.filter((c) => c.ok).length >= 2);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(removals.length, 4, 'not again at later syncs');
});
