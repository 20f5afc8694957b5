/**
 * The harness's pure parts, checked without root: mode selection from the environment, the
 * expectation table (every entry has a reason), Service parsing and result summaries. A broken
 * harness would otherwise show up as confusing failures in every end-to-end case.
 */
import t from 'tap';
import { ALL_MODES, expectations, modes, UnknownModeError } from './modes.js';
import { clusterIPOf, nodePortOf, parseService } from './harness.js';
import { errorsSeen, podsSeen, summarize } from './results.js';
import { eventually, EventuallyTimeout, GiveUp } from './eventually.js';

t.test('modes() reads FERRY_E2E_MODES', async (t) => {
  t.same(modes({}), ['nftables'], 'default is nftables');
  t.same(modes({ FERRY_E2E_MODES: ' iptables, nftables,iptables ' }), ['iptables', 'nftables'], 'comma list, trimmed, de-duplicated, order kept');
  t.throws(() => modes({ FERRY_E2E_MODES: 'nftables,ipvs' }), UnknownModeError, 'an unknown mode fails loudly');
});

t.test('every expectation of every mode carries a reason', async (t) => {
  for (const m of ALL_MODES) {
    const { notServed, ...rest } = expectations(m);
    for (const [k, e] of Object.entries(rest)) {
      t.ok(e.reason.length > 20, `${m}.${k} = ${e.value} has a reason`);
    }
    for (const [path, reason] of Object.entries(notServed)) t.ok(typeof reason === 'string' && reason.length > 20, `${m}: path ${path} not served, with a reason`);
  }
  t.same(expectations('ebpf').notServed, {}, 'ebpf serves the outside paths (tc data path)');
  t.same(expectations('nftables').notServed, {}, 'the kernel NAT modes serve every path');
  t.equal(expectations('nftables').podToClusterIP.value, 'origin', 'kernel NAT keeps the pod source');
  t.equal(expectations('userspace').podToClusterIP.value, 'node', 'userspace re-originates');
});

t.test('parseService reads what the suite needs', async (t) => {
  const svc = parseService(
    JSON.stringify({
      metadata: { name: 'np' },
      spec: {
        clusterIP: '198.18.64.10',
        clusterIPs: ['198.18.64.10', '2001:db8:2::a'],
        ports: [
          { name: 'tcp', protocol: 'TCP', port: 80, nodePort: 30080 },
          { name: 'udp', protocol: 'UDP', port: 80, nodePort: 30081 },
        ],
        healthCheckNodePort: 31000,
      },
      status: { loadBalancer: { ingress: [{ ip: '203.0.113.10' }] } },
    }),
  );
  t.equal(clusterIPOf(svc, 4), '198.18.64.10');
  t.equal(clusterIPOf(svc, 6), '2001:db8:2::a');
  t.equal(nodePortOf(svc, 'UDP'), 30081);
  t.equal(svc.healthCheckNodePort, 31000);
  t.same(svc.ingressIPs, ['203.0.113.10']);
  const single = parseService(JSON.stringify({ metadata: { name: 'c' }, spec: { clusterIP: '198.18.64.11', ports: [{ port: 80 }] } }));
  t.throws(() => clusterIPOf(single, 6), /c has no IPv6 ClusterIP/, 'a missing family is named');
  t.throws(() => nodePortOf(single), /no TCP nodePort/, 'a missing nodePort is named');
});

t.test('summaries say who answered and what failed', async (t) => {
  const rs = [
    { ok: true, pod: 'web-1', seenIP: '198.19.1.2', ms: 1 },
    { ok: true, pod: 'web-1', seenIP: '198.19.1.2', ms: 1 },
    { ok: false, error: 'timeout', ms: 2000 },
  ];
  t.equal(summarize(rs), 'web-1×2 (saw 198.19.1.2), timeout×1');
  t.same(podsSeen(rs), ['web-1']);
  t.same(errorsSeen(rs), ['timeout']);
});

t.test('eventually polls, reports the last thing seen, and stops at GiveUp', async (t) => {
  let n = 0;
  t.equal(
    await eventually(
      async () => {
        if (++n < 3) throw new Error(`attempt ${n}`);
        return n;
      },
      { what: 'third time', intervalMs: 1 },
    ),
    3,
  );
  const timedOut = await eventually(
    async () => {
      throw new Error('still red');
    },
    { what: 'never', timeoutMs: 20, intervalMs: 5 },
  ).catch((e: unknown) => e);
  t.ok(timedOut instanceof EventuallyTimeout, 'a timeout is an EventuallyTimeout');
  t.match(String(timedOut), /never: still not true.*last seen: still red/, 'it says what was awaited and what was seen last');
  let calls = 0;
  await t.rejects(
    eventually(
      async () => {
        calls++;
        throw new GiveUp('ferry died');
      },
      { what: 'x', timeoutMs: 10_000, intervalMs: 1 },
    ),
    /ferry died/,
  );
  t.equal(calls, 1, 'GiveUp ends the wait at once');
});
