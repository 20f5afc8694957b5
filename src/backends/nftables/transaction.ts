/**
 * nftables objects as typed data, and the one renderer that turns them into nft script text.
 *
 * A `Transaction` is an ordered list of operations (add/flush/delete of tables, chains, rules,
 * sets, maps and elements) on ferry's tables. Nothing else in ferry writes nft command syntax;
 * rules are built by rules.ts (one builder per rule kind) as typed values carrying their text;
 * the netlink encoder (netlink.ts) reads the same ops without rendering anything.
 *
 * Pure: no I/O. Must never reorder operations (the compiler's order is what makes a
 * transaction acceptable to the kernel) and never drop one.
 */

import type { Rule } from './rules.js';

export type NftFamily = 'ip' | 'ip6';
export type ChainType = 'filter' | 'nat';
export type ChainHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** A base chain's attachment to a netfilter hook. Priorities are numeric (nft 1.0.x only knows
 * the `dstnat` name for prerouting, so numbers are the portable spelling). */
export interface BaseChainSpec {
  readonly type: ChainType;
  readonly hook: ChainHook;
  readonly priority: number;
}

export interface Chain {
  readonly name: string;
  readonly base?: BaseChainSpec;
  readonly comment?: string;
}

/** A named set (`type` is the key type, e.g. `ipv4_addr . ipv4_addr`). */
export interface NamedSet {
  readonly name: string;
  readonly type: string;
  /** `type` is a `typeof` declaration (expressions, e.g. `ip saddr . numgen random mod 1`). */
  readonly typeof?: boolean;
  /** Maximum number of elements (the kernel's limit for a dynamic set's packet-path adds). */
  readonly size?: number;
  readonly flags?: readonly string[];
  readonly timeoutSeconds?: number;
  readonly comment?: string;
}

/** A named map (`type` is `KEY : VALUE`, e.g. `inet_proto . inet_service : verdict`). */
export interface NamedMap {
  readonly name: string;
  readonly type: string;
  /** `type` is a `typeof` declaration (expressions, e.g. `numgen random mod 2 : ip daddr . tcp dport`). */
  readonly typeof?: boolean;
  /**
   * The most elements it may hold (NFTA_SET_DESC_SIZE). The kernel then sizes its hash table
   * once instead of growing it while a batch inserts, and refuses an element beyond it (ENFILE):
   * docs/nftables.md, "Sized sets and maps".
   */
  readonly size?: number;
  readonly comment?: string;
}

export type Op =
  | { readonly kind: 'table'; readonly verb: 'add' | 'delete'; readonly target: string; readonly comment?: string }
  | { readonly kind: 'chain'; readonly verb: 'add'; readonly target: string; readonly chain: Chain }
  | { readonly kind: 'chain'; readonly verb: 'flush' | 'delete'; readonly target: string; readonly name: string }
  | { readonly kind: 'rule'; readonly target: string; readonly chain: string; readonly rule: Rule }
  | { readonly kind: 'set'; readonly verb: 'add'; readonly target: string; readonly set: NamedSet }
  | { readonly kind: 'map'; readonly verb: 'add'; readonly target: string; readonly map: NamedMap }
  | { readonly kind: 'set' | 'map'; readonly verb: 'flush' | 'delete'; readonly target: string; readonly name: string }
  | {
      readonly kind: 'element';
      readonly verb: 'add' | 'delete';
      readonly target: string;
      readonly set: string;
      readonly key: string;
      /** Map value (`goto svc-...`, `drop`); absent for set elements and for deletes. */
      readonly value?: string;
    }
  | { readonly kind: 'elements'; readonly verb: 'add'; readonly target: string; readonly set: string; readonly run: ElementRun }
  | CountRulesOp;

/**
 * The endpoint-count chain after a count came into use or went out of use: `rules` is the whole
 * chain as it must be, `added` and `removed` the count sets whose rule is new or gone. As text
 * (and wherever the rules' handles are not known) it is the chain flushed and written again; the
 * netlink encoder, given the chain's rules as the kernel holds them (encodeTransaction's
 * `chainRules`), deletes the gone rules by handle and inserts the new ones in place, so only
 * those bind their endpoints maps (each binding walks the map's elements).
 */
