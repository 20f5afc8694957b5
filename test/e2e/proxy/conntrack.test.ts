/**
 * kube-proxy's node settings, made by the real bin/ferry in a network namespace this test
 * creates: the per-namespace conntrack sysctls change inside it only, nf_conntrack_max (global,
 * read-only outside the host's namespace) is one warning and no crash, the host-global hash size
 * is never touched, oom_score_adj is set on the ferry process, and --dry-run touches nothing.
 * The host's values are read before and after and must not move.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runIn } from '../../../src/util/exec.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { FERRY_BIN, SCRUB, childEnv } from './proc.js';

const API_PORT = 18081;
const NF = '/proc/sys/net/netfilter';
const PER_NETNS = [
  'nf_conntrack_tcp_timeout_established',
  'nf_conntrack_tcp_timeout_close_wait',
  'nf_conntrack_tcp_be_liberal',
  'nf_conntrack_udp_timeout',
  'nf_conntrack_udp_timeout_stream',
] as const;
const HASHSIZE = '/sys/module/nf_conntrack/parameters/hashsize';

async function waitUntil(what: string, fn: () => Promise<boolean>, seen: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + scaledMs(timeoutMs);
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; instead: ${seen()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The host's (initial namespace's) values of every setting ferry may touch. */
function hostValues(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...PER_NETNS, 'nf_conntrack_max']) out[name] = readFileSync(`${NF}/${name}`, 'utf8').trim();
  out.hashsize = readFileSync(HASHSIZE, 'utf8').trim();
  return out;
}

async function nsValues(ns: string): Promise<Record<string, string>> {
  const r = await runIn(ns, ['sh', '-c', [...PER_NETNS, 'nf_conntrack_max'].map((n) => `printf '%s=' ${n}; cat ${NF}/${n}`).join('; ')]);
  return Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=') as [string, string]));
}

