/**
 * `ferry sim apiserver`: run the simulated API server in the foreground until SIGINT/SIGTERM.
 * Only parses flags and wires signals; the server itself lives in ./index.ts.
 */
import type { Command } from 'commander';
import { startApiServer, type ApiServerOptions } from './index.js';
import { logger } from '../../util/log.js';

const log = logger('sim-apiserver');

export class FlagError extends Error {
  readonly code = 'FERRY_ERR_FLAG';
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag}: ${message}`);
    this.name = 'FlagError';
  }
}

/** `127.0.0.1:6443`, `[2001:db8::1]:6443`, `:6443` (all IPv4 addresses). */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s);
  if (!m) throw new FlagError('--listen', `expected HOST:PORT, got ${JSON.stringify(s)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new FlagError('--listen', `port out of range: ${port}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function parsePortRange(s: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(s);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw new FlagError('--nodeport-range', `expected MIN-MAX within 1-65535, got ${JSON.stringify(s)}`);
  return [lo, hi];
}

export function registerSimApiserver(sim: Command): void {
  sim
    .command('apiserver')
    .description('run the simulated Kubernetes API server (plain HTTP, no auth) in the foreground')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:6443')
    .option('--kubeconfig-out <file>', 'write a kubeconfig pointing at the server to this file')
    .option('--service-cidr <cidr[,cidr]>', 'service IP range, one per IP family', '10.96.0.0/16')
    .option('--nodeport-range <min-max>', 'NodePort range', '30000-32767')
    .action(async (flags: { listen: string; kubeconfigOut?: string; serviceCidr: string; nodeportRange: string }) => {
      const { host, port } = parseListen(flags.listen);
      const opts: ApiServerOptions = {
        host,
        port,
        serviceCIDRs: flags.serviceCidr.split(',').map((c) => c.trim()).filter((c) => c !== ''),
        nodePortRange: parsePortRange(flags.nodeportRange),
      };
      const server = await startApiServer(opts);
      if (flags.kubeconfigOut) server.writeKubeconfig(flags.kubeconfigOut);
      log.info('simulated API server running', { url: server.url, kubeconfig: flags.kubeconfigOut ?? '' });
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          log.info('stopping', { signal: sig });
          resolve();
        };
        process.once('SIGINT', () => stop('SIGINT'));
        process.once('SIGTERM', () => stop('SIGTERM'));
      });
      await server.close();
    });
}
