/**
 * The tc program against a real kernel, without the simulator: network namespaces this test
 * creates (a node, an outside client, a local pod, two endpoints; every veth made inside them,
 * none on the host), the real programs and the real backend writing maps under a pin directory
 * and a cgroup of the test's own. The tc program is attached with `tc … object-pinned` inside the
 * node's namespace only (nsenter --net: `ip netns exec` would hide /sys/fs/bpf). Everything is
 * removed at the end, also after a failure.
 *
 *  - an established TCP connection through a NodePort keeps its endpoint after the endpoint left
 *    the Service's set (a terminating pod) and after the Service is deleted, as kube-proxy keeps
 *    TCP conntrack entries; new connections, and a new SYN on the old tuple, choose afresh;
 *  - a frame from the network to 127.0.0.1 or 0.0.0.0 and a NodePort is not translated
 *    (CVE-2020-8558), while the same frame to the node's address is;
 *  - externalTrafficPolicy Local with loadBalancerSourceRanges: a local pod inside the ranges
 *    is short-circuited to the cluster-wide set, one outside them is dropped;
 *  - the connection-tracking timeouts given at load reach the program, and a connection the
 *    client half-closed still gets an answer that comes later than a RST's 10 s;
 *  - an endpoint on the node's own address (a hostNetwork pod) behind a NodePort: the stack
 *    delivers the translated connection, the client's address kept, and the egress program
 *    translates the node's replies back.
 * Needs root, cgroup v2, bpffs, nsenter, tc, bpftool and python3.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createEbpfBackend } from '../../../src/backends/ebpf/backend.js';
import { ensureBpffsDir, KernelBpfMaps, removePins, resolveCgroupRoot } from '../../../src/backends/kernel/bpf.js';
import type { ProxyTables, ServiceEntry } from '../../../src/plan/types.js';
import { run } from '../../../src/util/exec.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { changesOf, DROP, ep, FULL, fwd, svc, table, tables } from '../../unit/backends/ir-builders.js';
import { childEnv, SCRUB } from '../lib/child-env.js';

t.setTimeout(scaledMs(5 * 60_000));

const PREFIX = `fytc${Math.random().toString(36).slice(2, 6)}`;
const NODE_IP = '192.0.2.1';
const CLIENT_IP = '192.0.2.2';
const E1 = '10.244.1.2';
const E2 = '10.244.2.2';
const POD_IN = '10.244.0.5';
const POD_OUT = '10.244.0.200';
const NODEPORT = 30080;
const HOSTNET_NODEPORT = 30090;
const LB_IP = '203.0.113.50';

/** An echo server: every line back as "<name> <peer address> <line>". */
const SERVER = `
const name = process.argv[1];
require('net').createServer((s) => {
  let buf = '';
  s.setEncoding('utf8');
  s.on('error', () => {});
  s.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      s.write(name + ' ' + s.remoteAddress + ' ' + l + '\\n');
    }
  });
}).listen(8080, '0.0.0.0', () => process.stdout.write('ready\\n'));`;

/** Answers once the client half-closed (its FIN), after the delay in ms given: "<name> late". */
const LATE_SERVER = `
const [name, delay] = [process.argv[1], Number(process.argv[2])];
require('net').createServer({ allowHalfOpen: true }, (s) => {
  s.on('error', () => {});
  s.resume();
  s.on('end', () => setTimeout(() => s.end(name + ' late\\n'), delay));
}).listen(8081, '0.0.0.0', () => process.stdout.write('ready\\n'));`;

/** Connects, sends a line, half-closes, and prints what comes back until the endpoint closes. */
const HALF_CLOSE = `
const s = require('net').connect({ host: process.argv[1], port: Number(process.argv[2]), allowHalfOpen: true });
let got = '';
s.setEncoding('utf8');
s.on('connect', () => s.end('question\\n'));
s.on('data', (d) => (got += d));
s.on('end', () => { process.stdout.write(JSON.stringify({ got })); process.exit(0); });
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.code })); process.exit(0); });
setTimeout(() => { process.stdout.write(JSON.stringify({ error: 'timeout', got })); process.exit(0); }, Number(process.argv[3]));`;

