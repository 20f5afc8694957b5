import type { Command } from 'commander';
// Placeholder until the simulated API server lands.
export function registerSimApiserver(sim: Command): void {
  sim.command('apiserver').description('run the simulated Kubernetes API server').action(() => {
    throw new Error('not implemented yet');
  });
}
