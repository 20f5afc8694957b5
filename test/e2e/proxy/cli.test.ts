// The proxy's command line as a real process: every invalid value and every kube-proxy flag
// ferry does not implement exits 1 naming the flag; --config is read and explicit flags
// override it. Loopback only.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REFUSED_KUBE_PROXY_FLAGS, UNSUPPORTED_KUBE_PROXY_FLAGS } from '../../../src/config/flags.js';
import { startApiServer } from '../../../src/sim/apiserver/index.js';
import { run } from '../../../src/util/exec.js';
import { FERRY_BIN, FerryProc, SCRUB, childEnv, entries, freePort, waitFor } from './proc.js';

const ferry = (args: string[]) =>
  run(['env', ...SCRUB, process.execPath, FERRY_BIN, ...args], { allowFailure: true, env: childEnv(), timeoutMs: 30_000 });

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    for (let x = queue.shift(); x !== undefined; x = queue.shift()) await fn(x);
  }));
}

t.test('invalid values exit 1 naming the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--proxy-mode', 'ipvs'], /^ferry: --proxy-mode: "ipvs" is not supported by ferry \(nftables, iptables, ebpf, userspace\)$/m],
    [['--cluster-cidr', '10.0.0.0/33'], /^ferry: --cluster-cidr: "10.0.0.0\/33" is not a valid CIDR$/m],
    [['--cluster-cidr', '10.0.0.0/8,10.1.0.0/16'], /^ferry: --cluster-cidr: .*at most one IPv4 and one IPv6/m],
    [['--nodeport-addresses', 'primary,192.0.2.0/24'], /^ferry: --nodeport-addresses: /m],
    [['--nodeport-addresses', '192.0.2.0/99'], /^ferry: --nodeport-addresses: .*not a valid CIDR/m],
    [['--masquerade-all=sometimes'], /^ferry: --masquerade-all: /m],
    [['--iptables-sync-period', '30'], /^ferry: --iptables-sync-period: "30" is not a duration/m],
    [['--iptables-sync-period', '0s'], /^ferry: --iptables-sync-period: .*greater than 0/m],
    [['--iptables-min-sync-period', '-1s'], /^ferry: --iptables-min-sync-period: /m],
    [['--iptables-min-sync-period', '1h'], /^ferry: --iptables-min-sync-period: .*less than or equal to the sync period/m],
    [['--healthz-bind-address', '0.0.0.0:70000'], /^ferry: --healthz-bind-address: /m],
    [['--metrics-bind-address', 'localhost'], /^ferry: --metrics-bind-address: /m],
    [['--bind-address', 'not-an-ip'], /^ferry: --bind-address: /m],
    [['--hostname-override', ' '], /^ferry: --hostname-override: /m],
    [['--iptables-masquerade-bit', '40'], /^ferry: --iptables-masquerade-bit: /m],
    [['-v', 'x'], /^ferry: --v: /m],
    [['--proxy-mode-fallback', 'ipvs'], /^ferry: --proxy-mode-fallback: /m],
    [['--master', 'ftp://198.51.100.1'], /^ferry: --master: /m],
    [['--config', '/nonexistent/ferry.yaml'], /^ferry: --config: cannot read/m],
    [['--kubeconfig', '/nonexistent/kubeconfig', '--dry-run'], /^ferry: --kubeconfig: cannot load/m],
  ];
  await pool(cases, 8, async ([args, message]) => {
    const r = await ferry(args);
    t.equal(r.exitCode, 1, `${args.join(' ')} exits 1 (got ${r.exitCode})`);
    t.match(r.stderr, message, `${args.join(' ')}: ${r.stderr.trim().split('\n')[0]}`);
  });
});

// Every refused flag goes through the same commander path; test/unit/config/flags.test.ts walks
// the whole list in-process. As real processes, one of each kind keeps this test quick.
const SAMPLE = [
  'ipvs-scheduler', 'ipvs-strict-arp', 'cleanup-ipvs', 'udp-timeout', 'sync-period',
  'windows-service', 'log_dir', 'logtostderr', 'vmodule',
];

t.test('kube-proxy flags ferry does not implement are refused by name', async (t) => {
  for (const name of SAMPLE) t.ok(UNSUPPORTED_KUBE_PROXY_FLAGS.includes(name), `--${name} is in the refused list`);
  await pool(SAMPLE, 4, async (name) => {
    const r = await ferry([`--${name}=1`, '--dry-run']);
    t.equal(r.exitCode, 1, `--${name} exits 1 (got ${r.exitCode})`);
    t.equal(r.stderr.trim(), `ferry: kube-proxy flag --${name} is not implemented by ferry: ${REFUSED_KUBE_PROXY_FLAGS[name]}`, `--${name}`);
  });
});

t.test('--help lists the flags and exits 0', async (t) => {
  const r = await ferry(['--help']);
  t.equal(r.exitCode, 0);
  for (const f of ['--kubeconfig', '--master', '--proxy-mode', '--cluster-cidr', '--nodeport-addresses', '--masquerade-all', '--config', '--healthz-bind-address', '--metrics-bind-address', '--bind-address', '--cleanup', '--iptables-sync-period', '--iptables-min-sync-period', '--hostname-override', '--dry-run', '--proxy-mode-fallback', '-v, --v']) {
    t.ok(r.stdout.includes(f), `help mentions ${f}`);
  }
  t.match(r.stdout, /--healthz-bind-address <ip:port>.*\(default: 0\.0\.0\.0:10256\)/);
});