/** One TCP connection driven by JSON lines on stdin (connect, send); one JSON answer per command. */
const SESSION = `
const net = require('net');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let sock = null, buf = '', pending = null, ended = null;
const settle = (o) => { if (pending) { clearTimeout(pending); pending = null; out(o); } };
const expect = (ms) => { pending = setTimeout(() => { pending = null; out({ ok: false, error: 'timeout' }); }, ms); };
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('close', () => process.exit(0));
rl.on('line', (l) => {
  const c = JSON.parse(l);
  if (c.op === 'connect') {
    expect(c.timeoutMs || 3000);
    sock = net.connect({ host: c.host, port: c.port, ...(c.local ? { localAddress: c.local } : {}) });
    sock.setEncoding('utf8');
    sock.on('connect', () => settle({ ok: true, port: sock.localPort }));
    sock.on('data', (d) => {
      buf += d;
      const i = buf.indexOf('\\n');
      if (i >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); settle({ ok: true, reply: line }); }
    });
    sock.on('error', (e) => { ended = e.code; settle({ ok: false, error: e.code }); });
    sock.on('close', () => { ended = ended || 'closed'; settle({ ok: false, error: ended }); });
  } else if (c.op === 'send') {
    if (!sock || ended) return out({ ok: false, error: ended || 'not connected' });
    expect(c.timeoutMs || 3000);
    sock.write(c.data + '\\n');
  }
});`;

/** A TCP SYN as a raw Ethernet frame, sent out of an interface (addresses a socket would refuse). */
const RAW_SYN = `
import socket, struct, sys
ifname, smac, dmac, saddr, daddr, sport, dport = sys.argv[1:8]
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton(saddr), socket.inet_aton(daddr)
tcp = struct.pack('!HHIIBBHHH', int(sport), int(dport), 12345, 0, 5 << 4, 0x02, 64240, 0, 0)
tcp = tcp[:16] + struct.pack('!H', csum(src + dst + struct.pack('!BBH', 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
eth = bytes.fromhex(dmac.replace(':', '')) + bytes.fromhex(smac.replace(':', '')) + b'\\x08\\x00'
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.send(eth + ip + tcp)
`;

interface Answer {
  ok: boolean;
  error?: string;
  reply?: string;
  port?: number;
}

/** What the test made, undone in one teardown in a safe order: processes, namespaces, pins, cgroup. */
class Place {
  readonly children: ChildProcess[] = [];
  readonly netns: string[] = [];
  constructor(
    readonly cgroup: string,
    readonly pinDir: string,
  ) {}

  static async make(t: Test): Promise<Place> {
    const cgroup = join(await resolveCgroupRoot(undefined), PREFIX);
    const pinDir = `/sys/fs/bpf/${PREFIX}`;
    const p = new Place(cgroup, pinDir);
    t.teardown(() => p.remove());
    await mkdir(cgroup);
    await ensureBpffsDir(pinDir);
    return p;
  }

  async remove(): Promise<void> {
    for (const c of this.children) {
      if (c.exitCode === null && c.pid !== undefined) c.kill('SIGKILL');
    }
    for (const ns of this.netns) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
    await removePins(this.pinDir).catch(() => undefined);
    await rmdir(this.cgroup).catch(() => undefined);
  }

  async addNetns(suffix: string): Promise<string> {
    const name = `${PREFIX}${suffix}`;
    this.netns.push(name);
    await run(['ip', 'netns', 'add', name]);
    await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** Spawns `argv` inside `ns` (network namespace only: bpffs stays visible). */
  spawnIn(ns: string, argv: string[]): ChildProcess {
    const child = spawn('env', [...SCRUB, 'nsenter', `--net=/var/run/netns/${ns}`, '--', ...argv], { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv() });
    this.children.push(child);
    return child;
  }

  async server(ns: string, name: string, script = SERVER, ...args: string[]): Promise<void> {
    const child = this.spawnIn(ns, [process.execPath, '-e', script, name, ...args]);
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`server ${name} in ${ns} exited ${code}: ${err}`)));
    });
  }

  session(ns: string): Session {
    return new Session(this.spawnIn(ns, [process.execPath, '-e', SESSION]));
  }
}

class Session {
  private readonly answers: ((a: Answer) => void)[] = [];
  constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => this.answers.shift()?.(JSON.parse(l) as Answer));
    child.once('exit', () => {
      for (const a of this.answers.splice(0)) a({ ok: false, error: 'session exited' });
    });
  }

  private cmd(c: Record<string, unknown>): Promise<Answer> {
    return new Promise((resolve) => {
      this.answers.push(resolve);
      this.child.stdin!.write(JSON.stringify(c) + '\n');
    });
  }

  connect(host: string, port: number, local?: string): Promise<Answer> {
    return this.cmd({ op: 'connect', host, port, ...(local ? { local } : {}) });
  }

  send(data: string): Promise<Answer> {
    return this.cmd({ op: 'send', data });
  }

  close(): void {
    this.child.stdin!.end();
  }
}

