/**
 * ebpf mode's connected-UDP-socket cleanup: the sockterm keys and socket records as sock_term.c
 * lays them out, the filters of conntrack-cleanup.ts turned into keys, the namespaces walked from
 * a cgroup tree, the addon's refusal on an old kernel (said once, then nothing is tried), and the
 * ebpf backend asking for the listing on its first sync and for the stale pairs after a change.
 */
import t from 'tap';
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSockRecords, SOCK_REC_SIZE, SOCKTERM_KEY_SIZE, writeSockTermKey } from '../../../../src/backends/ebpf/layout.js';
import { KernelUdpSockets, namespacesUnder, socketEntry, sockTermKeys, UDP_SOCKET_WORDS } from '../../../../src/backends/kernel/udp-sockets.js';
import { createEbpfBackend } from '../../../../src/backends/ebpf/backend.js';
import { FakeBpfMaps } from '../../../../src/backends/kernel/bpf.js';
import { FakeConntrack } from '../../../../src/backends/kernel/conntrack.js';
import { setLogSink } from '../../../../src/util/log.js';
import { changesOf, ep, FULL, fwd, REJECT, svc, table, tables } from '../ir-builders.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));

/** A sock_rec as sock_term.c writes it (little-endian host). */
function record(r: { family: 4 | 6; src: number[]; srcPort: number; dst: number[]; dstPort: number; front: number[]; frontPort: number; translated: boolean; cookie?: bigint }): Buffer {
  const b = Buffer.alloc(SOCK_REC_SIZE);
  b.writeBigUInt64LE(r.cookie ?? 7n, 0);
  Buffer.from(r.src).copy(b, 8);
  Buffer.from(r.dst).copy(b, 24);
  Buffer.from(r.front).copy(b, 40);
  b.writeUInt16LE(r.srcPort, 56);
  b.writeUInt16BE(r.dstPort, 58);
  b.writeUInt16BE(r.frontPort, 60);
  b[62] = r.family;
  b[63] = r.translated ? 1 : 0;
  return b;
}

const v6 = (last: number): number[] => [0x20, 0x01, 0x0d, 0xb8, ...Array<number>(11).fill(0), last];

t.test('sockterm keys: frontend, backend, ports in network order, family; zero addresses for a NodePort', async (t) => {
  const b = new Uint8Array(SOCKTERM_KEY_SIZE);
  t.ok(writeSockTermKey(b, 0, '198.19.0.53', 53, '198.18.0.5', 5353, 4));
  t.same([...b.subarray(0, 4)], [198, 19, 0, 53], 'frontend address first');
  t.same([...b.subarray(16, 20)], [198, 18, 0, 5], 'backend address at 16');
  t.same([b[32], b[33], b[34], b[35], b[36]], [0, 53, 0x14, 0xe9, 4], 'ports big-endian, then the family');
  t.ok(writeSockTermKey(b, 0, undefined, 30053, undefined, 30053, 4));
  t.same([...b.subarray(0, 32)], Array<number>(32).fill(0), 'a NodePort answered by the node: both addresses zero');
  t.notOk(writeSockTermKey(b, 0, '2001:db8::1', 53, '198.18.0.5', 53, 4), 'an address of the other family is refused');
});

t.test('socket records: decoded from the iterator output, as conntrack entries frontend → backend', async (t) => {
  const buf = Buffer.concat([
    record({ family: 4, src: [198, 18, 1, 4], srcPort: 40811, dst: [198, 18, 0, 5], dstPort: 8080, front: [198, 19, 0, 53], frontPort: 53, translated: true }),
    record({ family: 6, src: v6(4), srcPort: 40000, dst: v6(5), dstPort: 53, front: v6(0x53), frontPort: 53, translated: false }),
    Buffer.alloc(SOCK_REC_SIZE), // family 0: skipped
  ]);
  const rs = readSockRecords(buf);
  t.equal(rs.length, 2);
  t.match(rs[0], { family: 4, src: '198.18.1.4', srcPort: 40811, dst: '198.18.0.5', dstPort: 8080, frontend: '198.19.0.53', frontendPort: 53, translated: true, cookie: 7n });
  t.match(rs[1], { family: 6, src: '2001:db8::4', dst: '2001:db8::5', frontend: '2001:db8::53', translated: false });
  t.same(socketEntry(rs[0]!), {
    family: 4,
    protocol: 'udp',
    origSrc: '198.18.1.4',
    origSrcPort: 40811,
    origDst: '198.19.0.53',
    origDstPort: 53,
    replySrc: '198.18.0.5',
    replySrcPort: 8080,
    replyDst: '198.18.1.4',
    replyDstPort: 40811,
  });
  t.throws(() => readSockRecords(Buffer.alloc(SOCK_REC_SIZE + 1)), { code: 'FERRY_ERR_EBPF_LAYOUT' }, 'a partial record is an error');
});

