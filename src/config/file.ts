/**
 * Reads a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) written in YAML or JSON.
 * Strict about types, lenient about names as kube-proxy's loadConfig is: an unknown or duplicated
 * field is returned in `lenient` for the caller to log once as a warning, and ignored (a duplicate
 * takes its last value). Every field of v1alpha1 as kube-proxy 1.30–1.34 and kubeadm write it is
 * known, so a kubeadm-generated file (every field spelled out, zero values and nulls included)
 * loads without one. Each field is one of: used by ferry; accepted without effect ("inert":
 * listed in `ignored` with the reason when set to anything but its zero value, for the caller to
 * log once); or refused with the reason when set ("zero"). Pure: parses text, never reads files or
 * the environment.
 */
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { parseDuration } from './duration.js';
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
  /**
   * syncPeriod, minSyncPeriod, masqueradeAll and masqueradeBit from the section the file's own
   * `mode` names, whatever mode ferry runs (see modeSection).
   */
  readonly modeSection: ModeSection;
  readonly localhostNodePorts?: Setting<boolean>;
  readonly detectLocalMode?: Setting<string>;
  readonly bridgeInterface?: Setting<string>;
  readonly interfaceNamePrefix?: Setting<string>;
  readonly oomScoreAdj?: Setting<number>;
  readonly loggingFormat?: Setting<string>;
  readonly conntrack: ConntrackSection;
  /** Inert fields set to a non-zero value, each as "field (why it has no effect)". */
  readonly ignored: readonly string[];
  /**
   * What kube-proxy's strict decoding refuses and its lenient decoding drops: unknown fields
   * (removed ones such as `udpIdleTimeout` live on in old ConfigMaps) and duplicated ones, each
   * as "path (unknown field)" / "path (duplicate field, last value used)".
   */
  readonly lenient: readonly string[];
}

/** conntrack.*: null/absent = kube-proxy's default; 0 / "0s" = leave the kernel's value alone. */
export interface ConntrackSection {
  readonly maxPerCore?: Setting<number>;
  readonly min?: Setting<number>;
  readonly tcpEstablishedTimeout?: Setting<string>;
  readonly tcpCloseWaitTimeout?: Setting<string>;
  readonly tcpBeLiberal?: Setting<boolean>;
  readonly udpTimeout?: Setting<string>;
  readonly udpStreamTimeout?: Setting<string>;
}

type Leaf = 'string' | 'bool' | 'int' | 'number' | 'duration' | 'stringList' | 'boolMap' | 'any';
/** use: ferry reads it; inert: accepted and has no effect; zero: refused unless unset/zero. */
type Handling = 'use' | 'inert' | 'zero';
interface Rule {
  readonly type: Leaf | Schema;
  readonly handling: Handling;
  /** inert: why the field has no effect; zero: why a non-zero value is refused. */
  readonly why?: string;
  /** For strings: the only values accepted besides the zero value. */
  readonly allowed?: readonly string[];
}
type Schema = { readonly [field: string]: Rule };

const use = (type: Leaf | Schema): Rule => ({ type, handling: 'use' });
const inert = (type: Leaf | Schema, why: string): Rule => ({ type, handling: 'inert', why });
const zero = (type: Leaf | Schema, why: string): Rule => ({ type, handling: 'zero', why });
const oneOf = (...allowed: string[]): Rule => ({ type: 'string', handling: 'use', allowed });

const IPVS = 'the ipvs proxy mode is not implemented by ferry';
const WINDOWS = 'Windows only';
const NO_RATE_LIMIT = 'ferry only lists and watches, so it does not rate-limit its API client';
const JSON_ONLY = "ferry's API client speaks JSON";
const LOG_OPTIONS = "ferry writes each log line unbuffered to stderr; kube-proxy's log buffering and stream options do not apply";

const MODE_SECTION: Schema = {
  masqueradeBit: use('int'),
  masqueradeAll: use('bool'),
  syncPeriod: use('duration'),
  minSyncPeriod: use('duration'),
};

