/**
 * A real daemon (startProxy) against the simulated API server, with the backend and hooks a
 * test gives it, torn down with the test: the set-up the daemon-level unit tests share.
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApiServer, type ApiServer, type ApiServerOptions } from '../../../src/sim/apiserver/index.js';
import { startProxy, type DaemonDeps, type ProxyDaemon } from '../../../src/proxy/daemon.js';
import { loadKubeConfig } from '../../../src/kube/client.js';
import { resolveConfig } from '../../../src/config/resolve.js';

export interface SimDaemonOptions {
  /** The API server's options (a `core` to share the store with the test). */
  readonly api?: ApiServerOptions;
  /** Flags beyond the kubeconfig, `--hostname-override node-a` and no healthz/metrics servers. */
  readonly flags?: readonly [string, string][];
  /** The server the kubeconfig names instead of the API server's own (a recording proxy in front of it). */
  readonly server?: (api: ApiServer) => string | Promise<string>;
  /** Hooks for startProxy; the kubeconfig is filled in. */
  readonly deps?: Omit<DaemonDeps, 'kubeConfig'>;
}

export async function simDaemon(t: Test, opts: SimDaemonOptions = {}): Promise<{ api: ApiServer; daemon: ProxyDaemon }> {
  const api = await startApiServer(opts.api ?? { serviceCIDRs: ['198.18.64.0/18'] });
  const dir = mkdtempSync(join(tmpdir(), 'ferry-unit-daemon-'));
  const kubeconfig = join(dir, 'kubeconfig');
  api.writeKubeconfig(kubeconfig, opts.server ? await opts.server(api) : undefined);
  const config = resolveConfig({
    flags: new Map<string, string | boolean>([
      ['kubeconfig', kubeconfig],
      ['hostname-override', 'node-a'],
      ['healthz-bind-address', ''],
      ['metrics-bind-address', ''],
      ...(opts.flags ?? []),
    ]),
    hostname: 'unused',
  });
  let daemon: ProxyDaemon;
  try {
    daemon = await startProxy(config, { ...opts.deps, kubeConfig: loadKubeConfig({ kubeconfig }) });
  } catch (e) {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  t.teardown(async () => {
    await daemon.stop();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { api, daemon };
}

/** Polls `pred` every 20 ms; throws naming `what` after `ms`. */
export async function until(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`not within ${ms / 1000} s: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
