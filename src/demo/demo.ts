/**
 * `ferry demo`: stands up a simulated 3-node cluster (network namespaces + the simulated API
 * server), runs one ferry per node, creates a ClusterIP, a NodePort and an externalIPs Service,
 * and proves each from the vantage point that matters (pod → ClusterIP, outside client →
 * NodeIP:NodePort on every node, client → externalIP), printing which pod answered and which
 * source address it saw. Everything it creates is removed at the end, also on Ctrl-C.
 */
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig, CoreV1Api, DiscoveryV1Api, type V1Service } from '@kubernetes/client-node';
import { createCluster, installSignalCleanup, type Cluster, type ProbeResult, type Vantage } from '../sim/cluster/index.js';
import { startApiServer, type ApiServer } from '../sim/apiserver/index.js';
import { run } from '../util/exec.js';

export type ProxyMode = 'nftables' | 'iptables' | 'ebpf' | 'userspace';

export interface DemoOptions {
  mode: ProxyMode;
  nodes: number;
  out: (s: string) => void;
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const FERRY_BIN = join(ROOT, 'bin', 'ferry');
const EXTERNAL_IP = '203.0.113.10';

export class DemoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DemoError';
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new DemoError(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function svc(name: string, spec: V1Service['spec']): V1Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec };
}

