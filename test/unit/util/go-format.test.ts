import t from 'tap';
import { goFixed } from '../../../src/util/go-format.js';

t.test("Go's %0.10f: half to even on an exact tie, as toFixed elsewhere", async (t) => {
  t.equal(goFixed(1 / 2048, 10), '0.0004882812', '0.00048828125 is a tie: the even neighbour (toFixed: 0.0004882813)');
  t.equal((1 / 2048).toFixed(10), '0.0004882813', "toFixed's own answer, which kube-proxy's rules never had");
  t.equal(goFixed(1 / 1024, 10), '0.0009765625', 'exact in ten digits');
  t.equal(goFixed(1 / 4096, 10), '0.0002441406', 'not a tie');
  t.equal(goFixed(0.5, 0), '0', 'a tie at 0 digits goes to even (0)');
  t.equal(goFixed(1.5, 0), '2', 'and 1.5 to 2');
  t.equal(goFixed(2.5, 0), '2', 'and 2.5 to 2 (toFixed: 3)');
  // Every probability kube-proxy writes up to 10,000 endpoints: only true ties differ from toFixed.
  const differ: number[] = [];
  for (let n = 1; n <= 10_000; n++) if (goFixed(1 / n, 10) !== (1 / n).toFixed(10)) differ.push(n);
  t.same(differ, [2048], 'of 1/1 … 1/10000 only 1/2048 is formatted differently');
  t.equal(goFixed(1, 10), '1.0000000000');
  t.equal(goFixed(1 / 3, 10), '0.3333333333');
});