t.test('filters → keys: UDP only, a backend always named except for a NodePort', async (t) => {
  const { keys, count } = sockTermKeys([
    { family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.5', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrc: '198.18.0.5', replySrcPort: 53 },
    { family: 4, protocol: 'udp', origDstPort: 30053, replySrcPort: 30053 },
    { family: 4, protocol: 'sctp', origDst: '198.19.0.54', origDstPort: 9, replySrc: '198.18.0.5', replySrcPort: 9 },
    { family: 4, protocol: 'udp', origDst: '198.19.0.55', origDstPort: 9, replySrcPort: 9 },
  ]);
  t.equal(count, 3, 'SCTP (no socket LB) and a frontend address without a backend address are left out');
  t.equal(keys.byteLength, 3 * SOCKTERM_KEY_SIZE);
  t.same([...keys.subarray(SOCKTERM_KEY_SIZE, SOCKTERM_KEY_SIZE + 4)], [0, 0, 0, 0], 'the NodePort filter: any frontend address');
});

t.test('namespaces: one per network namespace of the processes in the cgroup tree, ferry\'s own included', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-udp-sockets-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const proc = join(dir, 'proc');
  const ns = (pid: string, shareWith?: string): void => {
    mkdirSync(join(proc, pid, 'ns'), { recursive: true });
    // A file per namespace; a process in another's namespace is a hard link (the same inode).
    if (shareWith) linkSync(join(proc, shareWith, 'ns', 'net'), join(proc, pid, 'ns', 'net'));
    else writeFileSync(join(proc, pid, 'ns', 'net'), pid);
  };
  ns(String(process.pid));
  ns('100');
  ns('200');
  ns('400', '200');
  const cg = join(dir, 'cg');
  mkdirSync(join(cg, 'pods', 'pod-a'), { recursive: true });
  writeFileSync(join(cg, 'cgroup.procs'), '100\n');
  writeFileSync(join(cg, 'pods', 'cgroup.procs'), '');
  writeFileSync(join(cg, 'pods', 'pod-a', 'cgroup.procs'), '200\n300\n400\n'); // 300 exited: no /proc entry; 400 shares 200's
  const got = await namespacesUnder(cg, proc);
  t.same(got, [join(proc, String(process.pid), 'ns', 'net'), join(proc, '100', 'ns', 'net'), join(proc, '200', 'ns', 'net')]);
});

