/**
 * The nftables mode's start-up probe: ferry's own rules for one Service in a table of their own,
 * deleted in the same transaction, through the backend's runner — so a kernel that refuses any
 * of them fails the probe (and --proxy-mode-fallback can act), not every later sync.
 */
import t from 'tap';
import { PROBE_TABLE, probeNftables, probeTransaction } from '../../../../src/backends/nftables/probe.js';
import type { NftRunner } from '../../../../src/backends/kernel/nft.js';

t.test('the probe is the real rules of one Service, in its own table, which the same transaction deletes', async (t) => {
  const text = probeTransaction([4, 6], 0x4000).render();
  for (const what of ['numgen', 'vmap', ' . ', 'interval', 'type nat hook prerouting', 'type filter hook forward', 'update @', 'masquerade']) {
    t.ok(text.includes(what), `has ${JSON.stringify(what)}`);
  }
  t.notMatch(text, /table ip6? ferry[ \n]/, "never names ferry's own table");
  const lines = text.trim().split('\n');
  t.same(lines.slice(-2), [`delete table ip ${PROBE_TABLE}`, `delete table ip6 ${PROBE_TABLE}`], 'ends deleting what it made, for each family');
  t.notMatch(probeTransaction([4], 0x4000).render(), /ip6 /, 'one family: nothing of the other');
});

t.test('a runner that refuses part of the rules fails the probe', async (t) => {
  const refusesMaps: NftRunner = {
    via: 'addon',
    async apply(script: string) {
      if (/vmap/.test(script)) throw new Error('Error: Could not process rule: Operation not supported');
    },
    async list() {
      return '';
    },
  };
  await t.rejects(probeNftables(refusesMaps, [4], 0x4000), /Operation not supported/);
  const accepts: NftRunner = { ...refusesMaps, async apply() {} };
  await t.resolves(probeNftables(accepts, [4], 0x4000));
});
