import t from 'tap';

function thrown(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    return e;
  }
}
import { AllocationError, IPAllocator, PortAllocator } from '../../../../src/sim/apiserver/allocators.js';

t.test('IPv4 allocator hands out every usable address once, never network or broadcast', async (t) => {
  const a = new IPAllocator('198.18.0.0/28');
  const got = new Set<string>();
  for (let i = 0; i < 14; i++) got.add(a.allocateNext());
  t.equal(got.size, 14, 'fourteen distinct addresses from a /28');
  t.notOk(got.has('198.18.0.0'), 'not the network address');
  t.notOk(got.has('198.18.0.15'), 'not the broadcast address');
  t.match(thrown(() => a.allocateNext()), { kind: 'full' }, 'then the range is full');
  a.release('198.18.0.7');
  t.equal(a.allocateNext(), '198.18.0.7', 'a released address is reused');
});

t.test('IPv4 allocator: explicit addresses', async (t) => {
  const a = new IPAllocator('10.96.0.0/16');
  t.equal(a.allocate('10.96.0.10'), '10.96.0.10');
  t.throws(() => a.allocate('10.96.0.10'), new AllocationError('taken', 'provided IP is already allocated'));
  t.throws(
    () => a.allocate('192.0.2.1'),
    new AllocationError('range', 'provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16'),
  );
  t.match(thrown(() => a.allocate('10.96.0.0')), { kind: 'range' }, 'the network address is out of range');
  t.ok(a.has('10.96.0.10'));
  a.release('10.96.0.10');
  t.notOk(a.has('10.96.0.10'));
});

t.test('dynamic allocation prefers the upper part of the range', async (t) => {
  const a = new IPAllocator('10.96.0.0/24');
  for (let i = 0; i < 50; i++) {
    const ip = a.allocateNext();
    const last = Number(ip.split('.')[3]);
    t.ok(last > 16, `${ip} is above the static band`);
  }
});

t.test('IPv6 allocator uses canonical text and honours explicit addresses', async (t) => {
  const a = new IPAllocator('2001:db8:2::/112');
  t.equal(a.allocate('2001:DB8:2:0:0:0:0:a'), '2001:db8:2::a');
  t.match(thrown(() => a.allocate('2001:db8:2::a')), { kind: 'taken' });
  t.match(thrown(() => a.allocate('2001:db8:3::1')), { kind: 'range' });
  const ip = a.allocateNext();
  t.match(ip, /^2001:db8:2::[0-9a-f]+$/);
  const big = new IPAllocator('2001:db8::/64');
  t.match(big.allocateNext(), /^2001:db8::/, 'huge ranges work (capped)');
});

t.test('port allocator', async (t) => {
  const p = new PortAllocator(30000, 30009);
  t.equal(p.allocate(30005), 30005);
  t.throws(() => p.allocate(30005), new AllocationError('taken', 'provided port is already allocated'));
  t.throws(
    () => p.allocate(40000),
    new AllocationError('range', 'provided port is not in the valid range. The range of valid ports is 30000-30009'),
  );
  const seen = new Set([30005]);
  for (let i = 0; i < 9; i++) seen.add(p.allocateNext());
  t.equal(seen.size, 10, 'all ten ports handed out');
  t.match(thrown(() => p.allocateNext()), { kind: 'full' });
  p.release(30001);
  t.equal(p.allocateNext(), 30001);
});
