/**
 * Turns BenchResults into what gets committed: results.json (small: rounded numbers, no raw
 * samples), one SVG per chart, and summary.md with the machine, the ratios table (ferry /
 * reference kube-proxy layout) and the absolute numbers. Also computes the ratios. Writes only
 * under the output directory it is given.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compare, ratio3, round, verdict, type Spread } from './stats.js';
import { barChart } from './svg.js';
import type { BenchResults, DaemonFullSync, DatapathRow, RatioRow } from './types.js';

const sizeLabel = (s: { services: number; endpoints?: number }): string =>
  s.endpoints === undefined ? `${s.services} svc` : `${s.services}x${s.endpoints}`;

export function computeRatios(r: BenchResults): RatioRow[] {
  const out: RatioRow[] = [];
  const push = (what: string, size: string, ferry: number, reference: number, better: 'lower' | 'higher') => {
    if (ferry > 0 && reference > 0) out.push({ what, size, ferry, reference, ratio: ratio3(ferry / reference), better });
  };
  for (const ref of r.compile.filter((c) => c.mode === 'reference')) {
    const size = sizeLabel(ref);
    for (const m of ['nftables', 'iptables'] as const) {
      const f = r.compile.find((c) => c.mode === m && c.services === ref.services && c.endpoints === ref.endpoints);
      if (!f) continue;
      push(`${m} full ruleset bytes`, size, f.fullBytes, ref.fullBytes, 'lower');
      push(`${m} partial (1 endpoint) lines`, size, f.partialEndpointLines, ref.partialEndpointLines, 'lower');
    }
  }
  for (const ref of r.apply.filter((a) => a.mode === 'reference' && !a.error)) {
    const size = sizeLabel(ref);
    for (const m of ['nftables-netlink', 'nftables-addon', 'nftables-exec', 'iptables'] as const) {
      const f = r.apply.find((a) => a.mode === m && a.services === ref.services && a.endpoints === ref.endpoints && !a.error);
      if (!f) continue;
      push(`apply full (cold) ${m}`, size, f.fullColdMs, ref.fullColdMs, 'lower');
      push(`apply 1-endpoint change ${m}`, size, f.partialEndpointMs, ref.partialEndpointMs, 'lower');
    }
  }
  out.push(...datapathRatios(r));
  const variant = (l: BenchResults['latency'][number]): string => `${l.window ?? 'default'} ${arrival(l)}`;
  for (const kp of r.latency.filter((l) => l.mode === 'kube-proxy')) {
    for (const m of ['nftables', 'iptables', 'userspace', 'ebpf'] as const) {
      const f = r.latency.find((l) => l.mode === m && l.services === kp.services && variant(l) === variant(kp));
      if (f) push(`programming latency p50 ${m} vs kube-proxy (${variant(kp)})`, `${kp.services} svc`, f.e2eMs.p50, kp.e2eMs.p50, 'lower');
    }
  }
  return out;
}

/**
 * Each mode's data path against the reference kube-proxy layout (and against no proxy at all,
 * `direct`), per size and path: the connection rate at the fixed offered load and the CPU it
 * cost. Ratios carry their spread over the rounds; one that crosses 1.0 is "no difference".
 */
export function datapathRatios(r: Pick<BenchResults, 'datapath'>): RatioRow[] {
  const out: RatioRow[] = [];
  const isBase = (m: DatapathRow['mode']): boolean => m === 'reference' || m === 'reference-legacy' || m === 'direct';
  for (const base of r.datapath.filter((d) => isBase(d.mode))) {
    for (const f of r.datapath) {
      if (f.services !== base.services || isBase(f.mode)) continue;
      // direct has no NodePort path; it is the floor of the pod → pod(IP) path only.
      if (f.path !== base.path) continue;
      const size = `${base.services} svc ${base.path}`;
      for (const [what, pick, better] of [
        ['conn/s', (d: DatapathRow) => d.connPerSec, 'higher'],
        ['CPU ms per 1k conn', (d: DatapathRow) => d.cpuMsPerKConn, 'lower'],
      ] as const) {
        const c = compare(pick(f), pick(base));
        if (!c) continue;
        out.push({ what: `${what} ${f.mode} vs ${base.mode}`, size, ferry: pick(f).median, reference: pick(base).median, ratio: c.ratio, better, low: c.low, high: c.high, differs: c.differs });
      }
    }
  }
  return out;
}

