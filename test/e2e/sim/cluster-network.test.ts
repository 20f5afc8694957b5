// The network-namespace cluster on the real kernel: pod and node reachability, what the echo
// servers see, and that teardown leaves nothing — also when creation fails half-way.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createCluster,
  listLeftovers,
  randomPrefix,
  ECHO_SCRIPT_PATH,
  RegistrationError,
  ClusterOptionError,
  type Cluster,
  type ProbeResult,
} from '../../../src/sim/cluster/index.js';
import { run } from '../../../src/util/exec.js';

function show(rs: ProbeResult[]): string {
  return JSON.stringify(rs);
}

t.test('two dual-stack nodes with pods', async (t) => {
  const c: Cluster = await createCluster({ nodes: 2, dualStack: true });
  t.teardown(() => c.down());
  const [a, b, a2] = await Promise.all([
    c.addPod({ name: 'web-a', node: 'node-1', labels: { app: 'web' } }),
    c.addPod({ name: 'web-b', node: 'node-2', labels: { app: 'web' }, ports: [8080, 9090] }),
    c.addPod({ name: 'web-a2', node: 'node-1' }),
  ]);
  const [n1, n2] = c.nodes;
  if (!n1 || !n2 || !a.ip6 || !b.ip6) throw new Error('cluster is missing nodes or IPv6 addresses');

  t.test('names carry the prefix and addresses follow the plan', async (t) => {
    t.match(c.prefix, /^fy[a-z0-9]{4}$/);
    t.equal(n1.ip, '198.18.0.11');
    t.equal(n2.ip6, '2001:db8:0:1::12');
    t.equal(b.ip, '198.19.2.2');
    t.equal(b.ip6, '2001:db8:1:2::2');
    t.not(a.ip, a2.ip);
    const left = await listLeftovers(c.prefix);
    t.ok(left.includes(`netns/${b.netns}`), `pod namespace exists: ${left.join(' ')}`);
    t.ok(left.includes(`link/${c.prefix}h`), 'the host end of the LAN exists');
  });

  t.test('pod → pod across nodes, IPv4 TCP: the right pod answers and sees the source pod IP', async (t) => {
    const rs = await c.probe({ kind: 'pod', pod: 'web-a' }, { proto: 'tcp', addr: b.ip, port: 8080 }, { count: 3 });
    t.equal(rs.length, 3);
    for (const r of rs) {
      t.ok(r.ok, `answered: ${show(rs)}`);
      t.equal(r.pod, 'web-b', `answered by ${r.pod}`);
      t.equal(r.seenIP, a.ip, `source seen as ${r.seenIP}, not masqueraded`);
    }
  });

  t.test('pod → pod across nodes, IPv6 TCP', async (t) => {
    const [r] = await c.probe({ kind: 'pod', pod: 'web-b' }, { proto: 'tcp', addr: a.ip6 as string, port: 8080 });
    t.ok(r?.ok, show([r as ProbeResult]));
    t.equal(r?.pod, 'web-a');
    t.equal(r?.seenIP, b.ip6);
  });

  t.test('UDP echo, IPv4 and IPv6, on every port of the pod', async (t) => {
    for (const addr of [b.ip, b.ip6 as string]) {
      for (const port of [8080, 9090]) {
        const [r] = await c.probe({ kind: 'pod', pod: 'web-a' }, { proto: 'udp', addr, port });
        t.ok(r?.ok, `udp ${addr} ${port}: ${JSON.stringify(r)}`);
        t.equal(r?.pod, 'web-b');
        t.equal(r?.seenIP, addr === b.ip ? a.ip : a.ip6);
      }
    }
  });

  t.test('pod → pod on the same node', async (t) => {
    const [r] = await c.probe({ kind: 'pod', pod: 'web-a2' }, { proto: 'tcp', addr: a.ip, port: 8080 });
    t.equal(r?.pod, 'web-a', JSON.stringify(r));
    t.equal(r?.seenIP, a2.ip);
  });

  t.test('node → its own pod and → a pod on another node; the pod sees the node IP', async (t) => {
    const [own] = await c.probe({ kind: 'node', node: 'node-2' }, { proto: 'tcp', addr: b.ip, port: 8080 });
    t.equal(own?.pod, 'web-b', JSON.stringify(own));
    t.equal(own?.seenIP, n2.ip);
    const [other] = await c.probe({ kind: 'node', node: 'node-1' }, { proto: 'tcp', addr: b.ip6 as string, port: 8080 });
    t.equal(other?.pod, 'web-b', JSON.stringify(other));
    t.equal(other?.seenIP, n1.ip6);
  });

  t.test('the outside client has no route to pod IPs', async (t) => {
    for (const addr of [a.ip, b.ip6 as string]) {
      const [r] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr, port: 8080 }, { timeoutMs: 1000 });
      t.equal(r?.ok, false, `client reached ${addr}: ${JSON.stringify(r)}`);
      t.equal(r?.error, 'unreachable', `client → ${addr}: ${JSON.stringify(r)}`);
    }
  });

  t.test('extra node address + client route: the client reaches a process spawned in the node', async (t) => {
    await c.addNodeAddress('node-1', '203.0.113.10/32');
    await c.addClientRoute('203.0.113.0/24', 'node-1');
    const child = c.spawnIn(n1.netns, [process.execPath, ECHO_SCRIPT_PATH, '--name', 'on-node-1', '--port', '7070'], { pipe: true });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
      child.once('exit', (code) => reject(new Error(`node echo exited ${code}`)));
    });
    const [r] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: '203.0.113.10', port: 7070 });
    t.equal(r?.pod, 'on-node-1', JSON.stringify(r));
    t.equal(r?.seenIP, c.clientIP);
    const [h] = await c.probe({ kind: 'host' }, { proto: 'tcp', addr: n1.ip, port: 7070 });
    t.equal(h?.pod, 'on-node-1', `host → node: ${JSON.stringify(h)}`);
    t.equal(h?.seenIP, c.hostIP);
  });

  t.test('a streaming probe keeps answering until aborted', async (t) => {
    const ac = new AbortController();
    let n = 0;
    const rs = await c.probeStream(
      { kind: 'pod', pod: 'web-b' },
      { proto: 'tcp', addr: a.ip, port: 8080 },
      { signal: ac.signal, intervalMs: 2, onResult: () => ++n >= 5 && ac.abort() },
    );
    t.ok(rs.length >= 5, `${rs.length} results`);
    t.ok(rs.every((r) => r.ok && r.pod === 'web-a'), show(rs));
  });

  t.test('removePod stops the echo server and removes its namespace and veth', async (t) => {
    await c.removePod('web-a2');
    const ns = await run(['ip', 'netns', 'list']);
    t.notMatch(ns.stdout, a2.netns, 'pod namespace is gone');
    const links = await run(['ip', '-n', n1.netns, '-o', 'link']);
    t.notMatch(links.stdout, `${c.prefix}i1p2`, 'node end of the veth is gone');
    const [r] = await c.probe({ kind: 'pod', pod: 'web-a' }, { proto: 'tcp', addr: a2.ip, port: 8080 }, { timeoutMs: 1000 });
    t.equal(r?.ok, false, `removed pod still answers: ${JSON.stringify(r)}`);
    t.throws(() => c.pod('web-a2'));
    const again = await c.addPod({ name: 'web-a3', node: 'node-1' });
    const [r3] = await c.probe({ kind: 'pod', pod: 'web-b' }, { proto: 'tcp', addr: again.ip, port: 8080 });
    t.equal(r3?.pod, 'web-a3', `a new pod is reachable: ${JSON.stringify(r3)}`);
  });

  t.test('down() removes every namespace, the host link and spawned processes', async (t) => {
    const pids = (await run(['ip', 'netns', 'pids', n1.netns])).stdout.trim().split(/\s+/).filter(Boolean);
    t.ok(pids.length > 0, 'processes run in node-1 before down()');
    await c.down();
    await c.down(); // idempotent
    t.same(await listLeftovers(c.prefix), [], 'nothing with the prefix is left');
    for (const pid of pids) {
      let alive = true;
      try {
        process.kill(Number(pid), 0);
      } catch {
        alive = false;
      }
      t.notOk(alive, `process ${pid} from node-1 is gone`);
    }
    await t.rejects(c.addPod({ name: 'late', node: 'node-1' }), /is down/);
  });
});

