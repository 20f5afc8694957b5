/**
 * `ferry trace` and `ferry status`: ask a running daemon (its debug address, /debug/trace and
 * /debug/status) and print the answer as text or JSON. This module parses arguments, talks HTTP
 * and formats; the explanation itself is computed by the daemon (src/plan/explain.ts).
 * Bad input and an unreachable daemon end in a CliError: one line, non-zero exit.
 */
import { Command, Option } from 'commander';
import { request } from 'node:http';
import { TRAFFIC_CLASSES, TraceInputError, validateQuery, type Trace, type TraceQuery } from '../plan/explain.js';
import type { StatusReport, SyncRecord } from '../proxy/introspect.js';
import type { KernelObservation } from '../backends/kernel/trace-probe.js';

export const DEFAULT_DEBUG_ADDRESS = '127.0.0.1:10249';

/** A failure the user can act on; main.ts prints its message as one line and exits 1. */
export class CliError extends Error {
  readonly code = 'FERRY_ERR_CLI';
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

/** `IP:PORT`, `[IPv6]:PORT`, each with an optional `/tcp|udp|sctp`. */
export function parseDestination(text: string): { dst: string; port: string; protocol: string } {
  let rest = text.trim();
  let protocol = 'TCP';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    protocol = rest.slice(slash + 1);
    rest = rest.slice(0, slash);
  }
  let m = /^\[([^\]]+)\]:([^:]*)$/.exec(rest);
  if (!m) m = /^([^:[\]]+):([^:]*)$/.exec(rest);
  if (!m) throw new TraceInputError(`destination ${JSON.stringify(text)} is not ADDRESS:PORT[/PROTO] (IPv6 as [ADDRESS]:PORT)`);
  return { dst: m[1]!, port: m[2]!, protocol };
}

function baseURL(address: string): string {
  const a = address.trim();
  if (/^https?:\/\//.test(a)) return a.replace(/\/+$/, '');
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/.test(a)) throw new CliError(`--address ${JSON.stringify(address)} is not HOST:PORT`);
  return `http://${a}`;
}

/** GET a debug path; resolves with status and parsed JSON, or throws CliError saying who did not answer. */
export function getDebug(address: string, path: string, timeoutMs = 5000): Promise<{ status: number; body: unknown }> {
  const url = `${baseURL(address)}${path}`;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown });
        } catch {
          reject(new CliError(`${url} answered HTTP ${res.statusCode ?? '?'} without JSON: is that a ferry daemon's debug address (--metrics-bind-address)?`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new CliError(`no ferry daemon answers at ${baseURL(address)} (${e.code ?? e.message}); is ferry running there? pass its --metrics-bind-address with --address`)));
    req.end();
  });
}

/** An IPv6-primary daemon's default debug address (docs/cli.md, --bind-address). */
const DEFAULT_DEBUG_ADDRESS6 = '[::1]:10249';

/** getDebug, trying the IPv6 default too when the IPv4 default does not answer. */
async function getDebugDefault(address: string, path: string): Promise<{ status: number; body: unknown; address: string }> {
  try {
    return { ...(await getDebug(address, path)), address };
  } catch (e) {
    if (address !== DEFAULT_DEBUG_ADDRESS || !(e instanceof CliError)) throw e;
    try {
      return { ...(await getDebug(DEFAULT_DEBUG_ADDRESS6, path)), address: DEFAULT_DEBUG_ADDRESS6 };
    } catch {
      throw e;
    }
  }
}

function errorOf(body: unknown): string | undefined {
  const e = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).error : undefined;
  return typeof e === 'string' ? e : undefined;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

const FRONTEND_NAMES = { clusterIP: 'ClusterIP', nodePort: 'NodePort', externalIP: 'externalIP', loadBalancerIP: 'LoadBalancer IP' } as const;