export interface CountRulesOp {
  readonly kind: 'countRules';
  readonly target: string;
  readonly chain: string;
  readonly rules: readonly Rule[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
}

/**
 * Element adds made on demand, for a full sync's hundreds of thousands of elements: one op for
 * the run instead of an op object (and a key string kept until the batch is encoded) for each.
 * key(i) and value(i) are called as the run is encoded or rendered, in order, possibly more than
 * once; they must return the same text each time.
 */
export interface ElementRun {
  readonly count: number;
  key(i: number): string;
  /** Map value (`goto svc-...`, an endpoint); absent for set elements. */
  value?(i: number): string | undefined;
  /** The pieces key(i) and value(i) are spelled from, where the run has them (ElementParts). */
  readonly parts?: ElementParts;
  /**
   * Of a run of `addr . proto . port` keys (the count and masquerade sets): element i is frontend
   * `members[i]` of `frontends`, read by the netlink encoder instead of key(i). Must agree with
   * key(i).
   */
  readonly frontends?: FrontendList;
  /** Of a run of an endpoint shard: element i in pieces (SlotPieces), read instead of key(i) and value(i). */
  readonly slots?: SlotPieces;
  /**
   * Of a run of addresses (`cluster-ips`) or address pairs (`hairpin`, `addr . addr` of one
   * address): element i's address as an IPv4 number (`addresses[i]`, a V4Piece), read instead of
   * key(i).
   */
  readonly addresses?: ArrayLike<V4Piece>;
}

/**
 * An IPv4 address handed to the encoder as a number: any 32-bit value, signed or not — a caller
 * should pass `v | 0`, which V8 keeps as a small integer, where an unsigned value from 2^31 up
 * (every address from 128.0.0.0) is a heap number each time it is returned, 16 bytes per element
 * (7 MB of garbage in a full sync at 44k Services). -1 means "no number: read the spelled form",
 * which is also how 255.255.255.255 (-1 as a signed value) is written.
 */
export type V4Piece = number;

/**
 * An endpoint shard's elements in pieces: element i is slot `slot(i)` (key(i) its decimal
 * spelling) holding the endpoint `ip(i) . port(i)` (value(i)), as the IR holds it. Must agree with
 * key(i) and value(i).
 */
export interface SlotPieces extends EndpointPieces {
  slot(i: number): number;
}

/** Element i's endpoint as the IR holds it (PlannedEndpoint): the value `ip(i) . port(i)`. */
export interface EndpointPieces {
  ip(i: number): string;
  /** `ip(i)` as a number when the caller has it (V4Piece; -1 or undefined: read `ip`). */
  v4?(i: number): V4Piece | undefined;
  port(i: number): number;
}

/**
 * Frontend keys `addr . proto . port` in pieces, as the service entries hold them: a full sync at
 * 44k Services writes each frontend two or three times (its count set, a masquerade set, the
 * head of its endpoints), and the netlink encoder reads these instead of spelling and parsing a
 * key. Frontend f is `v4s[f] . protos[f] . ports[f]`; without the three lists (or where v4s[f] is
 * -1, not IPv4 as a number) it is read from key(f). Lists, not functions: they are read 130,000
 * times a full sync, mostly before V8 has optimized the reader, and a closure made per compile
 * cost the reader its optimized code when the closure was collected (util/shapes.ts). Must agree
 * with key(f).
 */
export interface FrontendPieces {
  /** The key as nft spells it. */
  key(f: number): string;
  /** The address as a V4Piece, or -1: read key(f). */
  readonly v4s?: ArrayLike<V4Piece>;
  /** The IP protocol number (6, 17, 132). */
  readonly protos?: ArrayLike<number>;
  readonly ports?: ArrayLike<number>;
}

/** Some frontends of `frontends`, in order: element i is frontend members[i]. */
export interface FrontendList {
  readonly frontends: FrontendPieces;
  readonly members: ArrayLike<number>;
}

/**
 * A run of a grouped endpoints map, in pieces, frontend by frontend: each of `members` (in order)
 * has `n` endpoints, and element i is endpoint i % n of frontend members[i / n] — key `head . (i %
 * n)`, the head that frontend's key in `frontends` (written once for all its endpoints; a NodePort
 * map's head is its `proto . port` key, read from key(f)), value `ip . port` of
 * `endpoints[members[i / n]][i % n]`, the endpoint as the IR holds it. The netlink encoder walks
 * them with a cursor and spells no string for the 440,000 elements of a full sync at 44k Services.
 * Must agree with the run's key(i) and value(i).
 */
export interface ElementParts extends FrontendList {
  readonly n: number;
  /** Frontend f's endpoints, as the IR holds them. */
  readonly endpoints: ArrayLike<readonly EndpointLike[]>;
}

/** An endpoint as the IR holds it (PlannedEndpoint): `v4` the address as a number if IPv4, -1 or absent if not. */
export interface EndpointLike {
  readonly ip: string;
  readonly v4?: number;
  readonly port: number;
}

/** How many elements one rendered `add element` / `delete element` line may carry. */
export const ELEMENTS_PER_LINE = 1000;

/** `ip ferry`: the family and table every command of a table is addressed to. */
export function tableTarget(family: NftFamily, table: string): string {
  return `${family} ${table}`;
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, '')}"`;
}

