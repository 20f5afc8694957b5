import t from 'tap';
import { scaledMs, timeScale } from '../../../src/util/timescale.js';

t.test('FERRY_TIME_SCALE stretches hang guards and never shortens them', async (t) => {
  const saved = process.env['FERRY_TIME_SCALE'];
  t.teardown(() => {
    if (saved === undefined) delete process.env['FERRY_TIME_SCALE'];
    else process.env['FERRY_TIME_SCALE'] = saved;
  });
  const cases: [string | undefined, number][] = [
    [undefined, 1],
    ['', 1],
    ['10', 10],
    ['2.5', 2.5],
    ['0.5', 1],
    ['-3', 1],
    ['fast', 1],
  ];
  for (const [raw, want] of cases) {
    if (raw === undefined) delete process.env['FERRY_TIME_SCALE'];
    else process.env['FERRY_TIME_SCALE'] = raw;
    t.equal(timeScale(), want, `FERRY_TIME_SCALE=${String(raw)} → ${want}`);
  }
  process.env['FERRY_TIME_SCALE'] = '10';
  t.equal(scaledMs(15_000), 150_000, '15 s becomes 150 s');
});
