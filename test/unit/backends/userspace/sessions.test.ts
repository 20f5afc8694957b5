import t from 'tap';
import { SessionTable, type SessionCloseReason } from '../../../../src/backends/userspace/sessions.js';

function table(max: number, idleMs: number) {
  let now = 0;
  const closed: string[] = [];
  const s = new SessionTable<string>({
    idleTimeoutMs: idleMs,
    maxSessions: max,
    now: () => now,
    onClose: (key, v, reason: SessionCloseReason) => closed.push(`${key}=${v}:${reason}`),
  });
  return { s, closed, advance: (ms: number) => (now += ms) };
}

t.test('idle sessions expire on sweep; recently used ones stay', async (t) => {
  const { s, closed, advance } = table(10, 30_000);
  s.add('a', 'A');
  advance(10_000);
  s.add('b', 'B');
  advance(15_000);
  s.get('a'); // a used at 25 s
  advance(10_000); // now 35 s: b idle 25 s, a idle 10 s
  t.equal(s.sweep(), 0);
  advance(6_000); // b idle 31 s
  t.equal(s.sweep(), 1);
  t.same(closed, ['b=B:idle']);
  t.equal(s.get('b'), undefined);
  t.equal(s.get('a'), 'A');
  t.equal(s.expirations, 1);
});

t.test('replies (touch) keep a session alive', async (t) => {
  const { s, closed, advance } = table(10, 1000);
  s.add('a', 'A');
  for (let i = 0; i < 5; i++) {
    advance(900);
    s.touch('a');
    s.sweep();
  }
  t.same(closed, []);
  advance(1001);
  s.sweep();
  t.same(closed, ['a=A:idle']);
});

t.test('a full table evicts the least recently used session and counts it', async (t) => {
  const { s, closed } = table(3, 60_000);
  s.add('a', 'A');
  s.add('b', 'B');
  s.add('c', 'C');
  s.get('a'); // b is now the oldest
  s.add('d', 'D');
  t.same(closed, ['b=B:evicted']);
  t.equal(s.size, 3);
  t.equal(s.evictions, 1);
  s.add('e', 'E');
  t.same(closed, ['b=B:evicted', 'c=C:evicted']);
  t.equal(s.evictions, 2);
});

t.test('replacing and deleting close exactly once', async (t) => {
  const { s, closed } = table(3, 60_000);
  s.add('a', 'A1');
  s.add('a', 'A2');
  t.same(closed, ['a=A1:closed']);
  t.equal(s.delete('a'), true);
  t.equal(s.delete('a'), false);
  t.same(closed, ['a=A1:closed', 'a=A2:closed']);
  s.add('x|1', 'X');
  s.add('y|1', 'Y');
  t.equal(s.deleteWhere((k) => k.startsWith('x|')), 1);
  t.equal(s.size, 1);
});

t.test('maxSessions below 1 is refused', async (t) => {
  t.throws(() => new SessionTable({ idleTimeoutMs: 1, maxSessions: 0, onClose: () => undefined }), RangeError);
});

t.test('a lowered bound (the descriptor budget) evicts down to it on the next add', async (t) => {
  const { s, closed } = table(5, 60_000);
  for (const k of ['a', 'b', 'c', 'd', 'e']) s.add(k, k.toUpperCase());
  s.maxSessions = 2;
  t.equal(s.size, 5, 'nothing closed by the change itself');
  s.add('f', 'F');
  t.same(closed, ['a=A:evicted', 'b=B:evicted', 'c=C:evicted', 'd=D:evicted']);
  t.same([s.size, s.evictions], [2, 4]);
  t.throws(() => (s.maxSessions = 0), RangeError);
});
