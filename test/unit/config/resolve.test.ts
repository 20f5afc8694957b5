import t from 'tap';
import { parseConfigFile } from '../../../src/config/file.js';
import { localhostNodePortsServed, resolveConfig } from '../../../src/config/resolve.js';
import { ConfigError } from '../../../src/config/types.js';

const flags = (o: Record<string, string | boolean> = {}) => new Map(Object.entries(o));
const resolve = (o: Record<string, string | boolean> = {}, fileText?: string) =>
  resolveConfig({ flags: flags(o), file: fileText === undefined ? undefined : parseConfigFile(fileText, 'test.yaml'), hostname: 'My-Host' });

/** Runs fn and returns the ConfigError it throws (fails the test when it does not). */
function configError(t: { fail(message: string): unknown }, fn: () => unknown): ConfigError | undefined {
  try {
    const got = fn();
    t.fail(`expected a ConfigError, got a result: ${JSON.stringify(got)}`);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    t.fail(`expected a ConfigError, got ${String(e)}`);
  }
  return undefined;
}

t.test('defaults match kube-proxy (with nftables as the mode)', async (t) => {
  const c = resolve();
  t.equal(c.mode, 'nftables');
  t.equal(c.nodeName, 'my-host', 'hostname lowercased');
  t.same(c.healthzBindAddress, { host: '0.0.0.0', port: 10256 });
  t.same(c.metricsBindAddress, { host: '127.0.0.1', port: 10249 });
  t.equal(c.syncPeriodMs, 30_000);
  t.equal(c.minSyncPeriodMs, 1000);
  t.same(c.nodePortAddresses, { kind: 'primary' }, "kube-proxy's nftables default (platformApplyDefaults)");
  t.same(resolve({ 'proxy-mode': 'iptables' }).nodePortAddresses, { kind: 'all' }, 'the other modes: every address');
  t.same(resolve({ 'proxy-mode': 'ebpf' }).nodePortAddresses, { kind: 'all' });
  t.same(resolve({ 'proxy-mode': 'userspace' }).nodePortAddresses, { kind: 'all' });
  t.same(c.clusterCIDRs, []);
  t.equal(c.masqueradeAll, false);
  t.equal(c.masqueradeBit, 14);
  t.equal(c.primaryFamily, undefined, '0.0.0.0 does not decide the family');
  t.equal(c.dryRun, false);
  t.equal(c.verbosity, 0);
});

t.test('flags are parsed and normalized', async (t) => {
  const c = resolve({
    'proxy-mode': 'iptables',
    'cluster-cidr': '10.244.0.7/16, fd00:10:244::/56',
    'nodeport-addresses': '192.0.2.0/24,2001:db8::/64',
    'masquerade-all': true,
    'hostname-override': ' Node-1 ',
    'bind-address': '2001:db8::5',
    'iptables-sync-period': '1m30s',
    'iptables-min-sync-period': '500ms',
    'dry-run': 'true',
    v: '=4',
    'proxy-mode-fallback': 'userspace',
    master: '198.51.100.1:6443',
  });
  t.equal(c.mode, 'iptables');
  t.same(c.clusterCIDRs, ['10.244.0.0/16', 'fd00:10:244::/56']);
  t.same(c.nodePortAddresses, { kind: 'cidrs', cidrs: ['192.0.2.0/24', '2001:db8::/64'] });
  t.equal(c.masqueradeAll, true);
  t.equal(c.nodeName, 'node-1');
  t.equal(c.primaryFamily, 6);
  t.same(c.healthzBindAddress, { host: '0.0.0.0', port: 10256 }, 'the flag does not move the default server addresses');
  t.same(c.metricsBindAddress, { host: '127.0.0.1', port: 10249 });
  t.equal(c.syncPeriodMs, 90_000);
  t.equal(c.minSyncPeriodMs, 500);
  t.equal(c.dryRun, true);
  t.equal(c.verbosity, 4);
  t.equal(c.modeFallback, 'userspace');
  t.equal(c.master, 'https://198.51.100.1:6443');
});

