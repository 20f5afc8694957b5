/**
 * Userspace mode end to end: ferry's userspace backend runs in a child inside a fresh "node"
 * namespace, fed with a hand-built IR; echo endpoints live in a "pods" namespace behind it, an
 * outside client in a third namespace. Every probe goes to addresses inside these namespaces.
 */
import t from 'tap';
import { serializeTables } from '../../../src/backends/dryrun/serialize.js';
import type { ProxyTables, ServiceEntry } from '../../../src/plan/types.js';
import { runIn } from '../../../src/util/exec.js';
import { DROP, REJECT, ep, fwd, svc, tables } from '../../unit/backends/userspace/fixtures.js';
import type { HelloResult } from './agent.js';
import { Agent, buildTopology } from './harness.js';

const topo = await buildTopology(t);
const [P1, P2, P3] = topo.podIPs as [string, string, string];

const pods = Agent.start(t, topo.pods, 'pods');
const ferry = Agent.start(t, topo.node, 'ferry');
const node = Agent.start(t, topo.node, 'node-client');
const outside = Agent.start(t, topo.client, 'outside');

await pods.call({
  op: 'serve',
  tcp: [P1, P2, P3, topo.podIP6].map((ip) => ({ ip, port: 8080 })),
  udp: [P1, P2].map((ip) => ({ ip, port: 5353 })),
});

const web = svc({ name: 'web', clusterIP: '198.19.0.10', port: 80, nodePort: 30080, internal: fwd(ep(P1, 8080), ep(P2, 8080)) });
const sticky = svc({
  name: 'sticky',
  clusterIP: '198.19.0.11',
  port: 80,
  affinityTimeoutSeconds: 10800,
  internal: fwd(ep(P1, 8080), ep(P2, 8080), ep(P3, 8080)),
});
const empty = svc({ name: 'empty', clusterIP: '198.19.0.12', port: 80, internal: REJECT });
const local = svc({
  name: 'local',
  clusterIP: '198.19.0.13',
  port: 80,
  nodePort: 30090,
  externalPolicyLocal: true,
  internal: fwd(ep(P1, 8080)),
  external: DROP,
  cluster: fwd(ep(P1, 8080)),
});
const dns = svc({ name: 'dns', protocol: 'UDP', clusterIP: '198.19.0.53', port: 53, internal: fwd(ep(P1, 5353)) });
const stable = svc({ name: 'stable', clusterIP: '198.19.0.20', port: 80, internal: fwd(ep(P1, 8080), ep(P2, 8080)) });
const ext = svc({ name: 'ext', clusterIP: '198.19.0.21', port: 8000, externalIPs: ['203.0.113.7'], internal: fwd(ep(P3, 8080)) });

let current: ServiceEntry[] = [web, sticky, empty, local, dns, stable, ext];
const web6 = svc({ name: 'web', family: 6, clusterIP: '2001:db8:19::10', port: 80, nodePort: 30080, internal: fwd(ep(topo.podIP6, 8080)) });

function ir(services: ServiceEntry[]): ProxyTables {
  return tables(services, [web6], { nodeIPs: [topo.nodeIP] }, { nodeIPs: [topo.nodeIP6] });
}

async function sync(services: ServiceEntry[], full = false): Promise<void> {
  current = services;
  await ferry.call({ op: 'ferrySync', tables: serializeTables(ir(services)), full, tableChanged: full });
}

function replace(s: ServiceEntry): ServiceEntry[] {
  return current.map((c) => (c.key === s.key ? s : c));
}

async function ferry0Addresses(): Promise<string[]> {
  const r = await runIn(topo.node, ['ip', '-j', 'address', 'show', 'dev', 'ferry0'], { allowFailure: true });
  if (r.exitCode !== 0) return [];
  const links = JSON.parse(r.stdout) as { addr_info: { local: string; scope: string }[] }[];
  return links.flatMap((l) => l.addr_info.filter((a) => a.scope !== 'link').map((a) => a.local)).sort();
}

function who(r: HelloResult): string {
  if (r.kind !== 'hello') return r.kind === 'error' ? `error ${r.code}` : 'closed without data';
  return r.line.split(' ')[1] ?? r.line; // "hello 198.18.0.11:8080 from ..."
}

await ferry.call({ op: 'ferryStart' });
await sync(current, true);

t.test('ferry0 holds the ClusterIPs and externalIPs as /32 local addresses', async (t) => {
  t.same((await ferry0Addresses()).filter((a) => !a.includes(':')), ['198.19.0.10', '198.19.0.11', '198.19.0.12', '198.19.0.13', '198.19.0.20', '198.19.0.21', '198.19.0.53', '203.0.113.7']);
  t.ok(await ferry.call<boolean>({ op: 'ferryIntact' }), 'intact() sees its addresses');
});

