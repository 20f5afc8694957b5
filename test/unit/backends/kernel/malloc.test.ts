// The daemon fixes glibc malloc's thresholds at start (src/native/malloc.ts); what that does to
// the resident size is measured by scripts/bench's daemon phase, never asserted here.
import t from 'tap';
import { loadNative } from '../../../../src/native/index.js';
import { fixMallocThresholds, MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD } from '../../../../src/native/malloc.js';

const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;

t.test('on glibc the thresholds are fixed through the addon', { skip: loadNative() === null ? 'the addon is not built' : false }, async (t) => {
  t.equal(fixMallocThresholds(), glibc ? 'fixed' : 'not glibc', `C library: ${glibc ? `glibc ${glibc}` : 'not glibc'}`);
  t.equal(MALLOC_MMAP_THRESHOLD, 128 * 1024, "glibc's own starting value");
  t.equal(MALLOC_TRIM_THRESHOLD, 128 * 1024);
});

t.test('the addon refuses thresholds out of range', { skip: loadNative() === null ? 'the addon is not built' : false }, async (t) => {
  const addon = loadNative()!;
  t.type(addon.mallocFixThresholds, 'function');
  t.throws(() => addon.mallocFixThresholds!(1024, 0), /mmapBytes in/, 'an mmap threshold below a page');
  t.throws(() => addon.mallocFixThresholds!(64 << 20, 0), /mmapBytes in/, 'above glibc\'s maximum');
  t.throws(() => addon.mallocFixThresholds!(1 << 20, -1), /trimBytes in/);
  t.throws(() => (addon.mallocFixThresholds as unknown as (a: unknown, b: unknown) => boolean)('1', 2), /numbers/);
});
