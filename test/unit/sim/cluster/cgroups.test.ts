/**
 * The simulator's per-node cgroup layout and placement wrapper (pure parts): a node's processes
 * and its pods' live under the node's cgroup, which is what the node's ferry attaches to; the
 * LAN and the outside client are in none.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bpffsDirOfNetns, cgroupOfNetns, inCgroup } from '../../../../src/sim/cluster/cgroups.js';
import { probeArgv } from '../../../../src/sim/cluster/probe-client.js';

t.test('cgroup of each namespace of a run', async (t) => {
  const root = '/sys/fs/cgroup';
  t.equal(cgroupOfNetns(root, 'fyab12', 'fyab12-n1'), '/sys/fs/cgroup/fyab12/fyab12-n1', 'a node');
  t.equal(cgroupOfNetns(root, 'fyab12', 'fyab12-n2p7'), '/sys/fs/cgroup/fyab12/fyab12-n2/fyab12-n2p7', 'a pod, below its node');
  t.equal(cgroupOfNetns(root, 'fyab12', 'fyab12-client'), undefined, 'the outside client: none');
  t.equal(cgroupOfNetns(root, 'fyab12', 'fyab12-lan'), undefined, 'the LAN: none');
  t.equal(cgroupOfNetns(root, 'fyab12', 'fyzz99-n1'), undefined, "another run's node: none");
  t.equal(bpffsDirOfNetns('fyab12-n1'), '/sys/fs/bpf/fyab12-n1');
});

t.test('inCgroup joins the cgroup, then execs the command with its arguments intact', async (t) => {
  t.same(inCgroup(undefined, ['echo', 'x']), ['echo', 'x'], 'no cgroup: unchanged');
  // A plain directory stands in for a cgroup: the wrapper writes its pid to cgroup.procs.
  const dir = mkdtempSync(join(tmpdir(), 'fy-cg-'));
  mkdirSync(join(dir, 'g'));
  writeFileSync(join(dir, 'g', 'cgroup.procs'), '');
  const r = spawnSync(inCgroup(join(dir, 'g'), ['printf', '%s|', 'a b', '$HOME', ''])[0] as string, inCgroup(join(dir, 'g'), ['printf', '%s|', 'a b', '$HOME', '']).slice(1), { encoding: 'utf8' });
  t.equal(r.stdout, 'a b|$HOME||', 'arguments pass through unexpanded');
  t.match(readFileSync(join(dir, 'g', 'cgroup.procs'), 'utf8'), /^\d+\n$/, 'its pid was written to cgroup.procs');
});

t.test('a probe joins its cgroup before entering the namespace (ip netns exec remounts /sys)', async (t) => {
  const argv = probeArgv('fyab12-n1', { proto: 'tcp', addr: '198.19.0.10', port: 80 }, {}, 1, '/sys/fs/cgroup/fyab12/fyab12-n1');
  t.same(argv.slice(0, 4), ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', '/sys/fs/cgroup/fyab12/fyab12-n1']);
  t.same(argv.slice(4, 8), ['ip', 'netns', 'exec', 'fyab12-n1']);
});
