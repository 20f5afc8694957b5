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
 * Each service port's skeleton lines (its jumps from KUBE-SERVICES and the like, which every sync
 * rewrites) are cached per ServiceEntry object (the planner hands back the same object for
 * unchanged service ports), so the skeleton costs string joins, not rule building. Its own chains
 * are built when written and not kept: at 10k Services × 10 endpoints they are 434,000 lines,
 * ~100 MB of strings held for the life of the process. A partial sync builds them for the
 * changed service ports only, from `prev` and `next`, to compare.
 *
 * Pure: no I/O, no clock. Translates decisions made in the IR; never re-derives policy.
 */
import { isLoopback } from '../../model/addr.js';
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
  /**
   * iptables-restore input in pieces, each ending at a line's end or starting at a line's start
   * (no line is split): the backend writes them one after the other, so a full sync at scale
   * never holds the input as one string (33 MB at 10k Services × 10 endpoints) besides its parts.
   */
  readonly pieces: readonly string[];
  /** The pieces joined (ends with a newline): built on each read, for tests and error reports. */
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

/** What every sync writes of a service port: its lines in the skeleton chains. */
type SkeletonLines = Omit<ServiceRules, 'chains' | 'endpointCount'>;

const skeletonCache = new WeakMap<ServiceEntry, { key: string; lines: SkeletonLines }>();

function keep(r: ServiceRules): SkeletonLines {
  const { natServices, natNodePorts, filterServices, filterExternal, filterNodePorts, filterFirewall } = r;
  return { natServices, natNodePorts, filterServices, filterExternal, filterNodePorts, filterFirewall };
}

/** The service port's rules, built; its skeleton lines remembered for the syncs that follow. */
function rulesOf(svc: ServiceEntry, ctx: ServiceContext, key: string): ServiceRules {
  const rules = serviceRules(svc, ctx);
  skeletonCache.set(svc, { key, lines: keep(rules) });
  return rules;
}

function skeletonLines(svc: ServiceEntry, ctx: ServiceContext, key: string): SkeletonLines {
  const hit = skeletonCache.get(svc);
  if (hit && hit.key === key) return hit.lines;
  return rulesOf(svc, ctx, key);
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

function addServiceSkeleton(s: Sections, r: SkeletonLines): void {
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
export function skeletonOf(input: string | readonly string[]): SkeletonChain[] {
  const found = new Map<string, { table: 'nat' | 'filter'; chain: string; rules: number; last: string | undefined }>();
  let table: string | undefined;
  const read = (line: string): void => {
    if (line.startsWith('*')) {
      table = line.slice(1);
      return;
    }
    if (table !== 'nat' && table !== 'filter') return;
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
  };
  // Line by line over the pieces: no line is split between two (CompiledFamily.pieces).
  for (const text of typeof input === 'string' ? [input] : input) {
    let pos = 0;
    while (pos < text.length) {
      let nl = text.indexOf('\n', pos);
      if (nl < 0) nl = text.length;
      if (nl > pos) read(text.slice(pos, nl));
      pos = nl + 1;
    }
  }
  return [...found.values()];
}

function closeSkeleton(s: Sections, table: ProxyTable, full: boolean, opts: CompileOptions): string[] {
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
  // Each section in pieces of a few hundred entries; no copy of the whole input is made.
  const out: string[] = [full ? `*mangle\n${chainLine(Chain.canary)}\nCOMMIT\n*nat\n` : '*nat\n'];
  joinedInPieces(s.natChains, out);
  out.push('\n');
  joinedInPieces(s.natRules, out);
  out.push('\nCOMMIT\n*filter\n');
  joinedInPieces(s.filterChains, out);
  out.push('\n');
  joinedInPieces(s.filterRules, out);
  out.push('\nCOMMIT\n');
  return out;
}

/** Entries per piece: pieces of ~100 KB at 10k × 10 (an entry is a line or a service's block). */
const PIECE_ENTRIES = 256;

/** `entries.join('\n')`, as pieces appended to `out`. */
function joinedInPieces(entries: readonly string[], out: string[]): void {
  for (let i = 0; i < entries.length; i += PIECE_ENTRIES) {
    const piece = entries.slice(i, i + PIECE_ENTRIES).join('\n');
    out.push(i === 0 ? piece : '\n' + piece);
  }
}

function countLines(pieces: readonly string[]): number {
  let n = 0;
  for (const p of pieces) for (let i = p.indexOf('\n'); i >= 0; i = p.indexOf('\n', i + 1)) n++;
  return n;
}

function compiled(family: IPFamily, full: boolean, pieces: string[], rest: Omit<CompiledFamily, 'family' | 'full' | 'pieces' | 'text' | 'lines'>): CompiledFamily {
  return {
    family,
    full,
    pieces,
    get text() {
      return pieces.join('');
    },
    lines: countLines(pieces),
    ...rest,
  };
}

// ---- full and partial ----

/** Everything, from scratch, plus deletion of stale service chains listed in `existingNatChains`. */
export function compileFull(table: ProxyTable, opts: CompileOptions): CompiledFamily {
  const ctx = contextOf(table, opts.largeClusterThreshold);
  const key = contextKey(ctx);
  const s = openSkeleton(true, opts);
  const desired = new Set<string>();
  let written = 0;
  const decl: string[] = [];
  const lines: string[] = [];
  for (const svc of table.services.values()) {
    const r = rulesOf(svc, ctx, key);
    addServiceSkeleton(s, r);
    // A service port's chains go in as two joined blocks (declarations, rules), not line by
    // line: its ~40 line strings die young instead of living in the section arrays until the
    // final join (434,000 of them at 10k × 10, the largest part of a full sync's peak).
    for (const [name, rules] of r.chains) {
      desired.add(name);
      decl.push(chainLine(name));
      for (const l of rules) lines.push(l);
      written++;
    }
    if (decl.length > 0) s.natChains.push(decl.join('\n'));
    if (lines.length > 0) s.natRules.push(lines.join('\n'));
    decl.length = 0;
    lines.length = 0;
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
  return compiled(table.family, true, closeSkeleton(s, table, true, opts), { chainsWritten: written, chainsDeleted: deleted, largeCluster: ctx.largeCluster });
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
    // prev's are built again (not kept, see the header), without touching the cache: its
    // entry may be one next still holds when only the context changed.
    const pr = ps ? serviceRules(ps, prevCtx) : undefined;
    const nr = ns ? rulesOf(ns, nextCtx, nextKey) : undefined;
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
  for (const svc of next.services.values()) addServiceSkeleton(s, skeletonLines(svc, nextCtx, nextKey));
  // Deletions after every rule: the flushed skeleton no longer references them by then.
  for (const l of deleteLines) s.natRules.push(l);
  return compiled(next.family, false, closeSkeleton(s, next, false, opts), { chainsWritten: written, chainsDeleted: deleted, largeCluster: nextCtx.largeCluster });
}
