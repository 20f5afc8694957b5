/**
 * Builds the ProxyConfig: defaults, then the config file, then the flags given explicitly on
 * the command line (only those; a flag's default never overrides the file). Every value is
 * validated here, and a bad one is reported with the flag or field that set it. Pure: the
 * caller reads the file and the hostname.
 */
import ipaddr from 'ipaddr.js';
import type { IPFamily } from '../model/types.js';
import { parseDuration, formatDuration } from './duration.js';
import type { ExplicitFlags } from './flags.js';
import type { FileConfig, Setting } from './file.js';
import { PROXY_FLAGS } from './flags.js';
import {
  ConfigError,
  DETECT_LOCAL_MODES,
  PROXY_MODES,
  type ConntrackConfig,
  type DetectLocal,
  type DetectLocalMode,
  type HostPort,
  type NodePortAddressSpec,
  type ProxyConfig,
  type ProxyMode,
} from './types.js';

export const DEFAULTS = {
  mode: 'nftables' as ProxyMode,
  bindAddress: '0.0.0.0',
  healthzPort: 10256,
  metricsPort: 10249,
  syncPeriod: '30s',
  minSyncPeriod: '1s',
  configSyncPeriod: '15m',
  masqueradeBit: 14,
  ebpfBpffsDir: '/sys/fs/bpf/ferry',
  // kube-proxy's v1alpha1 defaults (a null in the file, or no flag, means these).
  conntrackMaxPerCore: 32768,
  conntrackMin: 131072,
  conntrackTCPEstablishedTimeout: '24h',
  conntrackTCPCloseWaitTimeout: '1h',
  oomScoreAdj: -999,
};

export interface ResolveInput {
  readonly flags: ExplicitFlags;
  readonly file?: FileConfig;
  /** os.hostname(), used when neither the flag nor the file names the node. */
  readonly hostname: string;
}

/** A raw value and where it came from ("--proxy-mode" or "nftables.syncPeriod"). */
interface Raw<T> {
  readonly value: T;
  readonly field: string;
}

function flag(flags: ExplicitFlags, name: string): Raw<string | boolean> | undefined {
  const v = flags.get(name);
  return v === undefined ? undefined : { value: v, field: `--${name}` };
}

/** --ebpf-ct-max's range, in connections (the addon takes ferry_ct's 2,048 to 2^23 entries). */
const CT_CONNECTIONS_MIN = 1024;
const CT_CONNECTIONS_MAX = 4_194_304;

function flagString(flags: ExplicitFlags, name: string): Raw<string> | undefined {
  const f = flag(flags, name);
  if (!f) return undefined;
  if (typeof f.value !== 'string') throw new ConfigError(f.field, 'requires a value');
  return { value: f.value, field: f.field };
}

function pick<T>(...candidates: (Raw<T> | Setting<T> | undefined)[]): Raw<T> | undefined {
  for (const c of candidates) if (c !== undefined) return c;
  return undefined;
}

export function parseBool(raw: Raw<string | boolean>): boolean {
  if (typeof raw.value === 'boolean') return raw.value;
  // Go's strconv.ParseBool, which kube-proxy's boolean flags use.
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(raw.value)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(raw.value)) return false;
  throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not a boolean (true or false)`);
}

function parseIntIn(raw: Raw<string | number>, min: number, max: number): number {
  const n = typeof raw.value === 'number' ? raw.value : /^[+-]?\d+$/.test(raw.value.trim()) ? Number(raw.value) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} must be an integer in [${min}, ${max}]`);
  }
  return n;
}

function parseDurationField(raw: Raw<string>): number {
  const ms = parseDuration(raw.value);
  if (ms === undefined) {
    throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not a duration (e.g. 500ms, 30s, 1m30s, 1h)`);
  }
  return ms;
}

export function parseMode(raw: Raw<string>): ProxyMode {
  const v = raw.value.trim();
  if (v === '') return DEFAULTS.mode;
  if ((PROXY_MODES as readonly string[]).includes(v)) return v as ProxyMode;
  throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not supported by ferry (${PROXY_MODES.join(', ')})`);
}

