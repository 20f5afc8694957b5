import type { Command } from 'commander';
// Placeholder until the demo lands.
export function registerDemo(program: Command): void {
  program.command('demo').description('stand up a simulated cluster running ferry and show services answering').action(() => {
    throw new Error('not implemented yet');
  });
}
