import t from 'tap';
import { setLogSink } from '../../../../src/util/log.js';

// Must run before anything loads the addon from the default path in this process.
process.env['FERRY_NATIVE_PATH'] = '/nonexistent/ferry_native.node';
const { defaultNft } = await import('../../../../src/backends/kernel/nft.js');
const { defaultConntrack } = await import('../../../../src/backends/kernel/conntrack.js');

t.test('without the addon, the defaults fall back to the commands and warn once each', async (t) => {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.equal(defaultNft().via, 'exec');
  t.equal(defaultNft().via, 'exec');
  t.equal(defaultConntrack().via, 'exec');
  t.equal(defaultConntrack().via, 'exec');
  const nftWarnings = lines.filter((l) => /^W.* nft\] native addon not loaded/.test(l));
  const ctWarnings = lines.filter((l) => /^W.* conntrack\] native addon not loaded/.test(l));
  t.equal(nftWarnings.length, 1, `one nft warning; log was:\n${lines.join('\n')}`);
  t.equal(ctWarnings.length, 1, `one conntrack warning; log was:\n${lines.join('\n')}`);
  t.match(nftWarnings[0] ?? '', /path=\/nonexistent\/ferry_native\.node/);
  t.match(nftWarnings[0] ?? '', /err=/);
});