function chainSpec(c: Chain): string {
  const parts: string[] = [];
  if (c.base) parts.push(`type ${c.base.type} hook ${c.base.hook} priority ${c.base.priority} ;`);
  if (c.comment !== undefined) parts.push(`comment ${quote(c.comment)} ;`);
  return parts.length ? ` { ${parts.join(' ')} }` : '';
}

function setSpec(s: NamedSet): string {
  let body = `${s.typeof ? 'typeof' : 'type'} ${s.type} ;`;
  if (s.size !== undefined) body += ` size ${s.size} ;`;
  if (s.flags && s.flags.length) body += ` flags ${s.flags.join(',')} ;`;
  if (s.timeoutSeconds !== undefined) body += ` timeout ${s.timeoutSeconds}s ;`;
  if (s.comment !== undefined) body += ` comment ${quote(s.comment)} ;`;
  return ` { ${body} }`;
}

function mapSpec(m: NamedMap): string {
  let body = `${m.typeof ? 'typeof' : 'type'} ${m.type} ;`;
  if (m.size !== undefined) body += ` size ${m.size} ;`;
  if (m.comment !== undefined) body += ` comment ${quote(m.comment)} ;`;
  return ` { ${body} }`;
}

/** Renders one non-element operation as one line. */
function renderOp(op: Exclude<Op, { kind: 'element' | 'elements' | 'countRules' }>): string {
  switch (op.kind) {
    case 'table':
      return op.verb === 'add' && op.comment !== undefined
        ? `add table ${op.target} { comment ${quote(op.comment)} ; }`
        : `${op.verb} table ${op.target}`;
    case 'chain':
      return op.verb === 'add' ? `add chain ${op.target} ${op.chain.name}${chainSpec(op.chain)}` : `${op.verb} chain ${op.target} ${op.name}`;
    case 'rule':
      return `add rule ${op.target} ${op.chain} ${op.rule.text}`;
    case 'set':
      return op.verb === 'add' ? `add set ${op.target} ${op.set.name}${setSpec(op.set)}` : `${op.verb} set ${op.target} ${op.name}`;
    case 'map':
      return op.verb === 'add' ? `add map ${op.target} ${op.map.name}${mapSpec(op.map)}` : `${op.verb} map ${op.target} ${op.name}`;
  }
}

/**
 * An ordered nftables transaction. Applied as one nft script, it is atomic: all or nothing.
 */
export class Transaction {
  readonly ops: Op[] = [];
  /** Elements in runs, and rules of count-rule ops, beyond their one op each (size counts every element and rule). */
  private runExtra = 0;