function isIP(s: string): boolean {
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) return true;
  return !s.includes('.') || s.includes(':') ? ipaddr.IPv6.isValid(s) : false;
}

function familyOf(ip: string): IPFamily {
  return ipaddr.parse(ip).kind() === 'ipv6' ? 6 : 4;
}

/** Parses one CIDR to its normalized network form ("10.0.0.7/8" → "10.0.0.0/8"). */
function normalizeCIDR(text: string, field: string): { cidr: string; family: IPFamily } {
  const bad = () => new ConfigError(field, `${JSON.stringify(text)} is not a valid CIDR`);
  const slash = text.indexOf('/');
  if (slash < 0) throw bad();
  const addr = text.slice(0, slash);
  if (!isIP(addr) || !/^\d{1,3}$/.test(text.slice(slash + 1))) throw bad();
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    parsed = ipaddr.parseCIDR(text);
  } catch {
    throw bad();
  }
  const [ip, bits] = parsed;
  if (ip.kind() === 'ipv4') {
    return { cidr: `${ipaddr.IPv4.networkAddressFromCIDR(text).toString()}/${bits}`, family: 4 };
  }
  return { cidr: `${ipaddr.IPv6.networkAddressFromCIDR(text).toString()}/${bits}`, family: 6 };
}

function splitList(value: string | readonly string[]): string[] {
  const parts = typeof value === 'string' ? value.split(',') : value.flatMap((v) => v.split(','));
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

/**
 * A comma-separated list of CIDRs (or of them and "primary"). An empty value is no list (unset);
 * an empty entry in a non-empty one ("10.0.0.0/8,") is refused, as kube-proxy refuses the ""
 * that its strings.Split or CSV reading yields.
 */
function splitCIDRList(raw: Raw<string | readonly string[]>): string[] {
  const values = typeof raw.value === 'string' ? [raw.value] : raw.value;
  const out: string[] = [];
  for (const value of values) {
    if (value.trim() === '' && typeof raw.value === 'string') continue;
    const parts = value.split(',').map((p) => p.trim());
    if (parts.includes('')) throw new ConfigError(raw.field, `${JSON.stringify(value)} has an empty entry`);
    out.push(...parts);
  }
  return out;
}

export function parseClusterCIDRs(raw: Raw<string>): string[] {
  const out: string[] = [];
  const seen = new Set<IPFamily>();
  for (const part of splitCIDRList(raw)) {
    const { cidr, family } = normalizeCIDR(part, raw.field);
    if (seen.has(family)) {
      throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} must hold at most one IPv4 and one IPv6 CIDR`);
    }
    seen.add(family);
    out.push(cidr);
  }
  return out;
}

/** undefined: no addresses given, so the mode's default applies (kube-proxy's len(...) == 0). */
export function parseNodePortAddresses(raw: Raw<string | readonly string[]>): NodePortAddressSpec | undefined {
  const parts = splitCIDRList(raw);
  if (parts.length === 0) return undefined;
  if (parts.includes('primary')) {
    if (parts.length > 1) throw new ConfigError(raw.field, `"primary" cannot be combined with CIDRs (got ${JSON.stringify(parts.join(','))})`);
    return { kind: 'primary' };
  }
  return { kind: 'cidrs', cidrs: parts.map((p) => normalizeCIDR(p, raw.field).cidr) };
}

/** Splits "ip:port", "[v6]:port", "[v6]" or a bare IP; `port` is undefined when none is written. */
function splitHostPort(raw: Raw<string>): { host: string; port: string | undefined } {
  const v = raw.value.trim();
  const bad = (why: string) => new ConfigError(raw.field, `${JSON.stringify(raw.value)} ${why}`);
  let host: string;
  let port: string | undefined;
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    if (end < 0) throw bad('is not a valid IP:port');
    host = v.slice(1, end);
    const rest = v.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) throw bad('is not a valid IP:port');
    port = rest === '' ? undefined : rest.slice(1);
  } else if (isIP(v)) {
    host = v;
  } else {
    const colon = v.lastIndexOf(':');
    if (colon < 0) throw bad('is not a valid IP:port');
    host = v.slice(0, colon);
    port = v.slice(colon + 1);
  }
  if (!isIP(host)) throw bad(`has an invalid IP address ${JSON.stringify(host)}`);
  return { host, port };
}

/**
 * "ip:port", "[v6]:port" or a bare IP (then `defaultPort`); "" disables the server. The port is
 * 1-65535 as kube-proxy's validateHostPort demands: port 0 would bind a random port, and a file
 * --write-config-to wrote with it would not load in kube-proxy.
 */
export function parseHostPort(raw: Raw<string>, defaultPort: number): HostPort | null {
  if (raw.value.trim() === '') return null;
  const { host, port: portText } = splitHostPort(raw);
  let port = defaultPort;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  }
  if (!(port >= 1 && port <= 65535)) throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} has an invalid port (1-65535)`);
  return { host: ipaddr.parse(host).toString(), port };
}

/**
 * kube-proxy's deprecated --healthz-port / --metrics-port (options.go Complete,
 * addressFromDeprecatedFlags): only without --config and --write-config-to; 0 disables the server,
 * another port is appended to an address written without one (proxyutil.AppendPortIfNeeded) and
 * otherwise changes nothing — so alone, against the default address that has a port, it has no
 * effect. Returns the server address and, when the flag changes nothing, why.
 */
function serverAddress(
  address: Raw<string>,
  defaultPort: number,
  portFlag: Raw<string> | undefined,
  fromFileOrWriting: boolean,
): { address: HostPort | null; noEffect?: string } {
  if (!portFlag) return { address: parseHostPort(address, defaultPort) };
  // pflag's Int32Var refuses anything else even when kube-proxy then ignores the value.
  const port = parseIntIn(portFlag, -(2 ** 31), 2 ** 31 - 1);
  if (fromFileOrWriting) {
    return { address: parseHostPort(address, defaultPort), noEffect: `${portFlag.field} (deprecated; kube-proxy applies it only without --config and --write-config-to)` };
  }
  if (port === 0) return { address: null };
  if (address.value.trim() === '' || splitHostPort(address).port !== undefined) {
    return { address: parseHostPort(address, defaultPort), noEffect: `${portFlag.field} (deprecated; ${address.field} already has a port, which kube-proxy keeps)` };
  }
  if (port < 1 || port > 65535) throw new ConfigError(portFlag.field, `${JSON.stringify(portFlag.value)} is not a valid port (1-65535, or 0 to disable the server)`);
  return { address: parseHostPort(address, port) };
}

function parseMaster(raw: Raw<string>): string {
  const v = raw.value.trim();
  const withScheme = v.includes('://') ? v : `https://${v}`;
  try {
    const u = new URL(withScheme);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not a valid http(s) URL`);
  }
  return withScheme.replace(/\/+$/, '');
}

const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** Linux IFNAMSIZ is 16 including the NUL; '/', whitespace and ':' are not allowed in a name. */
const IFNAME = /^[^/\s:]{1,15}$/;

function parseInterfaceName(raw: Raw<string>, what: string): string {
  const v = raw.value.trim();
  if (!IFNAME.test(v)) {
    throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not a valid ${what} (1-15 characters, no '/', ':' or whitespace)`);
  }
  return v;
}

