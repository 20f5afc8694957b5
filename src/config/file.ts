/**
 * Reads a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) written in YAML or JSON.
 * Strict like kube-proxy's decoder: an unknown field is an error naming it; so is a field ferry
 * does not implement when it is set to anything but its zero value (a kubeadm-generated file,
 * which spells out every field with zero values, loads unchanged). Fields that only matter on
 * other platforms or in other modes (winkernel, ipvs, detectLocal) are accepted and inert, as
 * in kube-proxy. Pure: parses text, never reads files or the environment.
 */
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './types.js';

export const CONFIG_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const CONFIG_KIND = 'KubeProxyConfiguration';

/** A value taken from the file, with the field path that set it (for error messages). */
export interface Setting<T> {
  readonly value: T;
  readonly field: string;
}

export interface ModeSection {
  readonly syncPeriod?: Setting<string>;
  readonly minSyncPeriod?: Setting<string>;
  readonly masqueradeAll?: Setting<boolean>;
  readonly masqueradeBit?: Setting<number>;
}

/** What ferry takes from the file; absent = not set in the file. */
export interface FileConfig {
  readonly kubeconfig?: Setting<string>;
  readonly hostnameOverride?: Setting<string>;
  readonly bindAddress?: Setting<string>;
  readonly healthzBindAddress?: Setting<string>;
  readonly metricsBindAddress?: Setting<string>;
  readonly mode?: Setting<string>;
  readonly clusterCIDR?: Setting<string>;
  readonly nodePortAddresses?: Setting<readonly string[]>;
  readonly verbosity?: Setting<number>;
  readonly serviceProxyName?: Setting<string>;
  readonly configSyncPeriod?: Setting<string>;
  readonly iptables: ModeSection;
  readonly nftables: ModeSection;
}

type Leaf = 'string' | 'bool' | 'int' | 'number' | 'duration' | 'stringList' | 'map' | 'any';
/** use: ferry reads it; inert: accepted and has no effect; zero: must be unset/zero. */
type Handling = 'use' | 'inert' | 'zero';
interface Rule {
  readonly type: Leaf | Schema;
  readonly handling: Handling;
  /** For strings: the only values accepted besides the zero value. */
  readonly allowed?: readonly string[];
}
type Schema = { readonly [field: string]: Rule };

const use = (type: Leaf | Schema): Rule => ({ type, handling: 'use' });
const inert = (type: Leaf | Schema): Rule => ({ type, handling: 'inert' });
const zero = (type: Leaf | Schema): Rule => ({ type, handling: 'zero' });
const oneOf = (...allowed: string[]): Rule => ({ type: 'string', handling: 'use', allowed });

const MODE_SECTION: Schema = {
  masqueradeBit: use('int'),
  masqueradeAll: use('bool'),
  syncPeriod: use('duration'),
  minSyncPeriod: use('duration'),
};

const SCHEMA: Schema = {
  apiVersion: use('string'),
  kind: use('string'),
  featureGates: zero('map'),
  clientConnection: use({
    kubeconfig: use('string'),
    acceptContentTypes: inert('string'),
    contentType: inert('string'),
    qps: inert('number'),
    burst: inert('int'),
  }),
  logging: use({
    format: oneOf('text'),
    flushFrequency: inert('any'),
    verbosity: use('int'),
    vmodule: zero('any'),
    options: inert('any'),
  }),
  hostnameOverride: use('string'),
  bindAddress: use('string'),
  healthzBindAddress: use('string'),
  metricsBindAddress: use('string'),
  bindAddressHardFail: inert('bool'),
  enableProfiling: zero('bool'),
  showHiddenMetricsForVersion: zero('string'),
  serviceProxyName: use('string'),
  mode: use('string'),
  iptables: use({ ...MODE_SECTION, localhostNodePorts: inert('bool') }),
  ipvs: inert({
    syncPeriod: inert('duration'),
    minSyncPeriod: inert('duration'),
    scheduler: inert('string'),
    excludeCIDRs: inert('stringList'),
    strictARP: inert('bool'),
    tcpTimeout: inert('duration'),
    tcpFinTimeout: inert('duration'),
    udpTimeout: inert('duration'),
  }),
  nftables: use({ ...MODE_SECTION, tableName: zero('string') }),
  winkernel: inert({
    networkName: inert('string'),
    sourceVip: inert('string'),
    enableDSR: inert('bool'),
    rootHnsEndpointName: inert('string'),
    forwardHealthCheckVip: inert('bool'),
  }),
  detectLocalMode: oneOf('ClusterCIDR'),
  detectLocal: inert({ bridgeInterface: inert('string'), interfaceNamePrefix: inert('string') }),
  clusterCIDR: use('string'),
  nodePortAddresses: use('stringList'),
  oomScoreAdj: zero('int'),
  conntrack: use({
    maxPerCore: zero('int'),
    min: zero('int'),
    tcpEstablishedTimeout: zero('duration'),
    tcpCloseWaitTimeout: zero('duration'),
    tcpBeLiberal: zero('bool'),
    udpTimeout: zero('duration'),
    udpStreamTimeout: zero('duration'),
  }),
  configSyncPeriod: use('duration'),
  portRange: zero('string'),
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isZeroValue(v: unknown): boolean {
  if (v === null || v === undefined || v === '' || v === false || v === 0) return true;
  if (typeof v === 'string' && /^[+-]?0+(\.0*)?(ns|us|µs|ms|s|m|h)?$/.test(v)) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isRecord(v)) return Object.keys(v).length === 0;
  return false;
}

