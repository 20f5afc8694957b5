/**
 * The addon's map element calls (bpfMapUpdate / Delete / Dump) on maps that bpftool makes and pins
 * in a bpffs directory of the test's own (`fymp<rand>`, always removed): no program is loaded or
 * attached. Covers what ferry's own maps do not exercise every day:
 *  - an LPM trie (ferry_srcrange's layout, 24-byte keys) above one batch dumps every element
 *    once: its batch token is a whole key, not a hash bucket's index;
 *  - key and value sizes that are not the map's are refused before the kernel reads a byte;
 *  - map types without batch operations take the one-by-one paths (nothing silently skipped);
 *  - a batch the kernel refuses outright says none of it went in;
 *  - paths with a NUL are refused;
 *  - a ferry_tcif of another layout (another ferry version's) is read through buffers of its own
 *    size or refused: the kernel would otherwise copy larger values over the tc calls' buffers.
 * Needs root and bpffs.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBpffsDir, removePins } from '../../../src/backends/kernel/bpf.js';
import { loadNative, type NativeAddon } from '../../../src/native/index.js';
import { run } from '../../../src/util/exec.js';

const addon = loadNative();
if (!addon?.bpfMapDumpAsync) throw new Error('the native addon with BPF support is required (cd native && npx node-gyp rebuild)');
const native: NativeAddon = addon;

// Directories still present when the process ends (a time limit kills the file before teardown).
const live = new Set<string>();
process.on('exit', () => {
  for (const dir of live) rmSync(dir, { recursive: true, force: true });
});
process.on('SIGTERM', () => process.exit(1));

async function pinDirOf(t: Test): Promise<string> {
  const dir = `/sys/fs/bpf/fymp${randomBytes(4).toString('hex')}`;
  await ensureBpffsDir(dir);
  live.add(dir);
  t.teardown(async () => {
    await removePins(dir);
    live.delete(dir);
  });
  return dir;
}

async function createMap(path: string, type: string, key: number, value: number, entries: number, flags = 0): Promise<void> {
  await run(['bpftool', 'map', 'create', path, 'type', type, 'key', String(key), 'value', String(value), 'entries', String(entries), 'name', 'fymp', 'flags', String(flags)]);
}

/** Keys as ferry_srcrange's: prefix length (host order) then 20 bytes of address; element i is 10.x.y.z/32 + i in the first word. */
function srcrangeKeys(n: number): Buffer {
  const keys = Buffer.alloc(24 * n);
  for (let i = 0; i < n; i++) {
    keys.writeUInt32LE(160, i * 24);
    keys.writeUInt32BE(4, i * 24 + 4);
    keys.writeUInt32BE(0x0a000000 + i, i * 24 + 8);
  }
  return keys;
}

function keySet(keys: Buffer, size: number, count: number): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i < count; i++) out.add(keys.toString('hex', i * size, (i + 1) * size));
  return out;
}

const errorOf = async (p: Promise<unknown> | (() => unknown)): Promise<unknown> => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return e;
  }
  return undefined;
};

t.test('an LPM trie of 24-byte keys above one batch dumps every element once', async (t) => {
  const path = join(await pinDirOf(t), 'srcrange');
  await createMap(path, 'lpm_trie', 24, 4, 65536, 1);
  const n = 20_000;
  const keys = srcrangeKeys(n);
  const values = Buffer.alloc(4 * n);
  for (let i = 0; i < n; i++) values.writeUInt32LE(i, i * 4);
  t.equal(await native.bpfMapUpdateAsync!(path, keys, values, 24, 4), n);

  const want = keySet(keys, 24, n);
  for (const [how, d] of [
    ['on the thread pool', await native.bpfMapDumpAsync!(path, 24, 4)],
    ['on the calling thread', native.bpfMapDump!(path, 24, 4)],
  ] as const) {
    t.equal(d.count, n, `${how}: every element, none twice (${d.count})`);
    const got = keySet(d.keys, 24, d.count);
    t.equal(got.size, n, `${how}: distinct keys`);
    t.ok([...want].every((k) => got.has(k)), `${how}: the keys written`);
    let valuesMatch = true;
    for (let i = 0; i < d.count; i++) if (d.values.readUInt32LE(i * 4) !== d.keys.readUInt32BE(i * 24 + 8) - 0x0a000000) valuesMatch = false;
    t.ok(valuesMatch, `${how}: each key with its value`);
  }

  t.equal(await native.bpfMapDeleteAsync!(path, keys, 24), n);
  t.equal((await native.bpfMapDumpAsync!(path, 24, 4)).count, 0, 'deleted, all of them');
});

