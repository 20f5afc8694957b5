/**
 * `ferry [flags]`: the proxy itself, with kube-proxy's flags. This module only turns the
 * command line into a ProxyConfig (src/config/) and hands it to the daemon (src/proxy/);
 * it must never hold proxy logic. kube-proxy flags ferry does not implement are refused by name.
 */
import { Command, Option } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { PROXY_FLAGS, REFUSED_KUBE_PROXY_FLAGS, UNSUPPORTED_KUBE_PROXY_FLAGS, type ExplicitFlags } from '../config/flags.js';
import { parseConfigFile, type FileConfig } from '../config/file.js';
import { resolveConfig } from '../config/resolve.js';
import { formatKubeProxyConfiguration } from '../config/write.js';
import { ConfigError, UnsupportedFlagError, type ProxyConfig } from '../config/types.js';
import { logger } from '../util/log.js';

const log = logger('proxy');

/** commander's attribute name for a long flag ("proxy-mode" → "proxyMode", "log_dir" → "log_dir"). */
function attrName(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The flags given explicitly on `cmd`'s command line. Throws for a refused kube-proxy flag. */
export function explicitFlags(cmd: Command): ExplicitFlags {
  const opts = cmd.opts<Record<string, unknown>>();
  for (const name of UNSUPPORTED_KUBE_PROXY_FLAGS) {
    if (cmd.getOptionValueSource(attrName(name)) === 'cli') throw new UnsupportedFlagError(name, REFUSED_KUBE_PROXY_FLAGS[name]);
  }
  const out = new Map<string, string | boolean>();
  for (const f of PROXY_FLAGS) {
    const key = attrName(f.name);
    if (cmd.getOptionValueSource(key) !== 'cli') continue;
    const v = opts[key];
    if (typeof v === 'string' || typeof v === 'boolean') out.set(f.name, v);
  }
  return out;
}

/**
 * Reads --config (if given) and resolves the whole configuration. Logs, as warnings, the
 * deprecated flags given (as pflag does when it parses them) and what of the file kube-proxy's
 * lenient decoding would drop.
 */
export function configFromFlags(flags: ExplicitFlags, host: string = hostname()): ProxyConfig {
  for (const f of PROXY_FLAGS) {
    if (f.deprecated !== undefined && flags.has(f.name)) log.warn(`Flag --${f.name} has been deprecated, ${f.deprecated}`);
  }
  let file: FileConfig | undefined;
  const path = flags.get('config');
  if (typeof path === 'string' && path.trim() !== '') {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new ConfigError('--config', `cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
    }
    file = parseConfigFile(text, path);
    if (file.lenient.length > 0) {
      log.warn('using lenient decoding of the config file as kube-proxy does: these fields are ignored', { file: path, fields: file.lenient.join('; ') });
    }
  }
  return resolveConfig({ flags, file, hostname: host });
}

/** Adds the proxy's options and action to the root command. */
export function addProxyOptions(program: Command): void {
  for (const f of PROXY_FLAGS) {
    const flags = `${f.short ? `-${f.short}, ` : ''}--${f.name} ${f.arg}`;
    const base = f.ignoredBecause ? `${f.help}; accepted, no effect: ${f.ignoredBecause}` : f.help;
    const help = f.defaultText !== undefined ? `${base} (default: ${f.defaultText})` : base;
    const option = new Option(flags, help);
    if (f.deprecated !== undefined) option.hideHelp();
    if (f.repeatable) {
      // An empty use adds nothing, as pflag's CSV reading of "" yields no entry.
      option.argParser((value: string, previous: unknown) =>
        typeof previous === 'string' && previous !== '' ? (value === '' ? previous : `${previous},${value}`) : value,
      );
    }
    program.addOption(option);
  }
  for (const name of UNSUPPORTED_KUBE_PROXY_FLAGS) {
    program.addOption(new Option(`--${name} [value]`).hideHelp());
  }
  program.addHelpText(
    'after',
    '\nDurations use Go syntax (500ms, 30s, 1m30s, 1h). Flags given explicitly override --config.\n' +
      'Flags marked "accepted, no effect" are validated and logged once at start. kube-proxy flags ferry does\n' +
      'not implement are rejected by name with the reason, e.g. the --ipvs-* flags and --vmodule.\n',
  );
}

export function registerProxy(program: Command): void {
  program.description('ferry: a drop-in replacement for kube-proxy (run with kube-proxy flags)');
  // Root options must come before a subcommand's name, so `ferry sim ... --kubeconfig x` reaches
  // the subcommand instead of the proxy.
  program.enablePositionalOptions();
  addProxyOptions(program);
  program.action(async (_opts: unknown, cmd: Command) => {
    const config = configFromFlags(explicitFlags(cmd));
    if (config.writeConfigTo !== undefined) {
      const text = formatKubeProxyConfiguration(config, hostname());
      try {
        writeFileSync(config.writeConfigTo, text);
      } catch (e) {
        throw new ConfigError('--write-config-to', `cannot write ${config.writeConfigTo}: ${e instanceof Error ? e.message : String(e)}`);
      }
      return;
    }
    // Imported lazily so `ferry --help` and the simulator never load the daemon's dependencies.
    const daemon = await import('../proxy/daemon.js');
    if (config.cleanup) {
      process.exitCode = await daemon.runCleanup(config);
      return;
    }
    const { prepareNode } = await import('../proxy/startup.js');
    await prepareNode(config);
    if (config.initOnly) return;
    await daemon.runProxy(config);
  });
}