/** One request on a new connection: "<endpoint> <address it saw> <data>", or the error. */
async function once(place: Place, ns: string, host: string, port: number, local?: string): Promise<string> {
  const s = place.session(ns);
  try {
    const c = await s.connect(host, port, local);
    if (!c.ok) return `error ${c.error}`;
    const r = await s.send('hello');
    return r.ok ? (r.reply ?? '') : `error ${r.error}`;
  } finally {
    s.close();
  }
}

async function inNs(ns: string, argv: string[]): Promise<string> {
  return (await run(['nsenter', `--net=/var/run/netns/${ns}`, '--', ...argv])).stdout;
}

/** A veth pair between two of the test's namespaces (made inside the first: never on the host). */
async function link(a: string, aName: string, aAddr: string, b: string, bName: string, bAddr: string): Promise<void> {
  await run(['ip', '-n', a, 'link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b]);
  await run(['ip', '-n', a, 'addr', 'add', aAddr, 'dev', aName]);
  await run(['ip', '-n', b, 'addr', 'add', bAddr, 'dev', bName]);
  await run(['ip', '-n', a, 'link', 'set', aName, 'up']);
  await run(['ip', '-n', b, 'link', 'set', bName, 'up']);
}

async function mac(ns: string, dev: string): Promise<string> {
  const [l] = JSON.parse((await run(['ip', '-n', ns, '-j', 'link', 'show', dev])).stdout) as { address: string }[];
  return l?.address ?? '';
}

interface CtEntry {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  toAddr: string;
  toPort: number;
  dir: number;
}

/** ferry_ct's entries, read from their bytes (struct ct_key / ct_val, maps.h). */
async function conntrack(pinDir: string): Promise<CtEntry[]> {
  const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'pinned', join(pinDir, 'ferry_ct')])).stdout) as { key: string[]; value: string[] }[];
  const bytes = (h: string[]): Buffer => Buffer.from(h.map((x) => parseInt(x, 16)));
  const ip4 = (b: Buffer, off: number): string => [...b.subarray(off, off + 4)].join('.');
  return dump.map((e) => {
    const k = bytes(e.key);
    const v = bytes(e.value);
    return { saddr: ip4(k, 0), daddr: ip4(k, 16), sport: k.readUInt16BE(32), dport: k.readUInt16BE(34), toAddr: ip4(v, 16), toPort: v.readUInt16BE(34), dir: v.readUInt8(49) };
  });
}

/** The state of each forward entry (struct ct_val's `state`, maps.h), by the destination port it was sent to. */
async function conntrackStates(pinDir: string): Promise<{ port: number; state: number }[]> {
  const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'pinned', join(pinDir, 'ferry_ct')])).stdout) as { key: string[]; value: string[] }[];
  const bytes = (h: string[]): Buffer => Buffer.from(h.map((x) => parseInt(x, 16)));
  return dump
    .map((e) => ({ k: bytes(e.key), v: bytes(e.value) }))
    .filter(({ v }) => v.readUInt8(49) === 0)
    .map(({ k, v }) => ({ port: k.readUInt16BE(34), state: v.readUInt8(48) }));
}

