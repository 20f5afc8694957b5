/**
 * --proxy-mode-fallback: a node where the kernel mode cannot be used (here: neither the addon
 * nor the nft command is available to ferry) either refuses to start with a message naming the
 * mode, or — with --proxy-mode-fallback userspace — says so loudly and forwards in userspace.
 * Real processes in a fresh network namespace: the simulated API server and ferry.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runIn } from '../../../src/util/exec.js';
import { freshNetns } from '../kernel/netns.js';
import { FERRY_BIN, SCRUB, childEnv } from './proc.js';
import { scaledMs } from '../../../src/util/timescale.js';

const API_PORT = 18080;

async function waitUntil(what: string, fn: () => Promise<boolean>, seen: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + scaledMs(timeoutMs);
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; instead: ${seen()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

t.test('kernel mode unavailable: refused without fallback, userspace with it', async (t) => {
  const ns = await freshNetns(t);
  const work = mkdtempSync(join(tmpdir(), 'ferry-fallback-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  // A PATH with `ip` only: no nft, no iptables; and an addon path that does not exist.
  const bin = join(work, 'bin');
  await runIn(undefined, ['mkdir', '-p', bin]);
  symlinkSync('/usr/sbin/ip', join(bin, 'ip'));
  const kubeconfig = join(work, 'kubeconfig');
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) p.kill('SIGKILL');
  });

  const api = spawn('ip', ['netns', 'exec', ns, 'env', ...SCRUB, process.execPath, FERRY_BIN, 'sim', 'apiserver', '--listen', `127.0.0.1:${API_PORT}`, '--kubeconfig-out', kubeconfig, '--service-cidr', '198.18.64.0/18'], {
    env: childEnv(),
    stdio: 'ignore',
  });
  procs.push(api);
  await waitUntil('the API server kubeconfig', async () => existsSync(kubeconfig), () => 'no kubeconfig yet');

  const ferryArgs = (extra: string[]) => [
    'netns', 'exec', ns, 'env', ...SCRUB, `PATH=${bin}`, `FERRY_NATIVE_PATH=${join(work, 'missing.node')}`,
    process.execPath, FERRY_BIN, '--kubeconfig', kubeconfig, '--hostname-override', 'node-1', '--proxy-mode', 'nftables',
    '--healthz-bind-address', '127.0.0.1:10256', '--metrics-bind-address', '127.0.0.1:10249', ...extra,
  ];

  await t.test('without --proxy-mode-fallback ferry exits 1 naming the mode', async (t) => {
    const logFile = join(work, 'refused.log');
    const r = await runIn(undefined, ['sh', '-c', `ip ${ferryArgs([]).map((a) => `'${a}'`).join(' ')} 2>${logFile}`], { allowFailure: true, env: childEnv(), timeoutMs: 30_000 });
    const log = readFileSync(logFile, 'utf8');
    t.equal(r.exitCode, 1, `exit code (log: ${log.trim().split('\n').slice(-3).join(' | ')})`);
    t.match(log, /the nftables proxy mode cannot be used on this node/, 'says which mode cannot be used');
    t.match(log, /--proxy-mode-fallback userspace/, 'says how to fall back');
  });

  await t.test('with --proxy-mode-fallback userspace ferry forwards in userspace', async (t) => {
    // The Node object up front, so ferry does not wait for it before its first sync.
    const node = JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-1' } });
    await runIn(ns, ['kubectl', '--kubeconfig', kubeconfig, 'apply', '-f', '-'], { input: node, env: childEnv() });
    let log = '';
    const ferry = spawn('ip', ferryArgs(['--proxy-mode-fallback', 'userspace']), { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    procs.push(ferry);
    ferry.stderr?.on('data', (b: Buffer) => (log += b.toString()));
    t.teardown(async () => {
      ferry.kill('SIGTERM');
      await runIn(ns, ['ip', 'link', 'del', 'ferry0'], { allowFailure: true });
    });
    await waitUntil('the fallback log line', async () => /falling back to userspace mode/.test(log), () => log.slice(-400));
    const svc = JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'default' },
      spec: { clusterIP: '198.18.64.50', ports: [{ port: 80, targetPort: 8080 }] },
    });
    await runIn(ns, ['kubectl', '--kubeconfig', kubeconfig, 'apply', '-f', '-'], { input: svc, env: childEnv() });
    let addrs = '';
    await waitUntil(
      'the ClusterIP on ferry0',
      async () => {
        addrs = (await runIn(ns, ['ip', '-o', 'addr', 'show', 'dev', 'ferry0'], { allowFailure: true })).stdout;
        return addrs.includes('198.18.64.50');
      },
      () => `ferry0: ${addrs || '(absent)'}; log: ${log.slice(-600)}`,
    );
    t.pass('the Service is served by the userspace forwarder');
    t.match(log, /mode=userspace/, 'ferry reports the mode it runs');
  });
});