t.test('key and value sizes that are not the map’s are refused, naming the map and both sizes', async (t) => {
  const path = join(await pinDirOf(t), 'svc');
  await createMap(path, 'hash', 20, 16, 64);
  // Larger than the map's: the kernel would read and write inside these buffers, but at the
  // map's stride, i.e. other bytes than the caller's elements.
  const keys = Buffer.alloc(24 * 3);
  const values = Buffer.alloc(20 * 3);

  const upd = await errorOf(() => native.bpfMapUpdate!(path, keys, values, 24, 20));
  t.ok(upd instanceof RangeError, `bpfMapUpdate throws a RangeError (${String(upd)})`);
  t.match(String(upd), new RegExp(`update in pinned map ${path}: keySize 24, valueSize 20 given, but its keys are 20 bytes and its values 16`));
  t.equal((upd as { code?: string } | undefined)?.code, 'FERRY_ERR_BPF');

  const updAsync = await errorOf(native.bpfMapUpdateAsync!(path, keys, values, 24, 20));
  t.ok(updAsync instanceof RangeError, `bpfMapUpdateAsync rejects with a RangeError (${String(updAsync)})`);

  const del = await errorOf(native.bpfMapDeleteAsync!(path, keys, 24));
  t.match(String(del), new RegExp(`RangeError: delete in pinned map ${path}: keySize 24 given, but its keys are 20 bytes`));
  t.match(String(await errorOf(() => native.bpfMapDelete!(path, keys, 24))), /RangeError: delete in pinned map/);

  const dump = await errorOf(native.bpfMapDumpAsync!(path, 20, 20));
  t.match(String(dump), new RegExp(`RangeError: dump in pinned map ${path}: keySize 20, valueSize 20 given, but its keys are 20 bytes and its values 16`));

  // The right sizes still work.
  t.equal(native.bpfMapUpdate!(path, Buffer.alloc(20), Buffer.alloc(16), 20, 16), 1);
  t.equal((await native.bpfMapDumpAsync!(path, 20, 16)).count, 1);
});

t.test('map types without batch operations take the one-by-one paths', async (t) => {
  const dir = await pinDirOf(t);
  // A program array has no batch lookups: its (empty) dump goes key by key.
  const progs = join(dir, 'progs');
  await createMap(progs, 'prog_array', 4, 4, 4);
  const d = await native.bpfMapDumpAsync!(progs, 4, 4);
  t.equal(d.count, 0, 'an empty program array dumps as empty, not as an error');

  // An array has no batch deletes, and its elements cannot be deleted at all: the one-by-one
  // path must meet the kernel's EINVAL rather than report the keys deleted.
  const arr = join(dir, 'arr');
  await createMap(arr, 'array', 4, 4, 4);
  const keys = Buffer.alloc(8);
  keys.writeUInt32LE(1, 4);
  const err = await errorOf(native.bpfMapDeleteAsync!(arr, keys, 4));
  t.ok(err instanceof Error, `deleting array elements fails (${String(err)})`);
  t.match(String(err), new RegExp(`delete element 0 of 2 in ${arr}: Invalid argument`));
  t.equal((err as { errno?: number } | undefined)?.errno, 22);
});

t.test('a batch the kernel refuses outright says none of it went in', async (t) => {
  const path = join(await pinDirOf(t), 'frozen');
  await createMap(path, 'hash', 4, 4, 16);
  await run(['bpftool', 'map', 'freeze', 'pinned', path]);
  const keys = Buffer.alloc(12);
  for (let i = 0; i < 3; i++) keys.writeUInt32LE(i, i * 4);
  const err = await errorOf(() => native.bpfMapUpdate!(path, keys, Buffer.alloc(12), 4, 4));
  t.match(String(err), new RegExp(`batch update in ${path} after 0 of 3 elements: Operation not permitted`));
  const del = await errorOf(() => native.bpfMapDelete!(path, keys, 4));
  t.match(String(del), new RegExp(`batch delete in ${path} after 0 of 3 elements: Operation not permitted`));
});

t.test('paths and names with a NUL are refused', async (t) => {
  const dir = await pinDirOf(t);
  const path = join(dir, 'm');
  await createMap(path, 'hash', 4, 4, 16);
  // Cut at the NUL, this path would name the map just made.
  const cut = `${path}\0ignored`;
  t.throws(() => native.bpfMapDump!(cut, 4, 4), { name: 'TypeError', message: /bpfMapDump: path contains a NUL character/ });
  t.throws(() => native.bpfMapDumpAsync!(cut, 4, 4), { name: 'TypeError', message: /NUL/ });
  t.throws(() => native.bpfMapUpdate!(cut, Buffer.alloc(4), Buffer.alloc(4), 4, 4), { name: 'TypeError', message: /NUL/ });
  t.throws(() => native.bpfMapDelete!(cut, Buffer.alloc(4), 4), { name: 'TypeError', message: /NUL/ });
  t.throws(() => native.bpfTcDetach!(`${dir}\0x`), { name: 'TypeError', message: /bpfTcDetach: pinDir contains a NUL character/ });
  t.throws(() => native.bpfMapDump!(path, Number.NaN, 4), { name: 'RangeError', message: /keySize out of range/ });
});

t.test('the tc calls read a pinned ferry_tcif of another layout only where it is safe, and refuse it otherwise', async (t) => {
  // Larger values (a later ferry's, starting with the same fields): cleanup reads them through a
  // buffer of their size. Index 1 recorded under a name that is not the interface's: left alone.
  const wide = await pinDirOf(t);
  await createMap(join(wide, 'ferry_tcif'), 'hash', 4, 60, 16);
  await run(['bpftool', 'map', 'update', 'pinned', join(wide, 'ferry_tcif'), 'key', '1', '0', '0', '0', 'value', ...Array.from({ length: 60 }, () => '0x41')]);
  t.same(native.bpfTcDetach!(wide), [], 'bpfTcDetach reads 60-byte values safely and detaches nothing (the recorded name is not the interface\'s)');
  // Smaller values than this version's fields: refused, both sizes named.
  const narrow = await pinDirOf(t);
  await createMap(join(narrow, 'ferry_tcif'), 'hash', 4, 8, 16);
  const detach = await errorOf(() => native.bpfTcDetach!(narrow));
  t.match(detach, { name: 'RangeError', message: /ferry_tcif has keys of 4 and values of 8 bytes, not 4 and 20/ }, `bpfTcDetach refuses it (${String(detach)})`);
  await run(['rm', '-f', join(narrow, 'ferry_tcif')]);
});