export function formatTrace(t: Trace): string {
  const out: string[] = [];
  const row = (label: string, text: string): void => {
    out.push(`${label.padEnd(12)}${text}`);
  };
  out.push(`trace ${t.src} → ${hostPort(t.dst, t.port)}/${t.protocol} on node ${t.node} (${t.mode} mode)`);
  row('source', `${t.traffic.class} — ${t.traffic.reason}`);
  if (t.match) {
    const m = t.match;
    const svc = `${m.namespace}/${m.name}${m.portName ? `:${m.portName}` : ''}`;
    row('matched', `${FRONTEND_NAMES[m.frontend]} ${hostPort(m.address, m.port)} of Service ${svc} (${t.protocol})`);
  } else row('matched', `no Service port — ${t.why}`);
  t.policy.forEach((p, i) => row(i === 0 ? 'policy' : '', p));
  if (t.endpointSet) {
    const eps = t.endpoints.map((e) => `${hostPort(e.ip, e.port)}${e.local ? ' (local)' : ''}${e.ready ? '' : ' (terminating)'}`);
    row('endpoints', eps.length ? `${t.endpointSet} set: ${eps.join(', ')}` : `${t.endpointSet} set: none`);
  }
  row('masquerade', `${t.masquerade.value} — ${t.masquerade.reason}`);
  const verdict =
    t.verdict.kind === 'dnat' ? `DNAT to {${t.endpoints.map((e) => hostPort(e.ip, e.port)).join(', ')}}` : t.verdict.kind === 'untouched' ? 'untouched' : t.verdict.kind.toUpperCase();
  row('verdict', `${verdict} — ${t.verdict.reason}`);
  if (t.path.length > 0) {
    out.push(`path (${t.mode}):`);
    const width = Math.min(60, Math.max(...t.path.map((s) => s.at.length)));
    for (const s of t.path) out.push(`  ${s.at.padEnd(width)}  ${s.does}`);
  }
  return out.join('\n') + '\n';
}

