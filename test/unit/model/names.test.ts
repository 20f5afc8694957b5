import t from 'tap';
import { isDNSLabel, isDNSSubdomain, serviceIdProblem, sliceIdProblem } from '../../../src/model/names.js';

t.test('DNS-1123 labels and subdomains, as the API server validates names', async (t) => {
  for (const s of ['a', 'web', 'kube-system', '1web', '0', 'a'.repeat(63)]) t.ok(isDNSLabel(s), `${JSON.stringify(s)} is a label`);
  for (const s of ['', 'Web', 'a_b', '-a', 'a-', 'a.b', 'a/b', 'a:b', 'a b', 'a'.repeat(64), 'é']) t.notOk(isDNSLabel(s), `${JSON.stringify(s)} is not a label`);
  for (const s of ['web-x7k2p', 'a.b.c', '1.2', `${'a'.repeat(63)}.${'b'.repeat(63)}`, `${'a.'.repeat(126)}a`]) t.ok(isDNSSubdomain(s), `${JSON.stringify(s.slice(0, 20))} is a subdomain`);
  for (const s of ['', '.a', 'a.', 'a..b', 'a/b', 'a:b', 'A.b', `${'a.'.repeat(126)}ab`]) t.notOk(isDNSSubdomain(s), `${JSON.stringify(s.slice(0, 20))} is not a subdomain`);
});

t.test('problems name the field; a Service name is a label, a slice name a subdomain', async (t) => {
  t.equal(serviceIdProblem('default', 'web'), undefined);
  t.equal(serviceIdProblem('default', '1web'), undefined, 'a leading digit, as RelaxedServiceNameValidation allows');
  t.match(serviceIdProblem('a/b', 's'), /^metadata\.namespace: "a\/b" is not a DNS-1123 label/);
  t.match(serviceIdProblem('default', 'a:x'), /^metadata\.name: "a:x" is not a DNS-1123 label/);
  t.match(serviceIdProblem('default', 'web.v2'), /^metadata\.name: "web\.v2"/, 'a dotted name is a slice name, not a Service name');
  t.equal(sliceIdProblem('default', 'web.v2-abcde'), undefined);
  t.match(sliceIdProblem('default', 'b/c'), /^metadata\.name: "b\/c" is not a DNS-1123 subdomain/);
  t.match(sliceIdProblem('x'.repeat(1000), 'c'), /^metadata\.namespace: "x{64}…" is not/, 'a long name is cut in the message');
});
