import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipvsServiceCount, removeIpvsLeftovers } from '../../../../src/backends/iptables/ipvs-leftovers.js';
import { logger } from '../../../../src/util/log.js';

const PROC = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A60000A:0035 rr
  -> 0AF40005:0035      Masq    1      0          0
UDP  0A60000A:0035 rr
FWM  00000001 rr
`;

t.test('virtual servers are counted from /proc/net/ip_vs, real servers and headers not', async (t) => {
  t.equal(ipvsServiceCount(PROC), 3);
  t.equal(ipvsServiceCount(''), 0);
});

t.test('no kube-ipvs0: nothing is run or removed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fyipvs-'));
  t.same(await removeIpvsLeftovers(logger('t'), dir, join(dir, 'ip_vs')), []);
});
