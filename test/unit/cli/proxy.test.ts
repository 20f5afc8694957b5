// The proxy command's parsing as kube-proxy's pflag does it — repeated slice flags, deprecated
// flags — and the warnings configFromFlags logs. Nothing here runs the proxy's action: a
// combination that must be refused (--cleanup --dry-run) is checked through configFromFlags,
// which the action calls before any cleanup code.
import t from 'tap';
import { Command } from 'commander';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFromFlags, explicitFlags, registerProxy } from '../../../src/cli/proxy.js';
import { ConfigError } from '../../../src/config/types.js';
import { setLogSink } from '../../../src/util/log.js';

async function parse(argv: string[]): Promise<Map<string, string | boolean>> {
  const program = new Command('ferry').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerProxy(program);
  let got = new Map<string, string | boolean>();
  program.action((_o: unknown, cmd: Command) => {
    got = new Map(explicitFlags(cmd));
  });
  await program.parseAsync(argv, { from: 'user' });
  return got;
}

/** Runs fn with the log captured; returns its result and the lines. */
function captureLog<T>(fn: () => T): { result: T; lines: string[] } {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  try {
    return { result: fn(), lines };
  } finally {
    setLogSink((l) => process.stderr.write(l + '\n'));
  }
}

t.test('--nodeport-addresses given twice appends, as a pflag StringSlice', async (t) => {
  const flags = await parse(['--nodeport-addresses', '10.0.0.0/8', '--nodeport-addresses=192.168.0.0/16,fd00::/64']);
  t.equal(flags.get('nodeport-addresses'), '10.0.0.0/8,192.168.0.0/16,fd00::/64');
  t.same(configFromFlags(flags, 'h').nodePortAddresses, { kind: 'cidrs', cidrs: ['10.0.0.0/8', '192.168.0.0/16', 'fd00::/64'] });
  const empty = await parse(['--nodeport-addresses=', '--nodeport-addresses', '10.0.0.0/8', '--nodeport-addresses=']);
  t.same(configFromFlags(empty, 'h').nodePortAddresses, { kind: 'cidrs', cidrs: ['10.0.0.0/8'] }, 'an empty use adds nothing');
  const onlyEmpty = await parse(['--nodeport-addresses=']);
  t.same(configFromFlags(onlyEmpty, 'h').nodePortAddresses, { kind: 'primary' }, "empty: the mode's default");
});

t.test('--feature-gates accumulates (MapStringBool); --cluster-cidr, a pflag string, keeps the last', async (t) => {
  const gates = await parse(['--feature-gates=A=true', '--feature-gates', 'B=maybe']);
  t.equal(gates.get('feature-gates'), 'A=true,B=maybe');
  t.throws(() => configFromFlags(gates, 'h'), /--feature-gates: "maybe" is not a boolean/, 'every use is validated');
  const cidr = await parse(['--cluster-cidr', '10.1.0.0/16', '--cluster-cidr', '10.2.0.0/16']);
  t.same(configFromFlags(cidr, 'h').clusterCIDRs, ['10.2.0.0/16']);
});

t.test('--healthz-port and --metrics-port are accepted, deprecated, and logged as kube-proxy does', async (t) => {
  const flags = await parse(['--metrics-port=0', '--healthz-port', '0']);
  const { result, lines } = captureLog(() => configFromFlags(flags, 'h'));
  t.equal(result.metricsBindAddress, null);
  t.equal(result.healthzBindAddress, null);
  t.equal(lines.length, 2);
  t.match(lines[0], /^W.* proxy\] Flag --healthz-port has been deprecated, This flag is deprecated and will be removed in a future release\. Please use --healthz-bind-address instead\.$/);
  t.match(lines[1], /Flag --metrics-port has been deprecated, .*Please use --metrics-bind-address instead\./);
});

t.test('--cleanup --dry-run is refused by configFromFlags, which the action runs first', async (t) => {
  const flags = await parse(['--cleanup', '--dry-run']);
  t.throws(() => configFromFlags(flags, 'h'), ConfigError);
  t.throws(() => configFromFlags(flags, 'h'), /--cleanup: cannot be combined with --dry-run/);
});

t.test('a config file with unknown or duplicated fields loads, with one warning naming them', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'old.yaml');
  writeFileSync(file, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nudpIdleTimeout: 250ms\nconntrack:\n  max: 0\nmode: iptables\nmode: nftables\n');
  const { result, lines } = captureLog(() => configFromFlags(new Map([['config', file]]), 'h'));
  t.equal(result.mode, 'nftables');
  t.equal(lines.length, 1, 'once');
  t.match(lines[0], /^W.* proxy\] using lenient decoding of the config file as kube-proxy does: these fields are ignored file=\S+old\.yaml /);
  t.match(lines[0], /udpIdleTimeout \(unknown field\); conntrack\.max \(unknown field\); mode \(duplicate field, last value used\)/);
});

t.test('help: --iptables-min-sync-period says what its unset default does', async (t) => {
  const program = new Command('ferry');
  registerProxy(program);
  const help = program.helpInformation().replace(/\s+/g, ' ');
  t.match(help, /--iptables-min-sync-period <duration>.*\(default: unset: cost-aware, at most 1s\)/);
  t.notMatch(help, /--iptables-min-sync-period <duration>[^-]*\(default: 1s\)/);
});
