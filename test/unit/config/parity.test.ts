// Flags and config-file fields whose meaning kube-proxy's sources decide (cmd/kube-proxy/app/
// options.go, pkg/proxy/apis/config/v1alpha1/{conversion,defaults}.go, validation.go), each
// against the rule it follows there.
import t from 'tap';
import { parseConfigFile } from '../../../src/config/file.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import { ConfigError } from '../../../src/config/types.js';

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
const resolve = (flags: Record<string, string | boolean> = {}, fileText?: string) =>
  resolveConfig({ flags: new Map(Object.entries(flags)), file: fileText === undefined ? undefined : parseConfigFile(fileText, 'test.yaml'), hostname: 'My-Host' });

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

t.test('--cleanup with --dry-run is refused, naming both, before anything runs', async (t) => {
  const e = configError(() => resolve({ cleanup: true, 'dry-run': true }));
  t.equal(e.field, '--cleanup');
  t.match(e.message, /--cleanup: cannot be combined with --dry-run/);
  t.equal(resolve({ cleanup: true, 'dry-run': 'false' }).cleanup, true, 'an explicit --dry-run=false is no conflict');
  t.equal(resolve({ cleanup: 'false', 'dry-run': true }).dryRun, true);
});

t.test('unknown and duplicated fields are ignored and reported, as kube-proxy\'s lenient decoding does', async (t) => {
  const text =
    HEAD +
    'udpIdleTimeout: 250ms\nconntrack:\n  max: 0\n  maxPerCore: 0\nnftables:\n  syncPerod: 1s\nipvs:\n  nope: 1\n' +
    'mode: iptables\nclusterCIDR: 10.1.0.0/16\nclusterCIDR: 10.2.0.0/16\n';
  const file = parseConfigFile(text, 'old.yaml');
  t.same(file.lenient, [
    'udpIdleTimeout (unknown field)',
    'conntrack.max (unknown field)',
    'nftables.syncPerod (unknown field)',
    'ipvs.nope (unknown field)',
    'clusterCIDR (duplicate field, last value used)',
  ]);
  const c = resolveConfig({ flags: new Map(), file, hostname: 'h' });
  t.same(c.clusterCIDRs, ['10.2.0.0/16'], 'the last of duplicated keys wins');
  t.equal(c.conntrack.maxPerCore, 0, 'known fields next to unknown ones are read');
  t.equal(c.mode, 'iptables');
  t.same(parseConfigFile(`{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": "iptables", "mode": "nftables"}`, 'j.json').lenient, [
    'mode (duplicate field, last value used)',
  ], 'JSON too');
  t.same(parseConfigFile(HEAD + 'mode: nftables\n', 'clean.yaml').lenient, [], 'a clean file reports nothing');
  // What kube-proxy's lenient decoder still refuses.
  t.equal(configError(() => resolve({}, HEAD + 'oomScoreAdj: "x"\nbogus: 1\n')).field, 'oomScoreAdj', 'a wrong type');
  t.equal(configError(() => resolve({}, 'a: [1,\n')).field, '--config', 'malformed YAML');
  t.equal(configError(() => resolve({}, 'apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n')).field, 'apiVersion');
  t.equal(configError(() => resolve({}, 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: Kubeproxyconfiguration\n')).field, 'kind');
});

t.test('--healthz-port and --metrics-port follow addressFromDeprecatedFlags', async (t) => {
  t.equal(resolve({ 'metrics-port': '0' }).metricsBindAddress, null, '0 disables the metrics server');
  t.equal(resolve({ 'healthz-port': '0' }).healthzBindAddress, null, '0 disables the healthz server');
  t.same(resolve({ 'healthz-port': '12345', 'healthz-bind-address': '0.0.0.0' }).healthzBindAddress, { host: '0.0.0.0', port: 12345 }, 'appended to an address without a port');
  t.same(resolve({ 'metrics-port': '9999', 'metrics-bind-address': '::1' }).metricsBindAddress, { host: '::1', port: 9999 });
  const alone = resolve({ 'healthz-port': '12345' });
  t.same(alone.healthzBindAddress, { host: '0.0.0.0', port: 10256 }, 'the default address has a port, which kube-proxy keeps');
  t.match(alone.ignored, [/^--healthz-port \(deprecated; --healthz-bind-address already has a port/]);
  const withFile = resolve({ 'metrics-port': '0' }, HEAD);
  t.same(withFile.metricsBindAddress, { host: '127.0.0.1', port: 10249 }, 'ignored with --config');
  t.match(withFile.ignored, [/^--metrics-port \(deprecated; kube-proxy applies it only without --config and --write-config-to\)/]);
  t.same(resolve({ 'metrics-port': '0', 'write-config-to': '/tmp/x.yaml' }).metricsBindAddress, { host: '127.0.0.1', port: 10249 }, 'and with --write-config-to');
  t.match(configError(() => resolve({ 'healthz-port': 'x' })).message, /--healthz-port: "x" must be an integer/);
  t.match(configError(() => resolve({ 'healthz-port': '70000', 'healthz-bind-address': '0.0.0.0' })).message, /--healthz-port: "70000" is not a valid port/);
});

t.test('server addresses need a port from 1 to 65535, as validateHostPort', async (t) => {
  for (const [flag, value] of [['healthz-bind-address', '0.0.0.0:0'], ['metrics-bind-address', '[::1]:0'], ['metrics-bind-address', '127.0.0.1:65536']]) {
    const e = configError(() => resolve({ [flag]: value }));
    t.equal(e.field, `--${flag}`);
    t.match(e.message, /has an invalid port \(1-65535\)/);
  }
  t.same(resolve({ 'healthz-bind-address': '0.0.0.0:65535' }).healthzBindAddress, { host: '0.0.0.0', port: 65535 });
});

t.test('--hostname-override: empty is unset; whitespace only is refused as kube-proxy does', async (t) => {
  t.equal(resolve({ 'hostname-override': '' }).nodeName, 'my-host', 'the hostname');
  t.equal(resolve({ 'hostname-override': '' }, HEAD + 'hostnameOverride: File-Node\n').nodeName, 'file-node', "the file's hostnameOverride");
  t.match(configError(() => resolve({ 'hostname-override': ' \t' })).message, /--hostname-override: empty hostname-override is invalid/);
});

t.test('an empty --nodeport-addresses is the mode\'s default', async (t) => {
  t.same(resolve({ 'nodeport-addresses': '' }).nodePortAddresses, { kind: 'primary' }, 'nftables: primary');
  t.same(resolve({ 'nodeport-addresses': '', 'proxy-mode': 'iptables' }).nodePortAddresses, { kind: 'all' }, 'iptables: all');
  t.same(resolve({}, HEAD + 'nodePortAddresses: []\n').nodePortAddresses, { kind: 'primary' });
  t.match(configError(() => resolve({ 'nodeport-addresses': '10.0.0.0/8,' })).message, /--nodeport-addresses: "10.0.0.0\/8," has an empty entry/);
});

t.test('--cluster-cidr with an empty entry is refused', async (t) => {
  for (const v of ['10.0.0.0/8,', ',10.0.0.0/8', '10.0.0.0/8,,fd00::/64']) {
    const e = configError(() => resolve({ 'cluster-cidr': v }));
    t.equal(e.field, '--cluster-cidr');
    t.match(e.message, /has an empty entry/);
  }
  t.same(resolve({ 'cluster-cidr': '' }).clusterCIDRs, [], 'an empty value is no CIDR (unset)');
});

t.test('default server addresses follow the file\'s bindAddress, never the flag', async (t) => {
  const flagsOnly = resolve({ 'bind-address': 'fd00::5' });
  t.equal(flagsOnly.primaryFamily, 6);
  t.same(flagsOnly.healthzBindAddress, { host: '0.0.0.0', port: 10256 });
  t.same(flagsOnly.metricsBindAddress, { host: '127.0.0.1', port: 10249 }, "kube-proxy's defaults are set before its flags are parsed");
  const file6 = resolve({}, HEAD + 'bindAddress: "fd00::5"\n');
  t.same(file6.healthzBindAddress, { host: '::', port: 10256 });
  t.same(file6.metricsBindAddress, { host: '::1', port: 10249 }, "the file's defaulting (getDefaultAddresses)");
  const fileAndFlag = resolve({ 'bind-address': 'fd00::5' }, HEAD + 'bindAddress: 0.0.0.0\n');
  t.equal(fileAndFlag.primaryFamily, 6, 'the flag still sets the primary family');
  t.same(fileAndFlag.metricsBindAddress, { host: '127.0.0.1', port: 10249 }, "defaults from the file's bindAddress");
});
