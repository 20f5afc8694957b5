import t from 'tap';
import { formatDuration, parseDuration } from '../../../src/config/duration.js';

t.test('Go durations parse to milliseconds', async (t) => {
  const cases: [string, number][] = [
    ['1s', 1000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['1.5h', 5_400_000],
    ['2h22m', 8_520_000],
    ['0', 0],
    ['0s', 0],
    ['100us', 0.1],
    ['-1s', -1000],
  ];
  for (const [text, ms] of cases) t.equal(parseDuration(text), ms, `${text} is ${ms}ms`);
});

t.test('non-durations are refused', async (t) => {
  for (const text of ['', '1', '10', 's', '1x', '1 s', '1s2', 'abc', '--1s']) {
    t.equal(parseDuration(text), undefined, `${JSON.stringify(text)} is not a duration`);
  }
});

t.test('formatting mirrors Go', async (t) => {
  t.equal(formatDuration(0), '0s');
  t.equal(formatDuration(90_000), '1m30s');
  t.equal(formatDuration(500), '500ms');
  t.equal(formatDuration(3_600_000), '1h0m0s');
});
