/**
 * The harness's `--kube-proxy PATH` path, end to end. No kube-proxy binary can be had here, so a
 * stand-in script runs ferry with exactly the argv the harness gives kube-proxy (kube-proxy's own
 * flags: ferry is a drop-in replacement). What is proven: the binary is started in the node
 * namespace against the simulated API server, waited for, measured for start-up, programming
 * latency (with its kubeproxy_network_programming_duration_seconds metric) and data path, and
 * stopped and cleaned up. What is not: the real kube-proxy's numbers.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResults } from '../../../src/bench/types.js';
import { SCRUB, childEnv } from '../lib/child-env.js';
import { scaledMs } from '../../../src/util/timescale.js';

t.setTimeout(scaledMs(330_000));

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

t.test('scripts/bench --kube-proxy PATH measures the given binary like ferry', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'ferry-bench-kp-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const standIn = join(out, 'kube-proxy');
  // Records its argv so the test can check what a real kube-proxy would have been given.
  writeFileSync(
    standIn,
    `#!/bin/sh\necho "$@" > ${join(out, 'argv.txt')}\nexec env -u NODE_OPTIONS ${process.execPath} ${join(ROOT, 'bin', 'ferry')} "$@"\n`,
  );
  chmodSync(standIn, 0o755);

  const r = spawnSync('env', [...SCRUB, join(ROOT, 'scripts', 'bench'), '--smoke', '--only', 'latency,datapath', '--kube-proxy', standIn, '--out', out], {
    encoding: 'utf8',
    timeout: scaledMs(300_000),
    env: childEnv(),
  });
  t.equal(r.status, 0, `bench exits 0 (signal ${r.signal}); stderr tail:\n${(r.stderr ?? '').split('\n').slice(-15).join('\n')}`);
  t.notMatch(r.stderr, /kube-proxy binary not given/, 'the binary is not skipped');

  const argv = existsSync(join(out, 'argv.txt')) ? readFileSync(join(out, 'argv.txt'), 'utf8') : '';
  t.match(argv, /--kubeconfig \S+ --hostname-override \S+ --cluster-cidr \S+ --proxy-mode iptables --metrics-bind-address 127\.0\.0\.1:10249/, `kube-proxy flags only (got: ${argv.trim()})`);

  if (!existsSync(join(out, 'results.json'))) {
    t.fail('results.json missing');
    return;
  }
  const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as BenchResults;
  t.equal(res.meta.kubeProxy, standIn, 'results name the binary');
  const start = res.startup.find((s) => s.mode === 'kube-proxy');
  t.ok(start && start.readyMs > 0, `start-up measured (${JSON.stringify(start)})`);
  const lat = res.latency.find((l) => l.mode === 'kube-proxy');
  t.ok(lat, `latency measured for the binary (notes: ${res.notes.join('; ')})`);
  if (lat) {
    t.equal(lat.failures, 0, 'every change became reachable through it');
    t.ok(lat.e2eMs.n > 0 && lat.e2eMs.p50 > 0, `percentiles (${JSON.stringify(lat.e2eMs)})`);
    t.ok(lat.metric && lat.metric.count > 0, `its network programming metric read (${JSON.stringify(lat.metric)})`);
  }
  const dp = res.datapath.filter((d) => d.mode === 'kube-proxy');
  t.same(dp.map((d) => d.path).sort(), ['clusterip', 'nodeport'], 'data path measured on both paths');
  for (const d of dp) t.ok(d.connPerSec.median > 0 && d.connErrors === 0 && d.timeouts === 0, `${d.path}: ${JSON.stringify(d)}`);
});
