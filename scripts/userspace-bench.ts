/**
 * Userspace mode's data-path benchmark: single-connection throughput and new-connection rate from
 * an outside client through the node to an endpoint, three ways:
 *   direct      client → (routed by the node) → endpoint
 *   kernel-nat  client → node:31080 → nft DNAT → endpoint (what nftables/iptables modes do)
 *   userspace   client → node:30080 → ferry's userspace forwarder → endpoint
 * Everything runs in fresh `fyt<rand>` namespaces, removed at the end. Not a test: numbers only.
 *
 *   node dist/scripts/userspace-bench.js [--bytes 1073741824] [--conns 3000] [--runs 3] [--json out.json]
 */
import { writeFileSync } from 'node:fs';
import { serializeTables } from '../src/backends/dryrun/serialize.js';
import { runIn } from '../src/util/exec.js';
import { ep, fwd, svc, tables } from '../test/unit/backends/userspace/fixtures.js';
import { Agent, ScriptTeardown, buildTopology } from '../test/e2e/userspace/harness.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const BYTES = arg('bytes', 1 << 30);
const CONNS = arg('conns', 3000);
const RUNS = arg('runs', 3);
const jsonIdx = process.argv.indexOf('--json');
const jsonOut = jsonIdx >= 0 ? process.argv[jsonIdx + 1] : undefined;

interface PathResult {
  path: string;
  throughputMBps: number[];
  connPerSecSerial: number[];
  connPerSecParallel32: number[];
  failed: number;
  /** ferry's CPU (ms) per GB streamed and per 1000 connections; userspace path only. */
  ferryCpuMsPerGB?: number;
  ferryCpuMsPer1000Conns?: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function main(): Promise<void> {
  const td = new ScriptTeardown();
  try {
    const topo = await buildTopology(td, 1);
    const P1 = topo.podIPs[0] as string;
    const pods = Agent.start(td, topo.pods, 'pods');
    const ferry = Agent.start(td, topo.node, 'ferry');
    const client = Agent.start(td, topo.client, 'client');
    // The pods agent serves hello/echo on :8080 and a sink on :8081.
    await pods.call({ op: 'serve', tcp: [{ ip: P1, port: 8080 }] });

    await runIn(topo.node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await runIn(topo.node, ['nft', '-f', '-'], {
      input: [
        'table ip fbench {',
        '  chain pre { type nat hook prerouting priority -100; policy accept;',
        `    tcp dport 31080 dnat to ${P1}:8080`,
        `    tcp dport 31081 dnat to ${P1}:8081`,
        '  }',
        '}',
      ].join('\n'),
    });

    const hello = svc({ name: 'hello', clusterIP: '198.19.0.10', port: 80, nodePort: 30080, internal: fwd(ep(P1, 8080)) });
    const sink = svc({ name: 'sink', clusterIP: '198.19.0.10', port: 81, nodePort: 30081, internal: fwd(ep(P1, 8081)) });
    await ferry.call({ op: 'ferryStart' });
    const ir = tables([hello, sink], [], { nodeIPs: [topo.nodeIP], nodePortAddresses: { kind: 'list', addresses: [topo.nodeIP] } });
    await ferry.call({ op: 'ferrySync', tables: serializeTables(ir), full: true, tableChanged: true });

    const paths: { path: string; ip: string; helloPort: number; sinkPort: number }[] = [
      { path: 'direct', ip: P1, helloPort: 8080, sinkPort: 8081 },
      { path: 'kernel-nat', ip: topo.nodeIP, helloPort: 31080, sinkPort: 31081 },
      { path: 'userspace', ip: topo.nodeIP, helloPort: 30080, sinkPort: 30081 },
    ];
    const results: PathResult[] = [];
    for (const p of paths) {
      const r: PathResult = { path: p.path, throughputMBps: [], connPerSecSerial: [], connPerSecParallel32: [], failed: 0 };
      // Warm-up (JIT, ARP, conntrack).
      await client.call({ op: 'benchConnect', ip: p.ip, port: p.helloPort, count: 200, concurrency: 4 });
      let cpuStream = 0;
      let cpuConns = 0;
      for (let i = 0; i < RUNS; i++) {
        const c0 = await ferry.call<number>({ op: 'cpu' });
        const ms = await client.call<number>({ op: 'benchStream', ip: p.ip, port: p.sinkPort, bytes: BYTES });
        const c1 = await ferry.call<number>({ op: 'cpu' });
        cpuStream += c1 - c0;
        r.throughputMBps.push(BYTES / 1e6 / (ms / 1000));
        const serial = await client.call<{ ms: number; failed: number }>({ op: 'benchConnect', ip: p.ip, port: p.helloPort, count: CONNS, concurrency: 1 });
        r.connPerSecSerial.push(CONNS / (serial.ms / 1000));
        const par = await client.call<{ ms: number; failed: number }>({ op: 'benchConnect', ip: p.ip, port: p.helloPort, count: CONNS, concurrency: 32 });
        r.connPerSecParallel32.push(CONNS / (par.ms / 1000));
        cpuConns += (await ferry.call<number>({ op: 'cpu' })) - c1;
        r.failed += serial.failed + par.failed;
      }
      if (p.path === 'userspace') {
        r.ferryCpuMsPerGB = cpuStream / ((RUNS * BYTES) / 1e9);
        r.ferryCpuMsPer1000Conns = cpuConns / ((RUNS * 2 * CONNS) / 1000);
      }
      results.push(r);
      process.stderr.write(`${p.path}: done\n`);
    }

    const base = results.find((r) => r.path === 'kernel-nat');
    const lines = ['path          MB/s (median)   conn/s serial   conn/s x32   failed   vs kernel-nat (MB/s, conn/s x32)'];
    for (const r of results) {
      const mb = median(r.throughputMBps);
      const c1 = median(r.connPerSecSerial);
      const c32 = median(r.connPerSecParallel32);
      const rel = base ? `${((mb / median(base.throughputMBps)) * 100).toFixed(0)}%, ${((c32 / median(base.connPerSecParallel32)) * 100).toFixed(0)}%` : '';
      lines.push(
        `${r.path.padEnd(13)} ${mb.toFixed(0).padStart(13)}   ${c1.toFixed(0).padStart(13)}   ${c32.toFixed(0).padStart(10)}   ${String(r.failed).padStart(6)}   ${rel}`,
      );
    }
    const us = results.find((r) => r.path === 'userspace');
    if (us) {
      lines.push(
        `ferry CPU: ${us.ferryCpuMsPerGB?.toFixed(0)} ms per GB forwarded, ${us.ferryCpuMsPer1000Conns?.toFixed(0)} ms per 1000 connections`,
      );
    }
    process.stdout.write(lines.join('\n') + '\n');
    const stats = await ferry.call({ op: 'ferryStats' });
    if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ bytes: BYTES, conns: CONNS, runs: RUNS, results, ferryStats: stats }, null, 2));
  } finally {
    await td.run();
  }
}

await main();