t.test('a config file with an unknown field: warned about by name and ignored, as kube-proxy\'s lenient decoding', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-e2e-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'old.yaml');
  writeFileSync(file, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nudpIdleTimeout: 250ms\nnftables:\n  minSyncPeriods: 1s\n');
  // --write-config-to: the file is read and resolved, and ferry exits before touching anything.
  const out = join(dir, 'written.yaml');
  const r = await ferry(['--config', file, '--write-config-to', out]);
  t.equal(r.exitCode, 0, `the rest of the file is used (stderr: ${r.stderr})`);
  t.match(r.stderr, /using lenient decoding of the config file as kube-proxy does: these fields are ignored .*fields="udpIdleTimeout \(unknown field\); nftables\.minSyncPeriods \(unknown field\)"/, 'one warning names each unknown field');
  t.notMatch(readFileSync(out, 'utf8'), /udpIdleTimeout|minSyncPeriods/, 'and nothing of them is carried into the written config');
});

t.test("--healthz-port and --metrics-port: kube-proxy's deprecated flags, accepted with its warning", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-e2e-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'written.yaml');
  const r = await ferry(['--metrics-port=0', '--healthz-port=10256', '--write-config-to', out]);
  t.equal(r.exitCode, 0, `accepted (stderr: ${r.stderr})`);
  t.match(r.stderr, /Flag --metrics-port has been deprecated, This flag is deprecated and will be removed in a future release\. Please use --metrics-bind-address instead\./);
  t.match(r.stderr, /Flag --healthz-port has been deprecated/);
});

/**
 * A simulated API server, a kubeconfig for it and a KubeProxyConfiguration of `lines` (after its
 * apiVersion, kind and clientConnection) in a directory of the test's own; the server, the
 * directory and the ferry the test starts (`started`) go with the test.
 */
async function withConfig(t: Test, lines: readonly string[]): Promise<{ kubeconfig: string; config: string; started(p: FerryProc): FerryProc }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-e2e-cli-'));
  const api = await startApiServer({ serviceCIDRs: ['198.18.0.0/20'] });
  let proc: FerryProc | undefined;
  t.teardown(async () => {
    await proc?.stop('SIGKILL');
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const kubeconfig = join(dir, 'kubeconfig');
  api.writeKubeconfig(kubeconfig);
  const config = join(dir, 'proxy.yaml');
  writeFileSync(config, ['apiVersion: kubeproxy.config.k8s.io/v1alpha1', 'kind: KubeProxyConfiguration', `clientConnection: {kubeconfig: ${kubeconfig}}`, ...lines].join('\n'));
  return { kubeconfig, config, started: (p) => (proc = p) };
}

t.test('--config is applied and explicit flags override it', async (t) => {
  const { kubeconfig, config, started } = await withConfig(t, [
    'hostnameOverride: from-file',
    'clusterCIDR: 198.18.128.0/17',
    'mode: nftables',
    'nftables: {masqueradeAll: true, minSyncPeriod: 100ms}',
    `metricsBindAddress: 127.0.0.1:${await freePort()}`,
    'healthzBindAddress: ""',
  ]);
  await run(['kubectl', '--kubeconfig', kubeconfig, 'apply', '-f', '-'], {
    input: 'apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n',
    timeoutMs: 30_000,
  });
  const p = started(new FerryProc(['--config', config, '--hostname-override', 'node-1', '--masquerade-all=false', '--dry-run', '--healthz-bind-address', `127.0.0.1:${await freePort()}`]));
  const line = await waitFor('the first plan', () => p.last(), () => `exit=${p.exitCode}; stderr:\n${p.tail()}`);
  const table = line.families['4'];
  t.equal(table.nodeName, 'node-1', '--hostname-override beats hostnameOverride');
  t.equal(table.masqueradeAll, false, '--masquerade-all=false beats nftables.masqueradeAll');
  t.same(table.localTraffic, { kind: 'clusterCIDR', cidrs: ['198.18.128.0/17'] }, 'clusterCIDR from the file');
  t.match(p.stderr, /starting ferry node=node-1 mode=nftables backend=dry-run .* minSyncPeriod=100ms/, 'minSyncPeriod from the file');
  t.equal(await p.stop('SIGTERM'), 0);
});

t.test('serviceProxyName from the config file: only the Services labelled with it are proxied', async (t) => {
  const { kubeconfig, config, started } = await withConfig(t, ['serviceProxyName: ferry']);
  const service = (name: string, label?: string) =>
    `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: default${label ? `, labels: {service.kubernetes.io/service-proxy-name: ${label}}` : ''}}\nspec: {ports: [{port: 80, protocol: TCP}]}\n`;
  // All three exist before ferry starts, so its first plan has seen every one of them.
  await run(['kubectl', '--kubeconfig', kubeconfig, 'apply', '-f', '-'], {
    input: ['apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n', service('mine', 'ferry'), service('plain'), service('theirs', 'other')].join('---\n'),
    timeoutMs: 30_000,
  });
  const p = started(new FerryProc(['--config', config, '--hostname-override', 'node-1', '--dry-run', '--healthz-bind-address', `127.0.0.1:${await freePort()}`, '--metrics-bind-address', `127.0.0.1:${await freePort()}`]));
  const line = await waitFor('the first plan', () => p.last(), () => `exit=${p.exitCode}; stderr:\n${p.tail()}`);
  t.same([...entries(line).keys()], ['default/mine:/TCP@4'], 'the labelled Service, and neither the unlabelled one nor another proxy\'s');
  t.equal(await p.stop('SIGTERM'), 0);
});
