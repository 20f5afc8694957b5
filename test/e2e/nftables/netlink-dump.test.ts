/**
 * The addon's nf_tables dump (nfnlDump) against a real kernel (root), in fresh `fyd<rand>`
 * network namespaces the test creates and always removes:
 *  - a dump a commit lands in (the kernel marks it NLM_F_DUMP_INTR) answers EINTR, never a
 *    possibly mixed answer as ok;
 *  - an answer ended by an ACK of the request ends the call; one with no end at all fails after
 *    the receive timeout, naming the request, instead of holding a pool thread forever;
 *  - namespace paths with a NUL and a NaN rcvbuf are refused.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { run } from '../../../src/util/exec.js';
import { scaledMs } from '../../../src/util/timescale.js';
import { loadNative, type NativeAddon, type NfnlMonitorHandle } from '../../../src/native/index.js';
import { countDumpedRules, encodeDumpRequest, encodeTransaction } from '../../../src/backends/nftables/netlink.js';
import { Transaction } from '../../../src/backends/nftables/transaction.js';
import * as R from '../../../src/backends/nftables/rules.js';

// Namespaces still present when the process ends (a time limit kills the file before teardown).
const live = new Set<string>();
process.on('exit', () => {
  for (const name of live) spawnSync('ip', ['netns', 'del', name]);
});
process.on('SIGTERM', () => process.exit(1));

async function freshNetns(t: Test): Promise<string> {
  const name = `fyd${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', name]);
  live.add(name);
  t.teardown(async () => {
    await run(['ip', 'netns', 'del', name], { allowFailure: true });
    live.delete(name);
  });
  return `/var/run/netns/${name}`;
}

t.setTimeout(scaledMs(3 * 60_000));

const addon = loadNative();
if (!addon?.nfnlDump || !addon.nfnlBatch) throw new Error('the native addon with nf_tables netlink support is required (cd native && npx node-gyp rebuild)');
const native: NativeAddon = addon;

const T = 'ip fyd';
const RULES = 10_000;

/** Table `ip fyd` with chain `c` of RULES rules: a rule dump of it takes dozens of answer buffers. */
async function bigChain(t: Test, ns: string): Promise<void> {
  const tx = new Transaction().addTable(T).addChain(T, { name: 'c' });
  for (let i = 0; i < RULES; i++) tx.addRule(T, 'c', R.RETURN);
  const r = await native.nfnlBatch!(encodeTransaction(tx).bytes, ns);
  t.ok(r.ok, `the chain was made: ${JSON.stringify(r.errors)} ${r.sysError}`);
}

