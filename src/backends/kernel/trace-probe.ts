/**
 * `ferry trace --kernel`: send one marked probe packet and report what the kernel did with it,
 * so the prediction (src/plan/explain.ts) can be checked against the real data path.
 *
 * The probe: a TCP SYN (or one UDP datagram) from the traced source address to the traced
 * destination, with a random source port. Pod and external sources send it from a network
 * namespace this module creates (a veth into the node, the source address on it); node and
 * localhost sources send it from the node itself, bound to the source address. A table of our
 * own (`ferry-trace-<id>`) sets `meta nftrace` on exactly that packet before any other hook, so
 * `nft monitor trace` shows every nftables chain it passes — ferry's table in nftables mode,
 * iptables-nft's tables in iptables mode. Conntrack then says whether it was DNAT-ed (to which
 * endpoint) and masqueraded. Everything created is removed, also on failure.
 *
 * This is kernel-touching code (root, the node's namespace); the parsing is pure and exported
 * for tests.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { run } from '../../util/exec.js';

export type KernelVerdict = 'dnat' | 'reject' | 'drop' | 'untouched';

export interface KernelObservation {
  readonly verdict: KernelVerdict;
  /** The endpoint conntrack shows, for a DNAT-ed probe. */
  readonly endpoint?: { readonly ip: string; readonly port: number };
  /** A masquerade rule ran for the probe, or conntrack's reply tuple points at another address than the source. */
  readonly masqueraded: boolean;
  /** The nftables chains the probe went through, in order (`ip ferry services`, …). */
  readonly chains: readonly string[];
  /** The trace lines of the probe's first packet, as `nft monitor trace` printed them. */
  readonly lines: readonly string[];
}

export interface ProbeSpec {
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
  /** pod/external: from a namespace of our own; node/localhost: from this host. */
  readonly fromHost: boolean;
}

export class KernelTraceError extends Error {
  readonly code = 'FERRY_ERR_KERNEL_TRACE';
  constructor(
    readonly step: string,
    detail: string,
  ) {
    super(`--kernel: ${step}: ${detail}`);
    this.name = 'KernelTraceError';
  }
}

/**
 * Lines of the first traced packet (the first trace id seen), leaving out every packet whose
 * first line `skip` accepts (the readiness canary's). Pure.
 */
export function firstPacketLines(monitorOutput: string, skip?: (firstLine: string) => boolean): string[] {
  let id: string | undefined;
  const skipped = new Set<string>();
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of monitorOutput.split('\n')) {
    const line = raw.trim();
    const m = /^trace id ([0-9a-f]+) (.*)$/.exec(line);
    if (!m) continue;
    const lineId = m[1]!;
    if (!seen.has(lineId)) {
      seen.add(lineId);
      if (skip?.(line)) skipped.add(lineId);
    }
    if (skipped.has(lineId)) continue;
    id ??= lineId;
    if (lineId === id) out.push(line);
  }
  return out;
}

/** Whether a trace line shows the readiness canary: a datagram to loopback port `port`. Pure. */
export function isCanaryLine(line: string, loopback: string, port: number): boolean {
  return line.includes(` daddr ${loopback} `) && new RegExp(`\\budp dport ${port}(\\s|$)`).test(line);
}

/** Whether `nft monitor trace` output shows the canary yet. Pure. */
export function canarySeen(monitorOutput: string, loopback: string, port: number): boolean {
  return monitorOutput.split('\n').some((l) => isCanaryLine(l, loopback, port));
}

/** Verdict, chains and NAT from trace lines and the conntrack reply tuple. Pure. */
export function observe(lines: readonly string[], ownTable: string, spec: ProbeSpec, reply: { src: string; sport: number; dst: string } | undefined): KernelObservation {
  const chains: string[] = [];
  let dropped = false;
  let rejected = false;
  // Masquerading the node's own traffic may keep its address (a node IP masquerades to itself),
  // so conntrack alone cannot tell: the executed masquerade rule can.
  let masqueradeRule = false;
  for (const line of lines) {
    const m = /^trace id [0-9a-f]+ (\S+) (\S+) (\S+) (.*)$/.exec(line);
    if (!m) continue;
    const [, fam, table, chain, rest] = m as unknown as [string, string, string, string, string];
    if (table === ownTable) continue;
    const name = `${fam} ${table} ${chain}`;
    if (chains[chains.length - 1] !== name) chains.push(name);
    if (/\(verdict drop\)/.test(rest) || /^policy drop/.test(rest)) {
      if (/\breject\b|REJECT/.test(rest)) rejected = true;
      else dropped = true;
    }
    if (/^rule .*\b(reject|REJECT)\b/.test(rest)) rejected = true;
    if (/^rule (.*\s)?("?MASQUERADE"?|masquerade)(\s|$)/.test(rest)) masqueradeRule = true;
  }
  const nat = reply !== undefined && (reply.src !== spec.dst || reply.sport !== spec.port);
  const masqueraded = masqueradeRule || (reply !== undefined && reply.dst !== spec.src);
  const verdict: KernelVerdict = rejected ? 'reject' : dropped ? 'drop' : nat ? 'dnat' : 'untouched';
  return { verdict, ...(verdict === 'dnat' && reply ? { endpoint: { ip: reply.src, port: reply.sport } } : {}), masqueraded: verdict === 'dnat' && masqueraded, chains, lines };
}