function ago(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

function syncLine(r: SyncRecord | undefined, now: number): string {
  if (!r) return 'none yet';
  const ops = r.backendOperations !== undefined ? `, ${r.backendOperations} backend operations` : '';
  return `${r.at} (${ago(r.at, now)}), ${r.durationMs} ms, ${r.servicePorts} service ports${ops}${r.reason ? ` (${r.reason})` : ''}`;
}

export function formatStatus(s: StatusReport, now: number = Date.now()): string {
  const out: string[] = [];
  const row = (label: string, text: string): void => {
    out.push(`${label.padEnd(16)}${text}`);
  };
  row('node', `${s.node} (IPv${s.families.join(', IPv')})`);
  row('mode', `${s.mode}${s.fallback ? ` — FALLBACK: --proxy-mode ${s.configuredMode} could not be used` : ''}${s.nftablesApplyPath ? ` (applied via ${s.nftablesApplyPath})` : ''}`);
  row('health', s.healthy ? 'healthy' : 'UNHEALTHY (a change waits longer than the health timeout)');
  row('API server', s.apiServer.server || '(unknown)');
  for (const w of s.apiServer.watches) {
    const state = w.consecutiveFailures > 0 ? `FAILING (${w.consecutiveFailures} attempts)` : w.notServed ? 'not served by this API server (none)' : w.synced ? 'synced, watching' : 'listing';
    const last = w.lastError ? `; last error ${ago(w.lastError.at, now)}: ${w.lastError.error}` : '';
    row('', `${w.resource.padEnd(15)} ${state}${last}`);
  }
  row('syncs', `${s.syncs.total} (${s.syncs.failures} failed${s.syncs.consecutiveFailures > 0 ? `, ${s.syncs.consecutiveFailures} in a row now` : ''})`);
  row('last full', syncLine(s.syncs.lastFull, now));
  row('last partial', syncLine(s.syncs.lastPartial, now));
  const prog = s.counts.programmed ? `; ${s.counts.programmed.count} ${s.counts.programmed.what}` : '';
  row('counts', `${s.counts.servicePorts} service ports, ${s.counts.endpoints} endpoints${prog}`);
  const lt = s.lastTamper;
  const held = lt?.heldBackMs !== undefined ? `; held back ${(lt.heldBackMs / 1000).toFixed(1)} s: repairs keep coming, so they are spaced` : '';
  row('tamper repairs', lt ? `${s.tamperRepairs} (last ${ago(lt.at, now)}: ${lt.what.join('; ')} — by ${lt.by.join(', ')}${held})` : String(s.tamperRepairs));
  row('health checks', s.healthCheckServers.length ? `serving healthCheckNodePorts ${s.healthCheckServers.join(', ')}` : 'none');
  if (s.lastErrors.length === 0) row('last errors', 'none');
  else s.lastErrors.forEach((e, i) => row(i === 0 ? 'last errors' : '', `${e.at} ${e.error}`));
  return out.join('\n') + '\n';
}

function outputFormat(o: unknown): 'text' | 'json' {
  if (o === undefined || o === 'text') return 'text';
  if (o === 'json') return 'json';
  throw new CliError(`-o ${JSON.stringify(o)}: the output formats are text and json`);
}

export interface KernelCheck {
  readonly observed: KernelObservation;
  readonly agrees: boolean;
  readonly differences: readonly string[];
}

/** Does what the kernel did match the prediction? Pure. */
export function compareKernel(t: Trace, k: KernelObservation): KernelCheck {
  const diffs: string[] = [];
  if (k.verdict !== t.verdict.kind) diffs.push(`verdict: predicted ${t.verdict.kind}, the kernel's was ${k.verdict}`);
  if (k.verdict === 'dnat' && t.verdict.kind === 'dnat' && k.endpoint) {
    const ep = k.endpoint;
    if (!t.endpoints.some((e) => e.ip === ep.ip && e.port === ep.port)) diffs.push(`endpoint: the kernel chose ${hostPort(ep.ip, ep.port)}, not one of the predicted endpoints`);
    const want = t.masquerade.value === 'yes' || (t.masquerade.value === 'hairpin' && ep.ip === t.src);
    if (want !== k.masqueraded) diffs.push(`masquerade: predicted ${want ? 'yes' : 'no'}, the kernel ${k.masqueraded ? 'masqueraded' : 'did not masquerade'}`);
  }
  return { observed: k, agrees: diffs.length === 0, differences: diffs };
}

export function formatKernel(c: KernelCheck): string {
  const k = c.observed;
  const out: string[] = [];
  const what = k.verdict === 'dnat' && k.endpoint ? `DNAT to ${hostPort(k.endpoint.ip, k.endpoint.port)}, masquerade ${k.masqueraded ? 'yes' : 'no'}` : k.verdict === 'untouched' ? 'untouched' : k.verdict.toUpperCase();
  out.push(`kernel:     a probe packet went through ${k.chains.length ? k.chains.join(' → ') : 'no chain but our own'}`);
  out.push(`            ${what}`);
  out.push(c.agrees ? '            the kernel agrees with the prediction' : `            the kernel DISAGREES: ${c.differences.join('; ')}`);
  return out.join('\n') + '\n';
}

/** Runs a trace against the daemon at `address`; returns the daemon's answer. */
export async function requestTrace(address: string, q: TraceQuery): Promise<Trace> {
  const params = new URLSearchParams({ src: q.src, dst: q.dst, port: String(q.port), proto: q.protocol });
  if (q.from) params.set('from', q.from);
  const r = await getDebugDefault(address, `/debug/trace?${params.toString()}`);
  if (r.status !== 200) throw new CliError(`the daemon at ${r.address} could not trace: ${errorOf(r.body) ?? `HTTP ${r.status}`}`);
  return r.body as Trace;
}

export function registerTrace(program: Command): void {
  program
    .command('trace')
    .description("explain what the node's ferry does with a packet: matched Service port, policy, endpoints, masquerade, verdict, and the objects on its path")
    .argument('<src>', 'source address')
    .argument('<dst>', 'destination ADDRESS:PORT[/tcp|udp|sctp] (IPv6 as [ADDRESS]:PORT; default tcp)')
    .addOption(new Option('--from <class>', 'traffic class of the source (default: derived from the address and the node\'s local-traffic detector)').choices([...TRAFFIC_CLASSES]))
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--address <host:port>', "the daemon's debug address (its --metrics-bind-address; by default also [::1]:10249 is tried)", DEFAULT_DEBUG_ADDRESS)
    .option('--kernel', 'also send one marked probe packet (from a network namespace this command creates and removes) and check with nft monitor trace and conntrack that the kernel agrees; root, on the node, nftables and iptables modes')
    .addHelpText(
      'after',
      '\nWithout --kernel the daemon explains from the plan it last applied and nothing is sent. Examples:\n' +
        '  ferry trace 10.244.1.5 10.96.0.10:80\n' +
        '  ferry trace 198.18.0.100 198.18.0.11:30080/udp --from external -o json\n' +
        '  ferry trace 198.19.1.4 198.18.125.176:80 --kernel\n' +
        'Exit status: 0 when explained (and, with --kernel, the kernel agrees); 1 for bad input or when no\n' +
        'daemon answers; 3 when the kernel disagrees with the prediction.\n',
    )
    .action(async (src: string, dstText: string, opts: { from?: string; output?: string; address: string; kernel?: boolean }) => {
      const format = outputFormat(opts.output);
      let q: TraceQuery;
      try {
        const d = parseDestination(dstText);
        q = validateQuery({ src, dst: d.dst, port: d.port, protocol: d.protocol, from: opts.from });
      } catch (e) {
        if (e instanceof TraceInputError) throw new CliError(e.message);
        throw e;
      }
      const t = await requestTrace(opts.address, q);
      let check: KernelCheck | undefined;
      if (opts.kernel) {
        if (t.mode !== 'nftables' && t.mode !== 'iptables') throw new CliError(`--kernel: only the nftables and iptables modes translate with netfilter NAT that a kernel trace can follow; this node runs ${t.mode} mode`);
        if (t.protocol === 'SCTP') throw new CliError('--kernel: SCTP probes are not supported');
        // Loaded only here: plain traces never touch the kernel.
        const { kernelProbe, KernelTraceError } = await import('../backends/kernel/trace-probe.js');
        const fromHost = t.traffic.class === 'node' || t.traffic.class === 'localhost';
        try {
          check = compareKernel(t, await kernelProbe({ src: t.src, dst: t.dst, port: t.port, protocol: t.protocol, fromHost }));
        } catch (e) {
          if (e instanceof KernelTraceError) throw new CliError(e.message);
          throw new CliError(`--kernel: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
        }
        if (!check.agrees) process.exitCode = 3;
      }
      if (format === 'json') process.stdout.write(`${JSON.stringify(check ? { ...t, kernel: check } : t, null, 2)}\n`);
      else process.stdout.write(formatTrace(t) + (check ? formatKernel(check) : ''));
    });

  program
    .command('status')
    .description("the node's ferry at a glance: mode, API server watches, last syncs, counts, errors, tamper repairs, health checks")
    .option('-o, --output <format>', 'text or json', 'text')
    .option('--address <host:port>', "the daemon's debug address (its --metrics-bind-address; by default also [::1]:10249 is tried)", DEFAULT_DEBUG_ADDRESS)
    .addHelpText('after', '\nExit status: 0 when the daemon answered (whatever its health); 1 when no daemon answers.\n')
    .action(async (opts: { output?: string; address: string }) => {
      const format = outputFormat(opts.output);
      const r = await getDebugDefault(opts.address, '/debug/status');
      if (r.status !== 200) throw new CliError(`the daemon at ${r.address} did not report its status: ${errorOf(r.body) ?? `HTTP ${r.status}`}`);
      process.stdout.write(format === 'json' ? `${JSON.stringify(r.body, null, 2)}\n` : formatStatus(r.body as StatusReport));
    });
}
