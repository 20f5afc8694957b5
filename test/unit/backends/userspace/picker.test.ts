import t from 'tap';
import { AFFINITY_MAX_CLIENTS, EndpointPicker, endpointId } from '../../../../src/backends/userspace/picker.js';
import { ep, fwd, REJECT } from './fixtures.js';

const A = ep('198.18.0.11', 80);
const B = ep('198.18.0.12', 80);
const C = ep('198.18.0.13', 80);

function seq(p: EndpointPicker, n: number, client = '192.0.2.50'): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const e = p.pick(client);
    out.push(e ? endpointId(e) : 'none');
    if (e) p.confirm(client, e);
  }
  return out;
}

t.test('round robin walks the set in order and wraps', async (t) => {
  const p = new EndpointPicker();
  p.update(fwd(A, B, C), 0);
  t.same(seq(p, 5), ['198.18.0.11:80', '198.18.0.12:80', '198.18.0.13:80', '198.18.0.11:80', '198.18.0.12:80']);
});

t.test('an unchanged set keeps the position; a changed set keeps going without skipping into nothing', async (t) => {
  const p = new EndpointPicker();
  p.update(fwd(A, B, C), 0);
  seq(p, 2);
  p.update(fwd(A, B, C), 0);
  t.same(seq(p, 1), ['198.18.0.13:80'], 'same set: position kept');
  p.update(fwd(A, B), 0);
  t.same(seq(p, 2), ['198.18.0.11:80', '198.18.0.12:80']);
  p.update(REJECT, 0);
  t.equal(p.pick('192.0.2.50'), undefined, 'empty set → nothing');
  t.equal(p.verdict, 'reject');
});

t.test('exclude skips endpoints that already failed for this connection', async (t) => {
  const p = new EndpointPicker();
  p.update(fwd(A, B, C), 0);
  const tried = new Set<string>();
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const e = p.pick('192.0.2.50', tried);
    if (!e) break;
    order.push(endpointId(e));
    tried.add(endpointId(e));
  }
  t.same(order, ['198.18.0.11:80', '198.18.0.12:80', '198.18.0.13:80'], 'each endpoint tried once, then nothing');
});

t.test('ClientIP affinity sticks per client until the timeout since its last connection', async (t) => {
  let now = 1_000_000;
  const p = new EndpointPicker(() => now);
  p.update(fwd(A, B, C), 10); // 10 s
  const first = seq(p, 1, '192.0.2.50')[0];
  const other = seq(p, 1, '192.0.2.51')[0];
  t.not(first, other, 'a second client gets the next endpoint');
  now += 9_000;
  t.same(seq(p, 3, '192.0.2.50'), [first, first, first], 'sticks within the timeout');
  now += 9_000; // 9 s after the last use: still within, timeout counts from last use
  t.same(seq(p, 1, '192.0.2.50'), [first]);
  now += 10_001;
  const after = seq(p, 1, '192.0.2.50')[0];
  t.equal(p.affinityEntries(), 2);
  t.not(after, undefined);
  // After expiry the client is load-balanced again: rr continues from where it was.
  t.equal(after, '198.18.0.13:80', 'expired affinity → next round-robin endpoint');
});

t.test('affinity to an endpoint that left the set or failed falls back, then sticks to the new one', async (t) => {
  const now = 5;
  const p = new EndpointPicker(() => now);
  p.update(fwd(A, B), 60);
  t.same(seq(p, 1), ['198.18.0.11:80']);
  p.update(fwd(B, C), 60);
  const next = seq(p, 3);
  t.equal(next[0], next[1]);
  t.equal(next[1], next[2]);
  t.not(next[0], '198.18.0.11:80');
  // A failed connect to the sticky endpoint: excluded, and confirm() moves the affinity.
  const sticky = next[0] as string;
  const alt = p.pick('192.0.2.50', new Set([sticky]));
  t.ok(alt && endpointId(alt) !== sticky, `fallback is another endpoint (got ${alt ? endpointId(alt) : 'none'})`);
  if (alt) p.confirm('192.0.2.50', alt);
  t.same(seq(p, 1), [alt ? endpointId(alt) : 'none'], 'affinity follows the endpoint that worked');
});

t.test('changing the affinity timeout resets affinity; sweep drops expired entries', async (t) => {
  let now = 0;
  const p = new EndpointPicker(() => now);
  p.update(fwd(A, B), 1);
  seq(p, 1, 'c1');
  seq(p, 1, 'c2');
  t.equal(p.affinityEntries(), 2);
  now = 5000;
  p.sweep();
  t.equal(p.affinityEntries(), 0);
  seq(p, 1, 'c1');
  p.update(fwd(A, B), 0);
  t.equal(p.affinityEntries(), 0, 'affinity off → entries gone');
});

// A spoofed-source flood (a new client address per datagram) on a path with ClientIP affinity
// added an entry per client, none expiring for the 3 h default timeout.
t.test('affinity holds at most AFFINITY_MAX_CLIENTS clients; the one seen least recently goes first', async (t) => {
  const now = 0;
  const p = new EndpointPicker(() => now);
  p.update(fwd(A, B, C), 10800);
  const client = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  const first = seq(p, 1, client(0))[0];
  seq(p, 1, client(1));
  for (let i = 2; i < 100_000; i++) {
    seq(p, 1, client(i));
    if (i === AFFINITY_MAX_CLIENTS - 1) t.same(seq(p, 1, client(0)), [first], 'a client seen again moves to the back');
  }
  t.equal(p.affinityEntries(), AFFINITY_MAX_CLIENTS, `bounded (${p.affinityEntries()} entries for 100,000 clients)`);
  const last = seq(p, 1, client(99_999))[0];
  t.same(seq(p, 2, client(99_999)), [last, last], 'the newest client still sticks');
  t.equal(p.stickyEndpoint(client(1)), undefined, 'the client seen least recently was evicted');
  t.equal(p.stickyEndpoint(client(0)), first, 'the client seen again outlived it');
});