  addTable(target: string, comment?: string): this {
    this.ops.push(comment === undefined ? { kind: 'table', verb: 'add', target } : { kind: 'table', verb: 'add', target, comment });
    return this;
  }
  deleteTable(target: string): this {
    this.ops.push({ kind: 'table', verb: 'delete', target });
    return this;
  }
  addChain(target: string, chain: Chain): this {
    this.ops.push({ kind: 'chain', verb: 'add', target, chain });
    return this;
  }
  flushChain(target: string, name: string): this {
    this.ops.push({ kind: 'chain', verb: 'flush', target, name });
    return this;
  }
  deleteChain(target: string, name: string): this {
    this.ops.push({ kind: 'chain', verb: 'delete', target, name });
    return this;
  }
  addRule(target: string, chain: string, rule: Rule): this {
    this.ops.push({ kind: 'rule', target, chain, rule });
    return this;
  }
  addSet(target: string, set: NamedSet): this {
    this.ops.push({ kind: 'set', verb: 'add', target, set });
    return this;
  }
  addMap(target: string, map: NamedMap): this {
    this.ops.push({ kind: 'map', verb: 'add', target, map });
    return this;
  }
  flushSet(target: string, name: string, kind: 'set' | 'map' = 'set'): this {
    this.ops.push({ kind, verb: 'flush', target, name });
    return this;
  }
  deleteSet(target: string, name: string, kind: 'set' | 'map' = 'set'): this {
    this.ops.push({ kind, verb: 'delete', target, name });
    return this;
  }
  addElement(target: string, set: string, key: string, value?: string): this {
    this.ops.push(value === undefined ? { kind: 'element', verb: 'add', target, set, key } : { kind: 'element', verb: 'add', target, set, key, value });
    return this;
  }
  deleteElement(target: string, set: string, key: string): this {
    this.ops.push({ kind: 'element', verb: 'delete', target, set, key });
    return this;
  }
  /** The endpoint-count chain `chain` rewritten to `rules`, the rules of `added` new and those of `removed` gone (CountRulesOp). */
  countRules(target: string, chain: string, rules: readonly Rule[], added: readonly string[], removed: readonly string[]): this {
    this.ops.push({ kind: 'countRules', target, chain, rules, added, removed });
    this.runExtra += rules.length;
    return this;
  }
  /** Adds run.count elements to `set`, made on demand (ElementRun). An empty run adds nothing. */
  addElementRun(target: string, set: string, run: ElementRun): this {
    if (run.count <= 0) return this;
    this.ops.push({ kind: 'elements', verb: 'add', target, set, run });
    this.runExtra += run.count - 1;
    return this;
  }

  /** Operations, every element of a run counted. */
  get size(): number {
    return this.ops.length + this.runExtra;
  }

  /**
   * The script, line by line, in one pass. Consecutive element operations on the same set with
   * the same verb share a line (up to ELEMENTS_PER_LINE), which keeps big full syncs compact.
   */
  *lines(): Generator<string> {
    const ops = this.ops;
    let i = 0;
    while (i < ops.length) {
      const op = ops[i]!;
      if (op.kind === 'elements') {
        const { run } = op;
        for (let a = 0; a < run.count; a += ELEMENTS_PER_LINE) {
          const items: string[] = [];
          for (let k = a; k < run.count && k < a + ELEMENTS_PER_LINE; k++) {
            const v = run.value?.(k);
            items.push(v === undefined ? run.key(k) : `${run.key(k)} : ${v}`);
          }
          yield `add element ${op.target} ${op.set} { ${items.join(', ')} }`;
        }
        i++;
        continue;
      }
      if (op.kind === 'countRules') {
        yield `flush chain ${op.target} ${op.chain}`;
        for (const r of op.rules) yield `add rule ${op.target} ${op.chain} ${r.text}`;
        i++;
        continue;
      }
      if (op.kind !== 'element') {
        yield renderOp(op);
        i++;
        continue;
      }
      const items: string[] = [];
      let j = i;
      while (j < ops.length && items.length < ELEMENTS_PER_LINE) {
        const e = ops[j]!;
        if (e.kind !== 'element' || e.verb !== op.verb || e.set !== op.set || e.target !== op.target) break;
        items.push(e.value === undefined || e.verb === 'delete' ? e.key : `${e.key} : ${e.value}`);
        j++;
      }
      yield `${op.verb} element ${op.target} ${op.set} { ${items.join(', ')} }`;
      i = j;
    }
  }

  /** How many lines lines() yields, without rendering them. */
  lineCount(): number {
    const ops = this.ops;
    let n = 0;
    let i = 0;
    while (i < ops.length) {
      const op = ops[i]!;
      if (op.kind === 'elements') {
        n += Math.ceil(op.run.count / ELEMENTS_PER_LINE);
        i++;
        continue;
      }
      if (op.kind === 'countRules') {
        n += 1 + op.rules.length;
        i++;
        continue;
      }
      n++;
      if (op.kind !== 'element') {
        i++;
        continue;
      }
      let j = i;
      let k = 0;
      while (j < ops.length && k < ELEMENTS_PER_LINE) {
        const e = ops[j]!;
        if (e.kind !== 'element' || e.verb !== op.verb || e.set !== op.set || e.target !== op.target) break;
        j++;
        k++;
      }
      i = j;
    }
    return n;
  }

  /** The whole script (newline-terminated), joined once. */
  render(): string {
    const out: string[] = [];
    for (const l of this.lines()) out.push(l);
    out.push('');
    return out.join('\n');
  }
}