function describeProbe(r: ProbeResult | undefined): string {
  if (!r) return 'no answer';
  if (!r.ok) return `FAILED (${r.error ?? 'unknown error'})`;
  return `answered by ${r.pod ?? '?'}, which saw the client as ${r.seenIP ?? r.seen ?? '?'}`;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

export async function runDemo(opts: DemoOptions): Promise<boolean> {
  const { out } = opts;
  if (process.getuid && process.getuid() !== 0) throw new DemoError('the demo creates network namespaces and must run as root');
  const work = mkdtempSync(join(tmpdir(), 'ferry-demo-'));
  let cluster: Cluster | undefined;
  let api: ApiServer | undefined;
  const teardown = async (): Promise<void> => {
    await cluster?.down();
    await api?.close();
    rmSync(work, { recursive: true, force: true });
  };
  try {
    out(`Standing up a simulated ${opts.nodes}-node cluster (network namespaces, simulated API server)...\n`);
    cluster = await createCluster({ nodes: opts.nodes });
    installSignalCleanup(cluster, async () => {
      await api?.close();
      rmSync(work, { recursive: true, force: true });
    });
    api = await startApiServer({ host: cluster.hostIP, port: 0, serviceCIDRs: cluster.serviceCIDRs });
    const kubeconfig = join(work, 'kubeconfig');
    api.writeKubeconfig(kubeconfig);
    await cluster.attachApiServer(kubeconfig);

    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);

    // Two web pods on different nodes; the last node has none, so NodePort traffic to it must
    // cross nodes.
    const webNodes = cluster.nodes.slice(0, Math.min(2, cluster.nodes.length));
    await Promise.all(webNodes.map((n, i) => cluster!.addPod({ name: `web-${i + 1}`, node: n.name, labels: { app: 'web' } })));
    const clientPodNode = cluster.nodes[cluster.nodes.length - 1]!;
    await cluster.addPod({ name: 'client-pod', node: clientPodNode.name, labels: { app: 'client' } });

    // ferry on every node, as a real process in the node's namespace.
    for (const n of cluster.nodes) {
      cluster.spawnIn(
        n.netns,
        [
          process.execPath,
          FERRY_BIN,
          '--kubeconfig', kubeconfig,
          '--hostname-override', n.name,
          '--proxy-mode', opts.mode,
          '--cluster-cidr', cluster.clusterCIDRs.join(','),
          '--healthz-bind-address', '0.0.0.0:10256',
          '--metrics-bind-address', '127.0.0.1:10249',
          // ebpf: the node's own cgroup (never the host's root) and a pin directory of this run.
          ...(opts.mode === 'ebpf' ? ['--ebpf-cgroup-root', cluster.cgroupOf({ kind: 'node', node: n.name }) ?? '', '--ebpf-bpffs-dir', cluster.bpffsDirOf(n.name)] : []),
        ],
        { logFile: join(work, `ferry-${n.name}.log`), hostMounts: opts.mode === 'ebpf' },
      );
    }

    const ports = [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }];
    await core.createNamespacedService({ namespace: 'default', body: svc('web', { selector: { app: 'web' }, ports }) });
    await core.createNamespacedService({
      namespace: 'default',
      body: svc('web-nodeport', { type: 'NodePort', selector: { app: 'web' }, ports }),
    });
    await core.createNamespacedService({
      namespace: 'default',
      body: svc('web-external', { selector: { app: 'web' }, ports, externalIPs: [EXTERNAL_IP] }),
    });
    await cluster.addClientRoute(`${EXTERNAL_IP}/32`, cluster.nodes[0]!.name);

    const get = async (name: string): Promise<V1Service> => core.readNamespacedService({ name, namespace: 'default' });
    const web = await get('web');
    const np = await get('web-nodeport');
    const ext = await get('web-external');
    const nodePort = np.spec?.ports?.[0]?.nodePort ?? 0;

    await until('EndpointSlices for web', async () => {
      const list = await discovery.listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=web' });
      const n = list.items.reduce((a, s) => a + (s.endpoints?.length ?? 0), 0);
      return n >= webNodes.length ? n : undefined;
    });

    out('\nCluster\n');
    for (const n of cluster.nodes) out(`  ${pad(n.name, 8)} ${pad(n.ip, 14)} pods ${n.podCIDR}\n`);
    for (const p of [...cluster.pods.values()]) out(`  pod ${pad(p.name, 11)} on ${pad(p.node, 7)} ${p.ip}\n`);
    out(`  outside client ${cluster.clientIP}\n`);

    out('\nServices (from the simulated API server)\n');
    out(`  ${pad('NAME', 14)}${pad('TYPE', 11)}${pad('CLUSTER-IP', 15)}${pad('EXTERNAL-IP', 15)}PORT(S)\n`);
    for (const s of [web, np, ext]) {
      const p = s.spec?.ports?.[0];
      const portStr = p ? `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}` : '';
      out(
        `  ${pad(s.metadata?.name ?? '', 14)}${pad(s.spec?.type ?? 'ClusterIP', 11)}${pad(s.spec?.clusterIP ?? '', 15)}` +
          `${pad((s.spec?.externalIPs ?? []).join(',') || '<none>', 15)}${portStr}\n`,
      );
    }
    const slices = await discovery.listNamespacedEndpointSlice({ namespace: 'default' });
    out('\nEndpointSlices\n');
    for (const s of slices.items) {
      const eps = (s.endpoints ?? []).map((e) => `${e.addresses[0]}${e.nodeName ? ` (${e.nodeName})` : ''}`).join(', ');
      out(`  ${pad(s.metadata?.name ?? '', 22)} ${s.metadata?.labels?.['kubernetes.io/service-name'] ?? ''}: ${eps || '<none>'}\n`);
    }

    out(`\nWaiting for ferry (${opts.mode} mode) to become healthy on every node...\n`);
    for (const n of cluster.nodes) {
      await until(`ferry healthy on ${n.name} (log: ${join(work, `ferry-${n.name}.log`)})`, async () => {
        const r = await cluster!.exec(n.netns, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '1', 'http://127.0.0.1:10256/healthz'], {
          allowFailure: true,
        });
        return r.stdout.trim() === '200' ? true : undefined;
      }, 60_000);
    }

    const checks: { label: string; from: Vantage; addr: string; port: number }[] = [];
    const clusterIP = web.spec?.clusterIP ?? '';
    checks.push({ label: `pod client-pod (${clientPodNode.name}) → ClusterIP ${clusterIP}:80`, from: { kind: 'pod', pod: 'client-pod' }, addr: clusterIP, port: 80 });
    if (opts.mode === 'ebpf') {
      // Socket-level LB serves the node's own processes and its pods (the outside client below
      // goes through the tc program; docs/ebpf.md).
      const own = clientPodNode;
      checks.push({ label: `pod client-pod → its node ${own.name} ${own.ip}:${nodePort} (NodePort)`, from: { kind: 'pod', pod: 'client-pod' }, addr: own.ip, port: nodePort });
      checks.push({ label: `${own.name} itself → 127.0.0.1:${nodePort} (NodePort)`, from: { kind: 'node', node: own.name }, addr: '127.0.0.1', port: nodePort });
      checks.push({ label: `pod client-pod → externalIP ${EXTERNAL_IP}:80`, from: { kind: 'pod', pod: 'client-pod' }, addr: EXTERNAL_IP, port: 80 });
    }
    for (const n of cluster.nodes) {
      checks.push({ label: `outside client → ${n.name} ${n.ip}:${nodePort} (NodePort)`, from: { kind: 'client' }, addr: n.ip, port: nodePort });
    }
    checks.push({ label: `outside client → externalIP ${EXTERNAL_IP}:80`, from: { kind: 'client' }, addr: EXTERNAL_IP, port: 80 });

    out('\nTraffic\n');
    let allOk = true;
    for (const c of checks) {
      // A few attempts: the rules may land a moment after /healthz first turns green.
      let r: ProbeResult | undefined;
      for (let i = 0; i < 20; i++) {
        r = (await cluster.probe(c.from, { proto: 'tcp', addr: c.addr, port: c.port }, { count: 1, timeoutMs: 1000 }))[0];
        if (r?.ok) break;
        await new Promise((res) => setTimeout(res, 250));
      }
      if (!r?.ok) allOk = false;
      out(`  ${pad(c.label, 58)} ${describeProbe(r)}\n`);
    }
    if (!allOk) {
      out('\nSome checks failed. Last lines of each ferry log:\n');
      for (const n of cluster.nodes) {
        const f = join(work, `ferry-${n.name}.log`);
        const tail = existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').slice(-8).join('\n    ') : '(no log)';
        out(`  ${n.name}:\n    ${tail}\n`);
        const rules = await run(['ip', 'netns', 'exec', n.netns, 'nft', 'list', 'ruleset'], { allowFailure: true });
        if (opts.mode === 'nftables') out(`    (${rules.stdout.split('\n').length} lines of nft ruleset)\n`);
      }
    }
    if (opts.mode === 'ebpf') out('\n  (ebpf mode: socket-level load balancing for the nodes and their pods, the tc program for the outside client — docs/ebpf.md)\n');
    // What the node's ferry says about it: `ferry status`, then the client pod's flow explained
    // by `ferry trace`, both through the real CLI inside the node's namespace.
    const ferryCli = async (args: string[]): Promise<boolean> => {
      const r = await cluster!.exec(clientPodNode.netns, [process.execPath, FERRY_BIN, ...args], { allowFailure: true, timeoutMs: 20_000 });
      out(`\n$ ferry ${args.join(' ')}    # in ${clientPodNode.name}\n`);
      out(r.exitCode === 0 ? r.stdout : `  failed (exit ${r.exitCode}): ${r.stderr.trim()}\n`);
      return r.exitCode === 0;
    };
    if (!(await ferryCli(['status']))) allOk = false;
    const clientPod = cluster.pod('client-pod');
    // In a kernel mode, --kernel also sends a marked probe and checks the kernel agrees.
    const kernel = opts.mode === 'nftables' || opts.mode === 'iptables' ? ['--kernel'] : [];
    if (!(await ferryCli(['trace', clientPod.ip, `${clusterIP}:80`, ...kernel]))) allOk = false;
    out(`\n${allOk ? 'All checks passed' : 'Some checks FAILED'}. Tearing down...\n`);
    return allOk;
  } finally {
    await teardown();
  }
}