function resolveDetectLocal(flags: ExplicitFlags, file: FileConfig | undefined): DetectLocal {
  const modeRaw = pick(flagString(flags, 'detect-local-mode'), file?.detectLocalMode);
  const bridgeRaw = pick(flagString(flags, 'pod-bridge-interface'), file?.bridgeInterface);
  const prefixRaw = pick(flagString(flags, 'pod-interface-name-prefix'), file?.interfaceNamePrefix);
  // kube-proxy's default when detectLocalMode is empty.
  const mode = modeRaw && modeRaw.value.trim() !== '' ? modeRaw.value.trim() : 'ClusterCIDR';
  if (!(DETECT_LOCAL_MODES as readonly string[]).includes(mode)) {
    throw new ConfigError(modeRaw?.field ?? '--detect-local-mode', `${JSON.stringify(mode)} is not a detect-local mode (${DETECT_LOCAL_MODES.join(', ')})`);
  }
  switch (mode as DetectLocalMode) {
    case 'ClusterCIDR':
      return { mode: 'ClusterCIDR' };
    case 'NodeCIDR':
      return { mode: 'NodeCIDR' };
    case 'BridgeInterface':
      if (!bridgeRaw || bridgeRaw.value.trim() === '') {
        throw new ConfigError(bridgeRaw?.field ?? '--pod-bridge-interface', 'must be set when the detect-local mode is BridgeInterface (detectLocal.bridgeInterface)');
      }
      return { mode: 'BridgeInterface', bridgeInterface: parseInterfaceName(bridgeRaw, 'interface name') };
    case 'InterfaceNamePrefix':
      if (!prefixRaw || prefixRaw.value.trim() === '') {
        throw new ConfigError(prefixRaw?.field ?? '--pod-interface-name-prefix', 'must be set when the detect-local mode is InterfaceNamePrefix (detectLocal.interfaceNamePrefix)');
      }
      return { mode: 'InterfaceNamePrefix', interfaceNamePrefix: parseInterfaceName(prefixRaw, 'interface name prefix') };
  }
}

