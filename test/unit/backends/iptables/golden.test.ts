/**
 * Golden tests: each fixture's full-sync restore input (per family) must equal its file in
 * golden/ byte for byte. The goldens are the spec of the layout; review diffs by eye.
 * Regenerate with FERRY_UPDATE_GOLDEN=1. The e2e test feeds the same files to the kernel.
 */
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileFull } from '../../../../src/backends/iptables/compiler.js';
import { FakeIptables } from '../../../../src/backends/iptables/fake.js';
import { GOLDEN_OPTS, GOLDENS } from './fixtures.js';

const goldenDir = fileURLToPath(new URL('../../../../../test/unit/backends/iptables/golden/', import.meta.url));
const update = process.env['FERRY_UPDATE_GOLDEN'] === '1';

for (const g of GOLDENS) {
  for (const family of g.families) {
    t.test(`golden ${g.name} IPv${family}: ${g.what}`, async (t) => {
      const text = `# ${g.what}\n` + compileFull(g.ir[family], GOLDEN_OPTS).text;
      const file = `${goldenDir}${g.name}.v${family}.rules`;
      if (update) {
        mkdirSync(goldenDir, { recursive: true });
        writeFileSync(file, text);
      }
      t.ok(existsSync(file), `golden file ${file} exists (run with FERRY_UPDATE_GOLDEN=1 to create it)`);
      if (!existsSync(file)) return;
      t.equal(text, readFileSync(file, 'utf8'), `restore input differs from ${g.name}.v${family}.rules (FERRY_UPDATE_GOLDEN=1 regenerates; review the diff)`);

      // The fake (references must exist, -X only unreferenced chains) accepts it, twice over
      // (a periodic full resync), with the same result.
      const fake = new FakeIptables();
      await t.resolves(fake.restore(family, text), 'FakeIptables accepts the input');
      const once = await fake.dump(family);
      await t.resolves(fake.restore(family, text), 'FakeIptables accepts it a second time');
      t.equal(await fake.dump(family), once, 'a second full sync leaves the same rules');
    });
  }
}