function typeOk(type: Leaf, v: unknown): boolean {
  switch (type) {
    case 'string':
    case 'duration':
      return typeof v === 'string';
    case 'bool':
      return typeof v === 'boolean';
    case 'int':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'stringList':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
    case 'map':
      return isRecord(v);
    case 'any':
      return true;
  }
}

const TYPE_NAMES: Record<Leaf, string> = {
  string: 'a string',
  duration: 'a duration string such as "30s"',
  bool: 'true or false',
  int: 'an integer',
  number: 'a number',
  stringList: 'a list of strings',
  map: 'a map',
  any: 'a value',
};

/** Walks `obj` against `schema`, throwing on the first unknown, mistyped or unsupported field. */
function check(obj: Record<string, unknown>, schema: Schema, prefix: string, source: string): void {
  for (const [key, value] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const rule = schema[key];
    if (!rule) throw new ConfigError(path, `unknown field in ${CONFIG_KIND} ${source}`);
    // null is how YAML (and kubeadm) spells "unset" for every type.
    if (value === null) continue;
    if (typeof rule.type === 'object') {
      if (!isRecord(value)) throw new ConfigError(path, `must be a map, got ${JSON.stringify(value)}`);
      check(value, rule.type, path, source);
      continue;
    }
    if (!typeOk(rule.type, value)) {
      throw new ConfigError(path, `must be ${TYPE_NAMES[rule.type]}, got ${JSON.stringify(value)}`);
    }
    if (rule.handling === 'zero' && !isZeroValue(value)) {
      throw new ConfigError(path, `${JSON.stringify(value)} is not implemented by ferry (leave it unset)`);
    }
    if (rule.allowed && value !== '' && !rule.allowed.includes(value as string)) {
      throw new ConfigError(path, `${JSON.stringify(value)} is not supported by ferry (${rule.allowed.join(', ')})`);
    }
  }
}

function get<T>(obj: Record<string, unknown>, path: string): Setting<T> | undefined {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (!isRecord(cur)) return undefined;
    cur = cur[part];
  }
  // Zero values mean "unset" in kube-proxy's config (it defaults them), except booleans and
  // numbers, which can be meaningfully false/0 (masqueradeAll: false, masqueradeBit: 0).
  if (cur === null || cur === undefined || cur === '') return undefined;
  if (Array.isArray(cur) && cur.length === 0) return undefined;
  return { value: cur as T, field: path };
}

function modeSection(obj: Record<string, unknown>, name: 'iptables' | 'nftables'): ModeSection {
  const syncPeriod = get<string>(obj, `${name}.syncPeriod`);
  const minSyncPeriod = get<string>(obj, `${name}.minSyncPeriod`);
  const masqueradeAll = get<boolean>(obj, `${name}.masqueradeAll`);
  const masqueradeBit = get<number>(obj, `${name}.masqueradeBit`);
  return {
    // kubeadm writes "0s" for periods it leaves to the defaults; kube-proxy's defaulting turns a
    // zero syncPeriod into 30s and a zero minSyncPeriod into 1s, so zero means "unset" here too.
    ...(syncPeriod && !isZeroValue(syncPeriod.value) ? { syncPeriod } : {}),
    ...(minSyncPeriod && !isZeroValue(minSyncPeriod.value) ? { minSyncPeriod } : {}),
    ...(masqueradeAll ? { masqueradeAll } : {}),
    ...(masqueradeBit ? { masqueradeBit } : {}),
  };
}

/**
 * Parses and checks a KubeProxyConfiguration. `source` names the file in messages.
 * Throws ConfigError naming the offending field.
 */
export function parseConfigFile(text: string, source: string): FileConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true, prettyErrors: false });
  } catch (e) {
    throw new ConfigError('--config', `${source} is not valid YAML or JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(doc)) throw new ConfigError('--config', `${source} must hold a ${CONFIG_KIND} object`);
  if (doc.apiVersion !== CONFIG_API_VERSION) {
    throw new ConfigError('apiVersion', `${JSON.stringify(doc.apiVersion ?? null)} is not supported in ${source} (want ${CONFIG_API_VERSION})`);
  }
  if (doc.kind !== CONFIG_KIND) {
    throw new ConfigError('kind', `${JSON.stringify(doc.kind ?? null)} is not supported in ${source} (want ${CONFIG_KIND})`);
  }
  check(doc, SCHEMA, '', source);
  const configSyncPeriod = get<string>(doc, 'configSyncPeriod');
  const out: FileConfig = {
    kubeconfig: get(doc, 'clientConnection.kubeconfig'),
    hostnameOverride: get(doc, 'hostnameOverride'),
    bindAddress: get(doc, 'bindAddress'),
    healthzBindAddress: get(doc, 'healthzBindAddress'),
    metricsBindAddress: get(doc, 'metricsBindAddress'),
    mode: get(doc, 'mode'),
    clusterCIDR: get(doc, 'clusterCIDR'),
    nodePortAddresses: get(doc, 'nodePortAddresses'),
    verbosity: get(doc, 'logging.verbosity'),
    serviceProxyName: get(doc, 'serviceProxyName'),
    configSyncPeriod: configSyncPeriod && !isZeroValue(configSyncPeriod.value) ? configSyncPeriod : undefined,
    iptables: modeSection(doc, 'iptables'),
    nftables: modeSection(doc, 'nftables'),
  };
  return out;
}