t.test('a failure half-way through createCluster removes what was built', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-sim-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // An API server nobody listens on (loopback, port 1): registration fails after all namespaces exist.
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: dead, cluster: {server: "http://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
      'users: [{name: u, user: {}}]',
      'contexts: [{name: c, context: {cluster: dead, user: u}}]',
      'current-context: c',
      '',
    ].join('\n'),
  );
  const prefix = randomPrefix();
  t.teardown(async () => {
    const { cleanupPrefix } = await import('../../../src/sim/cluster/index.js');
    await cleanupPrefix(prefix);
  });
  await t.rejects(createCluster({ nodes: 2, dualStack: true, podsPerNode: 1, prefix, kubeconfig }), RegistrationError);
  t.same(await listLeftovers(prefix), [], `leftovers after the failed creation`);
});

t.test('invalid options fail before anything is built', async (t) => {
  const prefix = randomPrefix();
  await t.rejects(createCluster({ nodes: 2, prefix, nodeNames: ['a', 'b', 'c'] }), ClusterOptionError);
  await t.rejects(createCluster({ nodes: 0, prefix }), ClusterOptionError);
  t.same(await listLeftovers(prefix), []);
});

t.test('a bad extra node address fails creation late and still cleans up', async (t) => {
  const prefix = randomPrefix();
  await t.rejects(createCluster({ nodes: 2, prefix, nodeAddresses: { 'node-2': ['not-an-address'] } }), ClusterOptionError);
  t.same(await listLeftovers(prefix), []);
});