/** NFT_MSG_GETTABLE of `name` (family ip) without NLM_F_DUMP: the kernel answers with the one table. */
function getTable(name: string, flags: number, seq: number): Uint8Array {
  const str = Buffer.from(`${name}\0`);
  const attrLen = 4 + str.length;
  const len = 16 + 4 + ((attrLen + 3) & ~3);
  const b = Buffer.alloc(len);
  b.writeUInt32LE(len, 0);
  b.writeUInt16LE((10 << 8) | 1, 4); // NFNL_SUBSYS_NFTABLES, NFT_MSG_GETTABLE
  b.writeUInt16LE(flags, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt8(2, 16); // NFPROTO_IPV4
  b.writeUInt16LE(attrLen, 20);
  b.writeUInt16LE(1, 22); // NFTA_TABLE_NAME
  str.copy(b, 24);
  return b;
}
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;

t.test('a dump a commit lands in answers EINTR, never a possibly mixed answer as ok', async (t) => {
  const ns = await freshNetns(t);
  await bigChain(t, ns);
  const req = encodeDumpRequest('rules', 'ip', 'fyd', 'c');
  const quiet = await native.nfnlDump!(req, ns);
  t.ok(quiet.ok, `undisturbed, the dump is whole (${quiet.errno} ${quiet.sysError})`);
  t.equal(countDumpedRules(quiet.data, 'fyd', 'c'), RULES, 'every rule');

  // Commits on other pool threads while dumping: each adds or deletes a chain of the table.
  const add = encodeTransaction(new Transaction().addChain(T, { name: 'x' })).bytes;
  const del = encodeTransaction(new Transaction().deleteChain(T, 'x')).bytes;
  let stop = false;
  let commits = 0;
  const committer = (async () => {
    while (!stop) {
      for (const b of [add, del]) {
        const r = await native.nfnlBatch!(b, ns);
        if (!r.ok) throw new Error(`a commit failed: ${JSON.stringify(r.errors)} ${r.sysError}`);
        commits++;
      }
    }
  })();
  let interrupted = 0;
  let whole = 0;
  const other: string[] = [];
  const deadline = Date.now() + scaledMs(30_000);
  try {
    while (interrupted < 3 && Date.now() < deadline) {
      const d = await native.nfnlDump!(req, ns);
      if (d.ok) {
        whole++;
        if (countDumpedRules(d.data, 'fyd', 'c') !== RULES) other.push(`ok with ${countDumpedRules(d.data, 'fyd', 'c')} rules`);
      } else if (d.errno === 4) {
        interrupted++;
        if (d.data.length !== 0) other.push(`EINTR with ${d.data.length} bytes of data`);
      } else other.push(`errno ${d.errno} ${d.sysError}`);
    }
  } finally {
    stop = true;
    await committer;
  }
  t.ok(interrupted > 0, `dumps a commit landed in answer EINTR (${interrupted} EINTR, ${whole} whole, ${commits} commits)`);
  t.same(other, [], 'nothing else: no error, no partial answer');
});

t.test('an answer ended by an ACK ends the call; one with no end fails after the timeout, naming the request', async (t) => {
  const ns = await freshNetns(t);
  const tx = new Transaction().addTable(T);
  t.ok((await native.nfnlBatch!(encodeTransaction(tx).bytes, ns)).ok, 'table made');

  // Not a dump, but acknowledged: the table's message, then an ACK (error 0) of seq 4242.
  const acked = await native.nfnlDump!(getTable('fyd', NLM_F_REQUEST | NLM_F_ACK, 4242), ns);
  t.ok(acked.ok, `ended by the ACK (${acked.errno} ${acked.sysError})`);
  t.ok(acked.data.length >= 20 && acked.data.readUInt16LE(4) === ((10 << 8) | 0), 'the answer holds the NEWTABLE message');
  t.equal(acked.data.readUInt32LE(0), acked.data.length, 'and nothing else (the ACK is not data)');

  // Neither a dump nor acknowledged: the table's message and nothing after it.
  const t0 = Date.now();
  const endless = await native.nfnlDump!(getTable('fyd', NLM_F_REQUEST, 4243), ns);
  const took = Date.now() - t0;
  t.equal(endless.ok, false, 'no end: not ok');
  t.match(endless.sysError, /^recv\(nf_tables dump\): no answer within 10 s to gettable \(0x0a01\) seq 4243$/, endless.sysError);
  t.equal(endless.data.length, 0, 'no data from an unfinished answer');
  t.ok(took >= 9_000 && took < scaledMs(30_000), `after the receive timeout (${took} ms)`);

  const after = await native.nfnlDump!(encodeDumpRequest('chains', 'ip', 'fyd'), ns);
  t.ok(after.ok, 'the next dump in that namespace works');
});

t.test('a netns path with a NUL, or a NaN rcvbuf, is refused', async (t) => {
  const ns = await freshNetns(t);
  // Cut at the NUL, each path would name the test's namespace and the call would go ahead.
  const cut = `${ns}\0/elsewhere`;
  const req = encodeDumpRequest('chains', 'ip', 'fyd');
  t.throws(() => native.nfnlDump!(req, cut), { name: 'TypeError', message: 'nfnlDump: netns contains a NUL character' });
  t.throws(() => native.nfnlBatch!(encodeTransaction(new Transaction().addTable(T)).bytes, cut), { name: 'TypeError', message: 'nfnlBatch: netns contains a NUL character' });
  t.throws(() => native.nfnlBatchSync!(encodeTransaction(new Transaction().addTable(T)).bytes, cut), { name: 'TypeError', message: 'nfnlBatchSync: netns contains a NUL character' });

  const monitorError = (opts: Parameters<NonNullable<NativeAddon['nfnlMonitor']>>[0]): unknown => {
    let h: NfnlMonitorHandle | undefined;
    try {
      h = native.nfnlMonitor!(opts, () => undefined);
    } catch (e) {
      return e;
    } finally {
      h?.stop();
    }
    return undefined;
  };
  t.match(String(monitorError({ tables: ['fyd'], netns: cut })), /^TypeError: nfnlMonitor: options\.netns contains a NUL character$/);
  t.match(String(monitorError({ tables: ['fyd'], netns: ns, rcvbuf: Number.NaN })), /^TypeError: nfnlMonitor: options\.rcvbuf must be a byte count/);
  t.match(String(monitorError({ tables: ['fyd'], netns: ns, rcvbuf: Number.POSITIVE_INFINITY })), /^TypeError: nfnlMonitor: options\.rcvbuf must be a byte count/);
  t.throws(() => native.nftRunSync('list ruleset\0'), { name: 'TypeError', message: 'nftRun: the script contains a NUL character' });
});
