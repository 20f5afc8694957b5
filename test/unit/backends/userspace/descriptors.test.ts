import t from 'tap';
import {
  MIN_UDP_SESSIONS,
  RESERVED_DESCRIPTORS,
  formatOpenFilesLimit,
  isOutOfDescriptors,
  parseOpenFilesLimit,
  udpSessionBudget,
} from '../../../../src/backends/userspace/descriptors.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

t.test('the open-files limit is read out of /proc/self/limits', async (t) => {
  t.same(parseOpenFilesLimit(LIMITS), { soft: 1024, hard: 524288 });
  t.equal(formatOpenFilesLimit(parseOpenFilesLimit(LIMITS)), '1024/524288');
  t.same(parseOpenFilesLimit('Max open files            unlimited            unlimited            files'), { soft: Infinity, hard: Infinity });
  t.equal(formatOpenFilesLimit({ soft: Infinity, hard: Infinity }), 'unlimited/unlimited');
  t.equal(parseOpenFilesLimit(''), undefined, 'unreadable: unknown');
  t.equal(formatOpenFilesLimit(undefined), '');
});

t.test('UDP sessions get half of what the reserve and the frontends leave, within maxUdpSessions', async (t) => {
  const at = (soft: number, frontends: number, max = 65_536) => udpSessionBudget({ soft, hard: soft }, frontends, max);
  t.equal(at(20_000, 1_000), Math.floor((20_000 - RESERVED_DESCRIPTORS - 1_000) / 2), '20k limit, 1k frontends: 9436');
  t.equal(at(1_048_576, 10), 65_536, 'a large limit leaves maxUdpSessions in force');
  t.equal(at(1_048_576, 10, 100), 100);
  t.equal(at(200, 300), MIN_UDP_SESSIONS, 'frontends took everything: the floor');
  t.equal(udpSessionBudget(undefined, 10, 500), 500, 'limit unknown: maxUdpSessions');
  t.equal(udpSessionBudget({ soft: Infinity, hard: Infinity }, 10, 500), 500);
});

t.test('EMFILE and ENFILE are out of descriptors; other errors are not', async (t) => {
  t.ok(isOutOfDescriptors(Object.assign(new Error('x'), { code: 'EMFILE' })));
  t.ok(isOutOfDescriptors({ code: 'ENFILE' }));
  t.notOk(isOutOfDescriptors(Object.assign(new Error('x'), { code: 'EADDRINUSE' })));
  t.notOk(isOutOfDescriptors(undefined));
});
