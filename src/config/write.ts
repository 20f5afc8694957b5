/**
 * --write-config-to: the resolved configuration as a complete KubeProxyConfiguration, every
 * v1alpha1 field spelled out the way kubeadm and kube-proxy write them (sorted keys, zero values
 * and nulls included), so that `ferry --config` of the result runs the same proxy. Settings that
 * only exist as flags (--master, --dry-run, --cleanup, --init-only, --proxy-mode-fallback) are
 * not part of the file. Fields without effect in ferry are written as their zero values, so the
 * file loads without an "ignored" line; a setting whose value a file cannot carry is a
 * ConfigError naming it. Pure: returns text.
 */
import { stringify } from 'yaml';
import { formatDuration } from './duration.js';
import { CONFIG_API_VERSION, CONFIG_KIND } from './file.js';
import { ConfigError, type HostPort, type ProxyConfig } from './types.js';

function hostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/**
 * `hostname` is what the proxy would use without an override: the node name is written only
 * when it differs, so the file stays usable on every node.
 */
export function kubeProxyConfiguration(c: ProxyConfig, hostname: string): Record<string, unknown> {
  // A file spells "default" with the zero value, so these cannot be written without changing
  // what the file means; say so instead of writing a different proxy.
  const unwritable = (what: string) =>
    new ConfigError('--write-config-to', `${what} cannot be expressed in a KubeProxyConfiguration (its zero value there means the default); give that flag alongside --config`);
  if (!c.healthzBindAddress) throw unwritable('a disabled --healthz-bind-address');
  if (!c.metricsBindAddress) throw unwritable('a disabled --metrics-bind-address');
  if (c.minSyncPeriodMs === 0) throw unwritable('--iptables-min-sync-period 0');
  const mode = {
    masqueradeAll: c.masqueradeAll,
    masqueradeBit: c.masqueradeBit,
    // Unset stays unset (a zero value): writing the default would turn cost-aware coalescing off.
    minSyncPeriod: c.minSyncPeriodExplicit ? formatDuration(c.minSyncPeriodMs) : '0s',
    syncPeriod: formatDuration(c.syncPeriodMs),
  };
  const configSyncDefault = c.configSyncPeriodMs === 15 * 60_000;
  return {
    apiVersion: CONFIG_API_VERSION,
    kind: CONFIG_KIND,
    bindAddress: c.bindAddress,
    bindAddressHardFail: false,
    clientConnection: { acceptContentTypes: '', burst: 0, contentType: '', kubeconfig: c.kubeconfig ?? '', qps: 0 },
    clusterCIDR: c.clusterCIDRs.join(','),
    configSyncPeriod: configSyncDefault ? '0s' : formatDuration(c.configSyncPeriodMs),
    conntrack: {
      maxPerCore: c.conntrack.maxPerCore,
      min: c.conntrack.min,
      tcpBeLiberal: c.conntrack.tcpBeLiberal,
      tcpCloseWaitTimeout: formatDuration(c.conntrack.tcpCloseWaitTimeoutMs),
      tcpEstablishedTimeout: formatDuration(c.conntrack.tcpEstablishedTimeoutMs),
      udpStreamTimeout: formatDuration(c.conntrack.udpStreamTimeoutMs),
      udpTimeout: formatDuration(c.conntrack.udpTimeoutMs),
    },
    detectLocal: {
      bridgeInterface: c.detectLocal.mode === 'BridgeInterface' ? c.detectLocal.bridgeInterface : '',
      interfaceNamePrefix: c.detectLocal.mode === 'InterfaceNamePrefix' ? c.detectLocal.interfaceNamePrefix : '',
    },
    detectLocalMode: c.detectLocal.mode,
    enableProfiling: false,
    healthzBindAddress: hostPort(c.healthzBindAddress),
    hostnameOverride: c.nodeName === hostname.trim().toLowerCase() ? '' : c.nodeName,
    iptables: { ...mode, localhostNodePorts: c.localhostNodePorts },
    ipvs: {
      excludeCIDRs: null,
      minSyncPeriod: '0s',
      scheduler: '',
      strictARP: false,
      syncPeriod: '0s',
      tcpFinTimeout: '0s',
      tcpTimeout: '0s',
      udpTimeout: '0s',
    },
    logging: {
      flushFrequency: 0,
      format: 'text',
      options: { json: { infoBufferSize: '0' }, text: { infoBufferSize: '0' } },
      verbosity: c.verbosity,
    },
    metricsBindAddress: hostPort(c.metricsBindAddress),
    mode: c.mode,
    nftables: mode,
    nodePortAddresses:
      c.nodePortAddresses.kind === 'all' ? null : c.nodePortAddresses.kind === 'primary' ? ['primary'] : [...c.nodePortAddresses.cidrs],
    oomScoreAdj: c.oomScoreAdj,
    portRange: '',
    showHiddenMetricsForVersion: '',
    winkernel: { enableDSR: false, forwardHealthCheckVip: false, networkName: '', rootHnsEndpointName: '', sourceVip: '' },
    ...(c.serviceProxyName !== '' ? { serviceProxyName: c.serviceProxyName } : {}),
  };
}

export function formatKubeProxyConfiguration(c: ProxyConfig, hostname: string): string {
  return stringify(kubeProxyConfiguration(c, hostname), { sortMapEntries: true, nullStr: 'null' });
}