t.test('IPv6: ClusterIP from the node and NodePort from the outside client', async (t) => {
  t.ok((await ferry0Addresses()).includes('2001:db8:19::10'), 'IPv6 ClusterIP held on ferry0');
  t.equal(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '2001:db8:19::10', port: 80 })), `${topo.podIP6}:8080`);
  t.equal(who(await outside.call<HelloResult>({ op: 'tcpHello', ip: topo.nodeIP6, port: 30080 })), `${topo.podIP6}:8080`);
});

t.test('ClusterIP from the node: round robin over both endpoints', async (t) => {
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '198.19.0.10', port: 80 })));
  t.same(seen, [`${P1}:8080`, `${P2}:8080`, `${P1}:8080`, `${P2}:8080`]);
});

t.test('NodePort from the outside client, and on localhost from the node', async (t) => {
  const out = await outside.call<HelloResult>({ op: 'tcpHello', ip: topo.nodeIP, port: 30080 });
  t.match(who(out), /^198\.18\.0\.1[12]:8080$/, `outside client via ${topo.nodeIP}:30080`);
  t.match(out.kind === 'hello' ? out.line : '', /from 198\.18\.0\.1$/, 'endpoint sees the node address (no source IP preservation)');
  const lo = await node.call<HelloResult>({ op: 'tcpHello', ip: '127.0.0.1', port: 30080 });
  t.match(who(lo), /^198\.18\.0\.1[12]:8080$/, 'localhost NodePort');
});

t.test('externalIP from the node', async (t) => {
  t.equal(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '203.0.113.7', port: 8000 })), `${P3}:8080`);
});

t.test('ClientIP affinity sticks to one endpoint', async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '198.19.0.11', port: 80 })));
  t.equal(seen.size, 1, `answered by ${[...seen].join(', ')}`);
});

t.test('no endpoints: the connection is reset at once, not left to time out', async (t) => {
  const r = await node.call<HelloResult>({ op: 'tcpHello', ip: '198.19.0.12', port: 80 });
  t.ok(r.kind === 'error' && (r.code === 'ECONNRESET' || r.code === 'ECONNREFUSED'), `got ${who(r)}`);
  const s = await ferry.call<{ tcpRejected: number }>({ op: 'ferryStats' });
  t.ok(s.tcpRejected >= 1, 'counted as rejected');
});

t.test('externalTrafficPolicy Local without a local endpoint: outside client dropped, the node itself served', async (t) => {
  const out = await outside.call<HelloResult>({ op: 'tcpHello', ip: topo.nodeIP, port: 30090 });
  t.ok(out.kind !== 'hello', `outside client must get no answer, got ${who(out)}`);
  const fromNode = await node.call<HelloResult>({ op: 'tcpHello', ip: topo.nodeIP, port: 30090 });
  t.equal(who(fromNode), `${P1}:8080`, 'node → NodePort uses the cluster-wide set');
  t.match(ferry.log(), /externalTrafficPolicy Local: userspace mode cannot preserve the client source IP/);
});

t.test('UDP: reply comes from the service address; endpoint replacement moves the same client', async (t) => {
  await node.call({ op: 'udpOpen', id: 'u1' });
  const r1 = await node.call<{ kind: string; text?: string; from?: string }>({ op: 'udpAsk', id: 'u1', ip: '198.19.0.53', port: 53, text: 'q1' });
  t.equal(r1.kind, 'reply', 'a reply arrived');
  t.match(r1.text ?? '', new RegExp(`^${P1}:5353 from 198\\.18\\.0\\.1\\|q1$`));
  t.equal(r1.from, '198.19.0.53:53', 'reply source is the ClusterIP:port');
  await sync(replace(svc({ ...dns, internal: fwd(ep(P2, 5353)) })));
  const r2 = await node.call<{ kind: string; text?: string; from?: string }>({ op: 'udpAsk', id: 'u1', ip: '198.19.0.53', port: 53, text: 'q2' });
  t.match(r2.text ?? `no reply (${r2.kind})`, new RegExp(`^${P2}:5353 `), 'same client socket now answered by the new endpoint');
  t.equal(r2.from, '198.19.0.53:53');
});

