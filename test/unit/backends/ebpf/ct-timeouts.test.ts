import t from 'tap';
import { ctTimeoutsOf, describeCtTimeouts, CT_TIMEOUT_SYSCTLS } from '../../../../src/backends/ebpf/ct-timeouts.js';

const none = (): undefined => undefined;

t.test("kube-proxy's defaults (24h established, 1h close-wait, UDP left alone): the kernel's UDP values", async (t) => {
  const s = { tcpEstablishedTimeoutMs: 86_400_000, tcpCloseWaitTimeoutMs: 3_600_000, udpTimeoutMs: 0, udpStreamTimeoutMs: 0 };
  t.same(ctTimeoutsOf(s, none), [86400, 3600, 30, 120], 'no conntrack sysctls: the kernel defaults');
  const node: Record<string, number> = { nf_conntrack_udp_timeout: 45, nf_conntrack_udp_timeout_stream: 180, nf_conntrack_tcp_timeout_established: 5 };
  t.same(ctTimeoutsOf(s, (n) => node[n]), [86400, 3600, 45, 180], "a setting of 0 takes the node's value; a set one wins over the node's");
});

t.test('every setting left alone: the node values, or the kernel defaults', async (t) => {
  const zero = { tcpEstablishedTimeoutMs: 0, tcpCloseWaitTimeoutMs: 0, udpTimeoutMs: 0, udpStreamTimeoutMs: 0 };
  t.same(ctTimeoutsOf(zero, none), CT_TIMEOUT_SYSCTLS.map(([, d]) => d));
  t.same(ctTimeoutsOf(zero, () => 0), [432000, 60, 30, 120], 'a node value of 0 is not a timeout: the default');
  t.same(ctTimeoutsOf(zero, () => 1.5), [432000, 60, 30, 120], 'nor is a fraction');
});

t.test('whole seconds, at least one, at most 2^32-1', async (t) => {
  const s = { tcpEstablishedTimeoutMs: 1500, tcpCloseWaitTimeoutMs: 200, udpTimeoutMs: 1e13, udpStreamTimeoutMs: 999 };
  t.same(ctTimeoutsOf(s, none), [1, 1, 0xffffffff, 1]);
});

t.test('describeCtTimeouts names each', async (t) => {
  t.equal(describeCtTimeouts([86400, 3600, 30, 120]), 'established=86400s closeWait=3600s udp=30s udpStream=120s');
});
