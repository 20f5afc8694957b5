import t from 'tap';
import { describeSnatPorts, parsePortRange, snatPortPlan } from '../../../../src/backends/ebpf/snat-ports.js';

t.test('the default ephemeral range leaves 1024-32767 and 61000-65535', async (t) => {
  const p = snatPortPlan(32768, 60999);
  t.same(p.lo, [1024, 31744]);
  t.same(p.hi, [61000, 4536]);
  t.equal(p.total, 36280);
  t.equal(p.sharedWithNode, false);
  t.equal(describeSnatPorts(p), '1024-32767,61000-65535');
});

t.test('a range reaching 65535 leaves only the low part; one starting at 1024 only the high part', async (t) => {
  const a = snatPortPlan(10000, 65535);
  t.same(a.lo, [1024, 8976]);
  t.same(a.hi, [0, 0]);
  t.equal(describeSnatPorts(a), '1024-9999');
  const b = snatPortPlan(1024, 50000);
  t.same(b.lo, [1024, 0]);
  t.same(b.hi, [50001, 15535]);
  t.equal(describeSnatPorts(b), '50001-65535');
  const c = snatPortPlan(1, 40000);
  t.same(c.lo[1], 0, 'nothing below 1024 is ever used');
  t.same(c.hi, [40001, 25535]);
});

t.test('too few ports outside the ephemeral range: the whole 1024-65535, flagged', async (t) => {
  const p = snatPortPlan(1024, 65535);
  t.equal(p.sharedWithNode, true);
  t.same(p.lo, [1024, 64512]);
  t.equal(p.total, 64512);
  t.equal(snatPortPlan(1500, 65000).sharedWithNode, true, '476 + 535 ports is too few');
  t.equal(snatPortPlan(2048, 65535).sharedWithNode, false, 'exactly 1024 is enough');
});

t.test('the proc file text', async (t) => {
  t.same(parsePortRange('32768\t60999\n'), [32768, 60999]);
  t.same(parsePortRange('1024 65535'), [1024, 65535]);
  t.equal(parsePortRange('60999 32768'), undefined);
  t.equal(parsePortRange('1024 70000'), undefined);
  t.equal(parsePortRange('garbage'), undefined);
});
