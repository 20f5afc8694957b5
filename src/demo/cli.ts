/**
 * `ferry demo`: flag parsing only; the demo itself is src/demo/demo.ts.
 */
import type { Command } from 'commander';
import { runDemo, type ProxyMode } from './demo.js';

const MODES: readonly ProxyMode[] = ['nftables', 'iptables', 'ebpf', 'userspace'];

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('stand up a simulated cluster (network namespaces + simulated API server), run ferry on every node, and show Services answering')
    .option('--proxy-mode <mode>', `proxy mode for the ferry daemons (${MODES.join(', ')})`, 'nftables')
    .option('--nodes <n>', 'number of nodes (2 or more)', '3')
    .action(async (f: { proxyMode: string; nodes: string }) => {
      if (!MODES.includes(f.proxyMode as ProxyMode)) {
        throw new Error(`--proxy-mode: "${f.proxyMode}" is not one of ${MODES.join(', ')}`);
      }
      const nodes = Number(f.nodes);
      if (!Number.isInteger(nodes) || nodes < 2 || nodes > 8) throw new Error(`--nodes: "${f.nodes}" must be an integer from 2 to 8`);
      const ok = await runDemo({ mode: f.proxyMode as ProxyMode, nodes, out: (s) => process.stdout.write(s) });
      process.exitCode = ok ? 0 : 1;
    });
}
