/**
 * The ebpf mode's kernel side without the simulator: the real programs, loader and applier on a
 * cgroup and a bpffs directory this test creates (never the host's cgroup root), with
 * loopback-only backends. A client process placed in the test cgroup connects to a Service
 * address and reaches a backend; getpeername and recvmsg show the Service address; no-endpoint
 * Services are refused; a restart swaps programs without a gap; cleanup leaves no pin; localhost
 * NodePorts are translated in the node's (the test's) network namespace only, never in a pod's
 * (one the test creates and removes).
 * Needs root, cgroup v2 and bpffs (mounted here when absent, as ferry does).
 */
import t, { type Test } from 'tap';
import { run } from '../../../src/util/exec.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, rmdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { createSocket, type Socket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createEbpfBackend } from '../../../src/backends/ebpf/backend.js';
import { ensureBpffsDir, isHierarchyRoot, KernelBpfMaps, removePins, resolveCgroupRoot } from '../../../src/backends/kernel/bpf.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { ep, fwd, FULL, REJECT, svc, table, tables, changesOf } from '../../unit/backends/ir-builders.js';

// About 50 short-lived client processes: tap's 30 s default is too short on a busy machine.
t.setTimeout(scaledMs(5 * 60_000));

const PREFIX = `fyeb${Math.random().toString(36).slice(2, 6)}`;
const SVC_IP = '198.19.77.10';

interface Answer {
  ok: boolean;
  error?: string;
  reply?: string;
  peer?: string;
}

/** Runs a one-shot client inside `cgroup` (it moves itself there before connecting), in network namespace `netns` when given. */
function client(cgroup: string, proto: 'tcp' | 'udp', addr: string, port: number, netns?: string): Promise<Answer> {
  const code = `
const [proto, addr, port] = process.argv.slice(1);
const out = (o) => { process.stdout.write(JSON.stringify(o)); process.exit(0); };
setTimeout(() => out({ ok: false, error: 'timeout' }), 3000);
if (proto === 'tcp') {
  const s = require('net').connect({ host: addr, port: Number(port) });
  let data = '';
  s.on('connect', () => { s.peer = s.remoteAddress + ':' + s.remotePort; });
  s.on('data', (d) => { data += d; });
  s.on('end', () => out({ ok: true, reply: data, peer: s.peer }));
  s.on('error', (e) => out({ ok: false, error: e.code }));
} else {
  const s = require('dgram').createSocket('udp4');
  s.on('message', (m, r) => out({ ok: true, reply: String(m), peer: r.address + ':' + r.port }));
  s.on('error', (e) => out({ ok: false, error: e.code }));
  s.send('hi', Number(port), addr);
}`;
  return new Promise((resolve, reject) => {
    // nsenter --net, not `ip netns exec`: the cgroup is joined first, and only the network namespace changes.
    const enter = netns === undefined ? '' : `nsenter --net=/var/run/netns/${netns} -- `;
    const child = spawn('sh', ['-c', `echo $$ > "${cgroup}/cgroup.procs" && exec ${enter}"$0" -e "$1" "$2" "$3" "$4"`, process.execPath, code, proto, addr, String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', () => {
      try {
        resolve(JSON.parse(out) as Answer);
      } catch {
        reject(new Error(`client printed ${JSON.stringify(out)}; stderr ${err}`));
      }
    });
  });
}

function tcpServer(name: string): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer((s) => s.end(`${name} saw ${s.remoteAddress}`));
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}

function udpServer(name: string): Promise<{ sock: Socket; port: number }> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    sock.on('message', (_m, r) => sock.send(`${name} saw ${r.address}`, r.port, r.address));
    sock.bind(0, '127.0.0.1', () => resolve({ sock, port: sock.address().port }));
  });
}

/** A cgroup and a pin directory of the test's own (PREFIX + suffix), both removed at its end. */
async function placeOf(t: Test, suffix: string): Promise<{ cgroup: string; pinDir: string }> {
  const cgroup = join(await resolveCgroupRoot(undefined), `${PREFIX}${suffix}`);
  const pinDir = `/sys/fs/bpf/${PREFIX}${suffix}`;
  await mkdir(cgroup);
  await ensureBpffsDir(pinDir);
  t.teardown(async () => {
    await removePins(pinDir);
    await rmdir(cgroup).catch(() => undefined);
  });
  return { cgroup, pinDir };
}

