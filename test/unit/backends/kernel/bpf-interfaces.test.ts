/**
 * Which interfaces the ebpf mode's tc program goes onto (selectInterfaces): 'all' is every
 * interface but loopback, a list takes names and prefixes ending in '*', [] takes none.
 */
import t from 'tap';
import { selectInterfaces } from '../../../../src/backends/kernel/bpf.js';

const ifs = ['lo', 'eth0', 'fy12i1p1', 'fy12i1p2', 'docker0'].map((name, index) => ({ name, index: index + 1 }));

t.test('all: every interface of the namespace except lo', async (t) => {
  t.same(selectInterfaces(ifs, 'all'), ['eth0', 'fy12i1p1', 'fy12i1p2', 'docker0']);
});

t.test('names and prefixes', async (t) => {
  t.same(selectInterfaces(ifs, ['eth0', 'fy12i1*']), ['eth0', 'fy12i1p1', 'fy12i1p2']);
  t.same(selectInterfaces(ifs, ['eth']), [], 'a name is exact; only a trailing * makes a prefix');
});

t.test('none: tests and benchmarks in the host namespace attach nowhere', async (t) => {
  t.same(selectInterfaces(ifs, []), []);
});