const SCHEMA: Schema = {
  apiVersion: use('string'),
  kind: use('string'),
  featureGates: inert('boolMap', "ferry implements the GA behaviour of kube-proxy's feature gates; they cannot be switched"),
  clientConnection: use({
    kubeconfig: use('string'),
    acceptContentTypes: inert('string', JSON_ONLY),
    contentType: inert('string', JSON_ONLY),
    qps: inert('number', NO_RATE_LIMIT),
    burst: inert('int', NO_RATE_LIMIT),
  }),
  logging: use({
    format: use('string'),
    flushFrequency: inert('any', LOG_OPTIONS),
    verbosity: use('int'),
    vmodule: zero('any', 'ferry has one verbosity for all of its modules (logging.verbosity)'),
    options: inert('any', LOG_OPTIONS),
  }),
  hostnameOverride: use('string'),
  bindAddress: use('string'),
  healthzBindAddress: use('string'),
  metricsBindAddress: use('string'),
  // ferry always exits when it cannot bind a server, which is what true asks for.
  bindAddressHardFail: use('bool'),
  enableProfiling: zero('bool', 'ferry has no /debug/pprof handler'),
  showHiddenMetricsForVersion: inert('string', 'ferry has no hidden metrics'),
  serviceProxyName: use('string'),
  mode: use('string'),
  iptables: use({ ...MODE_SECTION, localhostNodePorts: use('bool') }),
  ipvs: inert(
    {
      syncPeriod: inert('duration', IPVS),
      minSyncPeriod: inert('duration', IPVS),
      scheduler: inert('string', IPVS),
      excludeCIDRs: inert('stringList', IPVS),
      strictARP: inert('bool', IPVS),
      tcpTimeout: inert('duration', IPVS),
      tcpFinTimeout: inert('duration', IPVS),
      udpTimeout: inert('duration', IPVS),
    },
    IPVS,
  ),
  nftables: use({ ...MODE_SECTION, tableName: zero('string', 'ferry owns its table names') }),
  winkernel: inert(
    {
      networkName: inert('string', WINDOWS),
      sourceVip: inert('string', WINDOWS),
      enableDSR: inert('bool', WINDOWS),
      rootHnsEndpointName: inert('string', WINDOWS),
      forwardHealthCheckVip: inert('bool', WINDOWS),
    },
    WINDOWS,
  ),
  windowsRunAsService: inert('bool', WINDOWS),
  detectLocalMode: use('string'),
  detectLocal: use({ bridgeInterface: use('string'), interfaceNamePrefix: use('string') }),
  clusterCIDR: use('string'),
  nodePortAddresses: use('stringList'),
  oomScoreAdj: use('int'),
  conntrack: use({
    maxPerCore: use('int'),
    min: use('int'),
    tcpEstablishedTimeout: use('duration'),
    tcpCloseWaitTimeout: use('duration'),
    tcpBeLiberal: use('bool'),
    udpTimeout: use('duration'),
    udpStreamTimeout: use('duration'),
  }),
  configSyncPeriod: use('duration'),
  portRange: inert('string', "unused in kube-proxy too since its userspace mode was removed"),
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Go's zero value, deeply: kubeadm's `options: {json: {infoBufferSize: "0"}}` is zero too. */
function isZeroValue(v: unknown): boolean {
  if (v === null || v === undefined || v === '' || v === false || v === 0) return true;
  if (typeof v === 'string' && /^[+-]?0+(\.0*)?(ns|us|µs|ms|s|m|h)?$/.test(v)) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isRecord(v)) return Object.values(v).every(isZeroValue);
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
    case 'boolMap':
      return isRecord(v) && Object.values(v).every((x) => typeof x === 'boolean');
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
  boolMap: 'a map of names to true or false',
  any: 'a value',
};

/**
 * Walks `obj` against `schema`, throwing on the first mistyped or refused field, collecting
 * unknown fields into `unknown` and inert fields with non-zero values into `ignored` (an inert
 * subtree once, by its root).
 */
