// The data-path benchmark's statistics and ratios: medians with spread over rounds, and the rule
// that a ratio whose spread crosses 1.0 is reported as "no difference".
import t from 'tap';
import { compare, summarize, verdict } from '../../../src/bench/stats.js';
import { datapathRatios, summaryMarkdown } from '../../../src/bench/report.js';
import { readConntrackStat, readNetCounters, readTcpCounters } from '../../../src/bench/tcpstat.js';
import { machineBusy } from '../../../src/bench/datapath.js';
import type { BenchResults, DatapathRow } from '../../../src/bench/types.js';

t.test('summarize: median, min, max and quartiles of the rounds', async (t) => {
  t.same(summarize([5, 1, 3, 2, 4]), { n: 5, median: 3, min: 1, max: 5, q1: 2, q3: 4 });
  t.same(summarize([2, 4]), { n: 2, median: 3, min: 2, max: 4, q1: 2, q3: 4 });
  t.same(summarize([]), { n: 0, median: 0, min: 0, max: 0, q1: 0, q3: 0 }, 'no rounds: zeros, not NaN');
});

t.test('compare: a spread that crosses 1.0 is no difference', async (t) => {
  const a = summarize([100, 110, 120]);
  const overlapping = summarize([95, 105, 115]);
  const c = compare(a, overlapping)!;
  t.equal(c.differs, false, `100-120 vs 95-115 overlap (${JSON.stringify(c)})`);
  t.match(verdict(c), /^no difference \(/);

  const apart = summarize([200, 210, 220]);
  const d = compare(apart, overlapping)!;
  t.equal(d.differs, true, 'disjoint ranges differ');
  t.equal(d.ratio, Number((210 / 105).toPrecision(3)), 'ratio of the medians');
  t.ok(d.low > 1 && d.high > d.low, `spread ${d.low}-${d.high} entirely above 1`);
  t.match(verdict(d), /^2 \(/, 'reads as the ratio with its spread');

  const below = compare(summarize([50, 55]), apart)!;
  t.equal(below.differs, true, 'entirely below 1 also differs');
  t.ok(below.high < 1);

  t.equal(compare(summarize([]), apart), null, 'no samples: no ratio');
  t.equal(compare(apart, summarize([0, 0])), null, 'a zero baseline: no ratio');
});

function row(mode: DatapathRow['mode'], path: DatapathRow['path'], rates: number[], cpu: number[]): DatapathRow {
  const s = summarize(rates);
  return {
    services: 1000, mode, path, offered: 1000, rounds: rates.length, connPerSec: s, cpuMsPerKConn: summarize(cpu),
    proxyCpuMsPerKConn: summarize([0]), p99Ms: summarize([1]), ok: 1, connErrors: 0, timeouts: 0, synRetransmits: 0, stalls: 0, ctInsertFailed: 0, machineBusy: summarize([0.5]),
  };
}

t.test('datapathRatios: every mode against the reference and against direct, per path', async (t) => {
  const datapath = [
    row('reference', 'clusterip', [990, 1000, 1000], [300, 320, 340]),
    row('reference', 'nodeport', [990, 1000, 1000], [300, 320, 340]),
    row('direct', 'clusterip', [1000, 1000, 1000], [200, 210, 220]),
    row('nftables', 'clusterip', [995, 1000, 1000], [250, 260, 270]),
    row('nftables', 'nodeport', [995, 1000, 1000], [310, 330, 350]),
    row('reference-legacy', 'clusterip', [990, 1000, 1000], [400, 420, 440]),
    row('iptables-legacy', 'clusterip', [990, 1000, 1000], [380, 400, 410]),
  ];
  const rs = datapathRatios({ datapath });
  const find = (what: string, size: string) => rs.find((r) => r.what === what && r.size === size);
  const rate = find('conn/s nftables vs reference', '1000 svc clusterip');
  t.equal(rate?.differs, false, 'same rate at a fixed offered load: no difference');
  const cpu = find('CPU ms per 1k conn nftables vs reference', '1000 svc clusterip');
  t.equal(cpu?.differs, true, `250-270 vs 300-340 CPU differs (${JSON.stringify(cpu)})`);
  t.equal(cpu?.better, 'lower');
  t.equal(find('CPU ms per 1k conn nftables vs reference', '1000 svc nodeport')?.differs, false, '310-350 vs 300-340 overlaps');
  t.ok(find('CPU ms per 1k conn nftables vs direct', '1000 svc clusterip'), 'against direct on the ClusterIP path');
  t.notOk(find('CPU ms per 1k conn nftables vs direct', '1000 svc nodeport'), 'direct has no NodePort path');
  t.notOk(rs.some((r) => r.what.includes('reference vs') || r.what.includes('direct vs') || r.what.includes('reference-legacy vs')), 'baselines are not compared with each other');
  t.equal(find('CPU ms per 1k conn nftables vs reference-legacy', '1000 svc clusterip')?.differs, true, 'the legacy reference is a baseline too (250-270 vs 400-440)');
  t.ok(find('conn/s iptables-legacy vs reference', '1000 svc clusterip'), 'a legacy lane is compared like any mode');

  const results = {
    meta: { date: 'd', kernel: 'k', cpus: 2, cpuModel: 'c', memoryMB: 1, node: 'v20', profile: 'quick', phases: ['datapath'], durationS: 1, iptables: '', nft: '', nativeAddon: true, kubeProxy: null,
      datapathLoad: { offered: 1000, seconds: 3, rounds: 3, timeoutMs: 3000 } },
    plan: [], compile: [], memory: [], apply: [], latency: [], startup: [], daemon: [], notes: [],
    datapath, datapathRounds: [], datapathLoads: [], ratios: rs,
    datapathSkips: [{ services: 44000, mode: 'iptables', why: 'not loaded above 10000 Services: iptables-restore' }],
  } as BenchResults;
  const md = summaryMarkdown(results);
  t.match(md, /\*\*no difference \(/, 'the summary prints "no difference" for an overlapping ratio');
  t.match(md, /\| 44000 \| iptables \| not loaded above 10000 Services/, 'a mode not loaded is in the table, not dropped');
  t.match(md, /\| 1000 \| nftables \| clusterip \| 1000 \(995–1000\) \|/, 'medians with their spread');
});

t.test('readTcpCounters picks the stall counters out of /proc/net/snmp and netstat', async (t) => {
  const snmp = 'Tcp: RtoAlgorithm ActiveOpens AttemptFails RetransSegs\nTcp: 1 3000 2 16\nUdp: InDatagrams\nUdp: 5\n';
  const netstat = 'TcpExt: SyncookiesSent TCPSynRetrans TCPTimeouts\nTcpExt: 0 16 16\n';
  t.same(readTcpCounters([snmp, netstat]), { ActiveOpens: 3000, AttemptFails: 2, RetransSegs: 16, TCPSynRetrans: 16, TCPTimeouts: 16 });
  const icmp = 'Icmp: InMsgs InErrors InDestUnreachs\nIcmp: 12 0 9\nIcmpMsg: InType3\nIcmpMsg: 9\n';
  t.same(readNetCounters([snmp, icmp], { Icmp: ['InDestUnreachs'] }), { InDestUnreachs: 9 }, 'any table and counters asked for (the external e2e counts ICMP errors)');
});

t.test('machineBusy: the non-idle share of the /proc/stat deltas', async (t) => {
  // user nice system idle iowait irq softirq
  t.equal(machineBusy([0, 0, 0, 0, 0, 0, 0], [30, 0, 10, 50, 10, 0, 0]), 0.4);
  t.equal(machineBusy([1, 1, 1, 1], [1, 1, 1, 1]), 0, 'no time passed');
});

t.test('readConntrackStat sums the per-CPU hex rows', async (t) => {
  const text = 'entries  clashres found new invalid ignore delete chainlength insert insert_failed drop\n' +
    '00001c39  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 0000000a\n' +
    '00001c39  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000\n';
  t.same(readConntrackStat(text), { insert_failed: 3, drop: 10, clashres: 1 });
  t.same(readConntrackStat(''), { insert_failed: 0, drop: 0, clashres: 0 }, 'no conntrack in the namespace: zeros');
});