t.test('an addon or kernel that cannot: said once, then nothing is tried', async (t) => {
  lines.length = 0;
  let calls = 0;
  const refusing = new KernelUdpSockets({
    pinDir: '/sys/fs/bpf/x',
    cgroupRoot: async () => '/nonexistent',
    namespaces: async () => ['/proc/self/ns/net'],
    addon: () => ({
      bpfUdpSocketsAsync: async () => {
        calls++;
        throw Object.assign(new Error('load BPF object x.o: Invalid argument\nkfunc bpf_sock_destroy not found'), { step: 'load BPF object x.o', errno: 22 });
      },
    }),
  });
  t.same(await refusing.list(4, 'udp'), []);
  t.equal(await refusing.delete([{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.5', replySrcPort: 53 }]), 0);
  t.equal(calls, 1, 'the load is tried once');
  t.match(refusing.unavailable, /Linux 6\.5/);
  t.equal(lines.filter((l) => l.includes('connected UDP sockets keep sending')).length, 1, 'one warning');

  const failing = new KernelUdpSockets({
    pinDir: '/sys/fs/bpf/x',
    cgroupRoot: async () => '/nonexistent',
    namespaces: async () => ['/proc/self/ns/net'],
    addon: () => ({
      bpfUdpSocketsAsync: async () => {
        throw Object.assign(new Error('open pinned map /sys/fs/bpf/x/ferry_rev: No such file or directory'), { step: 'open pinned map /sys/fs/bpf/x/ferry_rev', errno: 2 });
      },
    }),
  });
  await t.rejects(failing.list(4, 'udp'), { code: 'FERRY_ERR_BPF', message: 'open pinned map /sys/fs/bpf/x/ferry_rev: No such file or directory' }, 'any other failure is an error for the cleanup to log');
  t.equal(failing.unavailable, undefined, 'and is tried again');
  t.same(await new KernelUdpSockets({ pinDir: '/x', cgroupRoot: async () => '/x', addon: () => ({}) }).list(4, 'udp'), [], 'an addon without the call');
});

t.test('KernelUdpSockets.delete: the keys go to the addon; the destroyed sockets are counted and logged', async (t) => {
  lines.length = 0;
  const asked: { netns: string[]; keys?: Uint8Array; keySize?: number }[] = [];
  const s = new KernelUdpSockets({
    pinDir: '/sys/fs/bpf/x',
    cgroupRoot: async () => '/x',
    namespaces: async () => ['/proc/1/ns/net', '/proc/2/ns/net'],
    addon: () => ({
      bpfUdpSocketsAsync: async (_o: string, _p: string, netns: string[], keys?: Uint8Array, keySize?: number) => {
        asked.push({ netns, ...(keys ? { keys } : {}), ...(keySize ? { keySize } : {}) });
        return {
          records: record({ family: 4, src: [198, 18, 1, 4], srcPort: 40811, dst: [198, 18, 0, 5], dstPort: 53, front: [198, 19, 0, 53], frontPort: 53, translated: true }),
          gone: [],
        };
      },
    }),
  });
  t.equal(await s.delete([{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.5', replySrcPort: 53 }]), 1);
  t.equal(asked.length, 1);
  t.same(asked[0]?.netns, ['/proc/1/ns/net', '/proc/2/ns/net'], 'in every namespace');
  t.equal(asked[0]?.keySize, SOCKTERM_KEY_SIZE);
  t.equal(asked[0]?.keys?.byteLength, SOCKTERM_KEY_SIZE);
  t.ok(lines.some((l) => l.includes('connected UDP sockets destroyed') && l.includes('198.19.0.53:53->198.18.0.5:53')), 'logged with the flow');
  t.equal(await s.delete([{ family: 4, protocol: 'sctp', origDst: '198.19.0.53', origDstPort: 9, replySrc: '198.18.0.5', replySrcPort: 9 }]), 0);
  t.equal(asked.length, 1, 'nothing to match: the addon is not called');
});

t.test('ebpf backend: the first sync lists the sockets, a change destroys those of an endpoint that stopped serving', async (t) => {
  const dns = svc({ namespace: 'kube-system', name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIP: '198.19.0.53', internal: fwd(ep('198.18.0.5', 53), ep('198.18.0.6', 53)) });
  const web = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080)) });
  const sockets = Object.assign(new FakeConntrack(), { words: UDP_SOCKET_WORDS });
  const sock = (replySrc: string) =>
    ({ family: 4, protocol: 'udp', origSrc: '198.18.1.4', origSrcPort: 40000, origDst: '198.19.0.53', origDstPort: 53, replySrc, replySrcPort: 53, replyDst: '198.18.1.4', replyDstPort: 40000 }) as const;
  // Connected while ferry was down: one to an endpoint that has gone since, one to a serving one.
  sockets.entries = [sock('198.18.0.9'), sock('198.18.0.5')];
  const b = createEbpfBackend({ maps: new FakeBpfMaps(), families: [4], localhostNodePorts: true, sockets });
  const ir1 = tables(table(4, [dns, web]));
  await b.sync(null, ir1, FULL);
  t.same(sockets.lists, [{ family: 4, protocol: 'udp' }], 'the first sync lists the UDP sockets');
  t.same(sockets.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.9', replySrcPort: 53 }], 'and destroys the one to an endpoint that does not serve');
  sockets.reset();
  const dns2 = { ...dns, internal: fwd(ep('198.18.0.6', 53)), external: fwd(ep('198.18.0.6', 53)), cluster: fwd(ep('198.18.0.6', 53)) };
  await b.sync(ir1, tables(table(4, [dns2, web])), changesOf([dns.key]));
  t.same(sockets.lists, [], 'a partial sync lists nothing');
  t.same(sockets.calls, [{ family: 4, protocol: 'udp', origDst: '198.19.0.53', origDstPort: 53, replySrc: '198.18.0.5', replySrcPort: 53 }], 'the endpoint that left, through the ClusterIP');
  sockets.reset();
  sockets.failWith = new Error('EPERM');
  const dns3 = { ...dns2, internal: REJECT, external: REJECT, cluster: REJECT };
  lines.length = 0;
  await t.resolves(b.sync(tables(table(4, [dns2, web])), tables(table(4, [dns3, web])), changesOf([dns.key])), 'a failed cleanup does not fail the sync');
  t.ok(lines.some((l) => l.includes('destroying connected UDP sockets of removed endpoints failed')), 'and is logged in the words of sockets, not of conntrack');
  sockets.failWith = undefined;
  sockets.reset();
  await b.sync(tables(table(4, [dns3, web])), tables(table(4, [dns3, web])), changesOf([web.key]));
  t.same(sockets.lists, [{ family: 4, protocol: 'udp' }], 'the next sync reconciles from a listing');
});
