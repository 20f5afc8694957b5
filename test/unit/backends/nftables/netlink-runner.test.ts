/**
 * The netlink runner against a stub addon (no root): kernel errors become NftNetlinkError naming
 * the op; an unusable socket on first use falls back (once, visibly in `via`), later socket
 * failures are errors; names() and ruleCount() parse dumps; the script fallback gets every
 * transaction once disabled.
 */
import t from 'tap';
import type { NativeAddon, NfnlBatchResult, NfnlDumpResult } from '../../../../src/native/index.js';
import { NftNetlinkError, type NftRunner } from '../../../../src/backends/kernel/nft.js';
import { DUMP_RETRIES, netlinkNft } from '../../../../src/backends/kernel/nft-netlink.js';
import { encodeTransaction } from '../../../../src/backends/nftables/netlink.js';
import * as R from '../../../../src/backends/nftables/rules.js';
import { Transaction } from '../../../../src/backends/nftables/transaction.js';
import { getVerbosity, setLogSink, setVerbosity } from '../../../../src/util/log.js';

const T = 'ip ferry';

function stub(batch: (bytes: Uint8Array) => NfnlBatchResult, dump?: (req: Uint8Array) => NfnlDumpResult): NativeAddon {
  return {
    nfnlBatch: async (b: Uint8Array) => batch(b),
    nfnlDump: async (r: Uint8Array) => (dump ? dump(r) : { ok: true, errno: 0, sysError: '', data: Buffer.alloc(0) }),
  } as unknown as NativeAddon;
}

function scripts(): NftRunner & { applied: string[] } {
  const applied: string[] = [];
  return {
    via: 'addon',
    applied,
    async apply(s: string) {
      applied.push(s);
    },
    async list() {
      return '';
    },
  };
}

const tx = (): Transaction =>
  new Transaction()
    .addTable(T)
    .addChain(T, { name: 'services' })
    .addRule(T, 'services', R.jump('missing'))
    .addElement(T, 'cluster-ips', '10.0.0.1')
    .addElement(T, 'cluster-ips', '10.0.0.2');

t.test('a refused message names its op', async (t) => {
  // Sequence numbers: BEGIN is 1, the ops' messages 2.. in order.
  const nft = netlinkNft(stub(() => ({ ok: false, sysError: '', errors: [{ seq: 4, errno: 2, offset: -1, message: '' }] })), { fallback: scripts() });
  const err = await nft.applyTransaction!(tx()).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof NftNetlinkError, String(err));
  if (!(err instanceof NftNetlinkError)) return;
  t.equal(err.opIndex, 2);
  t.equal(err.errnoName, 'ENOENT');
  t.equal(err.opText, 'add rule ip ferry services jump missing');
  t.equal(err.failingLine?.text, 'add rule ip ferry services jump missing', 'failingLine carries the op, as for scripts');
  t.match(err.message, /ENOENT: No such file or directory: add rule ip ferry services jump missing/);
  t.equal(nft.via, 'netlink');
});

t.test('the earliest refused message is the cause; an extack offset picks the element', async (t) => {
  const x = tx();
  const enc = encodeTransaction(x);
  // Find the element message (seq 5) and the offset of its second element.
  const b = Buffer.from(enc.bytes);
  let p = 0;
  let msgStart = -1;
  while (p < b.length) {
    if (b.readUInt32LE(p + 8) === 5) {
      msgStart = p;
      break;
    }
    p += (b.readUInt32LE(p) + 3) & ~3;
  }
  let q = msgStart + 20;
  let second = -1;
  while (q < msgStart + b.readUInt32LE(msgStart)) {
    const len = b.readUInt16LE(q);
    if ((b.readUInt16LE(q + 2) & 0x7fff) === 3) {
      const first = q + 4;
      second = first + ((b.readUInt16LE(first) + 3) & ~3) - msgStart;
      break;
    }
    q += (len + 3) & ~3;
  }
  const nft = netlinkNft(
    stub(() => ({
      ok: false,
      sysError: '',
      errors: [
        { seq: 5, errno: 17, offset: second, message: 'element exists' },
        { seq: 6, errno: 22, offset: -1, message: '' },
      ],
    })),
    { fallback: scripts() },
  );
  const err = await nft.applyTransaction!(x).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof NftNetlinkError && err.opIndex === 4 && /10\.0\.0\.2/.test(err.opText) && err.kernelMessage === 'element exists', String(err));
});

t.test('a socket that cannot be opened on first use: fall back, once, visibly', async (t) => {
  let calls = 0;
  const fb = scripts();
  const nft = netlinkNft(
    stub(() => {
      calls++;
      return { ok: false, sysError: 'socket(NETLINK_NETFILTER): Permission denied', errors: [] };
    }),
    { fallback: fb },
  );
  await nft.applyTransaction!(tx());
  t.equal(nft.via, 'addon', 'via names the fallback');
  t.equal(fb.applied.length, 1, 'the transaction went to the fallback as a script');
  t.match(fb.applied[0], /add rule ip ferry services jump missing/);
  await nft.applyTransaction!(tx());
  t.equal(calls, 1, 'netlink is not tried again');
  t.equal(fb.applied.length, 2);
});

