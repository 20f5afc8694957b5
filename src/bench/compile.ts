/**
 * Phase 1, compile: for each cluster size, build the cluster through the real tracker and
 * planner, then time ferry's full and partial compilers (nftables, iptables), the userspace
 * frontend plan + reconcile, and the reference kube-proxy generator (its size is what matters:
 * it is what kube-proxy would hand iptables-restore). Optionally writes the scripts of one full
 * + partial sequence to disk for the apply phase.
 *
 * In-process and pure apart from writing those files; never touches the kernel.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompileState, compileFull as nftFull, compilePartial as nftPartial } from '../backends/nftables/compiler.js';
import { encodeTransaction } from '../backends/nftables/netlink.js';
import type { Transaction } from '../backends/nftables/transaction.js';
import { compileFull as iptFull, compilePartial as iptPartial, type CompileOptions as IptOptions } from '../backends/iptables/compiler.js';
import { planFrontends, type DesiredFrontends } from '../backends/userspace/frontends.js';
import { planReconcile } from '../backends/userspace/reconcile.js';
import type { ProxyTable, ProxyTables } from '../plan/types.js';
import type { EbpfApplyInput } from './apply-ebpf.js';
import type { BatchSet } from './apply.js';
import { referenceFull, referencePartial, referenceJumps } from './reference-kube-proxy.js';
import { median, round } from './stats.js';
import { addService, buildCluster, changeOneEndpoint, NODE_IP, type Step } from './synthetic.js';
import type { CompileMode, CompileRow, PlanRow, Size } from './types.js';

const NFT_OPTS = { families: [4] as const, masqueradeMark: 0x4000 };
const IPT_OPTS: IptOptions = { masqueradeMark: 0x4000, largeClusterThreshold: 1000, dropInvalid: true };
const US_LOCAL = { 4: [NODE_IP], 6: [] as string[] };
const US_OPTS = { families: [4] as const, localhostNodePorts: false };

/** Scripts of one full + partial sequence, in apply order, per ruleset flavour. */
export interface ApplyScripts extends Size {
  readonly nft: ScriptSet;
  /** The same nftables transactions, encoded as nf_tables netlink batches (the daemon's path). */
  readonly nftBatches: BatchSet;
  readonly iptables: ScriptSet;
  readonly reference: ScriptSet & { readonly jumps: string };
}

export interface ScriptSet {
  readonly full: string;
  readonly partialEndpoint: readonly string[];
  readonly partialAdd: string;
}

export interface CompileResult {
  readonly plan: PlanRow;
  readonly rows: CompileRow[];
  readonly scripts?: ApplyScripts;
  /** The same sequence as IR, for the ebpf apply (apply-ebpf.ts). */
  readonly ebpf?: EbpfApplyInput;
}

function lines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** A copy with fresh ServiceEntry objects, so per-entry compiler caches start cold. */
function coldCopy(t: ProxyTables): ProxyTables {
  const services = new Map([...t[4].services].map(([k, v]) => [k, { ...v }]));
  return { 4: { ...t[4], services }, 6: t[6] };
}

function time<T>(fn: () => T): [T, number] {
  const t0 = performance.now();
  const v = fn();
  return [v, performance.now() - t0];
}

interface Acc {
  full: number[];
  fullBytes: number;
  fullLines: number;
  ep: number[];
  epLines: number[];
  add: number;
  addLines: number;
}

function acc(): Acc {
  return { full: [], fullBytes: 0, fullLines: 0, ep: [], epLines: [], add: 0, addLines: 0 };
}

function row(size: Size, mode: CompileMode, a: Acc): CompileRow {
  return {
    ...size,
    mode,
    fullMs: round(median(a.full)),
    fullBytes: a.fullBytes,
    fullLines: a.fullLines,
    partialEndpointMs: round(median(a.ep)),
    partialEndpointLines: Math.round(median(a.epLines)),
    partialAddMs: round(a.add),
    partialAddLines: a.addLines,
  };
}

function userspaceHeld(d: DesiredFrontends) {
  return { addresses: d.addresses, frontends: d.frontends };
}

