import type { Command } from 'commander';
// Placeholder until the proxy command lands.
export function registerProxy(program: Command): void {
  program.description('ferry: a drop-in replacement for kube-proxy');
}