/** bpftool's description of a pinned map or program. */
async function shown<T>(kind: 'map' | 'prog', path: string): Promise<T> {
  return JSON.parse((await run(['bpftool', '-j', kind, 'show', 'pinned', path])).stdout) as T;
}

t.test('socket-level load balancing in a cgroup of our own', async (t) => {
  const { cgroup, pinDir } = await placeOf(t, '');
  const servers: { close(): void }[] = [];
  t.teardown(() => {
    for (const s of servers) s.close();
  });

  const a = await tcpServer('a');
  const b = await tcpServer('b');
  const u = await udpServer('u');
  servers.push(a.server, b.server, u.sock);
  const web = svc({ namespace: 'default', name: 'web', internal: fwd(ep('127.0.0.1', a.port), ep('127.0.0.1', b.port)), clusterIP: SVC_IP, port: 80, nodePort: 30080 });
  const dns = svc({ namespace: 'default', name: 'dns', protocol: 'UDP', portName: 'dns', internal: fwd(ep('127.0.0.1', u.port)), clusterIP: SVC_IP, port: 53 });
  const none = svc({ namespace: 'default', name: 'none', internal: REJECT, clusterIP: '198.19.77.11', port: 80 });
  const sticky = svc({
    namespace: 'default',
    name: 'sticky',
    internal: fwd(ep('127.0.0.1', a.port), ep('127.0.0.1', b.port)),
    clusterIP: '198.19.77.12',
    port: 80,
    affinityTimeoutSeconds: 600,
  });
  const v4 = table(4, [web, dns, none, sticky], { nodeIPs: ['192.0.2.10'] });
  const maps = new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] });
  const backend = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  await backend.sync(null, tables(v4), FULL);
  const hostTc = await run(['bpftool', '-j', 'net', 'show'], { allowFailure: true });
  t.notMatch(hostTc.stdout, /ferry_tc/, "interfaces: [] — the tc program is on none of the host's interfaces");

  const seen = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = await client(cgroup, 'tcp', SVC_IP, 80);
    t.ok(r.ok, `TCP to ${SVC_IP}:80 answered (${r.error ?? ''})`);
    t.equal(r.peer, `${SVC_IP}:80`, 'getpeername shows the Service address');
    seen.add(r.reply?.split(' ')[0] ?? '');
  }
  t.same([...seen].sort(), ['a', 'b'], 'both backends answered');

  const np = await client(cgroup, 'tcp', '127.0.0.1', 30080);
  t.ok(np.ok && /^[ab] /.test(np.reply ?? ''), `127.0.0.1:NodePort answered by a backend (${JSON.stringify(np)})`);
  const np2 = await client(cgroup, 'tcp', '192.0.2.10', 30080);
  t.ok(np2.ok && /^[ab] /.test(np2.reply ?? ''), `nodeIP:NodePort answered by a backend (${JSON.stringify(np2)})`);

  const d = await client(cgroup, 'udp', SVC_IP, 53);
  t.ok(d.ok, `UDP answered (${d.error ?? ''})`);
  t.equal(d.peer, `${SVC_IP}:53`, 'recvmsg shows the Service address as the source');

  // An IPv6 socket connecting to the IPv4-mapped Service address (Java and other dual-stack clients).
  const m = await client(cgroup, 'tcp', `::ffff:${SVC_IP}`, 80);
  t.ok(m.ok && /^[ab] /.test(m.reply ?? ''), `TCP to ::ffff:${SVC_IP}:80 from an IPv6 socket answered by a backend (${JSON.stringify(m)})`);
  t.equal(m.peer, `::ffff:${SVC_IP}:80`, 'getpeername shows the mapped Service address');

  const refused = await client(cgroup, 'tcp', '198.19.77.11', 80);
  t.same(refused, { ok: false, error: 'ECONNREFUSED' }, 'a Service without endpoints is refused at connect()');

  const stickySeen = new Set<string>();
  for (let i = 0; i < 10; i++) stickySeen.add((await client(cgroup, 'tcp', '198.19.77.12', 80)).reply?.split(' ')[0] ?? 'none');
  t.equal(stickySeen.size, 1, `ClientIP affinity: one backend for one client (${[...stickySeen].join(',')})`);

  // Endpoint change: only b remains.
  const web2 = svc({ ...web, internal: fwd(ep('127.0.0.1', b.port)) });
  const v4b = table(4, [web2, dns, none, sticky], { nodeIPs: ['192.0.2.10'] });
  await backend.sync(tables(v4), tables(v4b), changesOf([web.key]));
  for (let i = 0; i < 8; i++) t.match((await client(cgroup, 'tcp', SVC_IP, 80)).reply, /^b /, 'after the change only b answers');

  // A restarted ferry: a new backend on the same pins swaps programs in place and writes nothing.
  const again = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
  await again.sync(null, tables(v4b), FULL);
  t.equal(again.lastSync()?.elements, 0, 'a restart with the same state writes no element');
  t.match((await client(cgroup, 'tcp', SVC_IP, 80)).reply, /^b /, 'still served after the restart');

  await again.cleanup();
  t.notOk(existsSync(pinDir), 'cleanup removed the pin directory');
  const after = await client(cgroup, 'tcp', SVC_IP, 80);
  t.notOk(after.ok && /^[ab] /.test(after.reply ?? ''), `after cleanup the Service address is not translated (${JSON.stringify(after)})`);
  t.same(await readdir(cgroup).then((l) => l.filter((n) => n.startsWith('fy'))), [], 'no child cgroups left');
  await writeFile(join(cgroup, 'cgroup.procs'), '').catch(() => undefined);
});

