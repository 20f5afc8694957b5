/**
 * `ferry sim cluster up|down`: stand the network-namespace cluster up until Ctrl-C (optionally
 * with the simulated API server on 198.18.0.1 and a kubeconfig for kubectl), or remove leftovers.
 * All behaviour lives in the library; this file only parses flags and prints.
 */
import type { Command } from 'commander';
import { unlinkSync } from 'node:fs';
import { allowPlainHttpInKubeconfig, cleanupPrefix, createCluster, installSignalCleanup, listLeftovers, type Cluster } from './index.js';
import { NAME_ROOT, randomPrefix } from './addressing.js';
import { cleanupPrefixSync } from './cleanup.js';
import { clearStaleLock, releaseLan } from './lan-lock.js';
import { startApiServer, type ApiServer } from '../apiserver/index.js';

interface UpFlags {
  nodes: string;
  dualStack?: boolean;
  podsPerNode: string;
  apiserver?: boolean;
  apiserverPort: string;
  kubeconfigOut?: string;
  prefix?: string;
}


function int(flag: string, v: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${flag} must be an integer >= ${min}, got ${v}`);
  return n;
}

function describe(c: Cluster): string {
  const lines = [`simulated cluster ${c.prefix} is up (Ctrl-C tears it down)`, `  host      ${c.hostIP}${c.hostIP6 ? ' ' + c.hostIP6 : ''}`];
  for (const n of c.nodes) lines.push(`  ${n.name.padEnd(9)} ${n.ip}${n.ip6 ? ' ' + n.ip6 : ''}  pods ${n.podCIDR}${n.podCIDR6 ? ' ' + n.podCIDR6 : ''}  netns ${n.netns}`);
  lines.push(`  client    ${c.clientIP}  netns ${c.clientNetns}`);
  const pods = [...c.pods.values()].sort((a, b) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name));
  for (const p of pods) lines.push(`  pod ${p.namespace}/${p.name} on ${p.node}: ${p.ip}${p.ip6 ? ' ' + p.ip6 : ''}  netns ${p.netns}`);
  lines.push(`  service CIDRs ${c.serviceCIDRs.join(',')}  cluster CIDRs ${c.clusterCIDRs.join(',')}`);
  return lines.join('\n') + '\n';
}

async function up(f: UpFlags): Promise<void> {
  const nodes = int('nodes', f.nodes, 1);
  const podsPerNode = int('pods-per-node', f.podsPerNode, 0);
  const prefix = f.prefix ?? randomPrefix();
  // Ctrl-C while the cluster is being built: nothing asynchronous can be trusted to finish, so
  // remove whatever exists by prefix, synchronously, and leave.
  const early = (): void => {
    cleanupPrefixSync(prefix);
    releaseLan(prefix);
    process.exit(130);
  };
  process.on('SIGINT', early);
  process.on('SIGTERM', early);
  let cluster: Cluster;
  try {
    cluster = await createCluster({ nodes, dualStack: f.dualStack ?? false, prefix });
  } finally {
    process.off('SIGINT', early);
    process.off('SIGTERM', early);
  }
  let api: ApiServer | undefined;
  let kubeconfig: string | undefined;
  const extra = async (): Promise<void> => {
    if (api) await api.close();
    if (kubeconfig) {
      try {
        unlinkSync(kubeconfig);
      } catch {
        /* already gone */
      }
    }
  };
  installSignalCleanup(cluster, extra);
  try {
    if (f.apiserver) {
      api = await startApiServer({ host: cluster.hostIP, port: int('apiserver-port', f.apiserverPort, 0), serviceCIDRs: cluster.serviceCIDRs });
      kubeconfig = f.kubeconfigOut ?? `/tmp/ferry-sim-${cluster.prefix}.kubeconfig`;
      api.writeKubeconfig(kubeconfig);
      allowPlainHttpInKubeconfig(kubeconfig);
      await cluster.attachApiServer(kubeconfig);
    }
    const pending = [];
    for (const n of cluster.nodes) {
      for (let k = 1; k <= podsPerNode; k++) pending.push(cluster.addPod({ name: `${n.name}-pod-${k}`, node: n.name, labels: { app: 'echo' } }));
    }
    await Promise.all(pending);
  } catch (e) {
    await extra();
    await cluster.down();
    throw e;
  }
  process.stdout.write(describe(cluster));
  if (api && kubeconfig) process.stdout.write(`API server ${api.url}\nkubeconfig ${kubeconfig}\n  export KUBECONFIG=${kubeconfig}\n`);
  // Stay up until a signal; the signal handler tears down and exits.
  setInterval(() => undefined, 1 << 30);
}

async function down(f: { prefix?: string }): Promise<void> {
  const prefix = f.prefix ?? NAME_ROOT;
  const before = await listLeftovers(prefix);
  await cleanupPrefix(prefix);
  clearStaleLock();
  const after = await listLeftovers(prefix);
  process.stdout.write(`removed ${before.length - after.length} namespaces/interfaces with prefix ${prefix}\n`);
  if (after.length > 0) throw new Error(`could not remove: ${after.join(' ')}`);
}

export function registerSimCluster(sim: Command): void {
  const cluster = sim.command('cluster').description('stand up or tear down the simulated network-namespace cluster');
  cluster
    .command('up')
    .description('create nodes, pods and a client in network namespaces; runs until Ctrl-C, then removes everything')
    .option('--nodes <n>', 'number of nodes', '3')
    .option('--dual-stack', 'IPv4 and IPv6')
    .option('--pods-per-node <k>', 'echo pods per node', '0')
    .option('--apiserver', 'also run the simulated API server on 198.18.0.1 and write a kubeconfig')
    .option('--apiserver-port <port>', 'API server port (0 = any free port)', '6443')
    .option('--kubeconfig-out <path>', 'where to write the kubeconfig (default /tmp/ferry-sim-<prefix>.kubeconfig)')
    .option('--prefix <prefix>', 'run prefix ("fy" + up to 4 characters; default random)')
    .action((f: UpFlags) => up(f));
  cluster
    .command('down')
    .description('remove the namespaces and interfaces of one run (--prefix) or of every run ("fy*")')
    .option('--prefix <prefix>', 'only this run')
    .action((f: { prefix?: string }) => down(f));
}
