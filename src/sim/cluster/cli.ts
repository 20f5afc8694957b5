import type { Command } from 'commander';
// Placeholder until the network-namespace cluster lands.
export function registerSimCluster(sim: Command): void {
  sim.command('cluster').description('stand up or tear down the simulated cluster').action(() => {
    throw new Error('not implemented yet');
  });
}
