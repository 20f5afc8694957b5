/**
 * Removing kube-proxy's (and ferry's) iptables chains: from `iptables-save` output of one table,
 * the restore input that deletes the chains of kube-proxy's iptables and ipvs layouts (ferry's
 * iptables mode writes the former), and the rules in built-in chains that jump to them. Chains
 * of other programs are never touched, other KUBE-* chains included (kubelet's, kube-router's
 * KUBE-ROUTER-* and network policy chains): if a foreign chain jumps to one of ours, that chain
 * (and what it reaches) is kept rather than editing the foreign chain.
 *
 * planCleanup is pure; runCleanup does the I/O through an IptablesRunner.
 */
import type { IPFamily } from '../../plan/types.js';
import type { Logger } from '../../util/log.js';
import { Chain, KUBELET_CHAINS, SERVICE_CHAIN_PREFIXES } from './names.js';
import { chainOfLine, type IptablesRunner } from './runner.js';

export const CLEANUP_TABLES = ['mangle', 'filter', 'nat'] as const;

const BUILTIN = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

const LAYOUT_CHAINS: ReadonlySet<string> = new Set([
  Chain.services, Chain.externalServices, Chain.nodePorts, Chain.postrouting, Chain.markMasq, Chain.forward, Chain.proxyFirewall, Chain.canary,
  // kube-proxy's ipvs mode (pkg/proxy/ipvs/proxier.go): a node switched from it keeps them.
  'KUBE-NODE-PORT', 'KUBE-LOAD-BALANCER', 'KUBE-SOURCE-RANGES-FIREWALL', 'KUBE-IPVS-FILTER', 'KUBE-IPVS-OUT-FILTER',
]);

/**
 * The chains kube-proxy's layouts name (its CleanupLeftovers removes the same): what another
 * mode removes at every start and what `--cleanup` removes. Never another program's KUBE-*
 * chain (kubelet's; kube-router's KUBE-ROUTER-*, its network policy chains), which ferry cannot
 * know: until 2026-12-07 `--cleanup` took every KUBE-* chain but kubelet's, and with them
 * kube-router's network policy.
 */
export function isKubeProxyLayout(chain: string): boolean {
  if (KUBELET_CHAINS.has(chain)) return false;
  return LAYOUT_CHAINS.has(chain) || SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

const TARGET = /\s-[jg]\s+(\S+)/;

/** Chain names declared in save output (`:NAME POLICY [p:b]`). */
export function chainsInSave(save: string): string[] {
  const out: string[] = [];
  for (const line of save.split('\n')) chainOfLine(line, out);
  return out;
}

export interface CleanupPlan {
  /** Restore input for this table, or '' when there is nothing to remove. */
  readonly input: string;
  readonly deleted: readonly string[];
  /** Our chains kept because a foreign chain still jumps to them. */
  readonly kept: readonly string[];
}

export function planCleanup(table: string, save: string, isOursHere: (chain: string) => boolean = isKubeProxyLayout): CleanupPlan {
  const chains = chainsInSave(save).filter(isOursHere);
  if (chains.length === 0) return { input: '', deleted: [], kept: [] };
  const ours = new Set(chains);
  const jumpsFrom = new Map<string, string[]>(); // our chain → our chains it jumps to
  const unlink: string[] = [];
  const pinned: string[] = [];
  for (const line of save.split('\n')) {
    if (!line.startsWith('-A ')) continue;
    const sp = line.indexOf(' ', 3);
    const chain = line.slice(3, sp < 0 ? undefined : sp);
    const m = TARGET.exec(line);
    if (!m || !ours.has(m[1]!)) continue;
    const target = m[1]!;
    if (ours.has(chain)) {
      const l = jumpsFrom.get(chain);
      if (l) l.push(target);
      else jumpsFrom.set(chain, [target]);
    } else if (BUILTIN.has(chain)) {
      unlink.push(`-D ${line.slice(3)}`);
    } else {
      pinned.push(target);
    }
  }
  const kept = new Set<string>();
  const stack = [...pinned];
  while (stack.length > 0) {
    const c = stack.pop()!;
    if (kept.has(c)) continue;
    kept.add(c);
    for (const t of jumpsFrom.get(c) ?? []) stack.push(t);
  }
  const deleted = chains.filter((c) => !kept.has(c)).sort();
  const lines = [`*${table}`];
  for (const c of deleted) lines.push(`:${c} - [0:0]`);
  for (const l of unlink) {
    const m = TARGET.exec(l);
    if (m && kept.has(m[1]!)) continue;
    lines.push(l);
  }
  for (const c of deleted) lines.push(`-X ${c}`);
  lines.push('COMMIT');
  return { input: deleted.length > 0 || unlink.length > 0 ? lines.join('\n') + '\n' : '', deleted, kept: [...kept].sort() };
}

/**
 * Cleans one family through one runner; returns the chains deleted. Absent chains are not an
 * error. `tables`: the tables that exist, where asking for another would create it (legacy).
 */
export async function runCleanup(runner: IptablesRunner, family: IPFamily, log?: Logger, ours: (chain: string) => boolean = isKubeProxyLayout, tables?: ReadonlySet<string>): Promise<string[]> {
  let input = '';
  const deleted: string[] = [];
  for (const table of CLEANUP_TABLES) {
    if (tables && !tables.has(table)) continue;
    const plan = planCleanup(table, await runner.save(family, table), ours);
    if (plan.kept.length > 0) log?.warn('kept chains that another program still jumps to', { family, table, chains: plan.kept.join(',') });
    input += plan.input;
    for (const c of plan.deleted) deleted.push(`${table}/${c}`);
  }
  // One restore for all three tables of this family.
  if (input) await runner.restore(family, input);
  return deleted;
}