t.test("localhost NodePorts are the node's alone: in a pod's network namespace, localhost is the pod's", async (t) => {
  const { cgroup, pinDir } = await placeOf(t, 'n');
  const pod = `${PREFIX}pod`;
  const children: ChildProcess[] = [];
  const servers: { close(): void }[] = [];
  t.teardown(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const s of servers) s.close();
    await run(['ip', 'netns', 'del', pod], { allowFailure: true });
  });
  await run(['ip', 'netns', 'add', pod]);
  await run(['ip', '-n', pod, 'link', 'set', 'lo', 'up']);
  // The pod's own listener on its localhost:30080 (a sidecar, say).
  const own = spawn('nsenter', [`--net=/var/run/netns/${pod}`, '--', process.execPath, '-e', `require('net').createServer((s) => s.end('pod-own saw ' + s.remoteAddress)).listen(30080, '127.0.0.1', () => process.stdout.write('ready'))`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(own);
  await new Promise<void>((resolve, reject) => {
    own.stdout.once('data', () => resolve());
    own.once('exit', (code) => reject(new Error(`the pod's listener exited ${code}`)));
  });

  const a = await tcpServer('a');
  servers.push(a.server);
  const np = svc({ namespace: 'default', name: 'np', clusterIP: '198.19.77.20', port: 80, nodePort: 30080, internal: fwd(ep('127.0.0.1', a.port)) });
  const np2 = svc({ namespace: 'default', name: 'np2', clusterIP: '198.19.77.21', port: 80, nodePort: 30081, internal: fwd(ep('127.0.0.1', a.port)) });
  const backend = createEbpfBackend({ maps: new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }), families: [4], localhostNodePorts: true });
  await backend.sync(null, tables(table(4, [np, np2], { nodeIPs: ['192.0.2.10'] })), FULL);

  for (const addr of ['127.0.0.1', '0.0.0.0']) {
    const fromNode = await client(cgroup, 'tcp', addr, 30080);
    t.match(fromNode.reply, /^a saw 127\.0\.0\.1$/, `from the node, ${addr}:30080 is the NodePort (${JSON.stringify(fromNode)})`);
    const fromPod = await client(cgroup, 'tcp', addr, 30080, pod);
    t.match(fromPod.reply, /^pod-own saw 127\.0\.0\.1$/, `from the pod, ${addr}:30080 is the pod's own listener, not the Service (${JSON.stringify(fromPod)})`);
  }
  const refused = await client(cgroup, 'tcp', '127.0.0.1', 30081, pod);
  t.same(refused, { ok: false, error: 'ECONNREFUSED' }, "from the pod, localhost:30081 (nothing listens there) is refused by the pod's own stack");
  const clusterIP = await client(cgroup, 'tcp', '198.19.77.20', 80);
  t.match(clusterIP.reply, /^a /, 'the ClusterIP is balanced as before');
  await backend.cleanup();
});

