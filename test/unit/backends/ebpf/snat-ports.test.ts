import t, { type Test } from 'tap';
import { describeSnatPorts, NODEPORT_RANGE, parsePortRange, snatPortPlan, type SnatPortPlan } from '../../../../src/backends/ebpf/snat-ports.js';

/** Every port the plan hands out, as [min, max] ranges. */
function ranges(p: SnatPortPlan): [number, number][] {
  return [p.lo, p.hi].filter(([, n]) => n > 0).map(([min, n]) => [min, min + n - 1]);
}

function clearOfNodePorts(t: Test, p: SnatPortPlan, what: string): void {
  const hit = ranges(p).filter(([a, b]) => a <= NODEPORT_RANGE[1] && b >= NODEPORT_RANGE[0]);
  t.same(hit, [], `${what}: no SNAT port in the NodePort range ${NODEPORT_RANGE.join('-')} (${describeSnatPorts(p)})`);
}

t.test('the default ephemeral range leaves 1024-29999 and 61000-65535: not the NodePorts', async (t) => {
  const p = snatPortPlan(32768, 60999);
  t.same(p.lo, [1024, 28976]);
  t.same(p.hi, [61000, 4536]);
  t.equal(p.total, 33512);
  t.equal(p.sharedWithNode, false);
  t.equal(describeSnatPorts(p), '1024-29999,61000-65535');
  clearOfNodePorts(t, p, 'default');
});

t.test('a range reaching 65535 leaves only the low part; one starting at 1024 only the high part', async (t) => {
  const a = snatPortPlan(10000, 65535);
  t.same(ranges(a), [[1024, 9999]]);
  t.equal(describeSnatPorts(a), '1024-9999');
  const b = snatPortPlan(1024, 50000);
  t.same(ranges(b), [[50001, 65535]]);
  t.equal(describeSnatPorts(b), '50001-65535');
  const c = snatPortPlan(1, 40000);
  t.same(ranges(c), [[40001, 65535]], 'nothing below 1024 is ever used');
  t.equal(c.total, 25535);
});

t.test('the NodePort range is cut out wherever it falls; of three pieces the two largest are used', async (t) => {
  const low = snatPortPlan(50000, 60999);
  t.same(ranges(low), [[1024, 29999], [32768, 49999]], 'an ephemeral range starting above 32768: 61000-65535 is the smallest piece, left out');
  t.equal(low.total, 28976 + 17232);
  clearOfNodePorts(t, low, '50000-60999');
  const inside = snatPortPlan(31000, 60999);
  t.same(ranges(inside), [[1024, 29999], [61000, 65535]], 'an ephemeral range starting inside the NodePorts');
  clearOfNodePorts(t, inside, '31000-60999');
  const high = snatPortPlan(2000, 29000);
  t.same(ranges(high), [[29001, 29999], [32768, 65535]], 'an ephemeral range below the NodePorts: 1024-1999, the smallest piece, left out');
  clearOfNodePorts(t, high, '2000-29000');
});

t.test('too few ports outside the ephemeral range: 1024-65535 but the NodePorts, flagged', async (t) => {
  const p = snatPortPlan(1024, 65535);
  t.equal(p.sharedWithNode, true);
  t.same(ranges(p), [[1024, 29999], [32768, 65535]]);
  t.equal(p.total, 64512 - 2768);
  clearOfNodePorts(t, p, 'shared');
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