t.test('the tc program in namespaces of our own: TCP drains on a removed endpoint, no localhost from the wire, source ranges before the short-circuit', async (t) => {
  const place = await Place.make(t);
  const node = await place.addNetns('n');
  const client = await place.addNetns('c');
  const pod = await place.addNetns('p');
  const e1 = await place.addNetns('e1');
  const e2 = await place.addNetns('e2');
  await link(node, 'c0', `${NODE_IP}/24`, client, 'eth0', `${CLIENT_IP}/24`);
  await link(node, 'p0', '10.244.0.1/24', pod, 'eth0', `${POD_IN}/24`);
  await run(['ip', '-n', pod, 'addr', 'add', `${POD_OUT}/24`, 'dev', 'eth0']);
  await link(node, 'e1', '10.244.1.1/24', e1, 'eth0', `${E1}/24`);
  await link(node, 'e2', '10.244.2.1/24', e2, 'eth0', `${E2}/24`);
  await run(['ip', '-n', client, 'route', 'add', 'default', 'via', NODE_IP]);
  await run(['ip', '-n', pod, 'route', 'add', 'default', 'via', '10.244.0.1']);
  await run(['ip', '-n', e1, 'route', 'add', 'default', 'via', '10.244.1.1']);
  await run(['ip', '-n', e2, 'route', 'add', 'default', 'via', '10.244.2.1']);
  // bpf_fib_lookup answers only where forwarding is on (the node's namespace alone).
  await inNs(node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await place.server(e1, 'e1');
  await place.server(e2, 'e2');
  // A RST's entry lives 10 s: a longer wait than that tells a half-close apart.
  const LATE_MS = 11_000;
  await place.server(e1, 'e1', LATE_SERVER, String(LATE_MS));

  const web = svc({ namespace: 'default', name: 'web', clusterIP: '198.19.0.10', nodePort: NODEPORT, internal: fwd(ep(E1, 8080), ep(E2, 8080)) });
  // externalTrafficPolicy Local without a local endpoint; only 10.244.0.0/25 may reach the LB IP.
  const ranged = svc({
    namespace: 'default',
    name: 'ranged',
    clusterIP: '198.19.0.50',
    loadBalancerIPs: [LB_IP],
    loadBalancerSourceRanges: ['10.244.0.0/25'],
    internal: fwd(ep(E2, 8080)),
    cluster: fwd(ep(E2, 8080)),
    external: DROP,
    externalPolicyLocal: true,
  });
  const ir = (services: ServiceEntry[]): ProxyTables => tables(table(4, services, { nodeIPs: [NODE_IP], localTraffic: { kind: 'clusterCIDR', cidrs: ['10.244.0.0/16'] } }));
  const v1 = ir([web, ranged]);
  // Timeouts of their own, to tell them apart from the object's defaults when read back.
  const ctTimeouts = { tcpEstablishedTimeoutMs: 7_200_000, tcpCloseWaitTimeoutMs: 1_800_000, udpTimeoutMs: 25_000, udpStreamTimeoutMs: 100_000 };
  const maps = new KernelBpfMaps({ pinDir: place.pinDir, cgroupRoot: place.cgroup, interfaces: [], ctTimeouts });
  const backend = createEbpfBackend({ maps, families: [4], localhostNodePorts: true });
  await backend.sync(null, v1, FULL);
  for (const dev of ['c0', 'p0', 'e1', 'e2']) {
    await inNs(node, ['tc', 'qdisc', 'add', 'dev', dev, 'clsact']);
    await inNs(node, ['tc', 'filter', 'add', 'dev', dev, 'ingress', 'prio', '1', 'handle', '0xfe77', 'bpf', 'da', 'object-pinned', join(place.pinDir, 'prog_ferry_tc_ingress')]);
    await inNs(node, ['tc', 'filter', 'add', 'dev', dev, 'egress', 'prio', '1', 'handle', '0xfe77', 'bpf', 'da', 'object-pinned', join(place.pinDir, 'prog_ferry_tc_egress')]);
  }
  const hostTc = await run(['bpftool', '-j', 'net', 'show'], { allowFailure: true });
  t.notMatch(hostTc.stdout, /ferry_tc/, "the tc program is on none of the host's interfaces");

  await t.test('an established TCP connection keeps its endpoint after it left the set and after the Service is gone', async (t) => {
    // Two connections on one endpoint (which one is random).
    const sessions: { s: Session; endpoint: string; port: number }[] = [];
    t.teardown(() => sessions.forEach((x) => x.s.close()));
    for (let i = 0; i < 30 && sessions.length < 2; i++) {
      const s = place.session(client);
      const c = await s.connect(NODE_IP, NODEPORT);
      const r = await s.send('first');
      t.ok(c.ok && r.ok, `client → ${NODE_IP}:${NODEPORT} answered (${JSON.stringify(c)} ${JSON.stringify(r)})`);
      const endpoint = r.reply?.split(' ')[0] ?? '';
      if (sessions.length === 0 || endpoint === sessions[0]!.endpoint) sessions.push({ s, endpoint, port: c.port ?? 0 });
      else s.close();
    }
    t.equal(sessions.length, 2, 'two connections to one endpoint');
    const [a, b] = sessions as [(typeof sessions)[0], (typeof sessions)[0]];
    const gone = a.endpoint;
    const stays = gone === 'e1' ? 'e2' : 'e1';
    t.match(a.endpoint, /^e[12]$/);

    // The endpoint terminates: it leaves the set (the IR's change, through the backend).
    const remaining = fwd(ep(gone === 'e1' ? E2 : E1, 8080));
    const left = svc({ ...web, internal: remaining, external: remaining, cluster: remaining });
    const v2 = ir([left, ranged]);
    await backend.sync(v1, v2, changesOf([web.key]));
    for (const x of [a, b]) {
      const r = await x.s.send('after');
      t.match(r.reply ?? `error ${r.error}`, new RegExp(`^${gone} ${NODE_IP} after$`), `the established connection from port ${x.port} still reaches ${gone}, which left the set (${JSON.stringify(r)})`);
    }
    for (let i = 0; i < 6; i++) t.match(await once(place, client, NODE_IP, NODEPORT), new RegExp(`^${stays} `), `a new connection goes to ${stays}, the one left in the set`);

    // A new SYN on b's tuple (the client reusing its port without a FIN) is a new connection:
    // it must not reuse the entry of an endpoint that left.
    await inNs(client, ['python3', '-c', RAW_SYN, 'eth0', await mac(client, 'eth0'), await mac(node, 'c0'), CLIENT_IP, NODE_IP, String(b.port), String(NODEPORT)]);
    await new Promise((res) => setTimeout(res, 200));
    const fwdOf = (ct: CtEntry[]): CtEntry | undefined => ct.find((e) => e.dir === 0 && e.saddr === CLIENT_IP && e.sport === b.port && e.daddr === NODE_IP && e.dport === NODEPORT);
    const after = fwdOf(await conntrack(place.pinDir));
    t.equal(after?.toAddr, gone === 'e1' ? E2 : E1, `the SYN on port ${b.port}'s tuple chose afresh: ${JSON.stringify(after)}`);

    // The Service is deleted: TCP connections stay, as kube-proxy leaves their conntrack entries.
    const v3 = ir([ranged]);
    await backend.sync(v2, v3, changesOf([web.key]));
    const r = await a.s.send('deleted');
    t.match(r.reply ?? `error ${r.error}`, new RegExp(`^${gone} ${NODE_IP} deleted$`), `after the Service's deletion the connection still reaches ${gone} (${JSON.stringify(r)})`);
    t.match(await once(place, client, NODE_IP, NODEPORT), /^error /, 'a new connection to the deleted NodePort is not translated');
    await backend.sync(v3, v1, changesOf([web.key]));
  });

  await t.test('a frame from the network to 127.0.0.1 or 0.0.0.0 and a NodePort is not translated', async (t) => {
    const smac = await mac(client, 'eth0');
    const dmac = await mac(node, 'c0');
    const ports: Record<string, number> = { [NODE_IP]: 41001, '127.0.0.1': 41002, '127.1.2.3': 41003, '0.0.0.0': 41004 };
    for (const [daddr, sport] of Object.entries(ports)) await inNs(client, ['python3', '-c', RAW_SYN, 'eth0', smac, dmac, CLIENT_IP, daddr, String(sport), String(NODEPORT)]);
    await new Promise((res) => setTimeout(res, 200));
    const ct = await conntrack(place.pinDir);
    const tracked = (daddr: string): CtEntry | undefined => ct.find((e) => e.dir === 0 && e.saddr === CLIENT_IP && e.sport === ports[daddr] && e.daddr === daddr);
    t.ok(tracked(NODE_IP), `the same frame to the node's address ${NODE_IP} is translated (the check reaches the program)`);
    for (const daddr of ['127.0.0.1', '127.1.2.3', '0.0.0.0']) t.equal(tracked(daddr), undefined, `to ${daddr}:${NODEPORT}: left to the stack, no connection tracked (${JSON.stringify(tracked(daddr))})`);
  });

  await t.test('the connection-tracking timeouts reach the program; a half-closed connection gets its late answer', async (t) => {
    const prog = JSON.parse((await run(['bpftool', '-j', 'prog', 'show', 'pinned', join(place.pinDir, 'prog_ferry_tc_ingress')])).stdout) as { map_ids?: number[] };
    let found: unknown;
    for (const id of prog.map_ids ?? []) {
      const m = JSON.parse((await run(['bpftool', '-j', 'map', 'show', 'id', String(id)])).stdout) as { name?: string };
      if (!m.name?.endsWith('.rodata')) continue;
      const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'id', String(id)])).stdout) as { formatted?: { value?: Record<string, Record<string, unknown>[]> } }[];
      for (const v of dump[0]?.formatted?.value?.['.rodata'] ?? []) if ('ferry_ct_timeouts' in v) found = v['ferry_ct_timeouts'];
    }
    t.same(found, { established: 7200, close_wait: 1800, udp: 25, udp_stream: 100 }, "the program's ferry_ct_timeouts are the settings given, in seconds");

    // Only e1 serves 8081: a Service of its own, NodePort 30081.
    const late = svc({ namespace: 'default', name: 'late', clusterIP: '198.19.0.81', port: 8081, nodePort: NODEPORT + 1, internal: fwd(ep(E1, 8081)) });
    const withLate = ir([web, ranged, late]);
    await backend.sync(v1, withLate, changesOf([late.key]));
    t.teardown(() => backend.sync(withLate, v1, changesOf([late.key])));
    const child = place.spawnIn(client, [process.execPath, '-e', HALF_CLOSE, NODE_IP, String(NODEPORT + 1), String(LATE_MS + 5_000)]);
    const exited = new Promise((res) => child.once('exit', res));
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    // While the answer is awaited: the client's FIN put its entries in FIN_WAIT (maps.h 5), not
    // in a RST's CLOSING (2).
    await new Promise((res) => setTimeout(res, 500));
    const states = (await conntrackStates(place.pinDir)).filter((e) => e.port === NODEPORT + 1).map((e) => e.state);
    t.same(states, [5], `the forward entry of the half-closed connection is in FIN_WAIT (${JSON.stringify(states)})`);
    await exited;
    t.same(JSON.parse(out || '{}'), { got: 'e1 late\n' }, `the answer ${LATE_MS} ms after the client's FIN arrived, translated back`);
  });

  await t.test('ETP Local with source ranges: a local pod in the ranges is short-circuited, one outside them dropped', async (t) => {
    t.match(await once(place, pod, LB_IP, 80, POD_IN), new RegExp(`^e2 ${POD_IN.replace(/\./g, '\\.')} hello$`), `pod ${POD_IN} (in the ranges) → LB IP: the cluster-wide set, unmasqueraded`);
    t.match(await once(place, pod, LB_IP, 80, POD_OUT), /^error /, `pod ${POD_OUT} (outside the ranges) → LB IP: dropped`);
    t.match(await once(place, client, LB_IP, 80), /^error /, `outside client ${CLIENT_IP} (outside the ranges, no local endpoint) → LB IP: dropped`);
  });

  await t.test("an endpoint on the node's own address (a hostNetwork pod): delivered by the stack, its replies translated on egress", async (t) => {
    // A server in the node's namespace, as a hostNetwork pod, behind a NodePort (externalTraffic-
    // Policy Cluster: masqueraded where the endpoint is elsewhere, not here — kube-proxy's
    // masquerade is in POSTROUTING, which a locally delivered packet never reaches).
    await place.server(node, 'host');
    const hostnet = svc({ namespace: 'default', name: 'hostnet', clusterIP: '198.19.0.60', nodePort: HOSTNET_NODEPORT, internal: fwd(ep(NODE_IP, 8080)) });
    await backend.sync(v1, ir([web, ranged, hostnet]), changesOf([hostnet.key]));
    t.teardown(() => backend.sync(ir([web, ranged, hostnet]), v1, changesOf([hostnet.key])));
    const esc = (ip: string): string => ip.replace(/\./g, '\\.');
    for (let i = 0; i < 3; i++) {
      t.match(await once(place, client, NODE_IP, HOSTNET_NODEPORT), new RegExp(`^host ${esc(CLIENT_IP)} hello$`), `outside client → ${NODE_IP}:${HOSTNET_NODEPORT}: the node's own server answers, and sees the client's address`);
    }
    t.match(await once(place, pod, NODE_IP, HOSTNET_NODEPORT, POD_IN), new RegExp(`^host ${esc(POD_IN)} hello$`), 'a local pod → the NodePort: the same, its reply translated on the egress of its own veth');
    const ct = await conntrack(place.pinDir);
    t.ok(
      ct.some((e) => e.dir === 0 && e.saddr === CLIENT_IP && e.dport === HOSTNET_NODEPORT && e.toAddr === NODE_IP && e.toPort === 8080),
      'the connection is tracked by the program (translated by it, not by the stack)',
    );
  });
});
