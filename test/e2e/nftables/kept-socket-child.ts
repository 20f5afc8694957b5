/**
 * Run by netlink.test.ts inside a namespace of its own (`ip netns exec`), so the addon acts on its
 * caller's namespace — the daemon's case, where it keeps its nf_tables sockets open between calls
 * (native/src/nfnl.cc, KeptSocket). Applies good and refused batches, small (sent from this thread)
 * and large (from the thread pool), interleaved with dumps, and prints one JSON line: what each
 * batch reported and which NETLINK_NETFILTER sockets the process held along the way (conntrack
 * deletions too).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { loadNative } from '../../../src/native/index.js';
import { execNft, NftNetlinkError } from '../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../src/backends/kernel/nft-netlink.js';
import { compileFull } from '../../../src/backends/nftables/compiler.js';
import { Transaction } from '../../../src/backends/nftables/transaction.js';
import { ep, fwd, svc, table, tables } from '../../unit/backends/nftables/fixtures.js';

const NETLINK_NETFILTER = '12';

/** Inodes of the NETLINK_NETFILTER sockets among this process's open files. */
function netfilterSockets(): string[] {
  const nf = new Set<string>();
  for (const line of readFileSync('/proc/net/netlink', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && f[1] === NETLINK_NETFILTER) nf.add(f[9]!);
  }
  const own: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m && nf.has(m[1]!)) own.push(m[1]!);
    } catch {
      // the directory's own fd, closed by the time it is read
    }
  }
  return own.sort();
}

const addon = loadNative();
if (!addon?.nfnlBatch || !addon.nfnlBatchSync) throw new Error('the native addon with nf_tables netlink support is required');
const nft = netlinkNft(addon, { fallback: execNft() });
const T = 'ip ferry';
const s = svc({ namespace: 'd', name: 'web', internal: fwd(ep('198.18.0.2', 8080)) });
await nft.applyTransaction!(compileFull(tables(table(4, [s])), { families: [4], masqueradeMark: 0x4000 }));
const afterFirst = netfilterSockets();

const outcome = async (tx: Transaction): Promise<string> =>
  nft.applyTransaction!(tx).then(
    () => 'ok',
    (e: unknown) => (e instanceof NftNetlinkError ? `${e.errnoName} ${e.opText}` : `other ${String(e)}`),
  );

/** Enough elements that the batch goes over 16 KiB and so to the thread pool. */
function large(i: number, missing?: string): Transaction {
  const tx = new Transaction();
  for (let j = 0; j < 600; j++) tx.addElement(T, 'cluster-ips', `198.20.${i}.${j % 250}`);
  if (missing) tx.deleteElement(T, 'cluster-ips', missing);
  return tx;
}

const rounds: { step: string; result: string }[] = [];
for (let i = 0; i < 6; i++) {
  const step = async (name: string, tx: Transaction): Promise<void> => {
    rounds.push({ step: `${i} ${name}`, result: await outcome(tx) });
  };
  await step('add', new Transaction().addElement(T, 'cluster-ips', `198.19.0.${i}`));
  await step('refused small', new Transaction().addElement(T, 'cluster-ips', `198.19.1.${i}`).deleteElement(T, 'cluster-ips', `198.19.2.${i}`));
  await step('remove', new Transaction().deleteElement(T, 'cluster-ips', `198.19.0.${i}`));
  await step('refused large', large(i, `198.19.3.${i}`));
  rounds.push({ step: `${i} names`, result: (await nft.names!('ip', 'ferry')).chains.has('services') ? 'ok' : 'no services chain' });
  await step('replace', new Transaction().addElement(T, 'cluster-ips', `198.19.4.${i}`));
  await step('replace 2', new Transaction().deleteElement(T, 'cluster-ips', `198.19.4.${i}`).addElement(T, 'cluster-ips', `198.19.5.${i}`));
}
const atEnd = netfilterSockets();
// ctnetlink is a NETLINK_NETFILTER socket too: one more, kept across calls.
for (let i = 0; i < 3; i++) await addon.conntrackDelete({ family: 4, protocol: 'udp', origDst: '198.19.9.9' });
console.log(JSON.stringify({ afterFirst, atEnd, afterConntrack: netfilterSockets(), rounds }));
