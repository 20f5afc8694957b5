/**
 * The iptables compiler: (previous IR, next IR, what changed) → `iptables-restore --noflush`
 * input for one family (filter, nat and, on full syncs, mangle), in kube-proxy's layout.
 *
 * As kube-proxy does, every sync rewrites the "skeleton" whole: the five filter chains and nat
 * KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ (a `:CHAIN` line flushes a
 * chain under --noflush). A full sync also writes every service chain and deletes KUBE-SVC/SVL/
 * EXT/FW/SEP (and pre-1.24 KUBE-XLB) chains found in the kernel but no longer wanted. A partial
 * sync writes only the service chains of changed service ports whose rules differ, and deletes
 * the chains those service ports no longer use (known from `prev`, no kernel listing).
 *
 * Section order is mangle (full syncs: the canary), nat, filter; see closeSkeleton for why.
 *
 * Per-service rules are cached per ServiceEntry object (the planner hands back the same object
 * for unchanged service ports), so the skeleton costs string joins, not rule building.
 *
 * Pure: no I/O, no clock. Translates decisions made in the IR; never re-derives policy.
 */
import type { IPFamily, ProxyTable, ServiceEntry, ServicePortKey, SyncChanges } from '../../plan/types.js';
import { Chain, isServiceChain } from './names.js';
import { comment, localMatches, serviceRules, type ServiceContext, type ServiceRules } from './service.js';

export const DEFAULT_MASQUERADE_MARK = 0x4000;
/** kube-proxy's largeClusterEndpointsThreshold. */
export const LARGE_CLUSTER_THRESHOLD = 1000;

export interface CompileOptions {
  /** The masquerade mark bit value (kube-proxy's default bit 14: 0x4000). */
  readonly masqueradeMark: number;
  /** More endpoint chains than this: kube-proxy's large cluster mode (no per-endpoint comments). */
  readonly largeClusterThreshold: number;
  /** Drop ctstate INVALID in KUBE-FORWARD (kube-proxy does unless nf_conntrack_tcp_be_liberal is set). */
  readonly dropInvalid: boolean;
  /**
   * Full sync only: chains that exist in the nat table now (from iptables-save), so stale
   * service chains can be deleted.
   */
  readonly existingNatChains?: ReadonlySet<string>;
  /**
   * kube-proxy's iptables.localhostNodePorts (its default is true; absent here = false): IPv4
   * NodePorts also answer on 127.0.0.0/8 (the backend sets route_localnet=1), and filter
   * KUBE-FIREWALL drops martian packets to 127.0.0.0/8 from elsewhere (CVE-2020-8558). IPv6
   * never has localhost NodePorts (no route_localnet), as in kube-proxy.
   */
  readonly localhostNodePorts?: boolean;
}