t.test('nodeport-addresses primary; empty addresses disable servers', async (t) => {
  const c = resolve({ 'nodeport-addresses': 'primary', 'healthz-bind-address': '', 'metrics-bind-address': '[::1]:9249' });
  t.same(c.nodePortAddresses, { kind: 'primary' });
  t.equal(c.healthzBindAddress, null);
  t.same(c.metricsBindAddress, { host: '::1', port: 9249 });
});

t.test('invalid values name the flag', async (t) => {
  const cases: [Record<string, string | boolean>, string, RegExp][] = [
    [{ 'proxy-mode': 'ipvs' }, '--proxy-mode', /"ipvs" is not supported by ferry \(nftables, iptables, ebpf, userspace\)/],
    [{ 'cluster-cidr': '10.0.0.0/33' }, '--cluster-cidr', /"10.0.0.0\/33" is not a valid CIDR/],
    [{ 'cluster-cidr': '10.0.0.0/8,10.1.0.0/16' }, '--cluster-cidr', /at most one IPv4 and one IPv6/],
    [{ 'nodeport-addresses': 'primary,10.0.0.0/8' }, '--nodeport-addresses', /"primary" cannot be combined/],
    [{ 'nodeport-addresses': 'eth0' }, '--nodeport-addresses', /not a valid CIDR/],
    [{ 'masquerade-all': 'yes' }, '--masquerade-all', /not a boolean/],
    [{ 'iptables-sync-period': '0s' }, '--iptables-sync-period', /must be greater than 0/],
    [{ 'iptables-sync-period': '10' }, '--iptables-sync-period', /not a duration/],
    [{ 'iptables-min-sync-period': '1m' }, '--iptables-min-sync-period', /less than or equal to the sync period/],
    [{ 'healthz-bind-address': '0.0.0.0:99999' }, '--healthz-bind-address', /invalid port/],
    [{ 'metrics-bind-address': 'localhost:10249' }, '--metrics-bind-address', /invalid IP address/],
    [{ 'bind-address': '10.0.0.300' }, '--bind-address', /not a valid IP/],
    [{ 'hostname-override': '   ' }, '--hostname-override', /empty hostname-override/],
    [{ 'iptables-masquerade-bit': '32' }, '--iptables-masquerade-bit', /\[0, 31\]/],
    [{ v: 'lots' }, '--v', /integer/],
    [{ 'proxy-mode-fallback': 'iptables' }, '--proxy-mode-fallback', /not supported/],
    [{ master: 'ftp://x' }, '--master', /not a valid http\(s\) URL/],
  ];
  for (const [input, field, message] of cases) {
    const e = configError(t, () => resolve(input));
    t.equal(e?.field, field, `${JSON.stringify(input)} is blamed on ${field}`);
    t.match(e?.message, message, `${JSON.stringify(input)}: ${e?.message}`);
  }
});

const FILE = `
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/proxy.conf
  qps: 5
mode: nftables
clusterCIDR: 10.244.0.0/16
hostnameOverride: file-node
healthzBindAddress: 127.0.0.1:11256
nodePortAddresses: [primary]
logging:
  verbosity: 2
nftables:
  syncPeriod: 45s
  minSyncPeriod: 2s
  masqueradeAll: true
iptables:
  syncPeriod: 10s
  minSyncPeriod: 0s
ipvs:
  scheduler: ""
conntrack:
  maxPerCore: null
  min: null
oomScoreAdj: null
featureGates: {}
`;

