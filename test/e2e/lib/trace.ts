/**
 * `ferry trace` against what the wire showed: after a flow's probes, ask the proxying node's
 * daemon through the real CLI (`bin/ferry trace ... -o json`, run inside the node's namespace)
 * and check that its verdict, endpoint set and masquerade equal what the probes observed.
 * In the kernel NAT modes the same call passes --kernel, so a marked probe packet also checks
 * the prediction against nft monitor trace and conntrack.
 * Mode-neutral: the mode's own expectations (modes.ts) already decided what the wire shows.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ipaddr from 'ipaddr.js';
import type { ProbeResult, ProbeTarget, Vantage } from '../../../src/sim/cluster/index.js';
import { SCRUB, childEnv } from './child-env.js';
import type { Assert } from './assert.js';
import type { ProxyEnv } from './harness.js';
import { summarize } from './results.js';

const FERRY_BIN = join(fileURLToPath(new URL('../../../../', import.meta.url)), 'bin', 'ferry');

/** What trace -o json returns, as far as the suite reads it. */
interface TraceJSON {
  verdict: { kind: string; reason: string };
  endpoints: { ip: string; port: number }[];
  affinitySeconds: number;
  masquerade: { value: 'yes' | 'no' | 'hairpin'; reason: string };
  match: { service: string } | null;
  /** With --kernel (kernel modes): what a real probe packet met, and whether that agrees. */
  kernel?: { agrees: boolean; differences: string[]; observed: { verdict: string; chains: string[] } };
}

export interface TraceCheck {
  /** The vantage the probes came from (decides --from and, for pods, the node asked). */
  from: Vantage;
  /** Its source address as the proxying node sees it. */
  src: string;
  target: ProbeTarget;
  /** The node whose ferry handled the flow (default: the pod's node, or the node itself). */
  via?: string;
  /** For flows that failed: which refusal the test asserted. */
  refused?: 'reject' | 'drop';
  /**
   * The probes saw every endpoint the flow may use (the test asserts the exact set). False for
   * flows with few probes, where only "every pod seen is a traced endpoint" can be required.
   */
  allEndpointsSeen?: boolean;
}

/** Runs `bin/ferry ARGS` inside a node's namespace (where its daemon's debug address is). */
export function ferryCli(env: ProxyEnv, node: string, args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  const argv = ['env', ...SCRUB, process.execPath, FERRY_BIN, ...args];
  return env.cluster.exec(env.cluster.node(node).netns, argv, { allowFailure: true, env: childEnv(), timeoutMs: 30_000 });
}

function norm(ip: string): string {
  return ipaddr.parse(ip).toNormalizedString();
}

/** Runs `ferry trace` for the flow in the proxying node and asserts it agrees with `rs`. */
export async function traceAgrees(t: Assert, env: ProxyEnv, rs: readonly ProbeResult[], c: TraceCheck, what: string): Promise<void> {
  const via = c.via ?? (c.from.kind === 'pod' ? env.cluster.pod(c.from.pod).node : c.from.kind === 'node' ? c.from.node : undefined);
  if (via === undefined) throw new Error(`${what}: traceAgrees needs 'via' for a flow from ${c.from.kind}`);
  const node = env.cluster.node(via);
  const cls = c.from.kind === 'pod' ? 'pod' : c.from.kind === 'node' ? 'node' : 'external';
  const dst = c.target.addr.includes(':') ? `[${c.target.addr}]` : c.target.addr;
  const kernel = env.mode === 'nftables' || env.mode === 'iptables' ? ['--kernel'] : [];
  const r = await ferryCli(env, node.name, ['trace', c.src, `${dst}:${c.target.port}/${c.target.proto}`, '--from', cls, '-o', 'json', '--address', '127.0.0.1:10249', ...kernel]);
  // Exit 3: explained, but the kernel disagreed (asserted below with the details).
  if (!t.ok(r.exitCode === 0 || (r.exitCode === 3 && kernel.length > 0), `${what}: ferry trace${kernel.length ? ' --kernel' : ''} on ${via} answers (${r.stderr.trim() || 'ok'})`)) return;
  const tr = JSON.parse(r.stdout) as TraceJSON;
  if (kernel.length > 0) {
    const k = tr.kernel;
    t.ok(k?.agrees === true, `${what}: --kernel: the probe packet agrees with the prediction${k ? ` (kernel: ${k.observed.verdict} via ${k.observed.chains.join(' → ')}${k.differences.length ? `; ${k.differences.join('; ')}` : ''})` : ': no kernel result'}`);
  }
  const said = `trace said ${tr.verdict.kind} (${tr.verdict.reason}), endpoints [${tr.endpoints.map((e) => e.ip).join(' ')}], masquerade ${tr.masquerade.value}`;

  const answered = rs.filter((x) => x.ok);
  const observed = answered.length === rs.length && rs.length > 0 ? 'dnat' : (c.refused ?? 'refused (unspecified)');
  t.ok(tr.verdict.kind === observed, `${what}: trace verdict is ${observed} as on the wire; ${said}; wire: ${summarize(rs)}`);
  if (observed !== 'dnat') {
    t.ok(tr.endpoints.length === 0, `${what}: no endpoints traced for a refused flow; ${said}`);
    return;
  }

  // Endpoint set: the pods that answered, by their address of the destination's family.
  const v6 = c.target.addr.includes(':');
  const podIP = (name: string): string => {
    const p = env.cluster.pod(name);
    return norm(v6 ? (p.ip6 ?? p.ip) : p.ip);
  };
  const seen = new Set(answered.map((x) => (x.pod ? podIP(x.pod) : '?')));
  const traced = new Set(tr.endpoints.map((e) => norm(e.ip)));
  const subset = [...seen].every((ip) => traced.has(ip));
  const exact = tr.affinitySeconds > 0 ? seen.size === 1 : c.allEndpointsSeen === false || seen.size === traced.size;
  t.ok(subset && exact, `${what}: traced endpoints match those that answered (${[...seen].join(' ')}); ${said}`);

  // Masquerade: what the endpoints saw.
  // The node's own traffic leaves with whichever of its addresses the route picks (its node IP,
  // or the pod gateway towards a local pod): any node address is its own, not masquerading.
  const origin = c.from.kind === 'node' ? env.sourceMatches('node', c.src, via) : env.sourceMatches('origin', c.src, via);
  const masq = env.sourceMatches('node', c.src, via);
  const bad = answered.filter((x) => {
    const expectMasq = tr.masquerade.value === 'yes' || (tr.masquerade.value === 'hairpin' && x.pod !== undefined && podIP(x.pod) === norm(c.src));
    return expectMasq ? !masq(x.seenIP) : !origin(x.seenIP);
  });
  t.ok(bad.length === 0, `${what}: masquerade ${tr.masquerade.value} (${tr.masquerade.reason}) matches the sources endpoints saw; ${bad.length ? `but: ${summarize(bad)}` : 'ok'}`);
}
