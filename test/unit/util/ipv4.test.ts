// The canonical dotted-quad reading shared by the model's address validation and the nftables
// compiler's deduplication (src/util/ipv4.ts): one to one with the 32-bit values.
import t from 'tap';
import { canonicalIPv4 } from '../../../src/util/ipv4.js';
import { isCanonicalIPv4, parseIP } from '../../../src/model/addr.js';

t.test('canonicalIPv4: the value of a canonical dotted quad, -1 for anything else', async (t) => {
  t.equal(canonicalIPv4('0.0.0.0'), 0);
  t.equal(canonicalIPv4('10.1.2.3'), 0x0a010203);
  t.equal(canonicalIPv4('255.255.255.255'), 0xffffffff);
  t.equal(canonicalIPv4('192.168.100.7'), 0xc0a86407);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.256', '01.2.3.4', '1.2.3.04', '1.00.2.3', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.1000', ' 1.2.3.4', '1.2.3.4 ', '::1', '2001:db8::1', '::ffff:1.2.3.4', '1.2.3.a', '1e1.2.3.4', '+1.2.3.4']) {
    t.equal(canonicalIPv4(bad), -1, JSON.stringify(bad));
  }
});

t.test('the model accepts as canonical IPv4 exactly what has a value here', async (t) => {
  for (const s of ['0.0.0.0', '10.1.2.3', '255.255.255.255', '01.2.3.4', '1.2.3', '256.1.1.1', '::1', '1.2.3.4.5', '']) {
    t.equal(isCanonicalIPv4(s), canonicalIPv4(s) >= 0, JSON.stringify(s));
  }
  t.equal(parseIP('10.1.2.3')?.ip, '10.1.2.3');
});
