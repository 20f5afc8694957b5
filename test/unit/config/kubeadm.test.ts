// Every KubeProxyConfiguration kubeadm 1.30–1.34 writes, a kind cluster's, and kube-proxy's own
// fully defaulted one load unchanged through the real loader (file.ts + resolve.ts), and the
// fields that mean something to ferry come through. The fixtures say where each came from.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseConfigFile } from '../../../src/config/file.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import type { ProxyConfig } from '../../../src/config/types.js';

const dir = fileURLToPath(new URL('../../../../test/unit/config/fixtures/', import.meta.url));

function load(name: string, flags: Record<string, string | boolean> = {}): ProxyConfig {
  const file = parseConfigFile(readFileSync(dir + name, 'utf8'), name);
  return resolveConfig({ flags: new Map(Object.entries(flags)), file, hostname: 'node-a' });
}

/** kube-proxy's defaults for every null or 0s kubeadm leaves in its file. */
const KUBE_PROXY_DEFAULTS = {
  conntrack: {
    maxPerCore: 32768,
    min: 131072,
    tcpEstablishedTimeoutMs: 24 * 3600_000,
    tcpCloseWaitTimeoutMs: 3600_000,
    tcpBeLiberal: false,
    udpTimeoutMs: 0,
    udpStreamTimeoutMs: 0,
  },
  oomScoreAdj: -999,
  localhostNodePorts: true,
  detectLocal: { mode: 'ClusterCIDR' },
  syncPeriodMs: 30_000,
  minSyncPeriodMs: 1000,
  masqueradeBit: 14,
  masqueradeAll: false,
  configSyncPeriodMs: 15 * 60_000,
  // mode "" is ferry's default, nftables, whose default is kube-proxy's nftables one.
  nodePortAddresses: { kind: 'primary' },
  serviceProxyName: '',
  verbosity: 0,
  ignored: [],
};

