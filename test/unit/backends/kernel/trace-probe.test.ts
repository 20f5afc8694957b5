/**
 * Reading `nft monitor trace` and conntrack output for `ferry trace --kernel` (the pure part;
 * the probe itself runs in the e2e suite): verdicts, chains, the DNAT endpoint and masquerade.
 */
import t from 'tap';
import { canarySeen, firstPacketLines, isCanaryLine, observe, replyTuple, type ProbeSpec } from '../../../../src/backends/kernel/trace-probe.js';

const spec: ProbeSpec = { src: '198.19.1.4', dst: '198.18.125.176', port: 80, protocol: 'TCP', fromHost: false };
const OWN = 'ferry-trace-abc123';
const head = (id: string, rest: string): string => `trace id ${id} ip ${rest}`;

t.test('DNAT: chains in order, endpoint and masquerade from the reply tuple', async (t) => {
  const mon = [
    head('aa01', `${OWN} pre packet: iif "ftrabc123h" ip saddr 198.19.1.4 ip daddr 198.18.125.176 tcp sport 31000 tcp dport 80`),
    head('aa01', `${OWN} pre rule ip saddr 198.19.1.4 meta nftrace set 1 (verdict continue)`),
    head('aa01', 'ferry nat-prerouting rule jump services (verdict jump services)'),
    head('aa01', 'ferry services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto svc-1234-default/web/tcp/http)'),
    head('aa01', 'ferry svc-1234-default/web/tcp/http rule dnat ip to numgen random mod 3 map @endpoints-tcp-0 (verdict accept)'),
    head('bb02', 'ferry nat-prerouting rule jump services (verdict jump services)'),
    '',
  ].join('\n');
  const lines = firstPacketLines(mon);
  t.equal(lines.length, 5, 'only the first packet');
  const ct = 'tcp      6 118 SYN_SENT src=198.19.1.4 dst=198.18.125.176 sport=31000 dport=80 [UNREPLIED] src=198.19.3.2 dst=198.19.1.4 sport=8080 dport=31000 mark=0 use=1\n';
  const reply = replyTuple(ct, 31000);
  t.same(reply, { src: '198.19.3.2', sport: 8080, dst: '198.19.1.4' });
  const o = observe(lines, OWN, spec, reply);
  t.equal(o.verdict, 'dnat');
  t.same(o.endpoint, { ip: '198.19.3.2', port: 8080 });
  t.equal(o.masqueraded, false);
  t.same(o.chains, ['ip ferry nat-prerouting', 'ip ferry services', 'ip ferry svc-1234-default/web/tcp/http'], 'our own table is left out');
  const masq = observe(lines, OWN, spec, { src: '198.19.3.2', sport: 8080, dst: '198.18.0.11' });
  t.equal(masq.masqueraded, true);
  t.equal(replyTuple(ct, 31001), undefined, 'another source port is not the probe');
  // The node's own traffic masqueraded to the same node address: only the executed rule shows it.
  const nodeSpec: ProbeSpec = { ...spec, src: '198.18.0.11', fromHost: true };
  const viaMark = [...lines, head('aa01', 'ferry mark-for-masquerade rule meta mark set meta mark | 0x00004000 (verdict continue)'), head('aa01', 'ferry svc-1234-default/web/tcp/http rule jump mark-for-masquerade (verdict jump mark-for-masquerade)')];
  t.equal(observe(viaMark, OWN, nodeSpec, { src: '198.19.3.2', sport: 8080, dst: '198.18.0.11' }).masqueraded, false, 'a mark alone is not a masquerade');
  const done = [...viaMark, head('aa01', 'ferry masquerading rule masquerade fully-random (verdict accept)')];
  t.equal(observe(done, OWN, nodeSpec, { src: '198.19.3.2', sport: 8080, dst: '198.18.0.11' }).masqueraded, true, 'the masquerade rule ran');
  const ipt = [head('ab01', 'nat KUBE-POSTROUTING rule counter packets 0 bytes 0 xt target "MASQUERADE" (verdict accept)')];
  t.equal(observe([...lines, ...ipt], OWN, nodeSpec, { src: '198.19.3.2', sport: 8080, dst: '198.18.0.11' }).masqueraded, true, 'iptables-nft MASQUERADE');
});

t.test('REJECT and DROP from the verdicts', async (t) => {
  const rej = [head('c1', 'ferry service-endpoints-check rule vmap @no-endpoint-services (verdict goto reject-chain)'), head('c1', 'ferry reject-chain rule reject (verdict drop)')];
  t.equal(observe(rej, OWN, spec, undefined).verdict, 'reject');
  const ipt = [head('c2', 'filter KUBE-SERVICES rule meta l4proto tcp ip daddr 198.18.72.34 tcp dport 80 counter packets 0 bytes 0 xt target "REJECT" (verdict drop)')];
  t.equal(observe(ipt, OWN, spec, undefined).verdict, 'reject', 'iptables-nft REJECT');
  const drop = [head('d1', 'ferry services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict drop)')];
  t.equal(observe(drop, OWN, spec, undefined).verdict, 'drop');
  const none = [head('e1', 'ferry services rule ip daddr . meta l4proto . th dport vmap @service-ips'), head('e1', 'ferry nat-prerouting policy accept')];
  const ct = { src: spec.dst, sport: 80, dst: spec.src };
  t.equal(observe(none, OWN, spec, ct).verdict, 'untouched', 'no NAT in the reply tuple');
});

t.test('the readiness canary: seen in the monitor output, and never taken for the probe', async (t) => {
  const canary = (id: string): string => head(id, `${OWN} out packet: oif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.1 ip protocol udp udp sport 51234 udp dport 45000 udp length 26`);
  const probe = head('cc03', `${OWN} pre packet: iif "ftrabc123h" ip saddr 198.19.1.4 ip daddr 198.18.125.176 udp sport 45000 udp dport 53 udp length 20`);
  t.notOk(canarySeen('', '127.0.0.1', 45000), 'nothing printed yet');
  t.ok(canarySeen(`${canary('aa01')}\n`, '127.0.0.1', 45000), 'the canary line');
  t.notOk(canarySeen(`${canary('aa01')}\n`, '127.0.0.1', 4500), 'not another port that is a prefix of it');
  t.notOk(isCanaryLine(probe, '127.0.0.1', 45000), 'a probe whose source port is the canary port is no canary');
  const mon = [
    canary('aa01'),
    head('aa01', 'ferry filter-output rule jump x (verdict continue)'),
    canary('bb02'),
    probe,
    head('cc03', 'ferry nat-prerouting rule jump services (verdict jump services)'),
    head('bb02', 'ferry filter-output rule jump x (verdict continue)'),
    '',
  ].join('\n');
  const lines = firstPacketLines(mon, (first) => isCanaryLine(first, '127.0.0.1', 45000));
  t.same(lines, [probe, head('cc03', 'ferry nat-prerouting rule jump services (verdict jump services)')], 'the probe\'s lines only, canaries before and after left out');
  t.equal(firstPacketLines(mon)[0], canary('aa01'), 'without the filter the first packet would be the canary');
});
