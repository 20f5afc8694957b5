// scripts/bench's argument parsing: the per-phase overrides replace only what they name, and bad
// values are refused with the flag's name.
import t from 'tap';
import { BenchUsageError, parseArgs, PROFILES } from '../../../src/bench/main.js';

t.test('daemon and latency overrides', async (t) => {
  const a = parseArgs(['--full', '--only', 'daemon,latency', '--daemon-sizes', '10000x10,44000x10', '--daemon-modes', 'nftables', '--latency-sizes', '1000', '--latency-modes', 'nftables,userspace,ebpf']);
  t.same(a.only, ['daemon', 'latency']);
  t.same(a.profile.daemonSizes, [{ services: 10000, endpoints: 10 }, { services: 44000, endpoints: 10 }]);
  t.same(a.profile.daemonModes, ['nftables']);
  t.same(a.profile.latencySizes, [1000]);
  t.same(a.profile.clusterSizes, [1000], 'the cluster phases run at the latency sizes given');
  t.same(a.profile.latencyModes, ['nftables', 'userspace', 'ebpf']);
  t.equal(a.profile.daemonResyncs, PROFILES.full.daemonResyncs, 'everything else from the profile');
});

t.test('apply sizes: the compile and apply phases run at the sizes given', async (t) => {
  const a = parseArgs(['--only', 'apply', '--apply-sizes', '10000x10,44000x10']);
  t.same(a.profile.applySizes, [{ services: 10000, endpoints: 10 }, { services: 44000, endpoints: 10 }]);
  t.same(a.profile.compileSizes, a.profile.applySizes);
  t.same(a.profile.daemonSizes, PROFILES.full.daemonSizes, 'the other phases keep the profile');
  t.throws(() => parseArgs(['--apply-sizes', '44000']), /--apply-sizes: expected SERVICESxENDPOINTS/);
});

t.test('daemon A/B, repeats, resyncs and node flags', async (t) => {
  const a = parseArgs(['--only', 'daemon', '--daemon-resyncs', '0', '--daemon-repeat', '3', '--daemon-ferry', '/a/bin/ferry,/b/bin/ferry', '--daemon-node-flags', '--cpu-prof --cpu-prof-dir=/tmp/p']);
  t.equal(a.profile.daemonResyncs, 0);
  t.equal(a.daemonRepeat, 3);
  t.same(a.daemonFerry, ['/a/bin/ferry', '/b/bin/ferry']);
  t.equal(a.daemonNodeFlags, '--cpu-prof --cpu-prof-dir=/tmp/p');
  const d = parseArgs([]);
  t.same([d.daemonFerry, d.daemonRepeat, d.daemonNodeFlags], [[], 1, undefined], 'defaults: this tree, once, no flags');
  t.throws(() => parseArgs(['--daemon-repeat', '0']), /--daemon-repeat/);
  t.throws(() => parseArgs(['--daemon-resyncs', 'x']), /--daemon-resyncs/);
});

t.test('bad values name their flag', async (t) => {
  t.throws(() => parseArgs(['--daemon-sizes', '10000']), BenchUsageError);
  t.throws(() => parseArgs(['--daemon-modes', 'ipvs']), /--daemon-modes: unknown mode ipvs/);
  t.throws(() => parseArgs(['--latency-sizes', 'ten']), /--latency-sizes/);
  t.throws(() => parseArgs(['--only', 'everything']), /--only: unknown phase everything/);
});

t.test('iptables-legacy: a daemon mode of its own, to 10k × 10 in the full profile', async (t) => {
  t.same(parseArgs(['--daemon-modes', 'iptables-legacy,nftables']).profile.daemonModes, ['iptables-legacy', 'nftables']);
  t.ok(PROFILES.full.daemonModes.includes('iptables-legacy'));
  t.ok(PROFILES.full.daemonIptablesLegacyLimit >= 10_000 * 10 && PROFILES.full.daemonIptablesLegacyLimit < 44_000 * 10);
  t.throws(() => parseArgs(['--daemon-modes', 'iptables-foo']), /--daemon-modes/);
});
