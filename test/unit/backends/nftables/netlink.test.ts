/**
 * The netlink encoder without a kernel (no root):
 *  - a transaction covering every kind of object encodes to the messages nft 1.0.6 sends for the
 *    same commands (golden/netlink-oracle.hex), attribute for attribute (order within a level
 *    aside: the kernel does not care, and nft's order is libnftnl's);
 *  - every golden full sync frames as one batch: BEGIN, messages with consecutive sequence
 *    numbers and consistent lengths, END; element lists stay under the 64 KiB attribute limit;
 *  - locate() maps a sequence number and an extack offset back to the op; bad keys name their op;
 *  - dump answers parse to names (anonymous sets left out).
 */
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileFull } from '../../../../src/backends/nftables/compiler.js';
import { describeOp, encodeDumpRequest, encodeTransaction, NetlinkEncodeError, parseDumpNames } from '../../../../src/backends/nftables/netlink.js';
import * as R from '../../../../src/backends/nftables/rules.js';
import { affinitySetSpec, endpointMapSpec } from '../../../../src/backends/nftables/skeleton.js';
import { endpointShard, groupedMapOf } from '../../../../src/backends/nftables/names.js';
import { Transaction, type FrontendPieces, type SlotPieces } from '../../../../src/backends/nftables/transaction.js';
import { bigTable, GOLDENS, randomWalk, tables } from './fixtures.js';
import { buildCluster } from '../../../../src/bench/synthetic.js';

const goldenDir = fileURLToPath(new URL('../../../../../test/unit/backends/nftables/golden/', import.meta.url));
const T = 'ip ferry';

interface Attr {
  type: number;
  nested: boolean;
  value: Buffer | Attr[];
}

/** A netlink attribute list as a tree (NLA_F_NESTED marks the nests), siblings sorted by type. */
function tree(b: Buffer): Attr[] {
  const out: Attr[] = [];
  let p = 0;
  while (p + 4 <= b.length) {
    const len = b.readUInt16LE(p);
    const raw = b.readUInt16LE(p + 2);
    if (len < 4) break;
    const v = b.subarray(p + 4, p + len);
    const nested = (raw & 0x8000) !== 0;
    out.push({ type: raw & 0x7fff, nested, value: nested ? tree(v) : v });
    p += (len + 3) & ~3;
  }
  return out.sort((x, y) => x.type - y.type);
}

function show(a: Attr[], depth = 0): string {
  return a.map((x) => `${'  '.repeat(depth)}[${x.type}]${Array.isArray(x.value) ? `\n${show(x.value, depth + 1)}` : ` ${x.value.toString('hex')}`}`).join('\n');
}

function messages(b: Uint8Array): Buffer[] {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out: Buffer[] = [];
  let p = 0;
  while (p + 16 <= buf.length) {
    const len = buf.readUInt32LE(p);
    out.push(buf.subarray(p, p + len));
    p += (len + 3) & ~3;
  }
  return out;
}

/** Header (sequence number zeroed) and the attribute tree. */
function normal(m: Buffer): string {
  const head = Buffer.from(m.subarray(0, 20));
  head.writeUInt32LE(0, 8);
  return `${head.toString('hex')}\n${show(tree(m.subarray(20)))}`;
}

t.test('encodes what nft 1.0.6 sends for the same commands', async (t) => {
  const fs = R.V4;
  const tx = new Transaction()
    .addTable(T, 'ferry: tc')
    .addChain(T, { name: 'nat-output', base: { type: 'nat', hook: 'output', priority: -100 } })
    .addChain(T, { name: 'ferry-canary', comment: 'canary' })
    .addSet(T, { name: 'hairpin', type: 'ipv4_addr . ipv4_addr', comment: 'hc' })
    .addMap(T, { name: 'service-ips', type: 'ipv4_addr . inet_proto . inet_service : verdict', comment: 'sc' })
    .addMap(T, { name: 'endpoints-udp-0', type: 'numgen random mod 2 : ip daddr . udp dport', typeof: true, comment: 'ec' })
    .addSet(T, { name: 'aff-x', type: 'ipv4_addr', flags: ['dynamic', 'timeout'], timeoutSeconds: 10800 })
    .addSet(T, affinitySetSpec(fs))
    .addRule(T, 'nat-output', R.jumpIfNew('ferry-canary'))
    .addRule(T, 'nat-output', R.serviceIPsDispatch(fs, 'service-ips'))
    .addRule(T, 'nat-output', { ...R.hairpinRule(fs), chain: 'ferry-canary' } as R.Rule)
    .addMap(T, { name: 'service-nodeports', type: 'inet_proto . inet_service : verdict' })
    .addRule(T, 'nat-output', R.nodePortDispatch(fs, true, 'service-nodeports'))
    .addRule(T, 'nat-output', R.dnatSlot(fs, 'UDP', 3, 4096, 'endpoints-udp-0', ''))
    .addRule(T, 'nat-output', R.dnatTo(fs, 'TCP', { ip: '10.0.0.1', port: 8080 } as never))
    .addRule(T, 'nat-output', R.markForMasquerade(0x4000))
    .addRule(T, 'nat-output', R.affinityCheck(fs, [0x12345678, 0], 'ferry-canary', 'fromNode'))
    .addRule(T, 'nat-output', R.affinityUpdate(fs, [0x9abcdef0, 7], 10800))
    .addElement(T, 'service-ips', '10.96.0.1 . tcp . 443', 'goto ferry-canary')
    .addElement(T, 'endpoints-udp-0', '4097', '10.0.0.2 . 53');
  const want = readFileSync(`${goldenDir}netlink-oracle.hex`, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((h) => Buffer.from(h, 'hex'));
  const got = messages(encodeTransaction(tx, { seqBase: 0 }).bytes);
  t.equal(got.length, want.length, 'as many messages as nft sends');
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    t.equal(normal(got[i]!), normal(want[i]!), `message ${i} (${i === 0 ? 'BEGIN' : i === want.length - 1 ? 'END' : tx.ops[i - 1] ? describe(i) : ''})`);
  }
  function describe(i: number): string {
    const op = tx.ops[i - 1]!;
    return op.kind === 'rule' ? op.rule.text : op.kind;
  }
});

