/**
 * The iptables backend: kube-proxy's chain layout, applied with one `iptables-restore -w
 * --noflush` per family (nat + filter, and mangle's canary on full syncs), then stale conntrack
 * entries cleared. Full syncs also ensure the jump rules from the built-in chains (check with
 * `-C`, insert with `-I`, outside the restore, as kube-proxy does) and list the nat table to
 * delete stale service chains.
 *
 * Policy comes from the IR; this module never decides which endpoints or verdicts apply.
 */
import type { Backend, IPFamily, ProxyTable, ProxyTables, ServicePortKey, SyncChanges } from '../../plan/types.js';
import { logger, type Logger } from '../../util/log.js';
import { cleanConntrack, type ConntrackCleanupState } from '../conntrack-sync.js';
import type { Conntrack } from '../kernel/conntrack.js';
import { runCleanup } from './cleanup.js';
import { compileFull, compilePartial, DEFAULT_MASQUERADE_MARK, LARGE_CLUSTER_THRESHOLD, skeletonOf, type CompiledFamily, type CompileOptions, type SkeletonChain } from './compiler.js';
import { Chain } from './names.js';
import { detectVariant, execRunner, IptablesRestoreError, legacyTables, variantUnusable, type IptablesRunner, type IptablesVariant } from './runner.js';
import { runIn } from '../../util/exec.js';

export interface IptablesBackendOptions {
  /** Families ferry serves; default both. The other family's tables are left alone. */
  readonly families?: readonly IPFamily[];
  readonly log?: Logger;
  /** Stale UDP/SCTP flows are cleared through this after each sync; none when absent. */
  readonly conntrack?: Pick<Conntrack, 'delete' | 'list'>;
  /** kube-proxy's large cluster mode above this many endpoint chains; default 1000. */
  readonly largeClusterThreshold?: number;
  /** Default 0x4000 (kube-proxy's --iptables-masquerade-bit 14). */
  readonly masqueradeMark?: number;
  /** Run every command inside this network namespace (tests). */
  readonly netns?: string;
  /** Which iptables to drive; detected on first use when absent (kube-proxy's iptables-wrapper rule). */
  readonly variant?: IptablesVariant;
  /** Inject a runner (tests); overrides variant and netns. */
  readonly runner?: IptablesRunner;
  /**
   * Drop ctstate INVALID in KUBE-FORWARD. Default: as kube-proxy, unless
   * net.netfilter.nf_conntrack_tcp_be_liberal is set.
   */
  readonly dropInvalid?: boolean;
  /**
   * kube-proxy's iptables.localhostNodePorts (--iptables-localhost-nodeports; the daemon passes
   * the configured value, kube-proxy's default true): IPv4 NodePorts also answer on 127.0.0.1,
   * masqueraded; route_localnet=1 is set and the martian drop of KUBE-FIREWALL installed.
   * Default here false (the rules as before, for tests that do not say).
   */
  readonly localhostNodePorts?: boolean;
  /** Sets net.ipv4.conf.all.route_localnet=1 (tests replace it; default: in `netns`, or here). */
  readonly ensureRouteLocalnet?: () => Promise<void>;
}

/** A sync that did not apply; that family's previous rules are still in force. The next sync is full. */
export class IptablesSyncError extends Error {
  readonly code = 'FERRY_ERR_IPTABLES_SYNC';
  constructor(
    readonly family: IPFamily,
    /** The input line iptables-restore blamed (1-based), when it said. */
    readonly line: number | undefined,
    readonly stderr: string,
    readonly full: boolean,
    readonly stage: 'jumps' | 'list' | 'restore',
    /** The text of the blamed line, for logs. */
    readonly lineText: string | undefined,
    override readonly cause?: unknown,
  ) {
    super(
      `iptables ${full ? 'full' : 'partial'} sync of IPv${family} failed (${stage})` +
        (line !== undefined ? ` at line ${line}${lineText !== undefined ? ` ${JSON.stringify(lineText)}` : ''}` : '') +
        (stderr ? `: ${stderr.trim()}` : cause instanceof Error ? `: ${cause.message}` : ''),
    );
    this.name = 'IptablesSyncError';
  }
}

export interface IptablesSyncStats {
  readonly full: boolean;
  readonly perFamily: readonly { family: IPFamily; lines: number; chainsWritten: number; chainsDeleted: number; largeCluster: boolean }[];
  readonly conntrackFilters: number;
}