export function runCompile(size: Size, rounds: number, changes: number, wantScripts: boolean): CompileResult {
  const c = buildCluster(size.services, size.endpoints);
  const nft = acc();
  const ipt = acc();
  const ref = acc();
  const us = acc();

  for (let r = 0; r < rounds; r++) {
    const t = coldCopy(c.tables);
    const [tx, ms] = time(() => nftFull(t, NFT_OPTS).render());
    nft.full.push(ms);
    nft.fullBytes = tx.length;
    nft.fullLines = lines(tx);
    const t2 = coldCopy(c.tables);
    const [it, ims] = time(() => iptFull(t2[4], IPT_OPTS).text);
    ipt.full.push(ims);
    ipt.fullBytes = it.length;
    ipt.fullLines = lines(it);
    const [rt, rms] = time(() => referenceFull(c.tables[4]));
    ref.full.push(rms);
    ref.fullBytes = rt.length;
    ref.fullLines = lines(rt);
    const [, ums] = time(() => {
      const want = planFrontends(c.tables, US_LOCAL, US_OPTS);
      return planReconcile({ addresses: new Set(), frontends: new Map() }, want);
    });
    us.full.push(ums);
  }

  // The sequence the apply phase replays: full on the real tables (so the nftables compiler's
  // claim index travels with them), then one-endpoint changes, then one service add.
  const nftOpts = { ...NFT_OPTS, state: new CompileState() };
  const fullTables = c.tables;
  const steps: Step[] = [];
  const nftFullTx = nftFull(c.tables, nftOpts);
  const nftFullScript = nftFullTx.render();
  const nftBatches: Uint8Array[] = [];
  const iptFullScript = iptFull(c.tables[4], IPT_OPTS).text;
  const refFullScript = referenceFull(c.tables[4]);
  let held = userspaceHeld(planFrontends(c.tables, US_LOCAL, US_OPTS));
  const scripts = { nft: [] as string[], ipt: [] as string[], ref: [] as string[] };
  const planEp: number[] = [];

  const partial = (s: Step, isAdd: boolean): void => {
    let ntx: Transaction | undefined;
    const [nt, nms] = time(() => (ntx = nftPartial(s.prev, s.next, s.changes, nftOpts)).render());
    const [ip, ims] = time(() => iptPartial(s.prev[4], s.next[4], s.changes, IPT_OPTS).text);
    const [rp, rms] = time(() => referencePartial(s.prev[4], s.next[4], s.changes.changed));
    const [want, ums] = time(() => {
      const w = planFrontends(s.next, US_LOCAL, US_OPTS);
      planReconcile(held, w);
      return w;
    });
    held = userspaceHeld(want);
    const put = (a: Acc, ms: number, text: string | null) => {
      if (isAdd) {
        a.add = ms;
        a.addLines = text === null ? 0 : lines(text);
      } else {
        a.ep.push(ms);
        a.epLines.push(text === null ? 0 : lines(text));
      }
    };
    put(nft, nms, nt);
    put(ipt, ims, ip);
    put(ref, rms, rp);
    put(us, ums, null);
    if (wantScripts) {
      steps.push(s);
      scripts.nft.push(nt);
      nftBatches.push(encodeTransaction(ntx!).bytes);
      scripts.ipt.push(ip);
      scripts.ref.push(rp);
    }
  };

  for (let r = 1; r <= changes; r++) {
    const s = changeOneEndpoint(c, (r * 7919) % size.services, r);
    planEp.push(s.planMs);
    partial(s, false);
  }
  const add = addService(c, size.services);
  partial(add, true);

  const plan: PlanRow = {
    ...size,
    trackMs: round(c.trackMs),
    planMs: round(c.planMs),
    planEndpointMs: round(median(planEp)),
    planAddMs: round(add.planMs),
  };
  const rows = [row(size, 'nftables', nft), row(size, 'iptables', ipt), row(size, 'reference', ref), row(size, 'userspace', us)];
  if (!wantScripts) return { plan, rows };
  const split = (all: string[], full: string): ScriptSet => ({ full, partialEndpoint: all.slice(0, -1), partialAdd: all[all.length - 1]! });
  return {
    plan,
    rows,
    ebpf: { ...size, full: fullTables, endpoint: steps.slice(0, -1), add: steps[steps.length - 1]! },
    scripts: {
      ...size,
      nft: split(scripts.nft, nftFullScript),
      nftBatches: { full: encodeTransaction(nftFullTx).bytes, partialEndpoint: nftBatches.slice(0, -1), partialAdd: nftBatches[nftBatches.length - 1]! },
      iptables: split(scripts.ipt, iptFullScript),
      reference: { ...split(scripts.ref, refFullScript), jumps: referenceJumps() },
    },
  };
}

/** Writes a script set as files (full.txt, ep-1.txt..., add.txt) under dir; returns their paths in apply order. */
export function writeScriptSet(dir: string, prefix: string, s: ScriptSet): { full: string; partialEndpoint: string[]; partialAdd: string } {
  const full = join(dir, `${prefix}-full.txt`);
  writeFileSync(full, s.full);
  const partialEndpoint = s.partialEndpoint.map((text, i) => {
    const p = join(dir, `${prefix}-ep-${i + 1}.txt`);
    writeFileSync(p, text);
    return p;
  });
  const partialAdd = join(dir, `${prefix}-add.txt`);
  writeFileSync(partialAdd, s.partialAdd);
  return { full, partialEndpoint, partialAdd };
}

export type { ProxyTable };
