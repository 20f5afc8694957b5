import t from 'tap';
import { NftError, findFailingLine, addonNft, defaultNft } from '../../../../src/backends/kernel/nft.js';
import type { NativeAddon, NftRunOptions, NftRunResult } from '../../../../src/native/index.js';

const SCRIPT = ['add table ip ferry', 'add chain ip ferry services', 'add rule ip ferry services bogus', ''].join('\n');

t.test('the failing line is found in each of nft error formats', async (t) => {
  const formats = {
    stdin: '/dev/stdin:3:28-32: Error: syntax error, unexpected string\nadd rule ip ferry services bogus\n                           ^^^^^\n',
    addon: '/proc/self/fd/19:3:28-32: Error: syntax error, unexpected string\nadd rule ip ferry services bogus\n',
    cmdline: '<cmdline>:3:1-3: Error: Could not process rule: File exists\n',
  };
  for (const [name, stderr] of Object.entries(formats)) {
    t.same(findFailingLine(stderr, SCRIPT), { lineNo: 3, text: 'add rule ip ferry services bogus' }, name);
  }
});

t.test('without a location, a one-command script blames its command; a longer one blames nothing', async (t) => {
  const stderr = 'Error: No such file or directory\nlist table ip nope\n              ^^^^\n';
  t.same(findFailingLine(stderr, 'list table ip nope'), { lineNo: 1, text: 'list table ip nope' });
  t.equal(findFailingLine(stderr, SCRIPT), undefined);
});

t.test('NftError says where and what', async (t) => {
  const e = new NftError('exec', '/dev/stdin:2:17-18: Error: Could not process rule: File exists\n', { lineNo: 2, text: 'create table ip ferry' });
  t.equal(e.code, 'FERRY_ERR_NFT');
  t.equal(e.nftMessage, 'Could not process rule: File exists');
  t.equal(e.message, 'nft (exec) failed at line 2: Could not process rule: File exists: create table ip ferry');
  const bare = new NftError('addon', '');
  t.match(bare.message, /nft \(addon\) failed: unknown error/);
});

function stubAddon(reply: NftRunResult, calls: { script: string; opts: NftRunOptions | undefined }[]): NativeAddon {
  return {
    abiVersion: 1,
    nftRun: async (script, opts) => {
      calls.push({ script, opts });
      return reply;
    },
    nftRunSync: () => reply,
    conntrackDelete: async () => 0,
    conntrackList: async () => [],
  };
}

t.test('addonNft turns a failed run into NftError naming the script line', async (t) => {
  const calls: { script: string; opts: NftRunOptions | undefined }[] = [];
  const nft = addonNft(stubAddon({ ok: false, output: '', error: '/proc/self/fd/7:3:28-32: Error: syntax error\n' }, calls));
  t.equal(nft.via, 'addon');
  await t.rejects(nft.apply(SCRIPT), { name: 'NftError', via: 'addon', failingLine: { lineNo: 3, text: 'add rule ip ferry services bogus' } });
  t.equal(calls[0]?.script, SCRIPT, 'the script is passed through untouched');
});

t.test('addonNft.list passes the listing flags and returns the output', async (t) => {
  const calls: { script: string; opts: NftRunOptions | undefined }[] = [];
  const nft = addonNft(stubAddon({ ok: true, output: '{"nftables": []}', error: '' }, calls));
  t.equal(await nft.list('list table ip ferry', { json: true }), '{"nftables": []}');
  t.same(calls[0], { script: 'list table ip ferry', opts: { json: true, handles: false, terse: false } });
  await nft.list('list maps ip', { json: true, terse: true });
  t.same(calls[1], { script: 'list maps ip', opts: { json: true, handles: false, terse: true } });
});

t.test('defaultNft honours preferExec', async (t) => {
  t.equal(defaultNft({ preferExec: true }).via, 'exec');
});
