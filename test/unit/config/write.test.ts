// --write-config-to: the written KubeProxyConfiguration has every v1alpha1 field kubeadm writes,
// and loading it back yields the same configuration (less the flag-only settings).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { parseConfigFile } from '../../../src/config/file.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import { formatKubeProxyConfiguration } from '../../../src/config/write.js';
import type { ProxyConfig } from '../../../src/config/types.js';

const dir = fileURLToPath(new URL('../../../../test/unit/config/fixtures/', import.meta.url));
const HOST = 'Host-A';

const resolve = (flags: Record<string, string | boolean>, text?: string): ProxyConfig =>
  resolveConfig({ flags: new Map(Object.entries(flags)), file: text === undefined ? undefined : parseConfigFile(text, 'in.yaml'), hostname: HOST });

/** Writes `c`, loads the result, and returns both. */
function roundTrip(c: ProxyConfig): { text: string; back: ProxyConfig } {
  const text = formatKubeProxyConfiguration(c, HOST);
  return { text, back: resolve({}, text) };
}

/** What a file cannot carry: flags only. */
function fileable(c: ProxyConfig): Omit<ProxyConfig, 'master' | 'dryRun' | 'cleanup' | 'initOnly' | 'modeFallback' | 'writeConfigTo' | 'ignored'> {
  const { master: _m, dryRun: _d, cleanup: _c, initOnly: _i, modeFallback: _f, writeConfigTo: _w, ignored: _g, ...rest } = c;
  return rest;
}

t.test('the written file spells out the same fields as kubeadm, in the same order', async (t) => {
  const { text } = roundTrip(resolve({}));
  const kubeadm = parse(readFileSync(dir + 'kubeadm-1.34.yaml', 'utf8')) as Record<string, unknown>;
  const written = parse(text) as Record<string, unknown>;
  const shape = (o: unknown): unknown =>
    o !== null && typeof o === 'object' && !Array.isArray(o) ? Object.fromEntries(Object.entries(o).map(([k, v]) => [k, shape(v)])) : 'leaf';
  const w = shape(written) as Record<string, unknown>;
  // ferry also names the log format, which kubeadm leaves out (omitempty).
  t.same(Object.keys(w), Object.keys(shape(kubeadm) as Record<string, unknown>), 'top-level fields and order');
  t.same({ ...(w.logging as object), format: undefined }, { ...((shape(kubeadm) as Record<string, object>).logging), format: undefined });
  t.match(text, /^apiVersion: kubeproxy\.config\.k8s\.io\/v1alpha1\n/);
  // nftables mode's default, spelled out: the file means the same in iptables mode too.
  t.match(text, /\nnodePortAddresses:\n {2}- primary\n/);
  t.match(roundTrip(resolve({ 'proxy-mode': 'iptables' })).text, /\nnodePortAddresses: null\n/);
});

t.test('round trip: defaults, a busy command line, every kubeadm fixture', async (t) => {
  const cases: [string, ProxyConfig][] = [
    ['defaults', resolve({})],
    [
      'flags',
      resolve({
        'proxy-mode': 'iptables',
        'cluster-cidr': '10.244.0.0/16,fd00:10:244::/56',
        'nodeport-addresses': '192.0.2.0/24',
        'masquerade-all': true,
        'iptables-masquerade-bit': '9',
        'iptables-localhost-nodeports': 'false',
        'bind-address': '2001:db8::5',
        'metrics-bind-address': '[::1]:11249',
        'hostname-override': 'node-7',
        'iptables-sync-period': '1m',
        'iptables-min-sync-period': '250ms',
        'conntrack-max-per-core': '0',
        'conntrack-tcp-timeout-close-wait': '0s',
        'conntrack-tcp-be-liberal': true,
        'conntrack-udp-timeout': '30s',
        'oom-score-adj': '-500',
        'detect-local-mode': 'InterfaceNamePrefix',
        'pod-interface-name-prefix': 'veth',
        'config-sync-period': '5m',
        kubeconfig: '/etc/k',
        v: '3',
      }),
    ],
    ['nodeport primary, bridge', resolve({ 'nodeport-addresses': 'primary', 'detect-local-mode': 'BridgeInterface', 'pod-bridge-interface': 'cbr0' })],
    ...['1.30', '1.31', '1.32', '1.33', '1.34'].map((v): [string, ProxyConfig] => [`kubeadm ${v}`, resolve({}, readFileSync(dir + `kubeadm-${v}.yaml`, 'utf8'))]),
    ['kind', resolve({}, readFileSync(dir + 'kind.yaml', 'utf8'))],
  ];
  for (const [name, c] of cases) {
    const { back } = roundTrip(c);
    t.same(fileable(back), fileable(c), name);
  }
});

t.test('the node name is written only when it is an override', async (t) => {
  t.match(roundTrip(resolve({})).text, /\nhostnameOverride: ""\n/);
  t.match(roundTrip(resolve({ 'hostname-override': 'n9' })).text, /\nhostnameOverride: n9\n/);
});

t.test('what a file cannot carry is refused by name', async (t) => {
  t.throws(() => formatKubeProxyConfiguration(resolve({ 'metrics-bind-address': '' }), HOST), { field: '--write-config-to', message: /a disabled --metrics-bind-address cannot be expressed/ });
  t.throws(() => formatKubeProxyConfiguration(resolve({ 'healthz-bind-address': '' }), HOST), /a disabled --healthz-bind-address/);
  t.throws(() => formatKubeProxyConfiguration(resolve({ 'iptables-min-sync-period': '0' }), HOST), /--iptables-min-sync-period 0 cannot be expressed/);
});

t.test('loading the written file lists nothing as ignored', async (t) => {
  t.same(roundTrip(resolve({ 'kube-api-qps': '50', 'feature-gates': 'A=true' })).back.ignored, []);
});