t.test('maps an older ferry pinned with another layout are replaced; the tc program gets the SNAT ports', async (t) => {
  const { cgroup, pinDir } = await placeOf(t, 'l');
  // ferry_ct as the program owns it, but smaller; ferry_svc as ferry writes it, but with another value size.
  await run(['bpftool', 'map', 'create', join(pinDir, 'ferry_ct'), 'type', 'lru_hash', 'key', '40', 'value', '56', 'entries', '1024', 'name', 'ferry_ct']);
  await run(['bpftool', 'map', 'create', join(pinDir, 'ferry_svc'), 'type', 'hash', 'key', '20', 'value', '8', 'entries', '16', 'name', 'ferry_svc', 'flags', '1']);
  const maps = new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] });
  const r = await maps.attach();
  t.same([...r.unpinned].sort(), ['ferry_ct', 'ferry_svc'], 'both pins of another layout were removed (and reported)');
  const ct = await shown<{ max_entries: number }>('map', join(pinDir, 'ferry_ct'));
  t.equal(ct.max_entries, 131072, 'ferry_ct is pinned anew with the object’s size');
  const svcMap = await shown<{ bytes_value: number }>('map', join(pinDir, 'ferry_svc'));
  t.equal(svcMap.bytes_value, 16, 'ferry_svc is pinned anew with the object’s value size');
  t.same((await maps.attach()).unpinned, [], 'a second start on the same pins replaces nothing');

  // The ports the tc program was loaded with, read back from its .rodata.
  const prog = await shown<{ map_ids: number[] }>('prog', join(pinDir, 'prog_ferry_tc_ingress'));
  let ports: unknown;
  for (const id of prog.map_ids) {
    const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'id', String(id)], { allowFailure: true })).stdout || '[]') as {
      formatted?: { value?: { '.rodata'?: { ferry_snat_ports?: unknown }[] } };
    }[];
    const found = dump[0]?.formatted?.value?.['.rodata']?.find((v) => v.ferry_snat_ports)?.ferry_snat_ports;
    if (found) ports = found;
  }
  t.same(ports, { lo_min: r.snatPorts.lo[0], lo_count: r.snatPorts.lo[1], hi_min: r.snatPorts.hi[0], hi_count: r.snatPorts.hi[1] }, `the program's SNAT ports are the planned ones (${JSON.stringify(ports)})`);
  t.equal(r.snatPorts.total > 0, true, 'some ports to translate to');
});

t.test('--ebpf-ct-max sizes ferry_ct for both objects: kept across restarts, replaced when changed', async (t) => {
  const { cgroup, pinDir } = await placeOf(t, 'c');
  const ctMap = (): Promise<{ id: number; max_entries: number }> => shown('map', join(pinDir, 'ferry_ct'));
  const tcMaps = async (): Promise<number[]> => (await shown<{ map_ids: number[] }>('prog', join(pinDir, 'prog_ferry_tc_ingress'))).map_ids;

  const first = await new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [], ctConnections: 4096 }).attach();
  t.same(first.unpinned, [], 'a first start replaces nothing');
  const sized = await ctMap();
  t.equal(sized.max_entries, 8192, 'two entries per connection');
  t.ok((await tcMaps()).includes(sized.id), 'the tc program uses the sized map');

  // A restart with the same size: the socket-level object (which declares ferry_ct too) and the
  // tc object both find the pin as they would make it, so its connections survive.
  const again = await new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [], ctConnections: 4096 }).attach();
  t.same(again.unpinned, [], 'the same size again: nothing replaced');
  t.equal((await ctMap()).id, sized.id, 'the same map (its entries kept)');

  const back = await new KernelBpfMaps({ pinDir, cgroupRoot: cgroup, interfaces: [] }).attach();
  t.same(back.unpinned, ['ferry_ct'], 'another size: replaced once, and reported');
  const compiled = await ctMap();
  t.equal(compiled.max_entries, 131072, 'without the setting, the compiled size');
  t.ok((await tcMaps()).includes(compiled.id), 'and the tc program uses the new map');
});

t.test('isHierarchyRoot: the cgroup2 root is, a cgroup below it is not (as a container sees its namespace root)', async (t) => {
  const root = await resolveCgroupRoot(undefined);
  const child = join(root, `${PREFIX}h`);
  await mkdir(child);
  t.teardown(() => rmdir(child).catch(() => undefined));
  t.equal(isHierarchyRoot(root), true, `${root} is the root`);
  t.equal(isHierarchyRoot(child), false, `${child} is not`);
});