t.test("config file values are used, from the section of the file's mode", async (t) => {
  const c = resolve({}, FILE);
  t.equal(c.kubeconfig, '/etc/kubernetes/proxy.conf');
  t.equal(c.nodeName, 'file-node');
  t.same(c.clusterCIDRs, ['10.244.0.0/16']);
  t.same(c.healthzBindAddress, { host: '127.0.0.1', port: 11256 });
  t.same(c.nodePortAddresses, { kind: 'primary' });
  t.equal(c.verbosity, 2);
  t.equal(c.syncPeriodMs, 45_000, 'nftables.syncPeriod in nftables mode');
  t.equal(c.minSyncPeriodMs, 2000);
  t.equal(c.masqueradeAll, true);
  const ipt = resolve({ 'proxy-mode': 'iptables' }, FILE);
  t.equal(ipt.mode, 'iptables');
  t.equal(ipt.syncPeriodMs, 45_000, '--proxy-mode does not change the section: the file says nftables');
  t.equal(ipt.masqueradeAll, true);
  const iptFile = resolve({}, FILE.replace('mode: nftables', 'mode: iptables'));
  t.equal(iptFile.syncPeriodMs, 10_000, 'iptables.syncPeriod when the file says iptables');
  t.equal(iptFile.minSyncPeriodMs, 1000, 'a zero minSyncPeriod in the file means the default, as in kube-proxy');
  t.equal(iptFile.masqueradeAll, false);
});

t.test('explicit flags override the file; defaults of flags do not', async (t) => {
  const c = resolve({ 'hostname-override': 'flag-node', 'iptables-sync-period': '1m', 'masquerade-all': 'false', 'cluster-cidr': '10.0.0.0/8' }, FILE);
  t.equal(c.nodeName, 'flag-node');
  t.equal(c.syncPeriodMs, 60_000);
  t.equal(c.masqueradeAll, false);
  t.same(c.clusterCIDRs, ['10.0.0.0/8']);
  t.equal(c.minSyncPeriodMs, 2000, 'not given on the command line: the file wins');
  t.same(c.healthzBindAddress, { host: '127.0.0.1', port: 11256 });
});

