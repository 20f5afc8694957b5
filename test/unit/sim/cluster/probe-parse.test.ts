import t from 'tap';
import { parseProbeLine, probeArgv } from '../../../../src/sim/cluster/probe-client.js';

t.test('a successful attempt yields pod, seen and seenIP', async (t) => {
  t.same(parseProbeLine('{"ok":true,"pod":"web-1","seen":"198.19.1.2:4567","ms":1.2}'), {
    ok: true,
    ms: 1.2,
    pod: 'web-1',
    seen: '198.19.1.2:4567',
    seenIP: '198.19.1.2',
  });
  t.equal(parseProbeLine('{"ok":true,"pod":"w","seen":"2001:db8:1:1::2:80","ms":1}')?.seenIP, '2001:db8:1:1::2');
});

t.test('a failed attempt keeps its error', async (t) => {
  t.same(parseProbeLine('{"ok":false,"error":"refused","ms":0.4}'), { ok: false, ms: 0.4, error: 'refused' });
});

t.test('lines that are not probe results are ignored, not guessed at', async (t) => {
  for (const l of ['', 'ready', '{"ok":"yes","ms":1}', '[1,2]', 'null', '{"ok":true}']) t.equal(parseProbeLine(l), undefined, l);
});

t.test('probe argv enters the namespace only when there is one', async (t) => {
  const target = { proto: 'udp' as const, addr: '198.18.64.10', port: 53 };
  const inNs = probeArgv('fyab-client', target, { count: 5, timeoutMs: 300 }, 1);
  t.same(inNs.slice(0, 4), ['ip', 'netns', 'exec', 'fyab-client']);
  t.match(inNs.join(' '), /--proto udp --addr 198\.18\.64\.10 --port 53 --count 5 --timeout-ms 300 --interval-ms 0$/);
  const onHost = probeArgv(undefined, target, {}, 0);
  t.equal(onHost[0], process.execPath);
  t.match(onHost.join(' '), /--count 0 /);
});