t.test('conntrack sysctls and oom_score_adj, in a namespace of our own', async (t) => {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new Error('needs root (network namespaces)');
  if (!existsSync(`${NF}/nf_conntrack_tcp_timeout_established`)) await run(['modprobe', 'nf_conntrack']);

  const ns = `fct${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', ns]);
  t.teardown(() => run(['ip', 'netns', 'del', ns], { allowFailure: true }));
  await runIn(ns, ['ip', 'link', 'set', 'lo', 'up']);
  const work = mkdtempSync(join(tmpdir(), 'ferry-e2e-conntrack-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
  });

  const host = hostValues();
  const before = await nsValues(ns);
  t.equal(before.nf_conntrack_max, host.nf_conntrack_max, 'nf_conntrack_max is the global value, seen from the namespace');

  // Values no kernel has by default, so a change is ferry's. The max just above the current
  // one: ferry must try (and fail: read-only here), and even if it wrote, max/4 would stay below
  // the hash size, so the global hashsize cannot move whatever happens.
  const cores = cpus().length;
  const maxPerCore = Math.floor(Number(host.nf_conntrack_max) / cores) + 1;
  t.ok((maxPerCore * cores) / 4 < Number(host.hashsize), 'the test cannot grow the hash table even by mistake');
  const want = {
    nf_conntrack_tcp_timeout_established: '7777',
    nf_conntrack_tcp_timeout_close_wait: '777',
    nf_conntrack_tcp_be_liberal: '1',
    nf_conntrack_udp_timeout: '33',
    nf_conntrack_udp_timeout_stream: '177',
  };
  for (const [k, v] of Object.entries(want)) t.not(before[k], v, `${k} starts elsewhere than ${v}`);
  const conntrackFlags = [
    `--conntrack-max-per-core=${maxPerCore}`, '--conntrack-min=0',
    '--conntrack-tcp-timeout-established=2h9m37s', '--conntrack-tcp-timeout-close-wait=12m57s',
    '--conntrack-tcp-be-liberal', '--conntrack-udp-timeout=33s', '--conntrack-udp-timeout-stream=2m57s',
  ];

  await t.test('--dry-run touches no kernel state', async (t) => {
    const r = await runIn(ns, ['env', ...SCRUB, process.execPath, FERRY_BIN, '--dry-run', '--init-only', ...conntrackFlags], { allowFailure: true, env: childEnv(), timeoutMs: scaledMs(30_000) });
    t.equal(r.exitCode, 0, r.stderr);
    t.same(await nsValues(ns), before, 'nothing changed');
  });

  await t.test('--init-only with a kubeadm-style config file sets the sysctls and exits 0', async (t) => {
    const config = join(work, 'init.yaml');
    writeFileSync(
      config,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        `conntrack: {maxPerCore: ${maxPerCore}, min: null, tcpEstablishedTimeout: 1h, tcpCloseWaitTimeout: 0s, tcpBeLiberal: false, udpTimeout: 0s, udpStreamTimeout: 0s}`,
        'oomScoreAdj: null',
      ].join('\n'),
    );
    const r = await runIn(ns, ['env', ...SCRUB, process.execPath, FERRY_BIN, '--config', config, '--init-only'], { allowFailure: true, env: childEnv(), timeoutMs: scaledMs(30_000) });
    t.equal(r.exitCode, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
    const now = await nsValues(ns);
    t.equal(now.nf_conntrack_tcp_timeout_established, '3600', 'tcpEstablishedTimeout 1h');
    t.equal(now.nf_conntrack_tcp_timeout_close_wait, before.nf_conntrack_tcp_timeout_close_wait, '0s: left alone');
    t.equal(now.nf_conntrack_udp_timeout, before.nf_conntrack_udp_timeout, 'zero udp timeout: left alone');
    t.match(r.stderr, /W.* cannot set conntrack nf_conntrack_max; continuing without it .*was=\d+ error=/, 'the read-only max is one warning line');
    t.notMatch(r.stderr, /hashsize/, 'the hash size is not touched after a failed max');
    t.match(r.stderr, /set conntrack nf_conntrack_tcp_timeout_established .*value=3600/);
  });

  await t.test('the daemon sets them at start, sets its oom_score_adj, and keeps running', async (t) => {
    const kubeconfig = join(work, 'kubeconfig');
    const api = spawn('ip', ['netns', 'exec', ns, 'env', ...SCRUB, process.execPath, FERRY_BIN, 'sim', 'apiserver', '--listen', `127.0.0.1:${API_PORT}`, '--kubeconfig-out', kubeconfig, '--service-cidr', '198.18.64.0/18'], {
      env: childEnv(),
      stdio: 'ignore',
    });
    procs.push(api);
    await waitUntil('the API server kubeconfig', async () => existsSync(kubeconfig), () => 'no kubeconfig yet');
    const node = JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1' } });
    await runIn(ns, ['kubectl', '--kubeconfig', kubeconfig, 'apply', '-f', '-'], { input: node, env: childEnv() });

    let log = '';
    const ferry = spawn(
      'ip',
      [
        'netns', 'exec', ns, 'env', ...SCRUB, process.execPath, FERRY_BIN, '--kubeconfig', kubeconfig, '--hostname-override', 'node-1',
        '--proxy-mode', 'userspace', '--healthz-bind-address', '127.0.0.1:10256', '--metrics-bind-address', '', '--oom-score-adj', '7',
        '--kube-api-qps', '50', '--feature-gates', 'SomeGate=true', ...conntrackFlags,
      ],
      { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    procs.push(ferry);
    ferry.stderr?.on('data', (b: Buffer) => (log += b.toString()));
    t.teardown(async () => {
      ferry.kill('SIGTERM');
      await runIn(ns, ['ip', 'link', 'del', 'ferry0'], { allowFailure: true });
    });
    await waitUntil('the first sync', async () => /initial lists received/.test(log), () => log.slice(-800));

    t.same(await nsValues(ns).then((v) => Object.fromEntries(PER_NETNS.map((k) => [k, v[k]]))), want, 'every per-namespace sysctl set inside the namespace');
    // `ip netns exec` may fork, so find ferry among the namespace's processes by its argv.
    const pids = (await run(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter((p) => p !== '');
    const ferryPid = pids.find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes('--oom-score-adj'));
    t.ok(ferryPid, `ferry among the namespace's processes ${pids.join(',')}`);
    // A positive value: lowering it (kube-proxy's -999) needs CAP_SYS_RESOURCE, which a test
    // host may lack; that case is a warning, covered in the unit tests.
    t.equal(readFileSync(`/proc/${ferryPid ?? 'self'}/oom_score_adj`, 'utf8').trim(), '7', "ferry's oom_score_adj");
    t.match(log, /set oom_score_adj path=\/proc\/self\/oom_score_adj value=7/);
    t.match(log, /cannot set conntrack nf_conntrack_max; continuing without it/, 'max: one warning, no crash');
    t.equal(ferry.exitCode, null, 'still running');
    const ignored = log.split('\n').filter((l) => l.includes('no effect in ferry'));
    t.equal(ignored.length, 1, 'ignored settings: one line');
    t.match(ignored[0], /--feature-gates \(.*--kube-api-qps \(/);
    t.same(hostValues(), host, 'host values unchanged while ferry runs');
  });

  await t.test("the host's settings did not change", async (t) => {
    t.same(hostValues(), host, 'every conntrack sysctl and the hash size as before the test');
  });
});
