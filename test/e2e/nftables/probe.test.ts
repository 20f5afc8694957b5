/**
 * The nftables mode's start-up probe against a real kernel, in a namespace of the test's own:
 * ferry's rules for one Service are accepted through both runners the backend may use (netlink
 * from the addon, the nft command), and nothing of them is left (the transaction deletes its own
 * table). Root.
 */
import t from 'tap';
import { runIn } from '../../../src/util/exec.js';
import { loadNative } from '../../../src/native/index.js';
import { execNft } from '../../../src/backends/kernel/nft.js';
import { netlinkNft } from '../../../src/backends/kernel/nft-netlink.js';
import { PROBE_TABLE, probeNftables } from '../../../src/backends/nftables/probe.js';
import { freshNetns } from '../kernel/netns.js';

t.test('the probe passes on this kernel through both runners and leaves nothing behind', async (t) => {
  const addon = loadNative();
  if (!addon?.nfnlBatch) throw new Error('the native addon with nf_tables netlink support is required');
  const ns = await freshNetns(t);
  const runners = [
    { name: 'netlink', nft: netlinkNft(addon, { netns: `/var/run/netns/${ns}`, fallback: execNft({ netns: ns }) }) },
    { name: 'nft -f', nft: execNft({ netns: ns }) },
  ];
  for (const { name, nft } of runners) {
    await t.resolves(probeNftables(nft, [4, 6], 0x4000), `${name}: accepted`);
    const tables = (await runIn(ns, ['nft', 'list', 'tables'])).stdout;
    t.notMatch(tables, new RegExp(PROBE_TABLE), `${name}: no probe table left (${tables.trim() || 'none'})`);
  }
});
