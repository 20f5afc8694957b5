/**
 * A full sync reads back what the pinned maps hold (a restart reconciles against it). The dump
 * is batched, a few thousand elements per call: a restart over 20,000 service ports — several
 * batches per map — must find every element and write none. On a cgroup and a bpffs directory
 * this test creates (never the host's cgroup root); needs root, cgroup v2 and bpffs.
 */
import t from 'tap';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createEbpfBackend } from '../../../src/backends/ebpf/backend.js';
import { ensureBpffsDir, KernelBpfMaps, removePins, resolveCgroupRoot } from '../../../src/backends/kernel/bpf.js';
import { ep, FULL, fwd, svc, table, tables } from '../../unit/backends/ir-builders.js';

const PREFIX = `fydp${Math.random().toString(36).slice(2, 6)}`;
const N = 20_000;

t.test('a restart over 20,000 service ports finds every element and writes none', async (t) => {
  const cgroup = join(await resolveCgroupRoot(undefined), PREFIX);
  const pinDir = `/sys/fs/bpf/${PREFIX}`;
  await mkdir(cgroup);
  await ensureBpffsDir(pinDir);
  t.teardown(async () => {
    await removePins(pinDir);
    await rmdir(cgroup).catch(() => undefined);
  });
  const services = Array.from({ length: N }, (_, i) =>
    svc({ namespace: 'default', name: `s${i}`, internal: fwd(ep(`198.18.${(i >> 8) & 255}.${i & 255}`, 8080)), clusterIP: `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, port: 80 }),
  );
  const want = tables(table(4, services));
  const first = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
  await first.sync(null, want, FULL);
  t.ok((first.lastSync()?.elements ?? 0) >= 3 * N, `the first sync wrote every element (${first.lastSync()?.elements})`);

  const again = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
  await again.sync(null, want, FULL);
  t.equal(again.lastSync()?.elements, 0, 'the restart found all of them: nothing to write or delete');

  // One service port gone while "ferry was down": exactly its elements are deleted.
  const fewer = tables(table(4, services.slice(1)));
  const third = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
  await third.sync(null, fewer, FULL);
  const removed = third.lastSync()?.elements ?? 0;
  t.ok(removed > 0 && removed <= 5, `a restart after one Service went deletes only its few elements (${removed})`);
  await third.cleanup();
});