export interface CompiledFamily {
  readonly family: IPFamily;
  readonly full: boolean;
  /** iptables-restore input (ends with a newline). */
  readonly text: string;
  readonly lines: number;
  /** Service chains written (declared and filled). */
  readonly chainsWritten: number;
  /** Service chains deleted. */
  readonly chainsDeleted: readonly string[];
  readonly largeCluster: boolean;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function chainLine(name: string): string {
  return `:${name} - [0:0]`;
}

const FILTER_CHAINS = [Chain.services, Chain.externalServices, Chain.forward, Chain.nodePorts, Chain.proxyFirewall] as const;
const NAT_CHAINS = [Chain.services, Chain.nodePorts, Chain.postrouting, Chain.markMasq] as const;

// ---- per-service caches ----

const epCounts = new WeakMap<ServiceEntry, number>();

/** Distinct endpoints over the sets that forward: kube-proxy's "total endpoints" for large cluster mode. */
export function endpointCount(svc: ServiceEntry): number {
  let n = epCounts.get(svc);
  if (n !== undefined) return n;
  const ids = new Set<string>();
  for (const set of [svc.cluster, svc.internal, svc.external]) {
    if (set.verdict !== 'forward') continue;
    for (const ep of set.endpoints) ids.add(`${ep.ip}|${ep.port}`);
  }
  n = ids.size;
  epCounts.set(svc, n);
  return n;
}

export function isLargeCluster(table: ProxyTable, threshold: number): boolean {
  let total = 0;
  for (const svc of table.services.values()) {
    total += endpointCount(svc);
    if (total > threshold) return true;
  }
  return false;
}

export function contextOf(table: ProxyTable, threshold: number): ServiceContext {
  return {
    family: table.family,
    ...localMatches(table.localTraffic),
    largeCluster: isLargeCluster(table, threshold),
  };
}

function contextKey(ctx: ServiceContext): string {
  return `${ctx.family}|${ctx.ifLocal.join(',')}|${ctx.ifNotLocal ?? ''}|${ctx.largeCluster ? 1 : 0}`;
}

const ruleCache = new WeakMap<ServiceEntry, { key: string; rules: ServiceRules }>();

export function cachedRules(svc: ServiceEntry, ctx: ServiceContext, key = contextKey(ctx)): ServiceRules {
  const hit = ruleCache.get(svc);
  if (hit && hit.key === key) return hit.rules;
  const rules = serviceRules(svc, ctx);
  ruleCache.set(svc, { key, rules });
  return rules;
}

// ---- the skeleton ----

interface Sections {
  filterChains: string[];
  filterRules: string[];
  natChains: string[];
  natRules: string[];
}

function openSkeleton(full: boolean, opts: CompileOptions): Sections {
  const mark = hex(opts.masqueradeMark);
  const s: Sections = { filterChains: [], filterRules: [], natChains: [], natRules: [] };
  for (const c of FILTER_CHAINS) s.filterChains.push(chainLine(c));
  for (const c of NAT_CHAINS) s.natChains.push(chainLine(c));
  if (full) {
    s.filterChains.push(chainLine(Chain.canary));
    s.natChains.push(chainLine(Chain.canary));
  }
  s.natRules.push(
    `-A ${Chain.postrouting} -m mark ! --mark ${mark}/${mark} -j RETURN`,
    // Clear the mark so a packet that traverses the stack again is not masqueraded twice.
    `-A ${Chain.postrouting} -j MARK --xor-mark ${mark}`,
    `-A ${Chain.postrouting} ${comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully`,
    `-A ${Chain.markMasq} -j MARK --or-mark ${mark}`,
  );
  return s;
}

function addServiceSkeleton(s: Sections, r: ServiceRules): void {
  for (const l of r.filterServices) s.filterRules.push(l);
  for (const l of r.filterExternal) s.filterRules.push(l);
  for (const l of r.filterFirewall) s.filterRules.push(l);
  for (const l of r.filterNodePorts) s.filterRules.push(l);
  for (const l of r.natServices) s.natRules.push(l);
  for (const l of r.natNodePorts) s.natRules.push(l);
}

function writeChain(s: Sections, name: string, rules: readonly string[]): void {
  s.natChains.push(chainLine(name));
  for (const l of rules) s.natRules.push(l);
}

/** Whether this table serves NodePorts on 127.0.0.0/8 (IPv4 with the option on). */
export function localhostNodePorts(table: ProxyTable, opts: Pick<CompileOptions, 'localhostNodePorts'>): boolean {
  return opts.localhostNodePorts === true && table.family === 4;
}

/** The top-level chains every sync rewrites whole, per table: what intact() checks. */
export const SKELETON_CHAINS: Readonly<Record<'nat' | 'filter', readonly string[]>> = {
  nat: NAT_CHAINS,
  filter: [...FILTER_CHAINS, Chain.kubeletFirewall],
};

export interface SkeletonChain {
  readonly table: 'nat' | 'filter';
  readonly chain: string;
  /** Rules written into it. */
  readonly rules: number;
  /** The last rule, as restore text after `-A CHAIN ` (undefined when empty). */
  readonly last: string | undefined;
}

/**
 * The skeleton chains an iptables-restore input declares, with their rule counts: every sync
 * (full or partial) declares and rewrites all of them, so after any successful sync this is what
 * the kernel holds in those chains.
 */
export function skeletonOf(text: string): SkeletonChain[] {
  const found = new Map<string, { table: 'nat' | 'filter'; chain: string; rules: number; last: string | undefined }>();
  let table: string | undefined;
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    if (line.startsWith('*')) {
      table = line.slice(1);
      continue;
    }
    if (table !== 'nat' && table !== 'filter') continue;
    const chains = SKELETON_CHAINS[table];
    if (line.startsWith(':')) {
      const name = line.slice(1, line.indexOf(' '));
      if (chains.includes(name)) found.set(`${table} ${name}`, { table, chain: name, rules: 0, last: undefined });
    } else if (line.startsWith('-A ')) {
      const sp = line.indexOf(' ', 3);
      const name = line.slice(3, sp < 0 ? undefined : sp);
      const e = found.get(`${table} ${name}`);
      if (e) {
        e.rules++;
        e.last = sp < 0 ? '' : line.slice(sp + 1);
      }
    }
  }
  return [...found.values()];
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip === '0:0:0:0:0:0:0:1';
}

