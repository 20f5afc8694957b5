/**
 * The ebpf mode's settings (ferry extensions): --proxy-mode ebpf, --ebpf-cgroup-root and
 * --ebpf-bpffs-dir, their defaults and their validation.
 */
import t from 'tap';
import { resolveConfig } from '../../../src/config/resolve.js';
import { ConfigError } from '../../../src/config/types.js';

const resolve = (o: Record<string, string | boolean> = {}) => resolveConfig({ flags: new Map(Object.entries(o)), file: undefined, hostname: 'node-1' });

t.test('defaults: the host cgroup2 mount (undefined) and /sys/fs/bpf/ferry', async (t) => {
  const c = resolve({ 'proxy-mode': 'ebpf' });
  t.equal(c.mode, 'ebpf');
  t.equal(c.ebpfCgroupRoot, undefined);
  t.equal(c.ebpfBpffsDir, '/sys/fs/bpf/ferry');
});

t.test('given directories are kept (trailing slashes dropped from the pin directory)', async (t) => {
  const c = resolve({ 'proxy-mode': 'ebpf', 'ebpf-cgroup-root': '/sys/fs/cgroup/k8s/node', 'ebpf-bpffs-dir': '/sys/fs/bpf/mine/' });
  t.equal(c.ebpfCgroupRoot, '/sys/fs/cgroup/k8s/node');
  t.equal(c.ebpfBpffsDir, '/sys/fs/bpf/mine');
});

t.test('relative paths are refused by flag name', async (t) => {
  t.throws(() => resolve({ 'ebpf-cgroup-root': 'cg' }), ConfigError);
  t.throws(() => resolve({ 'ebpf-cgroup-root': 'cg' }), /--ebpf-cgroup-root/);
  t.throws(() => resolve({ 'ebpf-bpffs-dir': 'bpf' }), /--ebpf-bpffs-dir/);
});

t.test('--ebpf-interfaces: names and prefixes; default undefined (every interface but lo); bad names refused', async (t) => {
  t.equal(resolve({ 'proxy-mode': 'ebpf' }).ebpfInterfaces, undefined);
  t.same(resolve({ 'ebpf-interfaces': 'eth0, veth*' }).ebpfInterfaces, ['eth0', 'veth*']);
  t.throws(() => resolve({ 'ebpf-interfaces': 'eth0,a b' }), /--ebpf-interfaces/);
  t.throws(() => resolve({ 'ebpf-interfaces': 'waytoolonginterfacename' }), /--ebpf-interfaces/);
});

t.test('--ebpf-ct-max: connections, 1024 to 4194304; default undefined (the compiled 65,536)', async (t) => {
  t.equal(resolve({ 'proxy-mode': 'ebpf' }).ebpfCtMax, undefined);
  t.equal(resolve({ 'ebpf-ct-max': '262144' }).ebpfCtMax, 262144);
  t.equal(resolve({ 'ebpf-ct-max': '1024' }).ebpfCtMax, 1024);
  t.equal(resolve({ 'ebpf-ct-max': '4194304' }).ebpfCtMax, 4194304);
  for (const bad of ['1023', '4194305', '1e6', '-5', '12k', 'x']) t.throws(() => resolve({ 'ebpf-ct-max': bad }), /--ebpf-ct-max/, bad);
});
