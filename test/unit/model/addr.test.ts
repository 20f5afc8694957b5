// The hand-written IPv4 check must accept exactly what the strict ipaddr.js-based parser accepts
// (four decimal parts, no leading zeros, each at most 255) and return the same canonical text;
// parseIP reads leading zeros as decimal, as kube-proxy's ParseIPSloppy.
import t from 'tap';
import ipaddr from 'ipaddr.js';
import { isCanonicalIPv4, parseCIDR, parseIP } from '../../../src/model/addr.js';

function strictReference(text: string): string | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
  if (text.split('.').some((p) => p.length > 1 && p[0] === '0')) return undefined;
  return ipaddr.IPv4.parse(text).toString();
}

t.test('edge cases', async (t) => {
  const yes = ['0.0.0.0', '255.255.255.255', '10.0.0.1', '198.19.3.250', '1.2.3.4'];
  const no = ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.04', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.a', '1000.1.1.1', '0x1.2.3.4', '-1.2.3.4', '1.2.3.4/32'];
  for (const s of yes) {
    t.equal(isCanonicalIPv4(s), true, `${JSON.stringify(s)} accepted`);
    t.same(parseIP(s), { ip: s, family: 4, v4: s.split('.').reduce((n, p) => n * 256 + Number(p), 0) });
  }
  for (const s of no) t.equal(isCanonicalIPv4(s), false, `${JSON.stringify(s)} refused`);
});

t.test('random strings of digits and dots: same verdict as the strict ipaddr.js parser', async (t) => {
  const alphabet = '0123456789.....';
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let disagreements = 0;
  let accepted = 0;
  for (let i = 0; i < 200_000; i++) {
    let s = '';
    const len = 1 + rand(16);
    for (let j = 0; j < len; j++) s += alphabet[rand(alphabet.length)];
    const ref = strictReference(s);
    const fast = isCanonicalIPv4(s);
    if (ref !== undefined) accepted++;
    if (fast !== (ref !== undefined) || (fast && ref !== s)) disagreements++;
  }
  t.equal(disagreements, 0, 'no input where the two disagree');
  t.ok(accepted > 100, `the sample contains valid addresses too (${accepted})`);
});

t.test('parseIP reads leading zeros as decimal (kube-proxy: ParseIPSloppy), never as octal', async (t) => {
  t.same(parseIP('010.244.001.005'), { ip: '10.244.1.5', family: 4, v4: ((10 * 256 + 244) * 256 + 1) * 256 + 5 });
  t.same(parseIP('192.168.001.010')?.ip, '192.168.1.10');
  t.same(parseIP('0000000.0.0.0001')?.ip, '0.0.0.1');
  for (const s of ['1.2.3.0256', '01.2.3', '1.2.3.4.05', '0x1.2.3.4', '1.2.3.04 ', '１.2.3.4', '1.2.3.+4']) t.equal(parseIP(s), undefined, `${JSON.stringify(s)} refused`);
});

t.test('parseCIDR reads a prefix length with leading zeros as decimal (kube-proxy: ParseCIDRSloppy)', async (t) => {
  t.equal(parseCIDR('10.0.0.0/08')?.cidr, '10.0.0.0/8');
  t.equal(parseCIDR('192.168.0.0/016')?.cidr, '192.168.0.0/16');
  t.equal(parseCIDR('010.244.001.000/024')?.cidr, '10.244.1.0/24');
  t.equal(parseCIDR('2001:db8::/032')?.cidr, '2001:db8::/32');
  t.equal(parseCIDR('0.0.0.0/00')?.cidr, '0.0.0.0/0');
  t.equal(parseCIDR('10.0.0.0/0000000000000000000008')?.cidr, '10.0.0.0/8', 'any run of zeros, as Go reads it');
  for (const s of ['10.0.0.0/033', '2001:db8::/0129', '10.0.0.0/', '10.0.0.0/+8', '10.0.0.0/8 ', '10.0.0.0/0x8', '10.0.0.0/-0', '10.0.0.0/8/8']) {
    t.equal(parseCIDR(s), undefined, `${JSON.stringify(s)} refused`);
  }
});