/** The reply tuple of `conntrack -L` output for the probe's original source port. Pure. */
export function replyTuple(conntrackOutput: string, sport: number): { src: string; sport: number; dst: string } | undefined {
  for (const line of conntrackOutput.split('\n')) {
    const srcs = [...line.matchAll(/\bsrc=(\S+)/g)].map((m) => m[1]!);
    const dsts = [...line.matchAll(/\bdst=(\S+)/g)].map((m) => m[1]!);
    const sports = [...line.matchAll(/\bsport=(\d+)/g)].map((m) => Number(m[1]));
    if (srcs.length < 2 || dsts.length < 2 || sports.length < 2 || sports[0] !== sport) continue;
    return { src: srcs[1]!, sport: sports[1]!, dst: dsts[1]! };
  }
  return undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How long `nft monitor trace` may take to subscribe (it lists the ruleset first: seconds at 44k Services). */
const MONITOR_READY_MS = 15_000;

/** The script the probe process runs: one SYN or datagram from src:sport, then exit. */
function senderScript(spec: ProbeSpec, sport: number): string {
  const j = JSON.stringify;
  if (spec.protocol === 'UDP') {
    return `const s=require('dgram').createSocket(${j(spec.src.includes(':') ? 'udp6' : 'udp4')});s.bind(${sport},${j(spec.src)},()=>s.send('ferry-trace',${spec.port},${j(spec.dst)},()=>setTimeout(()=>process.exit(0),300)));`;
  }
  return `const c=require('net').connect({host:${j(spec.dst)},port:${spec.port},localAddress:${j(spec.src)},localPort:${sport}});c.on('error',()=>{});c.on('connect',()=>c.destroy());setTimeout(()=>process.exit(0),700);`;
}

/**
 * Sends the probe and returns what the kernel did. Needs root, nft and conntrack, and runs in
 * the current (node's) network namespace. SCTP is refused (Node cannot send it).
 */
export async function kernelProbe(spec: ProbeSpec, nodeExec: string = process.execPath): Promise<KernelObservation> {
  if (spec.protocol === 'SCTP') throw new KernelTraceError('probe', 'SCTP probes are not supported');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new KernelTraceError('probe', 'needs root (it creates a network namespace and an nftables table)');
  const id = randomBytes(3).toString('hex');
  const fam = spec.dst.includes(':') ? 'ip6' : 'ip';
  const table = `ferry-trace-${id}`;
  const ns = `ferry-trace-${id}`;
  const hostIf = `ftr${id}h`;
  const sport = 20000 + (randomBytes(2).readUInt16BE() % 40000);
  const l4 = spec.protocol.toLowerCase();
  const cleanups: (() => Promise<unknown>)[] = [];
  let monitor: ReturnType<typeof spawn> | undefined;
  // Ctrl-C while the namespace and table exist: remove them, then exit as interrupted.
  const onSignal = (): void => {
    void Promise.all(cleanups.reverse().map((c) => c().catch(() => undefined))).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const match = `${fam} saddr ${spec.src} ${fam} daddr ${spec.dst} ${l4} sport ${sport} ${l4} dport ${spec.port} meta nftrace set 1`;
    // The canary: a datagram to a closed loopback port, traced too, sent until `nft monitor`
    // shows it — proof that the monitor is subscribed before the probe goes out.
    const loopback = fam === 'ip' ? '127.0.0.1' : '::1';
    const canaryPort = 40000 + (randomBytes(2).readUInt16BE() % 20000);
    const script = [
      `add table ${fam} ${table}`,
      `add chain ${fam} ${table} pre { type filter hook prerouting priority -400; }`,
      `add chain ${fam} ${table} out { type filter hook output priority -400; }`,
      `add rule ${fam} ${table} pre ${match}`,
      `add rule ${fam} ${table} out ${match}`,
      `add rule ${fam} ${table} out ${fam} daddr ${loopback} udp dport ${canaryPort} meta nftrace set 1`,
    ].join('\n');
    cleanups.push(() => run(['nft', 'delete', 'table', fam, table], { allowFailure: true }));
    await run(['nft', '-f', '-'], { input: script }).catch((e: unknown) => {
      throw new KernelTraceError('nft', e instanceof Error ? e.message : String(e));
    });

    let senderPrefix: string[] = [];
    if (!spec.fromHost) {
      // A namespace whose only link is a veth into this node: the probe arrives as a pod's or a
      // client's packet would, through prerouting.
      cleanups.push(() => run(['ip', 'netns', 'delete', ns], { allowFailure: true }));
      cleanups.push(() => run(['ip', 'link', 'delete', hostIf], { allowFailure: true }));
      const steps: string[][] = [
        ['ip', 'netns', 'add', ns],
        ['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns],
        ['ip', 'link', 'set', hostIf, 'up'],
        ['ip', '-n', ns, 'link', 'set', 'lo', 'up'],
        ['ip', '-n', ns, 'link', 'set', 'eth0', 'up'],
        ['ip', '-n', ns, 'addr', 'add', `${spec.src}/${fam === 'ip' ? 32 : 128}`, 'dev', 'eth0', ...(fam === 'ip6' ? ['nodad'] : [])],
      ];
      for (const argv of steps) await run(argv);
      const mac = (await run(['cat', `/sys/class/net/${hostIf}/address`])).stdout.trim();
      // No address on the node's side: a fixed next hop with a static neighbour entry for the
      // veth's MAC is enough to deliver the probe to the node.
      const gw = fam === 'ip' ? '169.254.0.1' : 'fe80::1';
      await run(['ip', '-n', ns, 'neigh', 'add', gw, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent']);
      await run(['ip', '-n', ns, ...(fam === 'ip6' ? ['-6'] : []), 'route', 'add', 'default', 'via', gw, 'dev', 'eth0', 'onlink']);
      if (fam === 'ip') await run(['sysctl', '-q', '-w', `net.ipv4.conf.${hostIf}.rp_filter=0`], { allowFailure: true });
      senderPrefix = ['ip', 'netns', 'exec', ns];
    }

    let text = '';
    let monitorError: Error | undefined;
    monitor = spawn('nft', ['monitor', 'trace'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Without a listener a failed spawn (no nft, no file descriptors left) would end the process.
    monitor.on('error', (e) => (monitorError = e));
    monitor.stdout?.setEncoding('utf8');
    monitor.stdout?.on('data', (c: string) => (text += c));
    const mon = monitor;
    cleanups.push(async () => {
      if (mon.exitCode === null) mon.kill('SIGTERM');
    });
    // `nft monitor` prints nothing when it is subscribed (and reads the whole ruleset first, which
    // takes a while on a loaded node): the canary shows when it listens.
    const canary = createSocket(fam === 'ip' ? 'udp4' : 'udp6');
    canary.on('error', () => undefined);
    try {
      const until = Date.now() + MONITOR_READY_MS;
      while (!canarySeen(text, loopback, canaryPort) && monitorError === undefined && mon.exitCode === null && Date.now() < until) {
        canary.send('ferry-trace-canary', canaryPort, loopback);
        await sleep(50);
      }
    } finally {
      canary.close();
    }
    if (!canarySeen(text, loopback, canaryPort) && monitorError === undefined) {
      throw new KernelTraceError('nft monitor trace', `not listening after ${MONITOR_READY_MS / 1000} s (its loopback canary was never traced)`);
    }
    await run([...senderPrefix, nodeExec, '-e', senderScript(spec, sport)], { allowFailure: true, timeoutMs: 5000 });
    await sleep(300);
    const ct = await run(['conntrack', '-L', '-f', fam === 'ip' ? 'ipv4' : 'ipv6', '-p', l4, '--orig-port-src', String(sport)], { allowFailure: true });
    cleanups.push(() => run(['conntrack', '-D', '-f', fam === 'ip' ? 'ipv4' : 'ipv6', '-p', l4, '--orig-port-src', String(sport)], { allowFailure: true }));
    const lines = firstPacketLines(text, (first) => isCanaryLine(first, loopback, canaryPort));
    if (monitorError) throw new KernelTraceError('nft monitor trace', `cannot run it: ${monitorError.message}`);
    if (lines.length === 0) throw new KernelTraceError('nft monitor trace', 'no trace of the probe packet was seen (is the source address routable from this node?)');
    return observe(lines, table, spec, replyTuple(ct.stdout, sport));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }
}