t.test('a sync that changes other services leaves an open connection alone', async (t) => {
  const h = await node.call<{ line: string | null }>({ op: 'hold', id: 'h1', ip: '198.19.0.20', port: 80 });
  t.match(h.line ?? '', /^hello /);
  const added = svc({ name: 'added', clusterIP: '198.19.0.30', port: 80, internal: fwd(ep(P3, 8080)) });
  const frontendsBefore = await ferry.call<string[]>({ op: 'ferryFrontends' });
  await sync([...current.filter((s) => s.key !== empty.key), added, ...[]].map((s) => (s.key === web.key ? svc({ ...web, internal: fwd(ep(P3, 8080)) }) : s)));
  const e = await node.call<{ line: string | null }>({ op: 'holdEcho', id: 'h1', text: 'still there' });
  t.equal(e.line, 'still there', 'the held connection still echoes');
  const addrs = await ferry0Addresses();
  t.ok(addrs.includes('198.19.0.30'), 'new ClusterIP added');
  t.notOk(addrs.includes('198.19.0.12'), 'removed ClusterIP gone');
  const frontendsAfter = await ferry.call<string[]>({ op: 'ferryFrontends' });
  t.ok(frontendsAfter.includes('TCP 198.19.0.20:80') && frontendsBefore.includes('TCP 198.19.0.20:80'));
  t.notOk(frontendsAfter.includes('TCP 198.19.0.12:80'));
  t.equal(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '198.19.0.10', port: 80 })), `${P3}:8080`, 'web follows its new endpoint');
  await node.call({ op: 'holdClose', id: 'h1' });
});

t.test('endpoint churn on a stable service: zero failed requests', async (t) => {
  await node.call({ op: 'loopStart', ip: '198.19.0.20', port: 80 });
  const steps = [
    [P1, P2, P3],
    [P2, P3],
    [P3],
    [P1, P3],
    [P1],
    [P1, P2],
  ];
  for (const ips of steps) {
    await sync(replace(svc({ ...stable, internal: fwd(...ips.map((ip) => ep(ip, 8080))) })));
    // Let some requests run against each set (not a timing assertion).
    await new Promise((r) => setTimeout(r, 150));
  }
  const r = await node.call<{ ok: number; failed: number; errors: string[]; answered: Record<string, number> }>({ op: 'loopStop' });
  t.equal(r.failed, 0, `failed requests: ${r.failed} (${r.errors.join(', ')})`);
  t.ok(r.ok > 10, `requests answered: ${r.ok}`);
  t.same(Object.keys(r.answered).sort(), [`${P1}:8080`, `${P2}:8080`, `${P3}:8080`], 'every endpoint served during the churn');
});

t.test('an endpoint that refuses: the connection is retried on the next one', async (t) => {
  // 198.18.0.11:9 has no server: connect is refused, ferry moves on to P2:8080.
  const flaky = svc({ name: 'flaky', clusterIP: '198.19.0.40', port: 80, internal: fwd(ep(P1, 9), ep(P2, 8080)) });
  await sync([...current, flaky]);
  const seen: string[] = [];
  for (let i = 0; i < 4; i++) seen.push(who(await node.call<HelloResult>({ op: 'tcpHello', ip: '198.19.0.40', port: 80 })));
  t.same(seen, [`${P2}:8080`, `${P2}:8080`, `${P2}:8080`, `${P2}:8080`]);
  const s = await ferry.call<{ tcpConnectFailures: number }>({ op: 'ferryStats' });
  t.ok(s.tcpConnectFailures >= 2, `connect failures counted: ${s.tcpConnectFailures}`);
});

t.test('a full resync re-reads ferry0 and leaves foreign addresses elsewhere alone', async (t) => {
  await runIn(topo.node, ['ip', 'addr', 'add', '198.51.100.77/32', 'dev', 'lo']);
  // An address someone put on ferry0 behind ferry's back is not in the IR: a full sync removes it.
  await runIn(topo.node, ['ip', 'addr', 'add', '198.19.0.99/32', 'dev', 'ferry0']);
  await sync(current, true);
  const addrs = await ferry0Addresses();
  t.notOk(addrs.includes('198.19.0.99'), 'stray ferry0 address removed');
  const lo = await runIn(topo.node, ['ip', '-br', 'addr', 'show', 'dev', 'lo']);
  t.match(lo.stdout, /198\.51\.100\.77/, 'address on lo untouched');
});

t.test('cleanup removes ferry0 and stops listening', async (t) => {
  await ferry.call({ op: 'ferryCleanup' });
  const link = await runIn(topo.node, ['ip', 'link', 'show', 'dev', 'ferry0'], { allowFailure: true });
  t.not(link.exitCode, 0, 'ferry0 is gone');
  const r = await node.call<HelloResult>({ op: 'tcpHello', ip: topo.nodeIP, port: 30080 });
  t.equal(r.kind, 'error', `NodePort no longer answered (${who(r)})`);
  t.same(await ferry.call<string[]>({ op: 'ferryFrontends' }), []);
});
