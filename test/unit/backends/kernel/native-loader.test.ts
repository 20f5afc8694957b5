import t from 'tap';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative, nativeLoadError, defaultNativePath } from '../../../../src/native/index.js';

t.test('a missing .node file gives null and keeps the reason', async (t) => {
  const bogus = join(tmpdir(), 'ferry-does-not-exist', 'ferry_native.node');
  const addon = loadNative({ path: bogus });
  t.equal(addon, null, 'loadNative returns null instead of throwing');
  const err = nativeLoadError();
  t.ok(err, 'the load error is kept for logging');
  t.match(err?.message ?? '', /Cannot find module|ferry-does-not-exist/);
});

t.test('a module that is not the ferry addon is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-native-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fake = join(dir, 'impostor.cjs');
  writeFileSync(fake, 'module.exports = { nftRun() {} };\n');
  t.equal(loadNative({ path: fake }), null);
  t.match(nativeLoadError()?.message ?? '', /not a ferry native addon/);
});

t.test('the default path points at the node-gyp output in the package root', async (t) => {
  t.match(defaultNativePath(), /\/native\/build\/Release\/ferry_native\.node$/);
  const prev = process.env['FERRY_NATIVE_PATH'];
  process.env['FERRY_NATIVE_PATH'] = '/tmp/x/ferry_native.node';
  t.teardown(() => {
    if (prev === undefined) delete process.env['FERRY_NATIVE_PATH'];
    else process.env['FERRY_NATIVE_PATH'] = prev;
  });
  t.equal(defaultNativePath(), '/tmp/x/ferry_native.node', 'FERRY_NATIVE_PATH overrides it');
});