function spread(x: Spread): string {
  return `${x.median} (${x.min}–${x.max})`;
}

function table(header: string[], rows: (string | number)[][]): string {
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n') + '\n';
}

function kb(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

export function summaryMarkdown(r: BenchResults): string {
  const m = r.meta;
  const parts: string[] = [];
  parts.push(`# ferry benchmark — ${m.date}\n`);
  parts.push(
    `Profile **${m.profile}**, phases ${m.phases.join(', ')}, ran ${Math.round(m.durationS)} s.\n\n` +
      `Machine: kernel \`${m.kernel}\`, ${m.cpus} CPUs (${m.cpuModel}), ${m.memoryMB} MB RAM, Node ${m.node}; ` +
      `${m.iptables}; ${m.nft}; native addon ${m.nativeAddon ? 'loaded' : 'NOT loaded'}; ` +
      `kube-proxy binary: ${m.kubeProxy ?? 'not given'}.\n`,
  );
  parts.push('\nTimes in ms, medians unless noted. "reference" is the kube-proxy iptables layout generated by the harness ' +
    '(src/bench/reference-kube-proxy.ts) and applied with iptables-restore on the same kernel. See docs/bench.md.\n');
  if (r.ratios.length) {
    parts.push('\n## Ratios: ferry / reference kube-proxy layout (data path: also / direct, no proxy)\n\n');
    parts.push(
      table(
        ['what', 'size', 'ferry', 'reference', 'ratio', 'better'],
        r.ratios.map((x) => [
          x.what, x.size, x.ferry, x.reference,
          x.low !== undefined && x.high !== undefined ? `**${verdict({ ratio: x.ratio, low: x.low, high: x.high, differs: x.differs !== false })}**` : `**${x.ratio}**`,
          `${x.better} is better`,
        ]),
      ),
    );
  }
  if (r.compile.length) {
    parts.push('\n## Compile (in process)\n\n');
    parts.push(
      table(
        ['size', 'mode', 'full ms', 'full size', 'full lines', '1-endpoint ms', 'lines', 'add-service ms', 'lines'],
        r.compile.map((c) => [
          sizeLabel(c), c.mode, c.fullMs, c.mode === 'userspace' ? '-' : kb(c.fullBytes), c.fullLines || '-',
          c.partialEndpointMs, c.partialEndpointLines || '-', c.partialAddMs, c.partialAddLines || '-',
        ]),
      ),
    );
    parts.push('\nreference times are the harness generator\'s (TypeScript), not kube-proxy\'s Go code: compare its sizes, not its times. userspace = frontend plan + reconcile plan.\n');
  }
  if (r.plan.length) {
    parts.push('\n## Model and planner\n\n');
    parts.push(
      table(
        ['size', 'parse+track ms', 'plan ms', '1-endpoint replan ms', 'add-service replan ms'],
        r.plan.map((p) => [sizeLabel(p), p.trackMs, p.planMs, p.planEndpointMs, p.planAddMs]),
      ),
    );
  }
  if (r.memory.length) {
    parts.push('\n## Memory of a process holding tracker + IR\n\n');
    parts.push(table(['size', 'RSS MB', 'heap MB'], r.memory.map((x) => [sizeLabel(x), x.rssMB, x.heapMB])));
  }
  if (r.apply.length) {
    parts.push('\n## Kernel apply (fresh namespace)\n\n');
    parts.push(
      table(
        ['size', 'mode', 'full cold ms', 'full re-apply ms', '1-endpoint ms', 'add-service ms', 'error or note'],
        r.apply.map((a) => [sizeLabel(a), a.mode, a.fullColdMs, a.fullMs, a.partialEndpointMs, a.partialAddMs, a.error ?? '']),
      ),
    );
  }
  if (r.startup.length) {
    parts.push('\n## Start-up: proxy start → target Service reachable (pod and NodePort)\n\n');
    parts.push(table(['services', 'mode', 'ready ms'], r.startup.map((s) => [s.services, s.mode, s.readyMs])));
  }
  if (r.latency.length) {
    parts.push('\n## Programming latency: Service created → first connection from a pod\n\n');
    parts.push(
      table(
        ['services', 'mode', 'window', 'arrival', 'n', 'p50', 'p90', 'p99', 'accepted p50', 'accepted p99', 'slice p50', 'slice p99', 'failures', 'metric p50', 'metric p99', 'syncs', 'programmed p50', 'programmed p99'],
        r.latency.map((l) => [
          l.services, l.mode, l.window ?? 'default', arrival(l), l.e2eMs.n, l.e2eMs.p50, l.e2eMs.p90, l.e2eMs.p99, l.acceptedMs?.p50 ?? '-', l.acceptedMs?.p99 ?? '-', l.sliceMs?.p50 ?? '-', l.sliceMs?.p99 ?? '-', l.failures,
          l.metric?.p50 ?? '-', l.metric?.p99 ?? '-', l.programmed?.count ?? '-', l.programmed?.p50 ?? '-', l.programmed?.p99 ?? '-',
        ]),
      ),
    );
    parts.push(
      '\nEach change is timed from its own API write (a Service with a selector; the simulator\'s EndpointSlice controller adds the slice) to the first ' +
        'connection from a pod that reaches the endpoint. "window" default: ferry\'s default flags (cost-aware coalescing, docs/sync.md); 1s: an explicit ' +
        '`--iptables-min-sync-period 1s`, kube-proxy\'s fixed window. "arrival" single: each change meets an idle proxy; bursts of N: N Services created at once. ' +
        '"accepted": from the moment the API write returned (the object stored) instead of when it was sent — in a burst the API server takes the writes one after the other. ' +
        '"slice": from the moment the simulator stored the Service\'s first EndpointSlice with an endpoint (the object that makes it reachable) — the proxy\'s share, without the API server\'s queue and its EndpointSlice controller.\n',
    );
    parts.push('\n"metric" is the proxy\'s own kubeproxy_network_programming_duration_seconds over the same changes (interpolated from histogram buckets): the trigger time of the change to its rules (or maps) programmed. "programmed" is ferry\'s own ferry_sync_event_to_programmed_seconds: ' +
        'the oldest watch event a sync carries reaching ferry → that sync programmed in the kernel, one observation per sync ("syncs"; buckets from 0.25 ms in steps of √2 since 2026-12-05, of 2 before).\n');
  }
  if (r.datapath.length || r.datapathSkips.length) {
    const l = m.datapathLoad;
    parts.push('\n## Data path: interleaved rounds at a fixed offered load\n\n');
    if (l) {
      parts.push(
        `Open loop: ${l.offered} new connections/s offered for ${l.seconds} s per measurement (one request, one answer each), ` +
          `${l.rounds} rounds interleaving every mode and path; a connection unanswered after ${l.timeoutMs} ms is a timeout. ` +
          'Medians with (min–max) over the rounds. CPU: utime+stime from /proc/PID/stat of the load generator, the server and the proxy ' +
          '(this kernel has no IRQ time accounting, so NAT/forwarding softirq work is charged to them); "proxy" is the proxy process alone. ' +
          `Machine busy: the whole machine's /proc/stat during the round (shared with other work). Load average at start ${m.loadavgStart ?? '?'}, at end ${m.loadavgEnd ?? '?'}.` +
          (m.datapathS ? ` The phase took ${m.datapathS} s.` : '') + '\n\n',
      );
    }
    parts.push(
      table(
        ['services', 'mode', 'path', 'conn/s', 'CPU ms / 1k conn', 'proxy CPU ms / 1k', 'p99 ms', 'answered', 'errors', 'timeouts', 'SYN retransmits', 'stalls ≥ 0.9 s', 'conntrack insert failed', 'machine busy'],
        r.datapath.map((d) => [
          d.services, d.mode, d.path, spread(d.connPerSec), spread(d.cpuMsPerKConn), d.proxyCpuMsPerKConn.median, spread(d.p99Ms),
          d.ok, d.connErrors, d.timeouts, d.synRetransmits, d.stalls, d.ctInsertFailed, d.machineBusy.median,
        ]),
      ),
    );
    if (r.datapathSkips.length) {
      parts.push('\nNot measured:\n\n');
      parts.push(table(['services', 'mode', 'why'], r.datapathSkips.map((x) => [x.services, x.mode, x.why])));
    }
    if (r.datapathLoads.length) {
      parts.push('\nLoading each size (Services created through the API; each lane started or caught up until both paths answer):\n\n');
      const modes = [...new Set(r.datapathLoads.flatMap((x) => Object.keys(x.loadMs)))];
      parts.push(
        table(
          ['services', 'create ms', ...modes.map((x) => `${x} ms`), 'stale conntrack entries flushed after loading', 'between rounds'],
          r.datapathLoads.map((x) => [x.services, x.createMs, ...modes.map((k) => x.loadMs[k as keyof typeof x.loadMs] ?? '-'), x.staleConntrack, x.staleBetweenRounds]),
        ),
      );
    }
  }
  if (r.daemon.length) {
    parts.push('\n## The daemon: a real ferry process against a preloaded API server\n\n');
    parts.push(
      table(
        ['size', 'mode', 'start → all rules live ms', 'rules found', 'steady RSS MiB', 'RSS after each full resync MiB', 'repair ms', 'peak (VmHWM) MiB', 'heap used/total', 'external (array buffers)', 'native ~', 'mapped files'],
        r.daemon.map((d) => [
          sizeLabel(d) + (d.ferry ? ` (${d.ferry})` : ''), d.mode, d.readyMs, d.rulesFound, `**${d.steady.rssMB}**`,
          d.resyncs.map((x) => x.memory.rssMB).join(' → ') || '-', d.resyncs.map((x) => x.repairMs).join(', ') || '-', `**${d.hwmMB}**`,
          `${d.steady.heapUsedMB} / ${d.steady.heapTotalMB}`, `${d.steady.externalMB} (${d.steady.arrayBuffersMB})`, d.steady.nativeMB, d.steady.fileMB,
        ]),
      ),
    );
    parts.push('\nMiB. The memory split is at the steady point: V8 heap (used / reserved), memory V8 accounts outside its heap, ' +
      'native ≈ RssAnon − heap total − external (libnftables, the addon, Node itself), and mapped files (code and libraries). ' +
      'kube-proxy\'s nftables mode peaks at about 260 MiB creating 10,000 Services × 2 endpoints (kubernetes PR #126013).\n');
    const phased = r.daemon.filter((d) => d.startup);
    if (phased.length) {
      parts.push('\n### Where the time to live goes\n\n');
      const cell = (v: number | undefined) => (v === undefined || v < 0 ? '-' : v);
      const syncCells = (s: DaemonFullSync | undefined) =>
        s
          ? [
              s.durationMs, s.planMs, cell(s.compileMs), cell(s.encodeMs), cell(s.kernelMs), s.compileMs !== undefined && s.kernelMs ? `${Math.round((100 * s.compileMs) / s.kernelMs)}%` : '-', cell(s.indexMs),
              s.mapsMs !== undefined ? `${Math.round(s.attachMs ?? 0)} / ${Math.round(s.dumpMs ?? 0)} / ${Math.round(s.mapsMs)}` : '-',
            ]
          : ['-', '-', '-', '-', '-', '-', '-', '-'];
      parts.push(
        table(
          ['size', 'mode', 'CPU to live', 'VmHWM after start', 'ferry logging', 'lists done', 'first sync ms', 'plan', 'compile', 'encode', 'kernel', 'compile / kernel', 'index after', 'ebpf attach / dump / maps', 'live', 'resync full syncs ms (compile / kernel or maps)', 'a change during each repair: synced ms after it'],
          phased.map((d) => {
            const st = d.startup!;
            return [
              sizeLabel(d) + (d.ferry ? ` (${d.ferry})` : ''), d.mode, cell(st.readyCpuMs), cell(st.hwmAfterStartMB), cell(st.startedMs), cell(st.listedMs), ...syncCells(st.firstSync), d.readyMs,
              d.resyncs.map((x) => (x.sync ? `${x.sync.durationMs} (${x.sync.mapsMs !== undefined ? Math.round(x.sync.mapsMs) : `${cell(x.sync.compileMs)} / ${cell(x.sync.kernelMs)}`})` : '-')).join(', ') || '-',
              d.resyncs.map((x) => (x.change ? (x.change.afterRepairMs === null ? `in it (${x.change.changeMs})` : x.change.afterRepairMs) : '-')).join(', ') || '-',
            ];
          }),
        ),
      );
      parts.push('\nCPU to live: ferry\'s user + system time (all threads) until live, less at the mercy of the machine\'s load than the wall times. ' +
        'Other columns: ms from process start (ferry logging: node start, module loading, mode probe), and the parts of the first full sync, from ferry\'s own log at -v 2: ' +
        'plan (snapshot, plan, diff), compile (IR → transaction), encode (transaction → netlink batch), kernel (the batch\'s sendmsg), index after (counting the set claims the compile left for after the rules are in; part of first sync ms, not of the wait for live); ' +
        'ebpf: loading and attaching the programs, dumping the maps, and compiling and writing the elements (overlapped part by part). ' +
        'live − (lists done + first sync) is the wait for the probe\'s next connection attempt and the scheduling between. ' +
        'A change during each repair (nftables): an EndpointSlice changed a third of the first sync\'s time after ferry\'s table was deleted; ms from the repair\'s end to the change\'s own sync done (it cannot ride in the repair once that has planned), or "in it" when it arrived early enough to be part of the repair.\n');
    }
  }
  if (r.notes.length) parts.push(`\n## Notes\n\n${r.notes.map((n) => `- ${n}`).join('\n')}\n`);
  return parts.join('');
}

export function charts(r: BenchResults): Record<string, string> {
  const out: Record<string, string> = {};
  const sizes = [...new Map(r.compile.map((c) => [sizeLabel(c), c])).keys()];
  const compileSeries = (modes: string[], pick: (c: BenchResults['compile'][number]) => number) =>
    modes.map((mode) => ({ name: mode, values: sizes.map((s) => { const c = r.compile.find((x) => x.mode === mode && sizeLabel(x) === s); return c ? pick(c) : null; }) }));
  if (sizes.length) {
    out['compile-full.svg'] = barChart({ title: 'Full compile time', unit: 'ms', groups: sizes, series: compileSeries(['nftables', 'iptables', 'userspace'], (c) => c.fullMs), log: true });
    out['compile-partial.svg'] = barChart({ title: 'Partial compile: one endpoint changed', unit: 'ms', groups: sizes, series: compileSeries(['nftables', 'iptables', 'userspace'], (c) => c.partialEndpointMs), log: true });
    out['ruleset-size.svg'] = barChart({ title: 'Full ruleset size (ferry vs kube-proxy layout)', unit: 'bytes', groups: sizes, series: compileSeries(['nftables', 'iptables', 'reference'], (c) => c.fullBytes), log: true });
  }
  const asizes = [...new Map(r.apply.map((a) => [sizeLabel(a), a])).keys()];
  if (asizes.length) {
    const modes = ['nftables-netlink', 'nftables-addon', 'nftables-exec', 'iptables', 'reference'];
    const ser = (pick: (a: BenchResults['apply'][number]) => number) =>
      modes.map((mode) => ({ name: mode, values: asizes.map((s) => { const a = r.apply.find((x) => x.mode === mode && sizeLabel(x) === s); return a && !a.error ? pick(a) : null; }) }));
    out['apply-full.svg'] = barChart({ title: 'Kernel apply: full ruleset into an empty namespace', unit: 'ms', groups: asizes, series: ser((a) => a.fullColdMs), log: true });
    out['apply-partial.svg'] = barChart({ title: 'Kernel apply: one endpoint changed', unit: 'ms', groups: asizes, series: ser((a) => a.partialEndpointMs), log: true });
  }
  if (r.latency.length) {
    const groups = r.latency.map((l) => `${l.mode} @${l.services} ${l.window ?? 'default'} ${arrival(l)}`);
    out['latency.svg'] = barChart({
      title: 'Programming latency (Service created → connection works)',
      unit: 'ms',
      groups,
      series: (['p50', 'p90', 'p99'] as const).map((p) => ({ name: p, values: r.latency.map((l) => l.e2eMs[p]) })),
    });
  }
  if (r.datapath.length) {
    const groups = [...new Set(r.datapath.map((d) => `${d.services} svc ${d.path}`))];
    const modes = [...new Set(r.datapath.map((d) => d.mode))];
    const ser = (pick: (d: DatapathRow) => number) =>
      modes.map((mode) => ({ name: mode, values: groups.map((g) => { const d = r.datapath.find((x) => x.mode === mode && `${x.services} svc ${x.path}` === g); return d ? pick(d) : null; }) }));
    out['datapath-connections.svg'] = barChart({ title: 'Answered connections per second at a fixed offered load (median of rounds)', unit: 'conn/s', groups, series: ser((d) => d.connPerSec.median) });
    out['datapath-cpu.svg'] = barChart({ title: 'CPU per 1000 connections: generator + server + proxy (median of rounds)', unit: 'CPU ms', groups, series: ser((d) => d.cpuMsPerKConn.median) });
  }
  if (r.daemon.length) {
    const groups = r.daemon.map((d) => `${d.mode} ${sizeLabel(d)}`);
    out['daemon-memory.svg'] = barChart({
      title: 'Daemon memory: steady, after the last forced full resync, peak',
      unit: 'MiB',
      groups,
      series: [
        { name: 'steady RSS', values: r.daemon.map((d) => d.steady.rssMB) },
        { name: 'RSS after last resync', values: r.daemon.map((d) => d.resyncs.at(-1)?.memory.rssMB ?? null) },
        { name: 'VmHWM', values: r.daemon.map((d) => d.hwmMB) },
      ],
    });
    out['daemon-ready.svg'] = barChart({
      title: 'Daemon: process start → every rule live',
      unit: 'ms',
      groups,
      series: [{ name: 'start → live', values: r.daemon.map((d) => d.readyMs) }],
      log: true,
    });
  }
  return out;
}

export function writeReport(dir: string, r: BenchResults): string[] {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const put = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    files.push(name);
  };
  put('results.json', JSON.stringify(r, null, 1) + '\n');
  for (const [name, svg] of Object.entries(charts(r))) put(name, svg);
  put('summary.md', summaryMarkdown(r));
  return files;
}

function arrival(l: BenchResults['latency'][number]): string {
  return (l.burst ?? 1) === 1 ? 'single' : `bursts of ${l.burst}`;
}