t.test('config file errors name the field', async (t) => {
  const head = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
  const cases: [string, string, RegExp][] = [
    [head + 'conntrack:\n  maxPerCore: -1\n', 'conntrack.maxPerCore', /must be an integer in \[0, /],
    [head + 'conntrack:\n  tcpEstablishedTimeout: 500ms\n', 'conntrack.tcpEstablishedTimeout', /at least 1s/],
    [head + 'conntrack:\n  udpTimeout: -1s\n', 'conntrack.udpTimeout', /greater than or equal to 0/],
    [head + 'oomScoreAdj: 1001\n', 'oomScoreAdj', /\[-1000, 1000\]/],
    [head + 'featureGates:\n  Foo: maybe\n', 'featureGates', /map of names to true or false/],
    [head + 'enableProfiling: true\n', 'enableProfiling', /not implemented by ferry \(ferry has no \/debug\/pprof handler\)/],
    [head + 'logging:\n  format: json\n', 'logging.format', /not supported by ferry/],
    [head + 'logging:\n  vmodule: [{filePattern: x, verbosity: 2}]\n', 'logging.vmodule', /not implemented by ferry/],
    [head + 'detectLocalMode: Bridge\n', 'detectLocalMode', /not a detect-local mode/],
    [head + 'detectLocalMode: BridgeInterface\n', '--pod-bridge-interface', /must be set when the detect-local mode is BridgeInterface/],
    [head + 'detectLocalMode: InterfaceNamePrefix\n', '--pod-interface-name-prefix', /must be set/],
    [head + 'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: "a/b"}\n', 'detectLocal.bridgeInterface', /not a valid interface name/],
    [head + 'detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: "0123456789abcdef"}\n', 'detectLocal.interfaceNamePrefix', /1-15 characters/],
    [head + 'mode: ipvs\n', 'mode', /"ipvs" is not supported by ferry/],
    [head + 'clusterCIDR: 10.0.0.0/40\n', 'clusterCIDR', /not a valid CIDR/],
    [head + 'nftables:\n  syncPeriod: 5\n', 'nftables.syncPeriod', /must be a duration/],
    [head + 'nftables:\n  syncPeriod: fast\n', 'nftables.syncPeriod', /not a duration/],
    [head + 'mode: iptables\nnftables:\n  minSyncPeriod: soon\n', 'nftables.minSyncPeriod', /"soon" is not a duration/],
    [head + 'ipvs:\n  tcpTimeout: 5\n', 'ipvs.tcpTimeout', /must be a duration/],
    [head + 'conntrack:\n  max: 5\nconntrack:\n  min: x\n', 'conntrack.min', /must be an integer/],
    [head + 'healthzBindAddress: 0.0.0.0:0\n', 'healthzBindAddress', /invalid port \(1-65535\)/],
    [head + 'metricsBindAddress: "[::1]:0"\n', 'metricsBindAddress', /invalid port \(1-65535\)/],
    [head + 'clusterCIDR: "10.0.0.0/8,"\n', 'clusterCIDR', /has an empty entry/],
    [head + 'nodePortAddresses: ["10.0.0.0/8", ""]\n', 'nodePortAddresses', /has an empty entry/],
    [head + 'bindAddress: 10.0.0.300\n', 'bindAddress', /not a valid IP/],
    [head + 'nftables:\n  masqueradeAll: "yes"\n', 'nftables.masqueradeAll', /true or false/],
    ['apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n', 'apiVersion', /not supported/],
    ['apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n', 'kind', /not supported/],
    ['{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": 3}', 'mode', /must be a string/],
    ['[1, 2]', '--config', /must hold a KubeProxyConfiguration/],
    ['a: [1,\n', '--config', /not valid YAML or JSON/],
  ];
  for (const [text, field, message] of cases) {
    const e = configError(t, () => resolve({}, text));
    t.equal(e?.field, field, `blamed on ${field}: ${e?.message}`);
    t.match(e?.message, message);
  }
});

t.test('detect-local modes: kube-proxy semantics from file and flags', async (t) => {
  const head = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
  t.same(resolve().detectLocal, { mode: 'ClusterCIDR' }, 'default');
  t.same(resolve({}, head + 'detectLocalMode: ""\n').detectLocal, { mode: 'ClusterCIDR' }, '"" is ClusterCIDR');
  t.same(resolve({}, head + 'detectLocalMode: NodeCIDR\n').detectLocal, { mode: 'NodeCIDR' });
  t.same(resolve({}, head + 'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n').detectLocal, { mode: 'BridgeInterface', bridgeInterface: 'cbr0' });
  t.same(resolve({ 'detect-local-mode': 'InterfaceNamePrefix', 'pod-interface-name-prefix': 'veth' }).detectLocal, { mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' });
  t.same(
    resolve({ 'pod-bridge-interface': 'br-pods' }, head + 'detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}\n').detectLocal,
    { mode: 'BridgeInterface', bridgeInterface: 'br-pods' },
    'flag beats file',
  );
  const e = configError(t, () => resolve({ 'detect-local-mode': 'LocalCIDR' }));
  t.equal(e?.field, '--detect-local-mode');
});

t.test('flags without effect are validated and listed; true is refused where ferry cannot do it', async (t) => {
  const cases: [Record<string, string | boolean>, string, RegExp][] = [
    [{ profiling: true }, '--profiling', /ferry has no \/debug\/pprof handler/],
    [{ 'feature-gates': 'Foo' }, '--feature-gates', /not key=true\|false/],
    [{ 'feature-gates': 'Foo=maybe' }, '--feature-gates', /not a boolean/],
    [{ 'kube-api-qps': 'fast' }, '--kube-api-qps', /not a number/],
    [{ 'kube-api-burst': '1.5' }, '--kube-api-burst', /integer/],
    [{ 'config-sync-period': '0s' }, '--config-sync-period', /greater than 0/],
    [{ 'logging-format': 'json' }, '--logging-format', /not supported by ferry/],
    [{ 'oom-score-adj': '-1001' }, '--oom-score-adj', /\[-1000, 1000\]/],
    [{ 'conntrack-min': 'x' }, '--conntrack-min', /integer/],
    [{ 'conntrack-udp-timeout-stream': '1' }, '--conntrack-udp-timeout-stream', /not a duration/],
    [{ 'iptables-localhost-nodeports': 'sometimes' }, '--iptables-localhost-nodeports', /not a boolean/],
  ];
  for (const [f, field, message] of cases) {
    const e = configError(t, () => resolve(f));
    t.equal(e?.field, field, `blamed on ${field}: ${e?.message}`);
    t.match(e?.message, message);
  }
  t.same(resolve({ profiling: 'false', 'feature-gates': '' }).ignored, [], 'zero values ask for nothing');
  t.match(resolve({ 'log-flush-frequency': '5s' }).ignored, [/^--log-flush-frequency \(ferry writes each log line unbuffered/]);
});

t.test('conntrack and oom defaults are kube-proxy\'s; 0 and 0s mean leave alone', async (t) => {
  const head = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
  const d = resolve();
  t.same(d.conntrack, { maxPerCore: 32768, min: 131072, tcpEstablishedTimeoutMs: 86_400_000, tcpCloseWaitTimeoutMs: 3_600_000, tcpBeLiberal: false, udpTimeoutMs: 0, udpStreamTimeoutMs: 0 });
  t.equal(d.oomScoreAdj, -999);
  t.equal(d.localhostNodePorts, true);
  const z = resolve({}, head + 'conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}\noomScoreAdj: 0\niptables: {localhostNodePorts: false}\n');
  t.match(z.conntrack, { maxPerCore: 0, tcpEstablishedTimeoutMs: 0, tcpCloseWaitTimeoutMs: 0 });
  t.equal(z.oomScoreAdj, 0);
  t.equal(z.localhostNodePorts, false);
  const f = resolve({}, head + 'conntrack: {maxPerCore: 65536, min: 1, tcpBeLiberal: true, udpTimeout: 30s, udpStreamTimeout: 2m}\n');
  t.match(f.conntrack, { maxPerCore: 65536, min: 1, tcpBeLiberal: true, udpTimeoutMs: 30_000, udpStreamTimeoutMs: 120_000 });
});

t.test('inert fields set to non-zero values are listed with the reason', async (t) => {
  const head = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';
  const c = resolve(
    {},
    head +
      'featureGates: {NFTablesProxyMode: true}\nwinkernel: {enableDSR: true}\nwindowsRunAsService: true\nportRange: 30000-32767\n' +
      'showHiddenMetricsForVersion: "1.33"\nipvs: {scheduler: rr, excludeCIDRs: [10.0.0.0/8]}\nlogging: {options: {text: {splitStream: true}}}\n',
  );
  t.same(
    c.ignored.map((i) => i.replace(/ \(.*$/, '')),
    ['featureGates', 'winkernel', 'windowsRunAsService', 'portRange', 'showHiddenMetricsForVersion', 'ipvs', 'logging.options'],
  );
  t.match(c.ignored[0], /featureGates \(ferry implements the GA behaviour/);
  t.match(c.ignored[5], /ipvs \(the ipvs proxy mode is not implemented by ferry\)/);
});

t.test('JSON config files work too', async (t) => {
  const c = resolve({}, JSON.stringify({ apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', mode: 'iptables', iptables: { syncPeriod: '20s' } }));
  t.equal(c.mode, 'iptables');
  t.equal(c.syncPeriodMs, 20_000);
});

t.test("localhost NodePorts only where nodePortAddresses takes 127.0.0.1 in, as kube-proxy's NewProxier", async (t) => {
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables' })), true, 'iptables mode, every address: served');
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables', 'nodeport-addresses': '10.0.0.0/8' })), false, 'a list without loopback: not served (no route_localnet)');
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables', 'nodeport-addresses': '10.0.0.0/8,127.0.0.0/8' })), true, 'loopback listed: served');
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables', 'nodeport-addresses': '::1/128' })), false, 'IPv6 loopback does not count');
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables', 'nodeport-addresses': 'primary' })), false, '`primary` is never loopback');
  t.equal(localhostNodePortsServed(resolve({ 'proxy-mode': 'iptables', 'iptables-localhost-nodeports': 'false' })), false, 'switched off');
  const c = resolve({ 'proxy-mode': 'iptables', 'nodeport-addresses': '10.0.0.0/8' });
  t.equal(c.localhostNodePorts, true, 'the setting itself stays as given (what --write-config-to writes)');
});
