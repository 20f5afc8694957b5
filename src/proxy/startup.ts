/**
 * What `ferry [flags]` does between resolving its configuration and starting the daemon, in
 * kube-proxy's order: say once which settings were accepted without effect, refuse what the
 * chosen mode cannot do yet, then apply the node settings (conntrack sysctls, oom_score_adj).
 * --dry-run touches no kernel state, so it skips the node settings.
 */
import { cpus } from 'node:os';
import { ConfigError, type DetectLocal, type DetectLocalMode, type ProxyConfig, type ProxyMode } from '../config/types.js';
import type { DetectLocalSpec } from '../plan/planner.js';
import { setVerbosity, logger } from '../util/log.js';
import { applyConntrack, applyOomScoreAdj, type ProcFs, type SettingOutcome } from './conntrack-sysctl.js';

const log = logger('proxy');

/**
 * The proxy modes whose backends recognize local traffic by the incoming interface
 * (detect-local BridgeInterface / InterfaceNamePrefix, IR `localTraffic.kind` 'bridgeInterface'
 * / 'interfaceNamePrefix'). A mode is added here when its backend implements the rules.
 */
export const INTERFACE_DETECT_LOCAL_MODES: ReadonlySet<ProxyMode> = new Set<ProxyMode>(['nftables', 'iptables', 'userspace']);

const INTERFACE_MODES: ReadonlySet<DetectLocalMode> = new Set<DetectLocalMode>(['BridgeInterface', 'InterfaceNamePrefix']);

/** Throws a ConfigError when the detect-local mode needs backend support that `mode` lacks. */
export function checkDetectLocal(config: ProxyConfig): void {
  if (config.dryRun || !INTERFACE_MODES.has(config.detectLocal.mode)) return;
  for (const mode of [config.mode, config.modeFallback]) {
    if (mode && !INTERFACE_DETECT_LOCAL_MODES.has(mode)) {
      throw new ConfigError('--detect-local-mode', `${config.detectLocal.mode} is not implemented yet in ${mode} mode`);
    }
  }
}

/** The planner's form of --detect-local-mode. */
export function detectLocalSpec(d: DetectLocal): DetectLocalSpec {
  switch (d.mode) {
    case 'ClusterCIDR':
      return { kind: 'clusterCIDR' };
    case 'NodeCIDR':
      return { kind: 'nodeCIDR' };
    case 'BridgeInterface':
      return { kind: 'bridgeInterface', name: d.bridgeInterface };
    case 'InterfaceNamePrefix':
      return { kind: 'interfaceNamePrefix', prefix: d.interfaceNamePrefix };
  }
}

export interface PrepareDeps {
  readonly fs?: ProcFs;
  readonly cpus?: number;
}

function report(what: string, o: SettingOutcome): void {
  const fields = { path: o.path, value: o.wanted, ...(o.before !== undefined ? { was: o.before } : {}) };
  if (o.result === 'set') log.info(`set ${what}`, fields);
  else if (o.result === 'unchanged') log.v(2, `${what} already as wanted`, fields);
  else log.warn(`cannot set ${what}; continuing without it`, { ...fields, error: o.error });
}

/** Logs ignored settings, refuses unsupported ones, applies the node settings. */
export async function prepareNode(config: ProxyConfig, deps: PrepareDeps = {}): Promise<SettingOutcome[]> {
  setVerbosity(config.verbosity);
  if (config.ignored.length > 0) log.info(`accepted for kube-proxy compatibility, no effect in ferry: ${config.ignored.join('; ')}`);
  checkDetectLocal(config);
  if (config.dryRun) return [];
  const outcomes = await applyConntrack(config.conntrack, { fs: deps.fs, cpus: deps.cpus ?? Math.max(1, cpus().length) });
  for (const o of outcomes) report(`conntrack ${o.path.split('/').pop() ?? o.path}`, o);
  if (!config.initOnly) {
    const oom = await applyOomScoreAdj(config.oomScoreAdj, deps.fs);
    report('oom_score_adj', oom);
    outcomes.push(oom);
  }
  return outcomes;
}
