/**
 * Chain names must be kube-proxy's. The expected names are computed here independently — this
 * file's own SHA-256 (node:crypto) and its own base32, from kube-proxy's rule (proxier.go:
 * portProtoHash / servicePortEndpointChainName) — never through src/backends/iptables/names.ts.
 * Fixed vectors come from kube-proxy's own tests (pkg/proxy/iptables/proxier_test.go).
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { compileFull } from '../../../../src/backends/iptables/compiler.js';
import type { ServiceEntry } from '../../../../src/plan/types.js';
import { ep, fwd, GOLDEN_OPTS, GOLDENS, svc, table } from './fixtures.js';

/** RFC 4648 base32, written out longhand: 5 bytes → 8 characters. */
function base32(buf: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bitString = '';
  for (const b of buf) bitString += b.toString(2).padStart(8, '0');
  while (bitString.length % 5 !== 0) bitString += '0';
  let out = '';
  for (let i = 0; i < bitString.length; i += 5) out += alphabet[parseInt(bitString.slice(i, i + 5), 2)];
  return out;
}

function kubeHash(s: string): string {
  return base32(createHash('sha256').update(s, 'utf8').digest()).slice(0, 16);
}

function spn(s: ServiceEntry): string {
  return s.portName === '' ? `${s.namespace}/${s.name}` : `${s.namespace}/${s.name}:${s.portName}`;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Every chain name kube-proxy could give this service port: prefix → hash, and SEP per endpoint. */
function expectedNames(s: ServiceEntry): Set<string> {
  const proto = s.protocol.toLowerCase();
  const h = kubeHash(spn(s) + proto);
  const out = new Set([`KUBE-SVC-${h}`, `KUBE-SVL-${h}`, `KUBE-EXT-${h}`, `KUBE-FW-${h}`]);
  for (const set of [s.internal, s.external, s.cluster]) for (const e of set.endpoints) out.add(`KUBE-SEP-${kubeHash(spn(s) + proto + hostPort(e.ip, e.port))}`);
  return out;
}

t.test('base32 of this test matches a known RFC 4648 vector', async (t) => {
  t.equal(base32(Buffer.from('foobar')), 'MZXW6YTBOI', 'base32("foobar")');
});

t.test('kube-proxy fixed vectors (proxier_test.go)', async (t) => {
  t.equal(kubeHash('ns1/svc1:p80tcp'), 'XPGD46QRK7WJZT7O', 'this test implements the hash as kube-proxy does');
  const ir = table(4, [
    svc({ namespace: 'ns1', name: 'svc1', portName: 'p80', clusterIP: '172.30.0.41', internal: fwd(ep('10.180.0.1', 80), ep('10.180.2.1', 80)) }),
    svc({ namespace: 'ns5', name: 'svc5', portName: 'p80', clusterIP: '172.30.0.45', affinityTimeoutSeconds: 10800, internal: fwd(ep('10.180.0.3', 80)) }),
    svc({ namespace: 'ns2', name: 'svc2', portName: 'p8080', port: 8080, clusterIP: '172.30.0.42', internal: fwd(ep('10.0.2.1', 8080)) }),
  ]);
  const text = compileFull(ir, GOLDEN_OPTS).text;
  for (const name of ['KUBE-SVC-XPGD46QRK7WJZT7O', 'KUBE-SEP-SXIVWICOYRO3J4NJ', 'KUBE-SEP-ZX7GRIZKSNUQ3LAJ', 'KUBE-SVC-NUKIZ6OKUXPJNT4C', 'KUBE-SEP-I77PXRDZVX7PMWMN', 'KUBE-SVC-2VJB64SDSIJUP5T6', 'KUBE-SEP-UHEGFW77JX3KXTOV']) {
    t.ok(text.includes(`:${name} - [0:0]`), `${name} (from kube-proxy's tests) is declared; output was:\n${text}`);
  }
});

for (const g of GOLDENS) {
  for (const family of g.families) {
    t.test(`every per-service chain in golden ${g.name} IPv${family} has kube-proxy's name`, async (t) => {
      const services = [...g.ir[family].services.values()];
      const allowed = new Set<string>();
      for (const s of services) for (const n of expectedNames(s)) allowed.add(n);
      const text = compileFull(g.ir[family], GOLDEN_OPTS).text;
      const found = new Set(text.match(/KUBE-(SVC|SVL|EXT|FW|SEP)-[A-Z2-7]+/g) ?? []);
      t.ok(found.size > 0 || services.every((s) => s.internal.verdict !== 'forward' && s.external.verdict !== 'forward'), 'some service chains are written');
      for (const name of found) t.ok(allowed.has(name), `${name} is one of kube-proxy's names for this fixture's service ports (${[...allowed].join(', ')})`);
      for (const name of found) t.ok(name.length <= 28, `${name} fits iptables' 28-character limit`);
    });
  }
}
