/**
 * ferry's command line. `ferry [flags]` runs the proxy with kube-proxy's flags; subcommands
 * run the simulator and the demo. Each subcommand registers itself from its own module so this
 * file stays a table of contents.
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { registerSimApiserver } from '../sim/apiserver/cli.js';
import { registerSimCluster } from '../sim/cluster/cli.js';
import { registerDemo } from '../demo/cli.js';
import { registerProxy } from './proxy.js';
import { registerTrace } from './trace.js';

function version(): string {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command('ferry');
  program.version(version(), '--version', 'print the version and exit');
  registerProxy(program);
  const sim = program.command('sim').description('the simulated cluster: API server and network namespaces');
  registerSimApiserver(sim);
  registerSimCluster(sim);
  registerDemo(program);
  registerTrace(program);
  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    process.stderr.write(`ferry: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