/** A duration ≥ 0 that the kernel takes in whole seconds. */
function parseSysctlDuration(raw: Raw<string>): number {
  const ms = parseDurationField(raw);
  if (ms < 0) throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} must be greater than or equal to 0`);
  if (ms > 0 && ms < 1000) throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} must be 0 (leave alone) or at least 1s: the kernel counts whole seconds`);
  return ms;
}

function resolveConntrack(flags: ExplicitFlags, file: FileConfig | undefined): ConntrackConfig {
  const c = file?.conntrack;
  const int = (flagName: string, setting: Setting<number> | undefined, dflt: number): number => {
    const raw = pick<string | number>(flagString(flags, flagName), setting);
    return raw ? parseIntIn(raw, 0, 2 ** 31 - 1) : dflt;
  };
  const dur = (flagName: string, setting: Setting<string> | undefined, dflt: string): number => {
    const raw = pick(flagString(flags, flagName), setting) ?? { value: dflt, field: `--${flagName}` };
    return parseSysctlDuration(raw);
  };
  const liberalFlag = flag(flags, 'conntrack-tcp-be-liberal');
  return {
    maxPerCore: int('conntrack-max-per-core', c?.maxPerCore, DEFAULTS.conntrackMaxPerCore),
    min: int('conntrack-min', c?.min, DEFAULTS.conntrackMin),
    tcpEstablishedTimeoutMs: dur('conntrack-tcp-timeout-established', c?.tcpEstablishedTimeout, DEFAULTS.conntrackTCPEstablishedTimeout),
    tcpCloseWaitTimeoutMs: dur('conntrack-tcp-timeout-close-wait', c?.tcpCloseWaitTimeout, DEFAULTS.conntrackTCPCloseWaitTimeout),
    tcpBeLiberal: liberalFlag ? parseBool(liberalFlag) : (c?.tcpBeLiberal?.value ?? false),
    udpTimeoutMs: dur('conntrack-udp-timeout', c?.udpTimeout, '0s'),
    udpStreamTimeoutMs: dur('conntrack-udp-timeout-stream', c?.udpStreamTimeout, '0s'),
  };
}