const KUBEADM: Record<string, { clusterCIDRs: string[]; v6: boolean }> = {
  '1.30': { clusterCIDRs: ['10.244.0.0/16'], v6: false },
  '1.31': { clusterCIDRs: [], v6: false },
  '1.32': { clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'], v6: false },
  '1.33': { clusterCIDRs: ['fd00:10:244::/56'], v6: true },
  '1.34': { clusterCIDRs: ['192.168.0.0/16'], v6: false },
};

for (const [version, want] of Object.entries(KUBEADM)) {
  t.test(`kubeadm ${version}'s default KubeProxyConfiguration loads unchanged`, async (t) => {
    const c = load(`kubeadm-${version}.yaml`);
    t.match(c, KUBE_PROXY_DEFAULTS, 'nulls and zero values take kube-proxy defaults; nothing is ignored');
    t.equal(c.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf');
    t.equal(c.mode, 'nftables', 'mode "" → ferry default');
    t.same(c.clusterCIDRs, want.clusterCIDRs, 'clusterCIDR from networking.podSubnet');
    t.equal(c.nodeName, 'node-a', 'hostnameOverride "" → the hostname');
    t.equal(c.bindAddress, want.v6 ? '::' : '0.0.0.0');
    t.equal(c.primaryFamily, undefined, 'an unspecified bind address does not decide the family');
    t.same(c.healthzBindAddress, want.v6 ? { host: '::', port: 10256 } : { host: '0.0.0.0', port: 10256 }, 'healthzBindAddress "" → default of the family');
    t.same(c.metricsBindAddress, want.v6 ? { host: '::1', port: 10249 } : { host: '127.0.0.1', port: 10249 });
  });
}

t.test("kind's kube-proxy ConfigMap loads unchanged", async (t) => {
  const c = load('kind.yaml');
  t.equal(c.mode, 'iptables');
  t.equal(c.minSyncPeriodMs, 1000, 'iptables.minSyncPeriod 1s');
  t.equal(c.conntrack.maxPerCore, 0, 'maxPerCore 0: nf_conntrack_max left alone');
  t.equal(c.conntrack.tcpEstablishedTimeoutMs, 24 * 3600_000, 'null timeouts still take the defaults');
  t.same(c.clusterCIDRs, ['10.244.0.0/16']);
  t.same(c.ignored, []);
});

t.test("kube-proxy's fully defaulted configuration loads; what has no effect is listed once", async (t) => {
  const c = load('kube-proxy-1.34-write-config-to.yaml');
  t.equal(c.mode, 'iptables');
  t.match(c, { ...KUBE_PROXY_DEFAULTS, nodePortAddresses: { kind: 'all' }, ignored: c.ignored }, 'iptables mode: NodePorts on every address');
  t.same(c.metricsBindAddress, { host: '127.0.0.1', port: 10249 });
  t.same(
    c.ignored.map((i) => i.replace(/ \(.*$/, '')).sort(),
    ['clientConnection.burst', 'clientConnection.contentType', 'clientConnection.qps', 'configSyncPeriod', 'ipvs', 'logging.flushFrequency'].sort(),
    'the inert fields set to non-zero values, each once (ipvs by its root)',
  );
  for (const i of c.ignored) t.match(i, /^\S+ \(.+\)$/, `a reason is given: ${i}`);
});

t.test('explicit flags still override a kubeadm file', async (t) => {
  const c = load('kubeadm-1.34.yaml', { 'conntrack-max-per-core': '0', 'oom-score-adj': '-500', 'detect-local-mode': 'NodeCIDR' });
  t.equal(c.conntrack.maxPerCore, 0);
  t.equal(c.oomScoreAdj, -500);
  t.same(c.detectLocal, { mode: 'NodeCIDR' });
});

t.test('kubeadm\'s mode "" reads the iptables section, as kube-proxy\'s conversion does, though ferry runs nftables', async (t) => {
  const text = readFileSync(dir + 'kubeadm-1.34.yaml', 'utf8')
    .replace('iptables:\n  localhostNodePorts: null\n  masqueradeAll: false\n  masqueradeBit: null\n  minSyncPeriod: 0s\n  syncPeriod: 0s\n',
      'iptables:\n  localhostNodePorts: null\n  masqueradeAll: true\n  masqueradeBit: 12\n  minSyncPeriod: 2s\n  syncPeriod: 45s\n')
    .replace('nftables:\n  masqueradeAll: false\n  masqueradeBit: null\n  minSyncPeriod: 0s\n  syncPeriod: 0s\n',
      'nftables:\n  masqueradeAll: false\n  masqueradeBit: 9\n  minSyncPeriod: 3s\n  syncPeriod: 50s\n');
  t.match(text, /mode: ""\n/, 'the fixture is what kubeadm writes');
  t.match(text, /masqueradeAll: true/, 'the edit applied');
  const read = (flags: Record<string, string | boolean> = {}) =>
    resolveConfig({ flags: new Map(Object.entries(flags)), file: parseConfigFile(text, 'kubeadm.yaml'), hostname: 'node-a' });
  for (const [flags, mode] of [[{}, 'nftables'], [{ 'proxy-mode': 'nftables' }, 'nftables'], [{ 'proxy-mode': 'iptables' }, 'iptables']] as const) {
    const c = read(flags);
    t.equal(c.mode, mode);
    t.equal(c.masqueradeAll, true, `iptables.masqueradeAll (${JSON.stringify(flags)})`);
    t.equal(c.masqueradeBit, 12, 'iptables.masqueradeBit');
    t.equal(c.syncPeriodMs, 45_000, 'iptables.syncPeriod');
    t.equal(c.minSyncPeriodMs, 2000, 'iptables.minSyncPeriod');
  }
  const nft = resolveConfig({ flags: new Map(), file: parseConfigFile(text.replace('mode: ""', 'mode: nftables'), 'k.yaml'), hostname: 'n' });
  t.match(nft, { masqueradeAll: false, masqueradeBit: 9, syncPeriodMs: 50_000, minSyncPeriodMs: 3000 }, 'mode: nftables reads the nftables section');
  const ipvs = resolveConfig({
    flags: new Map([['proxy-mode', 'iptables']]),
    file: parseConfigFile(text.replace('mode: ""', 'mode: ipvs').replace('ipvs:\n  excludeCIDRs: null\n  minSyncPeriod: 0s', 'ipvs:\n  excludeCIDRs: null\n  minSyncPeriod: 4s'), 'k.yaml'),
    hostname: 'n',
  });
  t.match(ipvs, { masqueradeAll: true, masqueradeBit: 12, syncPeriodMs: 30_000, minSyncPeriodMs: 4000 }, 'mode: ipvs: periods from ipvs, masquerading from iptables');
});