function check(obj: Record<string, unknown>, schema: Schema, prefix: string, unknown: string[], ignored: string[] | undefined): void {
  for (const [key, value] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${key}` : key;
    const rule = schema[key];
    if (!rule) {
      unknown.push(path);
      continue;
    }
    // null is how YAML (and kubeadm) spells "unset" for every type.
    if (value === null) continue;
    let inner = ignored;
    if (rule.handling === 'inert' && ignored && !isZeroValue(value)) {
      ignored.push(`${path} (${rule.why ?? 'no effect in ferry'})`);
      inner = undefined;
    }
    if (typeof rule.type === 'object') {
      if (!isRecord(value)) throw new ConfigError(path, `must be a map, got ${JSON.stringify(value)}`);
      check(value, rule.type, path, unknown, inner);
      continue;
    }
    if (!typeOk(rule.type, value)) {
      throw new ConfigError(path, `must be ${TYPE_NAMES[rule.type]}, got ${JSON.stringify(value)}`);
    }
    // Checked wherever it is, as kube-proxy's decoder (metav1.Duration) does: the section of
    // another mode is not read, but a malformed period in it is still a broken file.
    if (rule.type === 'duration' && value !== '' && parseDuration(value as string) === undefined) {
      throw new ConfigError(path, `${JSON.stringify(value)} is not a duration (e.g. 500ms, 30s, 1m30s, 1h)`);
    }
    if (rule.handling === 'zero' && !isZeroValue(value)) {
      throw new ConfigError(path, `${JSON.stringify(value)} is not implemented by ferry (${rule.why ?? 'leave it unset'})`);
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

function periods(obj: Record<string, unknown>, name: 'iptables' | 'nftables' | 'ipvs'): Pick<ModeSection, 'syncPeriod' | 'minSyncPeriod'> {
  const syncPeriod = get<string>(obj, `${name}.syncPeriod`);
  const minSyncPeriod = get<string>(obj, `${name}.minSyncPeriod`);
  return {
    // kubeadm writes "0s" for periods it leaves to the defaults; kube-proxy's defaulting turns a
    // zero syncPeriod into 30s and a zero minSyncPeriod into 1s, so zero means "unset" here too.
    ...(syncPeriod && !isZeroValue(syncPeriod.value) ? { syncPeriod } : {}),
    ...(minSyncPeriod && !isZeroValue(minSyncPeriod.value) ? { minSyncPeriod } : {}),
  };
}

function masquerade(obj: Record<string, unknown>, name: 'iptables' | 'nftables'): Pick<ModeSection, 'masqueradeAll' | 'masqueradeBit'> {
  const masqueradeAll = get<boolean>(obj, `${name}.masqueradeAll`);
  const masqueradeBit = get<number>(obj, `${name}.masqueradeBit`);
  return { ...(masqueradeAll ? { masqueradeAll } : {}), ...(masqueradeBit ? { masqueradeBit } : {}) };
}

/**
 * The per-mode settings, from the section the file's own `mode` names, as kube-proxy's
 * Convert_v1alpha1_KubeProxyConfiguration_To_config_KubeProxyConfiguration takes them: nftables
 * from `nftables`; ipvs its periods from `ipvs` (its proxier masquerades with `iptables`' bit);
 * every other mode, "" included, from `iptables`. The file's mode decides, not the mode ferry
 * runs: kubeadm writes `mode: ""`, which kube-proxy runs as iptables and ferry as nftables, and
 * the operator who set `iptables.masqueradeAll` in that file meant it.
 */
function modeSection(obj: Record<string, unknown>): ModeSection {
  const mode = typeof obj.mode === 'string' ? obj.mode.trim() : '';
  if (mode === 'nftables') return { ...periods(obj, 'nftables'), ...masquerade(obj, 'nftables') };
  if (mode === 'ipvs') return { ...periods(obj, 'ipvs'), ...masquerade(obj, 'iptables') };
  return { ...periods(obj, 'iptables'), ...masquerade(obj, 'iptables') };
}

/** Paths of the keys a YAML (or JSON) mapping repeats, each once. */
function duplicateKeys(node: unknown, prefix: string, out: string[]): string[] {
  if (isMap(node)) {
    const seen = new Set<string>();
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const path = prefix ? `${prefix}.${key}` : key;
      if (seen.has(key) && !out.includes(path)) out.push(path);
      seen.add(key);
      duplicateKeys(pair.value, path, out);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => duplicateKeys(item, `${prefix}[${i}]`, out));
  }
  return out;
}

/**
 * Parses and checks a KubeProxyConfiguration. `source` names the file in messages.
 * Throws ConfigError naming the offending field.
 */
export function parseConfigFile(text: string, source: string): FileConfig {
  // Duplicate keys are collected instead of refused: kube-proxy's strict decoder refuses them
  // (YAMLToJSONStrict), and its lenient fallback keeps the last value, as toJS() does here.
  const parsed = parseDocument(text, { uniqueKeys: false, prettyErrors: false });
  const syntax = parsed.errors[0];
  if (syntax) throw new ConfigError('--config', `${source} is not valid YAML or JSON: ${syntax.message}`);
  let doc: unknown;
  try {
    doc = parsed.toJS();
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
  const ignored: string[] = [];
  const unknown: string[] = [];
  check(doc, SCHEMA, '', unknown, ignored);
  const lenient = [
    ...unknown.map((f) => `${f} (unknown field)`),
    ...duplicateKeys(parsed.contents, '', []).map((f) => `${f} (duplicate field, last value used)`),
  ];
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
    modeSection: modeSection(doc),
    localhostNodePorts: get(doc, 'iptables.localhostNodePorts'),
    detectLocalMode: get(doc, 'detectLocalMode'),
    bridgeInterface: get(doc, 'detectLocal.bridgeInterface'),
    interfaceNamePrefix: get(doc, 'detectLocal.interfaceNamePrefix'),
    oomScoreAdj: get(doc, 'oomScoreAdj'),
    loggingFormat: get(doc, 'logging.format'),
    conntrack: {
      maxPerCore: get(doc, 'conntrack.maxPerCore'),
      min: get(doc, 'conntrack.min'),
      tcpEstablishedTimeout: get(doc, 'conntrack.tcpEstablishedTimeout'),
      tcpCloseWaitTimeout: get(doc, 'conntrack.tcpCloseWaitTimeout'),
      tcpBeLiberal: get(doc, 'conntrack.tcpBeLiberal'),
      udpTimeout: get(doc, 'conntrack.udpTimeout'),
      udpStreamTimeout: get(doc, 'conntrack.udpStreamTimeout'),
    },
    ignored,
    lenient,
  };
  return out;
}
