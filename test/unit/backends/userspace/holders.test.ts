/**
 * Reading who holds a port from /proc/net's socket tables: fixed text for both byte orders, and
 * which holders take a frontend's traffic.
 */
import t from 'tap';
import { holderAddress, holdsFrontend, parseProcNet, readPortHolders } from '../../../../src/backends/userspace/holders.js';
import type { Frontend } from '../../../../src/backends/userspace/frontends.js';

// As a little-endian machine prints them: 0.0.0.0:443 LISTEN, 127.0.0.1:443 ESTABLISHED, 198.19.0.10:8443 LISTEN.
const TCP_LE = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:01BB 0100007F:DC00 01 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 20 4 30 10 -1
   2: 0A0013C6:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4713 1 0000000000000000 100 0 0 10 0
`;
// [::]:53 and ::ffff:198.19.0.53:53 (UDP, little-endian words), 2001:db8::10:53.
const UDP6_LE = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5001 2 0000000000000000 0
  11: 0000000000000000FFFF0000350013C6:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5002 2 0000000000000000 0
  12: B80D0120000000000000000010000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5003 2 0000000000000000 0
`;

const fe = (protocol: 'TCP' | 'UDP', ip: string, port: number): Frontend => ({
  key: `${protocol} ${ip}:${port}`,
  protocol,
  family: ip.includes(':') ? 6 : 4,
  ip,
  port,
  service: 'default/web:/TCP',
  role: 'clusterIP',
});

t.test('TCP: listeners on the port, little-endian words', async (t) => {
  const hs = parseProcNet(TCP_LE, 'TCP', 4, 443, true);
  t.same(hs.map(holderAddress), ['0.0.0.0:443'], 'the established socket on 127.0.0.1:443 does not hold it');
  t.match(hs[0], { wildcard: true, uid: 101, inode: 4711 });
  t.same(parseProcNet(TCP_LE, 'TCP', 4, 8443, true).map(holderAddress), ['198.19.0.10:8443']);
});

t.test('big-endian words read the same addresses', async (t) => {
  const be = TCP_LE.replace('0A0013C6:20FB', 'C613000A:20FB');
  t.same(parseProcNet(be, 'TCP', 4, 8443, false).map(holderAddress), ['198.19.0.10:8443']);
});

t.test('UDP over IPv6: wildcard, IPv4-mapped and plain addresses', async (t) => {
  t.same(parseProcNet(UDP6_LE, 'UDP', 6, 53, true).map(holderAddress), ['[::]:53', '198.19.0.53:53', '[2001:db8::10]:53']);
});

t.test('which holders take a frontend: its own address, or a wildcard ([::] also takes IPv4)', async (t) => {
  const tcp = parseProcNet(TCP_LE, 'TCP', 4, 443, true);
  t.ok(holdsFrontend(tcp[0]!, fe('TCP', '198.19.0.10', 443)), '0.0.0.0:443 takes 198.19.0.10:443');
  t.notOk(holdsFrontend(tcp[0]!, fe('TCP', '2001:db8::10', 443)), 'but not an IPv6 address');
  const udp6 = parseProcNet(UDP6_LE, 'UDP', 6, 53, true);
  t.same(udp6.filter((h) => holdsFrontend(h, fe('UDP', '198.19.0.53', 53))).map(holderAddress), ['[::]:53', '198.19.0.53:53']);
  t.same(udp6.filter((h) => holdsFrontend(h, fe('UDP', '198.19.0.54', 53))).map(holderAddress), ['[::]:53']);
  const read = (file: string): string => (file === '/proc/net/udp6' ? UDP6_LE : '');
  t.same(readPortHolders(fe('UDP', '2001:db8::10', 53), read).map((h) => h.inode), [5001, 5003]);
});
