import t from 'tap';
import { Command } from 'commander';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFromFlags, explicitFlags, registerProxy } from '../../../src/cli/proxy.js';
import { PROXY_FLAGS, REFUSED_KUBE_PROXY_FLAGS, UNSUPPORTED_KUBE_PROXY_FLAGS } from '../../../src/config/flags.js';
import { UnsupportedFlagError } from '../../../src/config/types.js';

/** Parses argv with the real proxy options; returns the explicit flags or the error. */
async function parse(argv: string[]): Promise<Map<string, string | boolean> | Error> {
  const program = new Command('ferry').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerProxy(program);
  let got: Map<string, string | boolean> | Error = new Error('action did not run');
  program.action((_o: unknown, cmd: Command) => {
    try {
      got = new Map(explicitFlags(cmd));
    } catch (e) {
      got = e as Error;
    }
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    return e as Error;
  }
  return got;
}

t.test('only flags given on the command line are explicit', async (t) => {
  const got = await parse(['--proxy-mode=iptables', '--masquerade-all', '-v', '3', '--dry-run=false', '--kubeconfig', '/k']);
  if (got instanceof Error) throw got;
  t.same(Object.fromEntries(got), { 'proxy-mode': 'iptables', 'masquerade-all': true, v: '3', 'dry-run': 'false', kubeconfig: '/k' });
});

t.test('every unimplemented kube-proxy flag is refused by name', async (t) => {
  for (const name of UNSUPPORTED_KUBE_PROXY_FLAGS) {
    for (const argv of [[`--${name}`], [`--${name}=1`], [`--${name}`, 'x']]) {
      const got = await parse(argv);
      t.ok(got instanceof UnsupportedFlagError, `${argv.join(' ')} → UnsupportedFlagError (got ${got instanceof Error ? got.message : 'success'})`);
      if (got instanceof Error) t.equal(got.message, `kube-proxy flag --${name} is not implemented by ferry: ${REFUSED_KUBE_PROXY_FLAGS[name]}`);
    }
  }
});

// The old message sent an operator of userspace mode to --conntrack-udp-timeout, which does not
// touch userspace mode's sessions.
t.test('--udp-timeout is refused with what userspace mode does instead', async (t) => {
  const got = await parse(['--udp-timeout=5s']);
  t.ok(got instanceof UnsupportedFlagError);
  t.match(got instanceof Error ? got.message : '', /userspace mode keeps idle UDP sessions 30s.*--conntrack-udp-timeout sets only the conntrack sysctl/);
});

t.test('no flag is both accepted and refused', async (t) => {
  for (const f of PROXY_FLAGS) t.notOk(UNSUPPORTED_KUBE_PROXY_FLAGS.includes(f.name), `--${f.name}`);
});

t.test("kube-proxy's flags with meaning are accepted; those without are accepted and listed as ignored", async (t) => {
  const got = await parse([
    '--conntrack-max-per-core=0', '--conntrack-min', '1000', '--conntrack-tcp-timeout-established=0s',
    '--conntrack-tcp-timeout-close-wait', '30s', '--conntrack-tcp-be-liberal', '--conntrack-udp-timeout=15s',
    '--conntrack-udp-timeout-stream=2m', '--oom-score-adj=-998', '--detect-local-mode=NodeCIDR',
    '--iptables-localhost-nodeports=false', '--feature-gates=Foo=true,Bar=false', '--kube-api-qps=50',
    '--kube-api-burst=100', '--kube-api-content-type=application/json', '--profiling=false',
    '--show-hidden-metrics-for-version=1.33', '--bind-address-hard-fail', '--logging-format=text',
    '--config-sync-period=5m', '--init-only',
  ]);
  if (got instanceof Error) throw got;
  const c = configFromFlags(got, 'host-a');
  t.same(c.conntrack, { maxPerCore: 0, min: 1000, tcpEstablishedTimeoutMs: 0, tcpCloseWaitTimeoutMs: 30_000, tcpBeLiberal: true, udpTimeoutMs: 15_000, udpStreamTimeoutMs: 120_000 });
  t.equal(c.oomScoreAdj, -998);
  t.same(c.detectLocal, { mode: 'NodeCIDR' });
  t.equal(c.localhostNodePorts, false);
  t.equal(c.initOnly, true);
  t.same(
    c.ignored.map((i) => i.replace(/ \(.*$/, '')).sort(),
    ['--bind-address-hard-fail', '--config-sync-period', '--feature-gates', '--kube-api-burst', '--kube-api-content-type', '--kube-api-qps', '--show-hidden-metrics-for-version'],
  );
});

t.test('unknown flags are errors', async (t) => {
  const got = await parse(['--no-such-flag']);
  t.ok(got instanceof Error && /unknown option '--no-such-flag'/.test(got.message), `got ${String(got)}`);
});

t.test('help lists every flag with its default', async (t) => {
  const program = new Command('ferry');
  registerProxy(program);
  const help = program.helpInformation();
  for (const f of PROXY_FLAGS) {
    if (f.deprecated !== undefined) {
      t.notOk(help.includes(`--${f.name}`), `deprecated --${f.name} is hidden, as pflag hides it`);
      continue;
    }
    t.ok(help.includes(`--${f.name}`), `--${f.name} in help`);
    if (f.ignoredBecause) t.ok(help.includes(`no effect: ${f.ignoredBecause}`), `--${f.name} says why it has no effect`);
    if (f.defaultText !== undefined) t.ok(help.includes(`(default: ${f.defaultText})`), `default of --${f.name} in help`);
  }
  t.notOk(help.includes('--ipvs-scheduler [value]'), 'refused flags are hidden');
});

t.test('--config is read and overridden by explicit flags', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'proxy.yaml');
  writeFileSync(
    file,
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nclusterCIDR: 10.1.0.0/16\niptables:\n  syncPeriod: 40s\n',
  );
  const got = await parse(['--config', file, '--proxy-mode', 'nftables']);
  if (got instanceof Error) throw got;
  const c = configFromFlags(got, 'host-a');
  t.equal(c.mode, 'nftables', 'flag beats file');
  t.same(c.clusterCIDRs, ['10.1.0.0/16'], 'file beats default');
  t.equal(c.syncPeriodMs, 40_000, "the section of the file's own mode (iptables), whatever --proxy-mode says");
  t.throws(() => configFromFlags(new Map([['config', join(dir, 'missing.yaml')]]), 'h'), /--config: cannot read/);
});