function closeSkeleton(s: Sections, table: ProxyTable, full: boolean, opts: CompileOptions): string {
  // The NodePort dispatch must be the last rule of nat KUBE-SERVICES.
  const tail = comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain');
  const localhost = localhostNodePorts(table, opts);
  if (table.nodePortAddresses.kind === 'all') {
    // As kube-proxy: loopback is excluded unless localhost NodePorts are on (IPv4 only; the
    // backend then sets route_localnet=1 and KUBE-FIREWALL below blocks martians to 127/8).
    const notLoopback = table.family === 6 ? ' ! -d ::1/128' : localhost ? '' : ' ! -d 127.0.0.0/8';
    s.natRules.push(`-A ${Chain.services} ${tail} -m addrtype --dst-type LOCAL${notLoopback} -j ${Chain.nodePorts}`);
  } else {
    for (const ip of table.nodePortAddresses.addresses) {
      if (isLoopback(ip) && !localhost) continue;
      s.natRules.push(`-A ${Chain.services} ${tail} -d ${ip} -j ${Chain.nodePorts}`);
    }
  }
  if (localhost) {
    // kube-proxy's (and kubelet's) guard against CVE-2020-8558: with route_localnet=1, a packet
    // from elsewhere addressed to 127.0.0.0/8 would reach services bound to localhost.
    s.filterChains.push(chainLine(Chain.kubeletFirewall));
    s.filterRules.push(
      `-A ${Chain.kubeletFirewall} ${comment('block incoming localnet connections')} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    );
  }
  const mark = hex(opts.masqueradeMark);
  if (opts.dropInvalid) s.filterRules.push(`-A ${Chain.forward} -m conntrack --ctstate INVALID -j DROP`);
  s.filterRules.push(
    `-A ${Chain.forward} ${comment('kubernetes forwarding rules')} -m mark --mark ${mark}/${mark} -j ACCEPT`,
    `-A ${Chain.forward} ${comment('kubernetes forwarding conntrack rule')} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );
  // iptables-restore commits table by table and stops at the first failure. nat goes first: it
  // is the section that can fail (references, deletions), and when it does nothing has changed.
  // Each section joined once; no concatenated copy of the (large) arrays.
  const head = full ? `*mangle\n${chainLine(Chain.canary)}\nCOMMIT\n*nat\n` : '*nat\n';
  return (
    head +
    s.natChains.join('\n') + '\n' +
    s.natRules.join('\n') + '\nCOMMIT\n*filter\n' +
    s.filterChains.join('\n') + '\n' +
    s.filterRules.join('\n') + '\nCOMMIT\n'
  );
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

// ---- full and partial ----

/** Everything, from scratch, plus deletion of stale service chains listed in `existingNatChains`. */
export function compileFull(table: ProxyTable, opts: CompileOptions): CompiledFamily {
  const ctx = contextOf(table, opts.largeClusterThreshold);
  const key = contextKey(ctx);
  const s = openSkeleton(true, opts);
  const desired = new Set<string>();
  let written = 0;
  for (const svc of table.services.values()) {
    const r = cachedRules(svc, ctx, key);
    addServiceSkeleton(s, r);
    for (const [name, rules] of r.chains) {
      desired.add(name);
      writeChain(s, name, rules);
      written++;
    }
  }
  const deleted: string[] = [];
  if (opts.existingNatChains) {
    for (const name of [...opts.existingNatChains].sort()) {
      if (!isServiceChain(name) || desired.has(name)) continue;
      s.natChains.push(chainLine(name));
      s.natRules.push(`-X ${name}`);
      deleted.push(name);
    }
  }
  const text = closeSkeleton(s, table, true, opts);
  return { family: table.family, full: true, text, lines: countLines(text), chainsWritten: written, chainsDeleted: deleted, largeCluster: ctx.largeCluster };
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The skeleton plus what changed between `prev` (what the kernel holds) and `next`. `changes.full`
 * is not looked at: the caller picks compileFull for full syncs.
 */
export function compilePartial(prev: ProxyTable, next: ProxyTable, changes: SyncChanges, opts: CompileOptions): CompiledFamily {
  const prevCtx = contextOf(prev, opts.largeClusterThreshold);
  const nextCtx = contextOf(next, opts.largeClusterThreshold);
  const prevKey = contextKey(prevCtx);
  const nextKey = contextKey(nextCtx);
  // A changed context (detector, node IPs, large cluster mode) can change every service's chains.
  const everything = changes.tableChanged || prevKey !== nextKey;

  let keys: ServicePortKey[];
  if (everything) {
    const all = new Set<ServicePortKey>(prev.services.keys());
    for (const k of next.services.keys()) all.add(k);
    keys = [...all];
  } else {
    keys = [];
    for (const k of changes.changed) if (prev.services.has(k) || next.services.has(k)) keys.push(k);
  }
  keys.sort();

  const s = openSkeleton(false, opts);
  let written = 0;
  const deleted: string[] = [];
  const deleteLines: string[] = [];
  for (const key of keys) {
    const ps = prev.services.get(key);
    const ns = next.services.get(key);
    if (ps === ns && !everything) continue;
    const pr = ps ? cachedRules(ps, prevCtx, prevKey) : undefined;
    const nr = ns ? cachedRules(ns, nextCtx, nextKey) : undefined;
    if (nr) {
      for (const [name, rules] of nr.chains) {
        const old = pr?.chains.get(name);
        if (old !== undefined && sameRules(old, rules)) continue;
        writeChain(s, name, rules);
        written++;
      }
    }
    if (pr) {
      for (const name of pr.chains.keys()) {
        if (nr?.chains.has(name)) continue;
        s.natChains.push(chainLine(name));
        deleteLines.push(`-X ${name}`);
        deleted.push(name);
      }
    }
  }
  for (const svc of next.services.values()) addServiceSkeleton(s, cachedRules(svc, nextCtx, nextKey));
  // Deletions after every rule: the flushed skeleton no longer references them by then.
  for (const l of deleteLines) s.natRules.push(l);
  const text = closeSkeleton(s, next, false, opts);
  return { family: next.family, full: false, text, lines: countLines(text), chainsWritten: written, chainsDeleted: deleted, largeCluster: nextCtx.largeCluster };
}