t.test('a dump request that cannot be sent on first use (the first full sync lists before any batch): fall back', async (t) => {
  const fb = scripts();
  let dumps = 0;
  const nft = netlinkNft(
    stub(
      () => ({ ok: true, sysError: '', errors: [] }),
      () => (dumps++, { ok: false, errno: 0, sysError: 'sendto(nf_tables dump): Permission denied', data: Buffer.alloc(0) }),
    ),
    { fallback: fb },
  );
  const names = await nft.names!('ip', 'ferry');
  t.same([...names.chains], [], 'listed through the fallback (which has nothing)');
  t.equal(nft.via, 'addon', 'via names the fallback');
  await nft.names!('ip', 'ferry');
  t.equal(dumps, 1, 'netlink is not tried again');
});

t.test('a socket failure after netlink worked is an error, not a silent switch', async (t) => {
  let n = 0;
  const fb = scripts();
  const nft = netlinkNft(stub(() => (n++ === 0 ? { ok: true, sysError: '', errors: [] } : { ok: false, sysError: 'sendmsg(nf_tables batch): No buffer space available', errors: [] })), { fallback: fb });
  await nft.applyTransaction!(tx());
  const err = await nft.applyTransaction!(tx()).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof NftNetlinkError && err.opIndex === -1 && /No buffer space/.test(err.message), String(err));
  t.equal(nft.via, 'netlink');
  t.equal(fb.applied.length, 0);
});

t.test('an empty transaction sends nothing', async (t) => {
  let calls = 0;
  const nft = netlinkNft(stub(() => (calls++, { ok: true, sysError: '', errors: [] })), { fallback: scripts() });
  await nft.applyTransaction!(new Transaction());
  t.equal(calls, 0);
});

t.test('names() and ruleCount() read dumps', async (t) => {
  // NEWCHAIN / NEWSET / NEWRULE messages of a batch are laid out as dump answers are.
  const body = (x: Transaction): Buffer => {
    const b = Buffer.from(encodeTransaction(x).bytes);
    const first = b.readUInt32LE(0);
    const last = b.length - 20;
    return b.subarray((first + 3) & ~3, last);
  };
  const chains = body(new Transaction().addChain(T, { name: 'a' }).addChain('ip other', { name: 'b' }));
  const sets = body(new Transaction().addSet(T, { name: 's', type: 'ipv4_addr' }).addMap(T, { name: 'm', type: 'inet_proto . inet_service : verdict' }));
  const rules = body(new Transaction().addRule(T, 'ferry-canary', R.RETURN).addRule(T, 'other', R.RETURN));
  const nft = netlinkNft(
    stub(
      () => ({ ok: true, sysError: '', errors: [] }),
      (req) => {
        const type = Buffer.from(req).readUInt16LE(4) & 0xff;
        const data = type === 4 ? chains : type === 10 ? sets : rules;
        return { ok: true, errno: 0, sysError: '', data };
      },
    ),
    { fallback: scripts() },
  );
  const names = await nft.names!('ip', 'ferry');
  t.same([...names.chains], ['a']);
  t.same([...(names.sets ?? [])], ['s']);
  t.same([...names.maps], ['m']);
  t.equal(await nft.ruleCount!('ip', 'ferry', 'ferry-canary'), 1);
});

t.test('an interrupted dump (EINTR) is asked again, each time logged, and given up after a bounded number of tries', async (t) => {
  const lines: string[] = [];
  const verbosity = getVerbosity();
  setVerbosity(1);
  setLogSink((l) => lines.push(l));
  t.teardown(() => {
    setVerbosity(verbosity);
    setLogSink((l) => process.stderr.write(l + '\n'));
  });
  const interrupted = { ok: false, errno: 4, sysError: '', data: Buffer.alloc(0) };

  let calls = 0;
  const twice = netlinkNft(
    stub(
      () => ({ ok: true, sysError: '', errors: [] }),
      () => (++calls <= 2 ? interrupted : { ok: true, errno: 0, sysError: '', data: Buffer.alloc(0) }),
    ),
    { fallback: scripts() },
  );
  t.equal(await twice.ruleCount!('ip', 'ferry', 'ferry-canary'), 0, 'the third answer is used');
  t.equal(calls, 3);
  t.equal(lines.filter((l) => /dump interrupted by a concurrent commit; asking again/.test(l)).length, 2, `each retry logged:\n${lines.join('\n')}`);
  t.match(lines[0], /dump="dump of rules of ip ferry chain ferry-canary" attempt=1/);

  calls = 0;
  lines.length = 0;
  const always = netlinkNft(
    stub(
      () => ({ ok: true, sysError: '', errors: [] }),
      () => (calls++, interrupted),
    ),
    { fallback: scripts() },
  );
  const err = await always.ruleCount!('ip', 'ferry', 'ferry-canary').then(() => undefined, (e: unknown) => e);
  t.equal(calls, DUMP_RETRIES + 1, 'asked once and retried DUMP_RETRIES times, no more');
  t.ok(err instanceof NftNetlinkError && err.errnoName === 'EINTR', String(err));
  t.match(String(err), /dump of rules of ip ferry chain ferry-canary: interrupted by a concurrent commit 6 times in a row/);
});

t.test('a dump that fails on the socket names the dump as well as the failure', async (t) => {
  const nft = netlinkNft(
    stub(
      () => ({ ok: true, sysError: '', errors: [] }),
      () => ({ ok: false, errno: 0, sysError: 'recv(nf_tables dump): no answer within 10 s to getrule (0x0a07) seq 1', data: Buffer.alloc(0) }),
    ),
    { fallback: scripts() },
  );
  const err = await nft.ruleCount!('ip', 'ferry', 'ferry-canary').then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof NftNetlinkError, String(err));
  t.match(String(err), /no answer within 10 s to getrule \(0x0a07\) seq 1 \(dump of rules of ip ferry chain ferry-canary\)/);
});
