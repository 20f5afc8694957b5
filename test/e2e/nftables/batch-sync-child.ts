/**
 * Run by netlink.test.ts inside a namespace of its own (`ip netns exec`): sends the batch given
 * in hex (argv[2]) through the addon's two calls in the caller's namespace — nfnlBatch on a pool
 * thread, nfnlBatchSync on this (JS) thread, which never enters a namespace — and prints both
 * results as one JSON line.
 */
import { loadNative } from '../../../src/native/index.js';

const addon = loadNative();
if (!addon?.nfnlBatch || !addon.nfnlBatchSync) throw new Error('the native addon with nf_tables netlink support is required');
const bytes = new Uint8Array(Buffer.from(process.argv[2] ?? '', 'hex'));
const onPool = await addon.nfnlBatch(bytes);
const onThisThread = addon.nfnlBatchSync(bytes);
process.stdout.write(`${JSON.stringify({ onPool, onThisThread })}\n`);