export interface IptablesBackend extends Backend {
  readonly name: 'iptables';
  intact(): Promise<boolean>;
  lastSync(): IptablesSyncStats | undefined;
  /** The variant in use (after detection). */
  variant(): Promise<IptablesVariant>;
}

/** A jump from a built-in chain to one of kube-proxy's, as kube-proxy's iptablesJumpChains. */
export interface JumpRule {
  readonly table: 'filter' | 'nat';
  readonly from: string;
  readonly to: string;
  readonly comment: string;
  readonly extra: readonly string[];
}

const NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];

/** kube-proxy's list, in its order (each is prepended, so later entries end up first). */
export const JUMP_RULES: readonly JumpRule[] = [
  { table: 'filter', to: Chain.externalServices, from: 'INPUT', comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', to: Chain.externalServices, from: 'FORWARD', comment: 'kubernetes externally-visible service portals', extra: NEW },
  { table: 'filter', to: Chain.nodePorts, from: 'INPUT', comment: 'kubernetes health check service ports', extra: [] },
  { table: 'filter', to: Chain.services, from: 'FORWARD', comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', to: Chain.services, from: 'OUTPUT', comment: 'kubernetes service portals', extra: NEW },
  { table: 'filter', to: Chain.forward, from: 'FORWARD', comment: 'kubernetes forwarding rules', extra: [] },
  { table: 'filter', to: Chain.proxyFirewall, from: 'INPUT', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', to: Chain.proxyFirewall, from: 'OUTPUT', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'filter', to: Chain.proxyFirewall, from: 'FORWARD', comment: 'kubernetes load balancer firewall', extra: NEW },
  { table: 'nat', to: Chain.services, from: 'OUTPUT', comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', to: Chain.services, from: 'PREROUTING', comment: 'kubernetes service portals', extra: [] },
  { table: 'nat', to: Chain.postrouting, from: 'POSTROUTING', comment: 'kubernetes postrouting rules', extra: [] },
];

/**
 * With localhost NodePorts: filter INPUT and OUTPUT jump to KUBE-FIREWALL first, without a
 * comment — exactly kubelet's jumps (kube-proxy's iptablesKubeletJumpChains), so the two never
 * add a second copy of each other's rule.
 */
export const KUBELET_JUMP_RULES: readonly JumpRule[] = [
  { table: 'filter', to: Chain.kubeletFirewall, from: 'INPUT', comment: '', extra: [] },
  { table: 'filter', to: Chain.kubeletFirewall, from: 'OUTPUT', comment: '', extra: [] },
];

export function jumpArgs(j: JumpRule): string[] {
  return j.comment === '' ? [...j.extra, '-j', j.to] : [...j.extra, '-m', 'comment', '--comment', j.comment, '-j', j.to];
}

/** Splits a rule as written in restore input (double-quoted words allowed) into argv. */
export function ruleArgv(rule: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|(\S+)/g;
  for (let m = re.exec(rule); m; m = re.exec(rule)) out.push(m[1] ?? m[2]!);
  return out;
}

/** Chains up to this many rules are checked by listing (-S, exact count); longer ones by -C of their last rule. */
const LIST_CHECK_MAX = 32;

const ROUTE_LOCALNET = '/proc/sys/net/ipv4/conf/all/route_localnet';

function lineOf(text: string, n: number | undefined): string | undefined {
  if (n === undefined || n < 1) return undefined;
  let start = 0;
  for (let i = 1; i < n; i++) {
    const nl = text.indexOf('\n', start);
    if (nl < 0) return undefined;
    start = nl + 1;
  }
  const end = text.indexOf('\n', start);
  return text.slice(start, end < 0 ? undefined : end);
}

export function createIptablesBackend(opts: IptablesBackendOptions = {}): IptablesBackend {
  function tampered(family: IPFamily, c: SkeletonChain, what: string): false {
    log.warn('an iptables chain of ours was changed by someone else; resyncing in full', { family, table: c.table, chain: c.chain, found: what });
    return false;
  }
  const families: readonly IPFamily[] = opts.families ?? [4, 6];
  const log = opts.log ?? logger('iptables');
  const mark = opts.masqueradeMark ?? DEFAULT_MASQUERADE_MARK;
  const threshold = opts.largeClusterThreshold ?? LARGE_CLUSTER_THRESHOLD;
  let runnerP: Promise<IptablesRunner> | undefined;
  let dropInvalid = opts.dropInvalid;
  let needFull = true;
  /** The tables last programmed successfully: a full sync's conntrack cleanup diffs against them. */
  let applied: ProxyTables | null = null;
  /** Whether the next conntrack cleanup lists the table (the last one did not finish). */
  const conntrackState: ConntrackCleanupState = { reconcile: false };
  let stats: IptablesSyncStats | undefined;
  const localhost = opts.localhostNodePorts === true;
  /** Per family, the skeleton chains the last successful sync wrote (what intact() compares). */
  const skeleton: Partial<Record<IPFamily, SkeletonChain[]>> = {};

  function runner(): Promise<IptablesRunner> {
    runnerP ??= (async () => {
      if (opts.runner) return opts.runner;
      let variant = opts.variant;
      if (!variant) {
        const d = await detectVariant({ netns: opts.netns });
        variant = d.variant;
        log.info('iptables variant selected', { variant, reason: d.reason });
      }
      return execRunner(variant, { netns: opts.netns });
    })();
    return runnerP;
  }

  async function liberalTCP(): Promise<boolean> {
    try {
      const r = await runIn(opts.netns, ['cat', '/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal'], { allowFailure: true });
      return r.exitCode === 0 && r.stdout.trim() !== '0';
    } catch {
      return false;
    }
  }

  /** kube-proxy sets it at start when localhost NodePorts are on; never reset (others may rely on it). */
  async function ensureRouteLocalnet(): Promise<void> {
    const cur = await runIn(opts.netns, ['cat', ROUTE_LOCALNET], { allowFailure: true });
    if (cur.exitCode === 0 && cur.stdout.trim() === '1') return;
    const set = await runIn(opts.netns, ['sh', '-c', `echo 1 > ${ROUTE_LOCALNET}`], { allowFailure: true });
    if (set.exitCode !== 0) {
      log.warn('cannot set net.ipv4.conf.all.route_localnet=1; NodePorts on 127.0.0.1 will not answer (--iptables-localhost-nodeports=false avoids this)', {
        stderr: set.stderr.trim(),
      });
      return;
    }
    log.info('set net.ipv4.conf.all.route_localnet=1 for NodePorts on 127.0.0.1 (KUBE-FIREWALL drops martian packets to 127.0.0.0/8)');
  }

  async function ensureJumps(r: IptablesRunner, family: IPFamily): Promise<void> {
    const rules = localhost && family === 4 ? [...JUMP_RULES, ...KUBELET_JUMP_RULES] : JUMP_RULES;
    for (const j of rules) {
      const args = jumpArgs(j);
      // As kube-proxy's EnsureChain then EnsureRule: the chain first ("already exists" is fine),
      // so that -C answers 1 exactly when the rule is missing; any other failure (the xtables
      // lock not had in time) must not be taken for a missing rule and add a second jump.
      await r.exec(family, ['-t', j.table, '-N', j.to]);
      const check = await r.exec(family, ['-t', j.table, '-C', j.from, ...args]);
      if (check.exitCode === 0) continue;
      if (check.exitCode !== 1) {
        throw new IptablesSyncError(family, undefined, check.stderr, true, 'jumps', `-t ${j.table} -C ${j.from} ${args.join(' ')} (exit ${check.exitCode})`);
      }
      const ins = await r.exec(family, ['-t', j.table, '-I', j.from, ...args]);
      if (ins.exitCode !== 0) {
        throw new IptablesSyncError(family, undefined, ins.stderr, true, 'jumps', `-t ${j.table} -I ${j.from} ${args.join(' ')}`);
      }
      log.v(2, 'installed jump rule', { family, table: j.table, from: j.from, to: j.to });
    }
  }

  /**
   * The legacy check: per family and table, one `iptables-save -t TABLE` read line by line; the
   * canary declared, and each skeleton chain declared with exactly the rules the last sync wrote
   * (counted for long chains too: a rule someone appended is noticed as well).
   */
  async function intactFromSaves(r: IptablesRunner): Promise<boolean> {
    for (const family of families) {
      const chains = skeleton[family] ?? [];
      for (const table of ['mangle', 'nat', 'filter'] as const) {
        const mine = chains.filter((c) => c.table === table);
        const counts = new Map<string, number>();
        let canary = false;
        const ok = await r.saveLines(family, table, (line) => {
          if (line.charCodeAt(0) === 58 /* : */) {
            const name = line.slice(1, line.indexOf(' '));
            if (name === Chain.canary) canary = true;
            else if (mine.some((c) => c.chain === name)) counts.set(name, 0);
          } else if (line.startsWith('-A ')) {
            const sp = line.indexOf(' ', 3);
            const name = line.slice(3, sp < 0 ? undefined : sp);
            const n = counts.get(name);
            if (n !== undefined) counts.set(name, n + 1);
          }
        });
        if (!ok || !canary) return false;
        for (const c of mine) {
          const n = counts.get(c.chain);
          if (n === undefined) return tampered(family, c, 'missing');
          if (n !== c.rules) return tampered(family, c, `${n} rules, ${c.rules} written`);
        }
      }
    }
    return true;
  }

  return {
    name: 'iptables',

    async sync(prev: ProxyTables | null, next: ProxyTables, changes: SyncChanges): Promise<void> {
      const full = changes.full || prev === null || needFull;
      const r = await runner();
      if (dropInvalid === undefined) dropInvalid = !(await liberalTCP());
      const base: CompileOptions = { masqueradeMark: mark, largeClusterThreshold: threshold, dropInvalid, localhostNodePorts: localhost };
      if (full && localhost && families.includes(4)) await (opts.ensureRouteLocalnet ?? ensureRouteLocalnet)();
      const perFamily: { family: IPFamily; lines: number; chainsWritten: number; chainsDeleted: number; largeCluster: boolean }[] = [];
      // Until this sync has fully applied, the next one must assume nothing.
      needFull = true;
      for (const family of families) {
        let compiled: CompiledFamily;
        if (full) {
          await ensureJumps(r, family);
          let existing: Set<string>;
          try {
            existing = new Set(await r.chains(family, 'nat'));
          } catch (e) {
            throw new IptablesSyncError(family, undefined, '', true, 'list', undefined, e);
          }
          compiled = compileFull(next[family], { ...base, existingNatChains: existing });
        } else {
          // A family none of whose service ports changed (the IPv6 tables of a single-stack
          // cluster, on every change) has nothing to apply: an ip6tables-restore of the
          // skeleton alone cost ~25 ms per sync.
          if (!changes.tableChanged && !touchesFamily(prev![family], next[family], changes.changed)) continue;
          compiled = compilePartial(prev![family], next[family], changes, base);
        }
        try {
          await r.restore(family, compiled.pieces);
        } catch (e) {
          const line = e instanceof IptablesRestoreError ? e.line : undefined;
          const stderr = e instanceof IptablesRestoreError ? e.stderr : '';
          const err = new IptablesSyncError(family, line, stderr, full, 'restore', lineOf(compiled.text, line), e);
          log.error('iptables sync failed', { family, full, lines: compiled.lines, line, text: err.lineText, err });
          throw err;
        }
        skeleton[family] = skeletonOf(compiled.pieces);
        perFamily.push({ family, lines: compiled.lines, chainsWritten: compiled.chainsWritten, chainsDeleted: compiled.chainsDeleted.length, largeCluster: compiled.largeCluster });
        log.v(2, 'iptables sync applied', { family, full, lines: compiled.lines, chains: compiled.chainsWritten, deleted: compiled.chainsDeleted.length, variant: r.variant });
      }
      needFull = false;

      // Rules are in; conntrack cleanup failures are logged, never undo a sync.
      // Against what the kernel held, also on a full sync: flows follow the rules they met.
      const held = full ? applied : prev;
      applied = next;
      const filters = opts.conntrack ? await cleanConntrack(opts.conntrack, held, next, full || changes.tableChanged ? undefined : changes.changed, families, conntrackState) : 0;
      stats = { full, perFamily, conntrackFilters: filters };
    },

    /**
     * Cheap enough for every few seconds: the canary chains exist, and each skeleton chain still
     * holds what the last sync wrote — a short chain is listed and its rules counted, a long one
     * (nat KUBE-SERVICES at scale) is probed with -C for its last rule. A flushed or deleted chain
     * of ours fails either check; the syncer then runs a full sync.
     */
    async intact(): Promise<boolean> {
      if (needFull) return false;
      const r = await runner();
      // iptables-legacy reads the whole table back from the kernel for every call: one save per
      // table answers every question at the cost of one call (the -S/-C path below made five
      // reads of nat per family).
      if (r.variant === 'legacy') return intactFromSaves(r);
      for (const family of families) {
        for (const table of ['mangle', 'nat', 'filter']) {
          const res = await r.exec(family, ['-t', table, '-S', Chain.canary]);
          if (res.exitCode !== 0) return false;
        }
        for (const c of skeleton[family] ?? []) {
          if (c.rules <= LIST_CHECK_MAX || c.last === undefined) {
            const res = await r.exec(family, ['-t', c.table, '-S', c.chain]);
            if (res.exitCode !== 0) return tampered(family, c, 'missing');
            let n = 0;
            for (const line of res.stdout.split('\n')) if (line.startsWith('-A ')) n++;
            if (n !== c.rules) return tampered(family, c, `${n} rules, ${c.rules} written`);
          } else {
            const res = await r.exec(family, ['-t', c.table, '-C', c.chain, ...ruleArgv(c.last)]);
            if (res.exitCode !== 0) return tampered(family, c, 'its last rule is missing');
          }
        }
      }
      return true;
    },

    async cleanup(): Promise<void> {
      for (const f of families) delete skeleton[f];
      const r = await runner();
      needFull = true;
      await cleanupWith([r], [4, 6], log);
    },

    lastSync: () => stats,
    variant: async () => (await runner()).variant,
  };
}

/** Whether any of `changed` is a service port of this family's table, before or after. */
function touchesFamily(prev: ProxyTable, next: ProxyTable, changed: ReadonlySet<ServicePortKey>): boolean {
  for (const k of changed) if (prev.services.has(k) || next.services.has(k)) return true;
  return false;
}

async function cleanupWith(
  runners: readonly IptablesRunner[],
  families: readonly IPFamily[],
  log: Logger,
  ours?: (chain: string) => boolean,
  tablesOf?: (r: IptablesRunner, family: IPFamily) => ReadonlySet<string> | undefined,
): Promise<void> {
  const errors: unknown[] = [];
  for (const r of runners) {
    for (const family of families) {
      try {
        const tables = tablesOf?.(r, family);
        if (tables && tables.size === 0) continue;
        const deleted = await runCleanup(r, family, log, ours, tables);
        if (deleted.length > 0) log.info('removed iptables chains', { variant: r.variant, family, count: deleted.length });
      } catch (e) {
        errors.push(e);
        log.error('iptables cleanup failed', { variant: r.variant, family, err: e });
      }
    }
  }
  if (errors.length > 0) throw errors[0];
}

/**
 * `ferry --cleanup`: removes kube-proxy's and ferry's chains and jump rules from nat, filter and
 * mangle, IPv4 and IPv6, in both iptables-nft and iptables-legacy (a node may have leftovers in
 * either after switching). A variant whose tools do not run is skipped; of iptables-legacy only
 * the tables that exist are read, since `iptables-legacy-save -t TABLE` creates the table (and
 * its hooks) on a node that has none (kube-proxy's iptables-wrapper avoids `-t` for the same
 * reason); a node without legacy tables is not touched at all.
 */
export async function cleanupIptables(opts: { netns?: string; log?: Logger; ours?: (chain: string) => boolean } = {}): Promise<void> {
  const log = opts.log ?? logger('iptables');
  const runners: IptablesRunner[] = [];
  const legacy = new Map<IPFamily, ReadonlySet<string>>();
  for (const family of [4, 6] as const) legacy.set(family, await legacyTables(family, opts.netns));
  for (const variant of ['nft', 'legacy'] as const) {
    if (variant === 'legacy' && legacy.get(4)!.size === 0 && legacy.get(6)!.size === 0) {
      log.v(2, 'no iptables-legacy tables on this node; nothing to clean there');
      continue;
    }
    const why = await variantUnusable(variant, opts.netns);
    if (why === undefined) runners.push(execRunner(variant, { netns: opts.netns }));
    else log.v(2, 'iptables variant not usable; skipped by cleanup', { variant, err: why });
  }
  await cleanupWith(runners, [4, 6], log, opts.ours, (r, family) => (r.variant === 'legacy' ? legacy.get(family) : undefined));
}
