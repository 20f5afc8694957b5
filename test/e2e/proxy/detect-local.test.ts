// --detect-local-mode end to end through the real bin/ferry in --dry-run against the simulated
// API server: which local-traffic detector reaches the planned table for each mode and where it
// comes from (flags, a kubeadm-style file, the Node's spec.podCIDRs). Loopback only; no kernel
// state is touched.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dryRunCluster, waitFor } from './proc.js';

t.test('each detect-local mode reaches the planned table', async (t) => {
  const { dir, kubectl: kubectlArgs, ferry } = await dryRunCluster(t, 'detect-local', ['198.18.0.0/20']);
  const kubectl = (input: string) => kubectlArgs(['apply', '-f', '-'], input);
  // With its addresses, as a kubelet posts them. (ferry's change tracker notices a Node change by
  // its addresses and labels; a Node that differs from "unknown" only by podCIDRs is not seen.)
  await kubectl(
    'apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDRs: [10.244.7.0/24, "fd00:10:244:7::/64"]}\n' +
      'status: {addresses: [{type: InternalIP, address: 192.0.2.11}, {type: InternalIP, address: "2001:db8::11"}]}\n',
  );

  /** Starts a dry-run ferry and returns the detectors of its first plan, by family. */
  async function detectors(args: string[]): Promise<{ 4: unknown; 6: unknown; stderr: string }> {
    const p = await ferry(args);
    const line = await waitFor('the first plan', () => p.last(), () => `exit=${p.exitCode}; stderr:\n${p.tail()}`);
    await p.stop('SIGTERM');
    return { 4: line.families['4'].localTraffic, 6: line.families['6'].localTraffic, stderr: p.stderr };
  }

  await t.test('ClusterCIDR (the default) from --cluster-cidr', async (t) => {
    const d = await detectors(['--cluster-cidr', '10.244.0.0/16']);
    t.same(d[4], { kind: 'clusterCIDR', cidrs: ['10.244.0.0/16'] });
    t.same(d[6], { kind: 'none' }, 'no IPv6 cluster CIDR: no detector');
  });

  await t.test("NodeCIDR from the Node's spec.podCIDRs, per family", async (t) => {
    const d = await detectors(['--detect-local-mode', 'NodeCIDR', '--cluster-cidr', '10.244.0.0/16']);
    t.same(d[4], { kind: 'clusterCIDR', cidrs: ['10.244.7.0/24'] }, 'the node podCIDR, not the cluster CIDR');
    t.same(d[6], { kind: 'clusterCIDR', cidrs: ['fd00:10:244:7::/64'] });
  });

  await t.test('NodeCIDR from a kubeadm-style file', async (t) => {
    const config = join(dir, 'proxy.yaml');
    writeFileSync(
      config,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'clusterCIDR: 10.244.0.0/16',
        'detectLocalMode: NodeCIDR',
        'detectLocal: {bridgeInterface: "", interfaceNamePrefix: ""}',
      ].join('\n'),
    );
    const d = await detectors(['--config', config]);
    t.same(d[4], { kind: 'clusterCIDR', cidrs: ['10.244.7.0/24'] });
  });

  await t.test('the interface modes are carried in the IR', async (t) => {
    const b = await detectors(['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', 'cbr0']);
    t.same(b[4], { kind: 'bridgeInterface', name: 'cbr0' });
    t.same(b[6], { kind: 'bridgeInterface', name: 'cbr0' });
    const p = await detectors(['--detect-local-mode', 'InterfaceNamePrefix', '--pod-interface-name-prefix', 'veth']);
    t.same(p[4], { kind: 'interfaceNamePrefix', prefix: 'veth' });
  });
});