/** `tx` encodes, message for message, to a captured batch of nft's (`block`: hex, a message a line). */
function sameAsOracle(t: Test, tx: Transaction, block: string, label: string): void {
  const want = block
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((h) => Buffer.from(h, 'hex'));
  const got = messages(encodeTransaction(tx, { seqBase: 0 }).bytes);
  t.equal(got.length, want.length, `${label}: as many messages as nft sends`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const op = tx.ops[i - 1];
    t.equal(normal(got[i]!), normal(want[i]!), `${label} message ${i} (${op ? (op.kind === 'rule' ? op.rule.text : op.kind) : 'batch'})`);
  }
}

t.test('encodes what nft 1.0.6 sends for the endpoint-count layout (ip and ip6)', async (t) => {
  const blocks = readFileSync(`${goldenDir}netlink-oracle-grouped.hex`, 'utf8').split(/^# family .*$/m).slice(1);
  const cases = [
    { fs: R.V4, target: 'ip ferry', key: '10.96.0.1 . tcp . 80', eps: ['10.0.0.1 . 8080', '10.0.0.2 . 8080'] },
    { fs: R.V6, target: 'ip6 ferry', key: 'fd00::1 . tcp . 80', eps: ['fd01::1 . 8080', 'fd01::2 . 8080'] },
  ];
  t.equal(blocks.length, cases.length, 'one captured batch per family');
  cases.forEach(({ fs, target, key, eps }, k) => {
    const a = fs.addrType;
    const tx = new Transaction()
      .addTable(target)
      .addChain(target, { name: 'services-by-count' })
      .addChain(target, { name: 'mark-for-masquerade' })
      .addSet(target, { name: 'local-cidrs', type: a, flags: ['interval'] })
      .addSet(target, { name: 'n-tcp-3', type: `${a} . inet_proto . inet_service` })
      .addSet(target, { name: 'masq-all', type: `${a} . inet_proto . inet_service` })
      .addMap(target, { name: 'endpoints-tcp', type: `${fs.ipX} daddr . meta l4proto . th dport . numgen random mod 2 : ${fs.ipX} daddr . tcp dport`, typeof: true, comment: 'x' })
      .addRule(target, 'services-by-count', R.frontendJump(fs, 'masq-all', '', 'mark-for-masquerade'))
      .addRule(target, 'services-by-count', R.frontendJump(fs, 'masq-all', 'notLocalSrc', 'mark-for-masquerade'))
      .addRule(target, 'services-by-count', R.dnatCount(fs, 'TCP', 3, 'n-tcp-3', 'endpoints-tcp'))
      .addElement(target, 'n-tcp-3', key)
      .addElement(target, 'endpoints-tcp', R.groupedEndpointKey(key, 0), eps[0])
      .addElement(target, 'endpoints-tcp', R.groupedEndpointKey(key, 1), eps[1]);
    sameAsOracle(t, tx, blocks[k]!, fs.nft);
  });
});

t.test('encodes what nft 1.0.6 sends for grouped NodePorts (ip and ip6)', async (t) => {
  // The NodePort kind of the endpoint-count layout: `proto . port` keys, the jump behind both
  // NodePort address checks, the masquerade and count rules, a map keyed with numgen.
  const blocks = readFileSync(`${goldenDir}netlink-oracle-nodeports.hex`, 'utf8').split(/^# family .*$/m).slice(1);
  const cases = [
    { fs: R.V4, eps: ['10.0.0.1 . 8080', '10.0.0.2 . 8080'] },
    { fs: R.V6, eps: ['fd01::1 . 8080', 'fd01::2 . 8080'] },
  ];
  t.equal(blocks.length, cases.length, 'one captured batch per family');
  cases.forEach(({ fs, eps }, k) => {
    const target = `${fs.nft} ferry`;
    const key = 'tcp . 30080';
    const tx = new Transaction()
      .addTable(target)
      .addChain(target, { name: 'services' })
      .addChain(target, { name: 'nodeports-by-count' })
      .addChain(target, { name: 'mark-for-masquerade' })
      .addSet(target, { name: 'nodeport-ips', type: fs.addrType })
      .addSet(target, { name: 'np-tcp-3', type: 'inet_proto . inet_service' })
      .addSet(target, { name: 'masq-nodeports', type: 'inet_proto . inet_service' })
      .addMap(target, endpointMapSpec(fs, 'np-endpoints-tcp-n3'))
      .addRule(target, 'services', R.nodePortGroupsJump(fs, true, 'nodeports-by-count'))
      .addRule(target, 'services', R.nodePortGroupsJump(fs, false, 'nodeports-by-count'))
      .addRule(target, 'nodeports-by-count', R.frontendJump(fs, 'masq-nodeports', '', 'mark-for-masquerade', true))
      .addRule(target, 'nodeports-by-count', R.dnatCount(fs, 'TCP', 3, 'np-tcp-3', 'np-endpoints-tcp-n3', true))
      .addElement(target, 'np-tcp-3', key)
      .addElement(target, 'masq-nodeports', key)
      .addElement(target, 'np-endpoints-tcp-n3', R.groupedEndpointKey(key, 0), eps[0])
      .addElement(target, 'np-endpoints-tcp-n3', R.groupedEndpointKey(key, 1), eps[1]);
    sameAsOracle(t, tx, blocks[k]!, fs.nft);
  });
});

t.test('encodes what nft 1.0.6 sends for the ip6 affinity set and rules', async (t) => {
  // The key's registers differ by family (a 16-byte address first): ip6 is checked on its own.
  const fs = R.V6;
  const T6 = 'ip6 ferry';
  const tx = new Transaction()
    .addTable(T6)
    .addChain(T6, { name: 'ep-x' })
    .addSet(T6, affinitySetSpec(fs))
    .addRule(T6, 'ep-x', R.affinityCheck(fs, [0x12345678, 7], 'ep-x', ''))
    .addRule(T6, 'ep-x', R.affinityUpdate(fs, [0xffffffff, 0], 3));
  const want = readFileSync(`${goldenDir}netlink-oracle-affinity6.hex`, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((h) => Buffer.from(h, 'hex'));
  const got = messages(encodeTransaction(tx, { seqBase: 0 }).bytes);
  t.equal(got.length, want.length, 'as many messages as nft sends');
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const op = tx.ops[i - 1];
    t.equal(normal(got[i]!), normal(want[i]!), `message ${i} (${op ? (op.kind === 'rule' ? op.rule.text : op.kind) : 'batch'})`);
  }
});

t.test('every golden full sync frames as one batch', async (t) => {
  for (const g of GOLDENS) {
    const tx = compileFull(g.ir, { families: g.families, masqueradeMark: 0x4000 });
    const enc = encodeTransaction(tx, { seqBase: 100 });
    const msgs = messages(enc.bytes);
    let total = 0;
    for (const m of msgs) total += (m.length + 3) & ~3;
    t.equal(total, enc.bytes.length, `${g.name}: message lengths add up to the batch`);
    t.equal(msgs[0]!.readUInt16LE(4), 0x10, `${g.name}: starts with BATCH_BEGIN`);
    t.equal(msgs[msgs.length - 1]!.readUInt16LE(4), 0x11, `${g.name}: ends with BATCH_END`);
    t.equal(msgs.length, enc.messages + 2, `${g.name}: messages counted`);
    const seqs = msgs.map((m) => m.readUInt32LE(8));
    t.same(seqs, seqs.map((_, i) => 100 + i), `${g.name}: consecutive sequence numbers`);
    t.ok(msgs.slice(1, -1).every((m) => m.readUInt16LE(4) >> 8 === 10), `${g.name}: every message is nf_tables`);
    const grown = encodeTransaction(tx, { seqBase: 100, initialBytes: 16 });
    t.ok(Buffer.from(grown.bytes).equals(Buffer.from(enc.bytes)), `${g.name}: the same bytes when the buffer grows on the way`);
  }
});

t.test('large element runs split under the 64 KiB attribute limit; locate() finds the element', async (t) => {
  const tx = compileFull(tables(bigTable(4, 3000, 10)), { families: [4], masqueradeMark: 0x4000 });
  const enc = encodeTransaction(tx);
  const msgs = messages(enc.bytes);
  for (const m of msgs) {
    if ((m.readUInt16LE(4) & 0xff) !== 12) continue;
    for (const a of tree(m.subarray(20))) if (a.type === 3) t.ok(Array.isArray(a.value), 'element list');
    t.ok(m.length < 65536 + 200, `element message of ${m.length} bytes`);
  }
  // A full compile writes each endpoints shard as one element run (transaction.ts ElementRun).
  const opIndex = tx.ops.findIndex((o) => o.kind === 'elements' && o.set.startsWith('endpoints-'));
  const run = tx.ops[opIndex]!;
  if (run?.kind !== 'elements') throw new Error('the first endpoints shard is not an element run');
  t.ok(run.run.count > 0, 'the first endpoints shard is an element run');
  // The messages of that run; in each, the offset of its 5th element.
  const hits: { seq: number; offset: number; count: number }[] = [];
  for (const m of msgs) {
    if ((m.readUInt16LE(4) & 0xff) !== 12) continue;
    const name = tree(m.subarray(20)).find((a) => a.type === 2)!.value as Buffer;
    if (name.toString().replace(/\0+$/, '') !== run.set) continue;
    let p = 20;
    while (p < m.length) {
      const len = m.readUInt16LE(p);
      if ((m.readUInt16LE(p + 2) & 0x7fff) === 3) {
        let q = p + 4;
        let count = 0;
        let fifth = -1;
        while (q < p + len) {
          if (count === 4) fifth = q;
          q += (m.readUInt16LE(q) + 3) & ~3;
          count++;
        }
        hits.push({ seq: m.readUInt32LE(8), offset: fifth, count });
        break;
      }
      p += (len + 3) & ~3;
    }
  }
  t.ok(hits.length >= 2, `the run needs several messages (${hits.length})`);
  t.same(enc.locate(hits[0]!.seq, hits[0]!.offset), { opIndex, element: 4 }, 'the extack offset of the 5th element names the run and the element');
  t.same(enc.locate(hits[1]!.seq, hits[1]!.offset), { opIndex, element: hits[0]!.count + 4 }, 'in the second message, the element count carries on');
  const at = enc.locate(hits[1]!.seq, -1);
  t.same(at, { opIndex, element: hits[0]!.count, elements: hits[1]!.count }, 'without an offset: the message\'s first element and how many it holds');
  t.match(describeOp(tx.ops[opIndex]!, 4), new RegExp(`^add element ip ferry ${run.set} \\{ [^,]+ \\}$`), 'describeOp spells the one element');
  t.equal(enc.locate(2, -1)?.opIndex, 0, 'the first message (sequence number base + 1) is the first op');
  t.equal(enc.locate(999999, -1), undefined, 'an unknown sequence number is no op');
  // Once sent and located, the batch lets go of its buffer (the encoder's context may outlive it).
  const sent = enc.bytes;
  enc.release();
  t.equal(enc.bytes.length, 0, 'no bytes after release()');
  t.equal(enc.locate(hits[0]!.seq, hits[0]!.offset), undefined, 'nothing to locate after release()');
  t.ok(sent.length > 65536, 'a view taken before release() is untouched (the addon may still be sending it)');
});

t.test('element ops one by one (a partial sync): locate() names the op of the element at fault', async (t) => {
  const tx = new Transaction().addTable('ip ferry');
  for (let i = 1; i <= 3; i++) tx.addElement('ip ferry', 'cluster-ips', `10.96.0.${i}`);
  tx.addElementRun('ip ferry', 'cluster-ips', { count: 2, key: (i) => `10.96.1.${i}` });
  t.equal(tx.size, 6, 'size counts every element of a run');
  t.equal(tx.lineCount(), 3, 'one line for the table, one for the single adds, one for the run');
  t.match(tx.render(), /add element ip ferry cluster-ips \{ 10\.96\.0\.1, 10\.96\.0\.2, 10\.96\.0\.3 \}\nadd element ip ferry cluster-ips \{ 10\.96\.1\.0, 10\.96\.1\.1 \}/, 'rendered as element lines');
  const enc = encodeTransaction(tx);
  const m = messages(enc.bytes).filter((x) => (x.readUInt16LE(4) & 0xff) === 12);
  t.equal(m.length, 2, 'the single adds share a message; the run has its own');
  const secondOf = (msg: Buffer): number => {
    let p = 20;
    while (p < msg.length) {
      const len = msg.readUInt16LE(p);
      if ((msg.readUInt16LE(p + 2) & 0x7fff) === 3) return p + 4 + ((msg.readUInt16LE(p + 4) + 3) & ~3);
      p += (len + 3) & ~3;
    }
    return -1;
  };
  t.same(enc.locate(m[0]!.readUInt32LE(8), secondOf(m[0]!)), { opIndex: 2 }, 'the second single add is op 2');
  t.same(enc.locate(m[0]!.readUInt32LE(8), -1), { opIndex: 1, elements: 3 }, 'without an offset: the first op and how many share the message');
  t.same(enc.locate(m[1]!.readUInt32LE(8), secondOf(m[1]!)), { opIndex: 4, element: 1 }, 'the run\'s second element');
  t.equal(describeOp(tx.ops[4]!, 1), 'add element ip ferry cluster-ips { 10.96.1.1 }', 'described as its own line');
});

t.test('an element the encoder cannot express names its op', async (t) => {
  const tx = new Transaction().addTable(T).addElement(T, 'service-ips', '10.0.0.1 . tcp . 80', 'goto x').addElement(T, 'service-ips', '10.0.0.300 . tcp . 80', 'goto x');
  const thrown = (x: Transaction): unknown => {
    try {
      encodeTransaction(x);
    } catch (e) {
      return e;
    }
    return undefined;
  };
  const e1 = thrown(tx);
  t.ok(e1 instanceof NetlinkEncodeError && e1.opIndex === 2 && /10\.0\.0\.300/.test(e1.message), `a bad address names op 2: ${String(e1)}`);
  const e2 = thrown(new Transaction().addElement('inet ferry', 'cluster-ips', '10.0.0.1'));
  t.ok(e2 instanceof NetlinkEncodeError && e2.opIndex === 0, `an unsupported family names op 0: ${String(e2)}`);
});

t.test('dump requests and answers', async (t) => {
  const req = Buffer.from(encodeDumpRequest('sets', 'ip6', 'ferry'));
  t.equal(req.readUInt16LE(4), (10 << 8) | 10, 'NFT_MSG_GETSET');
  t.equal(req.readUInt16LE(6) & 0x300, 0x300, 'NLM_F_DUMP');
  t.equal(req[16], 10, 'NFPROTO_IPV6');
  // NEWCHAIN/NEWSET messages carry the same attributes as dump answers.
  const tx = new Transaction()
    .addChain(T, { name: 'a' })
    .addChain('ip other', { name: 'b' })
    .addChain(T, { name: 'c' })
    .addSet(T, { name: 's', type: 'ipv4_addr' })
    .addMap(T, { name: 'm', type: 'inet_proto . inet_service : verdict' })
    .addRule(T, 'a', R.firewallDrop(R.V4, ['10.0.0.0/8', '192.168.0.0/16']));
  const body = messages(encodeTransaction(tx).bytes).slice(1, -1);
  const data = Buffer.concat(body.map((m) => Buffer.concat([m, Buffer.alloc(((m.length + 3) & ~3) - m.length)])));
  t.same(parseDumpNames(data, 'ferry', 'chains').map((c) => c.name), ['a', 'c'], 'chains of the table only');
  t.same(parseDumpNames(data, 'ferry', 'sets').map((s) => s.name), ['s', 'm'], 'named sets and maps; the anonymous set is left out');
});

/** `tx` with every element run stripped of its pieces (ElementParts): the spelled path only. */
function spelledOnly(tx: Transaction): Transaction {
  const out = new Transaction();
  for (const op of tx.ops) {
    if (op.kind === 'elements' && (op.run.parts || op.run.frontends || op.run.slots || op.run.addresses)) {
      const { count, key, value } = op.run;
      out.addElementRun(op.target, op.set, value ? { count, key, value } : { count, key });
    } else {
      out.ops.push(op);
    }
  }
  return out;
}

t.test('a grouped run encoded from its pieces is the same batch as from its spelled keys and values', async (t) => {
  const cases: { name: string; ir: Parameters<typeof compileFull>[0]; families: (4 | 6)[] }[] = [
    ...GOLDENS.map((g) => ({ name: g.name, ir: g.ir, families: [...g.families] })),
    { name: 'ip, 3000 Services × 10', ir: tables(bigTable(4, 3000, 10)), families: [4] },
    { name: 'ip6, 500 Services × 5', ir: tables(bigTable(4, 1, 1), bigTable(6, 500, 5)), families: [4, 6] },
    ...[1, 2, 3].map((seed) => ({ name: `random walk ${seed}`, ir: randomWalk(seed, 1, [4, 6]).initial, families: [4, 6] as (4 | 6)[] })),
    // Through the model, as the daemon plans: each IPv4 endpoint carries its address as a number (v4).
    { name: 'ip, 2000 Services × 5 from EndpointSlices', ir: buildCluster(2000, 5).tables, families: [4] },
  ];
  const fromSlices = cases[cases.length - 1]!.ir[4].services.values().next().value?.internal.endpoints[0];
  t.equal(fromSlices?.v4, fromSlices ? Number(fromSlices.ip.split('.').reduce((n, p) => n * 256 + Number(p), 0)) : undefined, 'the model gave its endpoints their number');
  let withParts = 0;
  let nodePortParts = 0;
  for (const c of cases) {
    const tx = compileFull(c.ir, { families: c.families, masqueradeMark: 0x4000 });
    withParts += tx.ops.filter((o) => o.kind === 'elements' && (o.run.parts !== undefined || o.run.frontends !== undefined || o.run.slots !== undefined || o.run.addresses !== undefined)).length;
    nodePortParts += tx.ops.filter((o) => o.kind === 'elements' && o.run.parts !== undefined && groupedMapOf(o.set)?.kind === 'port').length;
    const a = Buffer.from(encodeTransaction(tx).bytes);
    const b = Buffer.from(encodeTransaction(spelledOnly(tx)).bytes);
    t.ok(a.equals(b), `${c.name}: byte for byte`);
  }
  t.ok(withParts >= 3, `runs in pieces were encoded (${withParts})`);
  t.ok(nodePortParts >= 1, `grouped NodePort maps in pieces were encoded (${nodePortParts})`);
});

t.test('a grouped run in pieces (frontend by frontend): the same bytes as spelled, and a bad piece names its element', async (t) => {
  const heads = ['10.96.0.1 . tcp . 80', '198.18.0.7 . tcp . 443', '10.96.0.3 . tcp . 80', '10.96.0.999 . tcp . 80'];
  // Addresses from 128.0.0.0 up (negative as signed numbers), 255.255.255.255 and one without a number.
  const good = [
    [{ ip: '10.0.0.1', v4: 0x0a000001, port: 8080 }, { ip: '198.19.0.2', v4: 0xc6130002, port: 8080 }],
    [{ ip: '255.255.255.255', v4: 0xffffffff, port: 1 }, { ip: '10.0.0.9', port: 9 }],
    [{ ip: '198.19.200.1', v4: 0xc613c801, port: 65535 }, { ip: '10.0.0.1', v4: 0x0a000001, port: 0 }],
    [{ ip: '10.0.0.4', v4: 0x0a000004, port: 80 }, { ip: '10.0.0.5', v4: 0x0a000005, port: 80 }],
  ];
  const n = 2;
  type Ep = { ip: string; v4?: number; port: number };
  const encode = (members: number[], pieces: boolean, lists: readonly (readonly Ep[])[] = good): Buffer | NetlinkEncodeError | undefined => {
    const ep = (x: number) => lists[members[Math.floor(x / n)]!]![x % n]!;
    const tx = new Transaction()
      .addTable('ip ferry')
      .addMap('ip ferry', { name: 'endpoints-tcp-n2', type: 'ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . tcp dport', typeof: true })
      .addElementRun('ip ferry', 'endpoints-tcp-n2', {
        count: members.length * n,
        key: (x) => `${heads[members[Math.floor(x / n)]!]!} . ${x % n}`,
        value: (x) => `${ep(x)?.ip} . ${ep(x)?.port}`,
        // Spelled frontend keys (v4 -1): the encoder reads each head.
        ...(pieces ? { parts: { frontends: { key: (f: number) => heads[f]! }, members, n, endpoints: lists } } : {}),
      });
    try {
      return Buffer.from(encodeTransaction(tx).bytes);
    } catch (e) {
      return e instanceof NetlinkEncodeError ? e : undefined;
    }
  };
  const spelled = encode([0, 1, 2], false);
  t.ok(Buffer.isBuffer(spelled), 'spelled, it encodes');
  t.ok(spelled instanceof Buffer && spelled.equals(encode([0, 1, 2], true) as Buffer), 'in pieces: the same bytes');
  const badHead = encode([0, 3], true);
  t.ok(badHead instanceof NetlinkEncodeError, 'a bad frontend key: a NetlinkEncodeError');
  t.match((badHead as Error | undefined)?.message, /10\.96\.0\.999 \. tcp \. 80 \. 0/, 'names the element by its spelled key');
  t.equal((badHead as NetlinkEncodeError).opIndex, 2, 'and its op');
  const badPort = encode([0, 2], true, [good[0]!, good[1]!, [good[2]![0]!, { ip: '10.0.0.1', v4: 0x0a000001, port: 70000 }]]);
  t.ok(badPort instanceof NetlinkEncodeError, 'a port out of range: a NetlinkEncodeError');
  t.match((badPort as Error | undefined)?.message, /10\.96\.0\.3 \. tcp \. 80 \. 1 : 10\.0\.0\.1 \. 70000/, 'names that element');
  const short = encode([0, 1], true, [good[0]!, good[1]!.slice(0, 1)]);
  t.ok(short instanceof NetlinkEncodeError, 'a frontend with fewer endpoints than n: a NetlinkEncodeError, not a crash');
  t.match((short as Error | undefined)?.message, /198\.18\.0\.7 \. tcp \. 443 \. 1/, 'names the missing element');
});

t.test('frontend keys in pieces: the same bytes as spelled, and a bad piece names its element', async (t) => {
  // One address from 128.0.0.0 up: negative as a signed 32-bit number (V4Piece).
  const keys = ['10.96.0.1 . tcp . 80', '198.18.200.7 . udp . 53', '10.96.0.3 . sctp . 9000'];
  const numbers = [0x0a600001, 0xc612c807, 0x0a600003];
  const protos = [6, 17, 132];
  const ports = [80, 53, 9000];
  const encode = (frontends?: FrontendPieces): Buffer | Error => {
    const tx = new Transaction()
      .addTable('ip ferry')
      .addSet('ip ferry', { name: 'masq-all', type: 'ipv4_addr . inet_proto . inet_service' })
      // Element i is frontend members[i]: the frontends' lists in the reverse order of the elements.
      .addElementRun('ip ferry', 'masq-all', { count: keys.length, key: (i) => keys[i]!, ...(frontends ? { frontends: { frontends, members: [2, 1, 0] } } : {}) });
    try {
      return Buffer.from(encodeTransaction(tx).bytes);
    } catch (e) {
      return e as Error;
    }
  };
  // The frontends' own lists, in reverse (frontend f is element 2 - f); the overrides below change
  // the middle one, the same in either order.
  const rev = <T>(a: readonly T[]): T[] => [...a].reverse();
  const pieces = (over: Partial<FrontendPieces> = {}): FrontendPieces => ({
    key: (f) => rev(keys)[f]!,
    v4s: rev(numbers),
    protos: rev(protos),
    ports: rev(ports),
    ...over,
  });
  const spelled = encode();
  t.ok(Buffer.isBuffer(spelled) && Buffer.isBuffer(encode(pieces())) && spelled.equals(encode(pieces()) as Buffer), 'pieces give the spelled keys\' bytes');
  t.ok(spelled instanceof Buffer && spelled.equals(encode(pieces({ v4s: Int32Array.from(rev(numbers), (v) => v | 0) })) as Buffer), 'the numbers as signed 32-bit values give the same bytes');
  t.ok(spelled instanceof Buffer && spelled.equals(encode(pieces({ v4s: rev(numbers).map((v, i) => (i === 1 ? -1 : v)) })) as Buffer), 'a frontend without its number is read from its key');
  t.ok(spelled instanceof Buffer && spelled.equals(encode({ key: (f) => rev(keys)[f]! }) as Buffer), 'a frontend list without numbers is read from its keys');
  for (const [what, over] of [
    ['a port out of range', { ports: rev(ports).map((p, i) => (i === 1 ? 70000 : p)) }],
    ['an unknown protocol', { protos: rev(protos).map((p, i) => (i === 1 ? 1 : p)) }],
    ['an address out of range', { v4s: rev(numbers).map((v, i) => (i === 1 ? 2 ** 32 : v)) }],
  ] as const) {
    const e = encode(pieces(over));
    t.ok(e instanceof NetlinkEncodeError, `${what}: a NetlinkEncodeError`);
    t.match((e as Error).message, /198\.18\.200\.7 \. udp \. 53/, `${what}: names the element by its spelled key`);
  }
});

t.test('addresses in pieces (cluster-ips, hairpin): the same bytes as spelled, and a bad piece names its element', async (t) => {
  // 255.255.255.255 is -1 as a signed number, which means "read the key": it is spelled.
  const ips = ['10.96.0.1', '198.19.4.2', '255.255.255.255', '0.0.0.0'];
  const numbers = [0x0a600001, 0xc6130402 | 0, -1, 0];
  const encode = (set: 'cluster-ips' | 'hairpin', addresses?: readonly number[]): Buffer | Error => {
    const type = set === 'hairpin' ? 'ipv4_addr . ipv4_addr' : 'ipv4_addr';
    const key = set === 'hairpin' ? (i: number) => R.hairpinKey(ips[i]!) : (i: number) => ips[i]!;
    const tx = new Transaction()
      .addTable('ip ferry')
      .addSet('ip ferry', { name: set, type })
      .addElementRun('ip ferry', set, { count: ips.length, key, ...(addresses ? { addresses } : {}) });
    try {
      return Buffer.from(encodeTransaction(tx).bytes);
    } catch (e) {
      return e as Error;
    }
  };
  for (const set of ['cluster-ips', 'hairpin'] as const) {
    const spelled = encode(set);
    t.ok(Buffer.isBuffer(spelled), `${set}: spelled encodes`);
    t.ok(spelled instanceof Buffer && spelled.equals(encode(set, numbers) as Buffer), `${set}: numbers give the spelled bytes`);
    t.ok(spelled instanceof Buffer && spelled.equals(encode(set, numbers.map((v) => (v >>> 0 === 0xffffffff ? -1 : v >>> 0))) as Buffer), `${set}: unsigned numbers too`);
    const e = encode(set, numbers.map((v, i) => (i === 1 ? 2 ** 32 : v)));
    t.ok(e instanceof NetlinkEncodeError, `${set}: an address out of range is a NetlinkEncodeError`);
    t.match((e as Error).message, /198\.19\.4\.2/, `${set}: names the element by its spelled key`);
  }
});

t.test('endpoint shard elements in pieces: the same bytes as spelled, and a bad piece names its element', async (t) => {
  const eps = [
    { ip: '198.19.0.1', v4: 0xc6130001 | 0, port: 8080 },
    { ip: '10.0.0.2', v4: undefined, port: 8080 },
    { ip: '10.0.1.3', v4: 0x0a000103, port: 9090 },
  ];
  const encode = (slots?: SlotPieces): Buffer | Error => {
    const tx = new Transaction()
      .addTable('ip ferry')
      .addMap('ip ferry', endpointMapSpec(R.V4, endpointShard('TCP', 0)))
      .addElementRun('ip ferry', endpointShard('TCP', 0), { count: eps.length, key: (i) => String(16 + i), value: (i) => `${eps[i]!.ip} . ${eps[i]!.port}`, ...(slots ? { slots } : {}) });
    try {
      return Buffer.from(encodeTransaction(tx).bytes);
    } catch (e) {
      return e as Error;
    }
  };
  const pieces = (over: Partial<SlotPieces> = {}): SlotPieces => ({ slot: (i) => 16 + i, ip: (i) => eps[i]!.ip, v4: (i) => eps[i]!.v4, port: (i) => eps[i]!.port, ...over });
  const spelled = encode();
  t.ok(Buffer.isBuffer(spelled) && spelled.equals(encode(pieces()) as Buffer), 'pieces give the spelled elements\' bytes (with and without the number)');
  for (const [what, over] of [
    ['a port out of range', { port: (i: number) => (i === 2 ? 70000 : eps[i]!.port) }],
    ['a negative slot', { slot: (i: number) => (i === 2 ? -1 : 16 + i) }],
    ['a bad address', { ip: (i: number) => (i === 2 ? '10.0.1.300' : eps[i]!.ip), v4: (i: number) => (i === 2 ? undefined : eps[i]!.v4) }],
  ] as const) {
    const e = encode(pieces(over));
    t.ok(e instanceof NetlinkEncodeError, `${what}: a NetlinkEncodeError`);
    t.match((e as Error).message, /18 : 10\.0\.1\.3 \. 9090/, `${what}: names the element by its spelled key and value`);
  }
});

t.test('count rules: deleted by handle and inserted in place when the chain is as expected, else the chain rewritten', async (t) => {
  const fs = R.V4;
  const masq = R.frontendJump(fs, 'masq-all', '', 'mark-for-masquerade');
  const count = (n: number): R.Rule => R.dnatCount(fs, 'TCP', n, `n-tcp-${n}`, `endpoints-tcp-n${n}`);
  const tx = new Transaction().countRules('ip ferry', 'services-by-count', [masq, count(2), count(4)], ['n-tcp-4'], ['n-tcp-3']);
  const types = (b: Uint8Array): number[] => messages(b).slice(1, -1).map((m) => m.readUInt16LE(4) & 0xff);
  const u64 = (m: Buffer, type: number): number | undefined => {
    for (let q = 20; q + 4 <= m.length; q += (m.readUInt16LE(q) + 3) & ~3) {
      if ((m.readUInt16LE(q + 2) & 0x7fff) === type) return m.readUInt32BE(q + 4) * 2 ** 32 + m.readUInt32BE(q + 8);
      if (m.readUInt16LE(q) < 4) break;
    }
    return undefined;
  };
  const DELRULE = 8;
  const NEWRULE = 6;
  const rewrite = encodeTransaction(tx).bytes;
  t.same(types(rewrite), [DELRULE, NEWRULE, NEWRULE, NEWRULE], 'without the chain: flushed and written again (what the text says)');
  t.equal(u64(messages(rewrite)[1]!, 3), undefined, 'the flush names no rule');

  const held = [
    { handle: 5, set: 'masq-all' },
    { handle: 6, set: 'n-tcp-2' },
    { handle: 9, set: 'n-tcp-3' },
  ];
  const inPlace = encodeTransaction(tx, { chainRules: (target, chain) => (target === 'ip ferry' && chain === 'services-by-count' ? held : undefined) }).bytes;
  const msgs = messages(inPlace).slice(1, -1);
  t.same(types(inPlace), [DELRULE, NEWRULE], 'as held: one rule deleted, one added');
  t.equal(u64(msgs[0]!, 3), 9, 'the gone count\'s rule, by its handle');
  t.equal(u64(msgs[1]!, 6), 6, 'the new one after the rule of n-tcp-2 (its place in the rewritten chain)');

  const unexpected = [
    [{ handle: 5, set: 'masq-all' }, { handle: 7, set: 'n-tcp-9' }, { handle: 6, set: 'n-tcp-2' }, { handle: 9, set: 'n-tcp-3' }],
    [{ handle: 5, set: 'masq-all' }, { handle: 6, set: 'n-tcp-2' }],
    [{ handle: 6, set: 'n-tcp-2' }, { handle: 5, set: 'masq-all' }, { handle: 9, set: 'n-tcp-3' }],
    [{ handle: 5, set: undefined }, { handle: 6, set: 'n-tcp-2' }, { handle: 9, set: 'n-tcp-3' }],
    // A rule without a handle (a dump parsed from something else than the kernel's answer).
    [{ handle: 5, set: 'masq-all' }, { handle: undefined, set: 'n-tcp-2' }, { handle: 9, set: 'n-tcp-3' }],
  ];
  for (const h of unexpected) {
    const b = encodeTransaction(tx, { chainRules: () => h }).bytes;
    t.same(Buffer.from(b), Buffer.from(rewrite), `a chain not as expected (${h.map((r) => `${r.set ?? '?'}#${r.handle ?? '?'}`).join(' ')}): rewritten`);
  }
  // Two new rules after one kept rule: both in their order.
  const two = new Transaction().countRules('ip ferry', 'services-by-count', [masq, count(2), count(3), count(5)], ['n-tcp-2', 'n-tcp-3'], []);
  const m2 = messages(encodeTransaction(two, { chainRules: () => [{ handle: 5, set: 'masq-all' }, { handle: 8, set: 'n-tcp-5' }] }).bytes).slice(1, -1);
  t.same(m2.map((m) => u64(m, 6)), [5, 5], 'both after the masquerade rule…');
  t.ok(m2[0]!.includes(Buffer.from('n-tcp-3\0')) && m2[1]!.includes(Buffer.from('n-tcp-2\0')), '…the later one first, so that they end in order');
  t.equal(tx.render().split('\n').filter(Boolean).length, tx.lineCount(), 'lineCount counts the rewrite as rendered');
  t.match(describeOp(tx.ops[0]!), /count rules added: n-tcp-4 removed: n-tcp-3/, 'the op as errors name it');
});
