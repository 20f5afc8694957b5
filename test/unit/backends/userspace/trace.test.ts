/**
 * `ferry trace` in userspace mode where the listener differs from the verdict's usual shape: a
 * UDP LB IP with source ranges and no endpoints keeps its socket (frontends.ts udpNeedsSocket).
 */
import t from 'tap';
import { trace, type HostFacts } from '../../../../src/plan/explain.js';
import { userspaceFacts, userspacePath } from '../../../../src/backends/userspace/trace.js';
import { REJECT, svc, tables } from './fixtures.js';

const host: HostFacts = { localAddresses: ['192.0.2.1', '127.0.0.1'] };
const dns = (name: string, loadBalancerSourceRanges: string[]) =>
  svc({ name, protocol: 'UDP', port: 53, clusterIP: name === 'ranged' ? '198.19.0.53' : '198.19.0.54', internal: REJECT, loadBalancerIPs: [name === 'ranged' ? '198.51.100.9' : '198.51.100.10'], loadBalancerSourceRanges });
const T = tables([dns('ranged', ['203.0.113.0/24']), dns('open', [])]);

t.test('UDP LB IP with no endpoints: bound and silent with source ranges, unbound (ICMP) without', async (t) => {
  const ranged = trace(T, { src: '203.0.113.5', dst: '198.51.100.9', port: 53, protocol: 'UDP' }, host, userspaceFacts(false), userspacePath);
  t.equal(ranged.verdict.kind, 'reject', 'inside the ranges the IR rejects');
  t.match(ranged.path[0]?.does, /bound for its loadBalancerSourceRanges.*no ICMP/);
  const open = trace(T, { src: '203.0.113.5', dst: '198.51.100.10', port: 53, protocol: 'UDP' }, host, userspaceFacts(false), userspacePath);
  t.match(open.path[0]?.does, /not bound .*ICMP port unreachable/);
});