/** Checks the value of a flag that is accepted without effect; returns whether it asks for anything. */
function checkIgnoredFlag(flags: ExplicitFlags, name: string): boolean {
  const raw = flag(flags, name);
  if (!raw) return false;
  const str = (): Raw<string> => {
    if (typeof raw.value !== 'string') throw new ConfigError(raw.field, 'requires a value');
    return { value: raw.value, field: raw.field };
  };
  switch (name) {
    case 'bind-address-hard-fail':
    case 'log-text-split-stream':
    case 'log-json-split-stream':
      return parseBool(raw);
    case 'profiling':
      if (parseBool(raw)) throw new ConfigError(raw.field, 'true is not implemented by ferry (ferry has no /debug/pprof handler)');
      return false;
    case 'config-sync-period':
    case 'log-flush-frequency': {
      const ms = parseDurationField(str());
      if (ms <= 0 && name === 'config-sync-period') throw new ConfigError(raw.field, 'must be greater than 0');
      return true;
    }
    case 'kube-api-qps': {
      const v = str();
      if (!/^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(v.value)) throw new ConfigError(raw.field, `${JSON.stringify(v.value)} is not a number`);
      return true;
    }
    case 'kube-api-burst':
      parseIntIn(str(), -(2 ** 31), 2 ** 31 - 1);
      return true;
    case 'feature-gates': {
      const parts = splitList(str().value);
      for (const part of parts) {
        const m = /^([A-Za-z0-9]+)=(.*)$/.exec(part);
        if (!m) throw new ConfigError(raw.field, `${JSON.stringify(part)} is not key=true|false`);
        parseBool({ value: m[2] ?? '', field: raw.field });
      }
      return parts.length > 0;
    }
    default:
      return str().value.trim() !== '';
  }
}

function resolveLoggingFormat(flags: ExplicitFlags, file: FileConfig | undefined): void {
  const raw = pick(flagString(flags, 'logging-format'), file?.loggingFormat);
  if (!raw || raw.value.trim() === '' || raw.value.trim() === 'text') return;
  throw new ConfigError(raw.field, `${JSON.stringify(raw.value)} is not supported by ferry (text: ferry writes its own line format)`);
}

