/**
 * Smoke test of the benchmark harness: `scripts/bench --smoke` end to end (tiny sizes, real
 * kernel, one simulated cluster), then the shape and sanity of what it wrote. Never asserts a
 * timing: only that numbers exist and are positive where a measurement must have happened.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchResults } from '../../../src/bench/types.js';
import { SCRUB, childEnv } from '../lib/child-env.js';
import { scaledMs } from '../../../src/util/timescale.js';

// Two simulated clusters (latency, then the data path) each wait their turn for the shared LAN.
t.setTimeout(scaledMs(330_000));

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

function benchNamespaces(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith('fyb'));
}

t.test('scripts/bench --smoke writes results.json, charts and summary.md with sane values', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'ferry-bench-smoke-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const before = new Set(benchNamespaces());

  // tap's loaders (NODE_OPTIONS --import ...) must not leak into the ferry daemons the harness starts.
  const r = spawnSync('env', [...SCRUB, join(ROOT, 'scripts', 'bench'), '--smoke', '--out', out], {
    encoding: 'utf8',
    timeout: scaledMs(300_000),
    env: childEnv(),
  });
  t.equal(r.status, 0, `bench exits 0 (3 = some measurement failed) (signal ${r.signal}); stderr tail:\n${(r.stderr ?? '').split('\n').slice(-15).join('\n')}`);
  t.match(r.stderr, /kube-proxy binary not given: skipping/, 'says the kube-proxy run is skipped');
  t.match(r.stdout, /ferry \/ reference kube-proxy layout/, 'prints the ratios');

  const leftovers = benchNamespaces().filter((n) => !before.has(n));
  t.same(leftovers, [], 'no fyb* namespaces left behind');

  const files = existsSync(out) ? readdirSync(out) : [];
  for (const f of ['results.json', 'summary.md', 'compile-full.svg', 'apply-full.svg', 'latency.svg', 'datapath-connections.svg']) {
    t.ok(files.includes(f), `${f} written (found: ${files.join(', ')})`);
  }
  if (!files.includes('results.json')) return;
  const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as BenchResults;

  t.equal(res.meta.profile, 'smoke');
  t.ok(res.meta.kernel.length > 0 && res.meta.cpus > 0, `meta names kernel and CPUs (got ${res.meta.kernel}, ${res.meta.cpus})`);

  const modes = res.compile.map((c) => c.mode).sort();
  t.same(modes, ['iptables', 'nftables', 'reference', 'userspace'], 'one compile row per mode');
  for (const c of res.compile) {
    t.ok(c.fullMs > 0, `${c.mode} full compile time > 0 (got ${c.fullMs})`);
    if (c.mode !== 'userspace') {
      t.ok(c.fullBytes > 0 && c.fullLines > 0, `${c.mode} full ruleset has content (${c.fullBytes} B, ${c.fullLines} lines)`);
      t.ok(c.partialEndpointLines > 0 && c.partialEndpointLines < c.fullLines, `${c.mode} partial is smaller than full (${c.partialEndpointLines} vs ${c.fullLines})`);
    }
  }
  t.equal(res.plan.length, 1, 'one planner row');
  t.ok((res.plan[0]?.planMs ?? 0) > 0, 'planner time recorded');
  t.ok((res.memory[0]?.heapMB ?? 0) > 0, `memory measured (heap ${res.memory[0]?.heapMB} MB)`);

  t.same(res.apply.map((a) => a.mode).sort(), ['ebpf', 'iptables', 'nftables-addon', 'nftables-exec', 'nftables-netlink', 'reference'], 'one apply row per mode');
  for (const a of res.apply) {
    t.notOk(a.error, `${a.mode} applied without error (${a.error ?? ''})`);
    t.ok(a.fullColdMs > 0 && a.partialEndpointMs > 0 && a.partialAddMs > 0, `${a.mode} apply times recorded (${JSON.stringify(a)})`);
  }

  const lat = res.latency.find((l) => l.mode === 'nftables');
  t.ok(lat, `latency measured for nftables (notes: ${res.notes.join('; ')})`);
  if (lat) {
    t.equal(lat.failures, 0, 'every change became reachable');
    t.ok(lat.e2eMs.n > 0 && lat.e2eMs.p50 > 0 && lat.e2eMs.p99 >= lat.e2eMs.p50, `latency percentiles sane (${JSON.stringify(lat.e2eMs)})`);
    t.ok(lat.metric && lat.metric.count > 0, `ferry's network programming metric read (${JSON.stringify(lat.metric)})`);
  }

  const dp = res.datapath.filter((d) => d.mode === 'nftables');
  t.same(dp.map((d) => d.path).sort(), ['clusterip', 'nodeport'], `nftables data path measured on both paths (notes: ${res.notes.join('; ')})`);
  t.same(res.datapath.filter((d) => d.mode === 'direct').map((d) => d.path), ['clusterip'], 'direct (no proxy) measured as the floor');
  for (const d of res.datapath) {
    t.ok(d.connPerSec.median > 0 && d.cpuMsPerKConn.median > 0, `${d.mode} ${d.path}: connections and their CPU > 0 (${JSON.stringify(d)})`);
    t.equal(d.rounds, res.meta.datapathLoad?.rounds, `${d.mode} ${d.path}: one sample per round`);
    t.equal(d.connErrors + d.timeouts, 0, `${d.mode} ${d.path}: no failed connections`);
  }
  t.equal(res.datapathRounds.length, 3 * (res.meta.datapathLoad?.rounds ?? 0), 'every round recorded (direct, nftables x 2 paths)');
  t.ok(res.ratios.length > 0 && res.ratios.every((x) => x.ratio > 0), 'ratios computed');
  t.same(res.daemon.map((d) => d.mode).sort(), ['iptables-legacy', 'nftables'], `the daemon measured in both smoke modes (notes: ${res.notes.join('; ')})`);
  for (const d of res.daemon) {
    t.ok(d.rulesFound >= d.services, `daemon ${d.mode}: every Service's rules found (${d.rulesFound} for ${d.services})`);
    t.ok(d.steady.rssMB > 0 && d.hwmMB >= d.steady.rssMB, `daemon ${d.mode}: RSS measured (${d.steady.rssMB} MiB steady, ${d.hwmMB} peak)`);
    t.equal(d.resyncs.length, 1, `daemon ${d.mode}: the forced resync repaired`);
  }
  t.match(readFileSync(join(out, 'summary.md'), 'utf8'), /Ratios: ferry \/ reference/, 'summary.md has the ratios table');
});
