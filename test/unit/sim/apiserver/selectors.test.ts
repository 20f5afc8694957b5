import t from 'tap';
import { formatLabels, parseFieldSelector, parseLabelSelector, SelectorError } from '../../../../src/sim/apiserver/selectors.js';

const labels = { app: 'web', tier: 'front', version: '3' };

t.test('label selector operators', async (t) => {
  const cases: [string, boolean][] = [
    ['', true],
    ['app=web', true],
    ['app==web', true],
    ['app!=web', false],
    ['app!=db', true],
    ['missing!=x', true],
    ['app in (db,web)', true],
    ['app in (db)', false],
    ['app notin (db)', true],
    ['app notin (web)', false],
    ['missing notin (x)', true],
    ['app', true],
    ['missing', false],
    ['!missing', true],
    ['!app', false],
    ['app=web,tier=front', true],
    ['app=web, tier=back', false],
    ['version>2', true],
    ['version<3', false],
    ['  app = web ,  tier in ( front , back )  ', true],
  ];
  for (const [sel, want] of cases) {
    t.equal(parseLabelSelector(sel).matches(labels), want, `${JSON.stringify(sel)} → ${want}`);
  }
  t.ok(parseLabelSelector('').empty, 'the empty selector is empty');
  t.ok(parseLabelSelector('!x').matches(undefined), 'objects without labels match !x');
});

t.test('invalid label selectors throw SelectorError', async (t) => {
  for (const sel of ['app in (web', 'app=web,', '=web', 'app in ()', 'a b', 'app=we b', 'bad key!=x=y', 'app in web', 'version>x', 'app=-bad-']) {
    t.throws(() => parseLabelSelector(sel), SelectorError, `${JSON.stringify(sel)} is rejected`);
  }
});

t.test('field selectors', async (t) => {
  const get = (f: string) => ({ 'metadata.name': 'web', 'metadata.namespace': 'default' })[f];
  const supported = ['metadata.name', 'metadata.namespace'];
  t.ok(parseFieldSelector('metadata.name=web', supported).matches(get));
  t.ok(parseFieldSelector('metadata.name==web,metadata.namespace=default', supported).matches(get));
  t.notOk(parseFieldSelector('metadata.name!=web', supported).matches(get));
  t.ok(parseFieldSelector('metadata.namespace!=kube-system', supported).matches(get));
  t.throws(() => parseFieldSelector('spec.foo=x', supported), { message: 'field label not supported: spec.foo' });
  t.throws(() => parseFieldSelector('metadata.name', supported), SelectorError);
});

t.test('formatLabels sorts and joins like the real printer', async (t) => {
  t.equal(formatLabels({ z: '1', a: '2' }), 'a=2,z=1');
  t.equal(formatLabels({}), '<none>');
  t.equal(formatLabels(undefined), '<none>');
});
