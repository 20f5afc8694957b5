import t from 'tap';
import { logger, setLogSink, setVerbosity } from '../../../src/util/log.js';

t.test('verbosity gates info lines, warnings always print', async (t) => {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  const log = logger('test');
  setVerbosity(0);
  log.v(2, 'hidden');
  log.warn('shown', { service: 'default/web', port: 80 });
  setVerbosity(2);
  log.v(2, 'now shown');
  t.equal(lines.length, 2);
  t.match(lines[0], /^W.* test\] shown service=default\/web port=80$/);
  t.match(lines[1], /now shown/);
});

t.test('values with spaces are quoted', async (t) => {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  logger('x').error('boom', { err: new Error('a b') });
  t.match(lines[0], /err="a b"/);
});
