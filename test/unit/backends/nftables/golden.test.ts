/**
 * Golden tests: each fixture's full-sync script must equal its file in golden/ byte for byte.
 * The goldens are the spec of the ruleset layout; review diffs by eye.
 * Regenerate with FERRY_UPDATE_GOLDEN=1.
 */
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileFull } from '../../../../src/backends/nftables/compiler.js';
import { FakeNft } from '../../../../src/backends/nftables/fake.js';
import { GOLDENS } from './fixtures.js';

const goldenDir = fileURLToPath(new URL('../../../../../test/unit/backends/nftables/golden/', import.meta.url));
const update = process.env['FERRY_UPDATE_GOLDEN'] === '1';

export function goldenScript(name: string): string {
  const g = GOLDENS.find((x) => x.name === name);
  if (!g) throw new Error(`no golden fixture ${name}`);
  return compileFull(g.ir, { families: g.families, masqueradeMark: 0x4000 }).render();
}

for (const g of GOLDENS) {
  t.test(`golden ${g.name}: ${g.what}`, async (t) => {
    const script = `# ${g.what}\n` + compileFull(g.ir, { families: g.families, masqueradeMark: 0x4000 }).render();
    const file = `${goldenDir}${g.name}.nft`;
    if (update) {
      mkdirSync(goldenDir, { recursive: true });
      writeFileSync(file, script);
    }
    t.ok(existsSync(file), `golden file ${file} exists (run with FERRY_UPDATE_GOLDEN=1 to create it)`);
    if (!existsSync(file)) return;
    const want = readFileSync(file, 'utf8');
    t.equal(script, want, `rendered script differs from ${g.name}.nft (FERRY_UPDATE_GOLDEN=1 regenerates; review the diff)`);

    // The fake (kernel-like checks: references, duplicates) accepts it, and applying it again
    // over itself — a periodic full resync — is accepted too.
    const fake = new FakeNft();
    t.doesNotThrow(() => fake.applySync(script), 'FakeNft accepts the script');
    const once = fake.dump();
    t.doesNotThrow(() => fake.applySync(script), 'FakeNft accepts the script a second time');
    t.equal(fake.dump(), once, 'a second full sync leaves the same ruleset');
  });
}
