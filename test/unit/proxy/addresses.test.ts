/**
 * The daemon follows the host's addresses where NodePorts depend on them: in ebpf mode with
 * nodePortAddresses unset, an address the host gains or loses is synced at once as a table-level
 * change carrying the new list; in nftables mode (the kernel decides per packet) nothing is
 * listed or watched.
 */
import t, { type Test } from 'tap';
import { nodePortsFollowAddresses } from '../../../src/proxy/daemon.js';
import { FakeBackend } from '../../../src/sync/fake-backend.js';
import type { RouteWatchSource } from '../../../src/backends/kernel/local-addresses.js';
import { simDaemon, until } from './sim-daemon.js';

async function daemonIn(t: Test, mode: string, extraFlags: [string, string][] = []) {
  const backend = new FakeBackend();
  let host = ['127.0.0.1', '192.0.2.10', '::1'];
  let fire: (() => void) | undefined;
  let subscribed = 0;
  const routeWatch: RouteWatchSource = (onChange) => {
    subscribed++;
    fire = () => onChange();
    return { close: () => (fire = undefined) };
  };
  await simDaemon(t, { flags: [['proxy-mode', mode], ...extraFlags], deps: { backend, nodeWaitMs: 200, routeWatch, listLocalAddresses: () => [...host] } });
  return {
    backend,
    subscribed: () => subscribed,
    change(next: string[]) {
      host = next;
      fire?.();
    },
  };
}

t.test('ebpf mode: an address gained or lost is a table-level sync at once', async (t) => {
  const d = await daemonIn(t, 'ebpf');
  t.equal(d.subscribed(), 1, 'subscribed once');
  await until('the first sync', () => d.backend.installed !== null);
  t.same(d.backend.installed?.[4].nodePortAddresses, { kind: 'all', local: ['192.0.2.10'] }, "the host's IPv4 addresses but loopback");
  const before = d.backend.calls.length;
  d.change(['127.0.0.1', '192.0.2.10', '192.0.2.77', '::1']);
  await until('a sync after the change', () => d.backend.calls.length > before);
  const call = d.backend.calls[d.backend.calls.length - 1]!;
  t.same([call.ok, call.changes.full, call.changes.tableChanged, call.changes.changed.size], [true, false, true, 0], 'partial, table-level, no Service');
  t.same(call.next[4].nodePortAddresses, { kind: 'all', local: ['192.0.2.10', '192.0.2.77'] });
  const n = d.backend.calls.length;
  d.change(['::1', '192.0.2.77', '192.0.2.10', '127.0.0.1']);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(d.backend.calls.length, n, 'a notification that changes nothing syncs nothing');
  d.change(['127.0.0.1', '192.0.2.10', '::1']);
  await until('a sync after the removal', () => d.backend.calls.length > n);
  t.same(d.backend.installed?.[4].nodePortAddresses, { kind: 'all', local: ['192.0.2.10'] }, 'an address lost');
});

t.test('nftables mode: the kernel decides per packet; nothing is listed or watched', async (t) => {
  const d = await daemonIn(t, 'nftables');
  await until('the first sync', () => d.backend.installed !== null);
  t.equal(d.subscribed(), 0, 'no subscription');
  t.same(d.backend.installed?.[4].nodePortAddresses, { kind: 'all' }, 'plain all');
});

t.test('nftables mode with CIDRs: the matching addresses follow the host', async (t) => {
  const d = await daemonIn(t, 'nftables', [['nodeport-addresses', '192.0.2.0/24']]);
  await until('the first sync', () => d.backend.installed !== null);
  t.equal(d.subscribed(), 1, 'subscribed');
  t.same(d.backend.installed?.[4].nodePortAddresses, { kind: 'list', addresses: ['192.0.2.10'] });
  const before = d.backend.calls.length;
  d.change(['127.0.0.1', '192.0.2.10', '192.0.2.77', '198.51.100.1']);
  await until('a sync after the change', () => d.backend.calls.length > before);
  t.same(d.backend.installed?.[4].nodePortAddresses, { kind: 'list', addresses: ['192.0.2.10', '192.0.2.77'] }, 'the new address in the CIDR, not the other');
});

t.test('which modes follow the host addresses', async (t) => {
  const all = { kind: 'all' } as const;
  const cidrs = { kind: 'cidrs', cidrs: ['192.0.2.0/24'] } as const;
  t.same(nodePortsFollowAddresses({ nodePortAddresses: all, dryRun: false }, 'ebpf'), { list: true, all: true });
  t.same(nodePortsFollowAddresses({ nodePortAddresses: all, dryRun: false }, 'userspace'), { list: true, all: true });
  t.same(nodePortsFollowAddresses({ nodePortAddresses: all, dryRun: false }, 'iptables'), { list: false, all: false });
  t.same(nodePortsFollowAddresses({ nodePortAddresses: all, dryRun: true }, 'ebpf'), { list: false, all: false }, 'a dry run shows the plain IR');
  t.same(nodePortsFollowAddresses({ nodePortAddresses: cidrs, dryRun: false }, 'nftables'), { list: true, all: false });
  t.same(nodePortsFollowAddresses({ nodePortAddresses: { kind: 'primary' }, dryRun: false }, 'ebpf'), { list: false, all: false });
});
