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
import { createApiCore, stopApiCore } from '../../../src/sim/apiserver/index.js';
import { endpointSliceDef } from '../../../src/sim/apiserver/endpointslices.js';

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

t.test('a first sync that ends while ferry is stopping removes nothing', async (t) => {
  const backend = new FakeBackend();
  let release: () => void = () => undefined;
  let inSync = false;
  backend.fullCostMs = 1;
  backend.wait = () => {
    inSync = true;
    return new Promise<void>((r) => (release = r));
  };
  const removals: ProxyMode[] = [];
  const entry = (owner: ProxyMode): BackendEntry => ({
    create: async () => backend,
    probe: async () => undefined,
    cleanup: async () => undefined,
    removeForeign: async () => {
      removals.push(owner);
      return [];
    },
  });
  const backends: Record<ProxyMode, BackendEntry> = { nftables: entry('nftables'), iptables: entry('iptables'), ebpf: entry('ebpf'), userspace: entry('userspace') };
  const { daemon } = await simDaemon(t, { deps: { backends, nodeWaitMs: 0 } });
  await until('the first sync is under way', () => inSync);
  const stopping = daemon.stop();
  await new Promise((r) => setTimeout(r, 20));
  release();
  await stopping;
  t.ok(backend.calls.some((c) => c.ok), 'the first sync succeeded during stop()');
  t.same(removals, [], 'and nothing was removed: the process is about to exit');
});

t.test('a first sync that holds back part of an oversized Service removes nothing until the rest is in', async (t) => {
  const core = createApiCore({ serviceCIDRs: ['198.18.64.0/18'] });
  t.teardown(() => stopApiCore(core));
  // 50 ports × 100 endpoints: above the first sync's cost budget, so it is applied in pieces.
  const PORTS = 50;
  const ports = Array.from({ length: PORTS }, (_, i) => ({ name: `p${i}`, port: 1000 + i, targetPort: 2000 + i, protocol: 'TCP' }));
  core.registry.create(core.services.def, 'default', { metadata: { name: 'big' }, spec: { ports } });
  core.registry.create(endpointSliceDef(), 'default', {
    metadata: { name: 'big-1', labels: { 'kubernetes.io/service-name': 'big' } },
    addressType: 'IPv4',
    endpoints: Array.from({ length: 100 }, (_, i) => ({ addresses: [`10.1.${i >> 8}.${(i & 255) + 1}`], conditions: { ready: true } })),
    ports: ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: 'TCP' })),
  });
  const backend = new FakeBackend();
  const bigPorts = (): number => {
    const s = backend.installed?.[4].services;
    return s ? [...s.keys()].filter((k) => k.startsWith('default/big:')).length : 0;
  };
  const installedAtRemoval: number[] = [];
  const entry = (): BackendEntry => ({
    create: async () => backend,
    probe: async () => undefined,
    cleanup: async () => undefined,
    removeForeign: async () => {
      installedAtRemoval.push(bigPorts());
      return [];
    },
  });
  const backends: Record<ProxyMode, BackendEntry> = { nftables: entry(), iptables: entry(), ebpf: entry(), userspace: entry() };
  await simDaemon(t, { api: { core }, deps: { backends, nodeWaitMs: 0 } });
  await until('the removal', () => installedAtRemoval.length === 4, 20_000);
  t.ok(backend.calls.filter((c) => c.ok).length > 1, `the Service went in over ${backend.calls.filter((c) => c.ok).length} syncs`);
  t.same(installedAtRemoval, [PORTS, PORTS, PORTS, PORTS], 'every port of it was in before anything of the old rules went');
});