export function resolveConfig(input: ResolveInput): ProxyConfig {
  const { flags } = input;
  const file = input.file;

  const modeRaw = pick(flagString(flags, 'proxy-mode'), file?.mode);
  const mode = modeRaw ? parseMode(modeRaw) : DEFAULTS.mode;

  const fallbackRaw = flagString(flags, 'proxy-mode-fallback');
  let modeFallback: ProxyMode | undefined;
  if (fallbackRaw && fallbackRaw.value.trim() !== '') {
    if (fallbackRaw.value.trim() !== 'userspace') {
      throw new ConfigError(fallbackRaw.field, `${JSON.stringify(fallbackRaw.value)} is not supported by ferry (userspace)`);
    }
    modeFallback = 'userspace';
  }

  const section = file?.modeSection;

  const syncRaw = pick(flagString(flags, 'iptables-sync-period'), section?.syncPeriod);
  const syncPeriodMs = parseDurationField(syncRaw ?? { value: DEFAULTS.syncPeriod, field: '--iptables-sync-period' });
  if (syncPeriodMs <= 0) {
    throw new ConfigError(syncRaw?.field ?? '--iptables-sync-period', `${JSON.stringify(syncRaw?.value)} must be greater than 0`);
  }
  const minRaw = pick(flagString(flags, 'iptables-min-sync-period'), section?.minSyncPeriod);
  const minSyncPeriodMs = parseDurationField(minRaw ?? { value: DEFAULTS.minSyncPeriod, field: '--iptables-min-sync-period' });
  if (minSyncPeriodMs < 0) {
    throw new ConfigError(minRaw?.field ?? '--iptables-min-sync-period', `${JSON.stringify(minRaw?.value)} must be greater than or equal to 0`);
  }
  if (minSyncPeriodMs > syncPeriodMs) {
    throw new ConfigError(
      minRaw?.field ?? '--iptables-min-sync-period',
      `${formatDuration(minSyncPeriodMs)} must be less than or equal to the sync period (${formatDuration(syncPeriodMs)})`,
    );
  }

  const masqAllFlag = flag(flags, 'masquerade-all');
  const masqueradeAll = masqAllFlag ? parseBool(masqAllFlag) : (section?.masqueradeAll?.value ?? false);
  const masqBitRaw = pick<string | number>(flagString(flags, 'iptables-masquerade-bit'), section?.masqueradeBit);
  const masqueradeBit = masqBitRaw ? parseIntIn(masqBitRaw, 0, 31) : DEFAULTS.masqueradeBit;

  const clusterRaw = pick(flagString(flags, 'cluster-cidr'), file?.clusterCIDR);
  const clusterCIDRs = clusterRaw ? parseClusterCIDRs(clusterRaw) : [];

  const npRaw = pick<string | readonly string[]>(flagString(flags, 'nodeport-addresses'), file?.nodePortAddresses);
  // kube-proxy's default (server_linux.go, platformApplyDefaults): `primary` in nftables mode —
  // NodePorts only on the node's IP, not on every address the host has — and all of them in the
  // other modes.
  const nodePortAddresses: NodePortAddressSpec =
    (npRaw ? parseNodePortAddresses(npRaw) : undefined) ?? (mode === 'nftables' ? { kind: 'primary' } : { kind: 'all' });

  const bindRaw = pick(flagString(flags, 'bind-address'), file?.bindAddress);
  const bindAddress = bindRaw ? bindRaw.value.trim() : DEFAULTS.bindAddress;
  if (!isIP(bindAddress)) throw new ConfigError(bindRaw?.field ?? '--bind-address', `${JSON.stringify(bindAddress)} is not a valid IP address`);
  const bindParsed = ipaddr.parse(bindAddress);
  const primaryFamily: IPFamily | undefined = bindParsed.range() === 'unspecified' ? undefined : familyOf(bindAddress);

  // kube-proxy computes its flag defaults from an empty configuration (bindAddress 0.0.0.0)
  // before it parses flags, so --bind-address does not move them; a file's defaulting
  // (SetDefaults_KubeProxyConfiguration, getDefaultAddresses) follows the file's bindAddress.
  const fileBind = file?.bindAddress;
  if (fileBind && !isIP(fileBind.value.trim())) throw new ConfigError(fileBind.field, `${JSON.stringify(fileBind.value)} is not a valid IP address`);
  const defaultsIs6 = fileBind !== undefined && familyOf(fileBind.value.trim()) === 6;
  const healthzRaw = pick(flagString(flags, 'healthz-bind-address'), file?.healthzBindAddress) ?? {
    value: defaultsIs6 ? `[::]:${DEFAULTS.healthzPort}` : `0.0.0.0:${DEFAULTS.healthzPort}`,
    field: '--healthz-bind-address',
  };
  const metricsRaw = pick(flagString(flags, 'metrics-bind-address'), file?.metricsBindAddress) ?? {
    value: defaultsIs6 ? `[::1]:${DEFAULTS.metricsPort}` : `127.0.0.1:${DEFAULTS.metricsPort}`,
    field: '--metrics-bind-address',
  };
  const writeRaw = flagString(flags, 'write-config-to');
  const writeConfigTo = writeRaw && writeRaw.value.trim() !== '' ? writeRaw.value.trim() : undefined;
  const deprecatedIgnored = file !== undefined || writeConfigTo !== undefined;
  const healthz = serverAddress(healthzRaw, DEFAULTS.healthzPort, flagString(flags, 'healthz-port'), deprecatedIgnored);
  const metrics = serverAddress(metricsRaw, DEFAULTS.metricsPort, flagString(flags, 'metrics-port'), deprecatedIgnored);

  const hostFlag = flagString(flags, 'hostname-override');
  let nodeName: string;
  // kube-proxy (processHostnameOverrideFlag) uses the flag only when it is non-empty, and refuses
  // one that is only whitespace: that is a value given, and not a name.
  if (hostFlag && hostFlag.value !== '') {
    if (hostFlag.value.trim() === '') throw new ConfigError(hostFlag.field, 'empty hostname-override is invalid');
    nodeName = hostFlag.value.trim().toLowerCase();
  } else if (file?.hostnameOverride && file.hostnameOverride.value.trim() !== '') {
    nodeName = file.hostnameOverride.value.trim().toLowerCase();
  } else {
    nodeName = input.hostname.trim().toLowerCase();
  }
  if (nodeName === '') throw new ConfigError('--hostname-override', 'the hostname is empty; set --hostname-override');

  const kubeRaw = pick(flagString(flags, 'kubeconfig'), file?.kubeconfig);
  const masterRaw = flagString(flags, 'master');
  const master = masterRaw && masterRaw.value.trim() !== '' ? parseMaster(masterRaw) : undefined;

  const vRaw = pick<string | number>(flagString(flags, 'v'), file?.verbosity);
  const verbosity = vRaw ? parseIntIn(typeof vRaw.value === 'string' ? { ...vRaw, value: vRaw.value.replace(/^=/, '') } : vRaw, 0, 100) : 0;

  const cspRaw = pick(flagString(flags, 'config-sync-period'), file?.configSyncPeriod);
  const configSyncPeriodMs = parseDurationField(cspRaw ?? { value: DEFAULTS.configSyncPeriod, field: 'configSyncPeriod' });
  if (configSyncPeriodMs <= 0) throw new ConfigError(cspRaw?.field ?? 'configSyncPeriod', 'must be greater than 0');

  const ignored: string[] = [...(file?.ignored ?? [])];
  for (const server of [healthz, metrics]) if (server.noEffect) ignored.push(server.noEffect);
  if (file?.configSyncPeriod) ignored.push(`configSyncPeriod (${PROXY_FLAGS.find((f) => f.name === 'config-sync-period')?.ignoredBecause ?? ''})`);
  for (const f of PROXY_FLAGS) {
    if (f.ignoredBecause && checkIgnoredFlag(flags, f.name)) ignored.push(`--${f.name} (${f.ignoredBecause})`);
  }
  resolveLoggingFormat(flags, file);

  const oomRaw = pick<string | number>(flagString(flags, 'oom-score-adj'), file?.oomScoreAdj);
  const oomScoreAdj = oomRaw ? parseIntIn(oomRaw, -1000, 1000) : DEFAULTS.oomScoreAdj;
  const localhostFlag = flag(flags, 'iptables-localhost-nodeports');
  const localhostNodePorts = localhostFlag ? parseBool(localhostFlag) : (file?.localhostNodePorts?.value ?? true);
  const initOnlyFlag = flag(flags, 'init-only');

  const serviceProxyName = file?.serviceProxyName?.value ?? '';
  if (!LABEL_VALUE.test(serviceProxyName)) {
    throw new ConfigError('serviceProxyName', `${JSON.stringify(serviceProxyName)} is not a valid label value`);
  }

  const cgRaw = flagString(flags, 'ebpf-cgroup-root');
  const ebpfCgroupRoot = cgRaw && cgRaw.value.trim() !== '' ? cgRaw.value.trim() : undefined;
  if (ebpfCgroupRoot !== undefined && !ebpfCgroupRoot.startsWith('/')) throw new ConfigError(cgRaw?.field ?? '--ebpf-cgroup-root', `${JSON.stringify(ebpfCgroupRoot)} must be an absolute path`);
  const bpffsRaw = flagString(flags, 'ebpf-bpffs-dir');
  const ebpfBpffsDir = bpffsRaw && bpffsRaw.value.trim() !== '' ? bpffsRaw.value.trim().replace(/\/+$/, '') : DEFAULTS.ebpfBpffsDir;
  if (!ebpfBpffsDir.startsWith('/') || ebpfBpffsDir === '') throw new ConfigError(bpffsRaw?.field ?? '--ebpf-bpffs-dir', `${JSON.stringify(bpffsRaw?.value)} must be an absolute path`);

  const ifRaw = flagString(flags, 'ebpf-interfaces');
  const ebpfInterfaces = ifRaw && ifRaw.value.trim() !== '' ? ifRaw.value.split(',').map((x) => x.trim()).filter((x) => x !== '') : undefined;
  for (const n of ebpfInterfaces ?? []) {
    if (!/^[A-Za-z0-9_.@:-]{1,15}\*?$/.test(n)) throw new ConfigError(ifRaw?.field ?? '--ebpf-interfaces', `${JSON.stringify(n)} is not an interface name (or a prefix ending in '*')`);
  }

  const ctRaw = flagString(flags, 'ebpf-ct-max');
  let ebpfCtMax: number | undefined;
  if (ctRaw && ctRaw.value.trim() !== '') {
    const v = ctRaw.value.trim();
    ebpfCtMax = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!(ebpfCtMax >= CT_CONNECTIONS_MIN && ebpfCtMax <= CT_CONNECTIONS_MAX)) {
      throw new ConfigError(ctRaw.field, `${JSON.stringify(v)} is not a number of connections from ${CT_CONNECTIONS_MIN} to ${CT_CONNECTIONS_MAX}`);
    }
  }

  const cleanupFlag = flag(flags, 'cleanup');
  const dryRunFlag = flag(flags, 'dry-run');
  const cleanup = cleanupFlag ? parseBool(cleanupFlag) : false;
  const dryRun = dryRunFlag ? parseBool(dryRunFlag) : false;
  // Refused here, before the CLI reaches any cleanup code: --dry-run promises to touch no kernel
  // state, and --cleanup exists to remove it.
  if (cleanup && dryRun) {
    throw new ConfigError('--cleanup', 'cannot be combined with --dry-run: --cleanup removes kernel state, --dry-run touches none');
  }

  return {
    kubeconfig: kubeRaw && kubeRaw.value.trim() !== '' ? kubeRaw.value.trim() : undefined,
    master,
    nodeName,
    mode,
    modeFallback,
    dryRun,
    cleanup,
    clusterCIDRs,
    nodePortAddresses,
    masqueradeAll,
    masqueradeBit,
    bindAddress,
    primaryFamily,
    healthzBindAddress: healthz.address,
    metricsBindAddress: metrics.address,
    syncPeriodMs,
    minSyncPeriodMs,
    minSyncPeriodExplicit: minRaw !== undefined,
    configSyncPeriodMs,
    verbosity,
    serviceProxyName,
    detectLocal: resolveDetectLocal(flags, file),
    conntrack: resolveConntrack(flags, file),
    oomScoreAdj,
    localhostNodePorts,
    ebpfCgroupRoot,
    ebpfBpffsDir,
    ebpfInterfaces,
    ebpfCtMax,
    initOnly: initOnlyFlag ? parseBool(initOnlyFlag) : false,
    writeConfigTo,
    ignored,
  };
}

/**
 * Whether NodePorts answer on 127.0.0.1: the setting (iptables.localhostNodePorts), as kube-proxy's
 * NewProxier turns it off where nodePortAddresses leaves loopback out — `primary`, or CIDRs none of
 * which holds 127.0.0.1 — so such a node gets no route_localnet=1 and no KUBE-FIREWALL rule.
 * The setting itself stays as given (--write-config-to writes it back unchanged).
 */
export function localhostNodePortsServed(c: Pick<ProxyConfig, 'localhostNodePorts' | 'nodePortAddresses'>): boolean {
  if (!c.localhostNodePorts) return false;
  const np = c.nodePortAddresses;
  if (np.kind === 'all') return true;
  if (np.kind !== 'cidrs') return false;
  const loopback = ipaddr.parse('127.0.0.1');
  return np.cidrs.some((cidr) => {
    const [net, bits] = ipaddr.parseCIDR(cidr);
    return net.kind() === 'ipv4' && loopback.match(net, bits);
  });
}
