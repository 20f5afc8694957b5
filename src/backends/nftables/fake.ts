/**
 * FakeNft: an in-memory nftables for tests without root. It executes the subset of nft script
 * that ferry's renderer emits (add/flush/delete of table, chain, rule, set, map, element) as one
 * all-or-nothing transaction, with the kernel's errors where ferry could get them wrong (checked
 * against a real kernel 6.x):
 *  - flush/delete of a missing chain or set, delete of a missing element: ENOENT;
 *  - delete of a chain still referenced by a rule or a map element (jump/goto), or of a set still
 *    referenced by a rule (@set): EBUSY;
 *  - a rule or map element naming a missing chain or set: ENOENT;
 *  - adding an existing map key with a different value: EEXIST (same value: no-op);
 *  - re-adding a base chain with a different hook/priority: EOPNOTSUPP;
 *  - re-adding a set with another type: EEXIST (a changed timeout or size is silently ignored);
 *  - an element beyond a set's or map's `size`: ENFILE.
 * It can list chains (text or JSON, like `nft -j list chains`) and dump a normalized ruleset.
 * Implements NftRunner, so the backend and the syncer run against it unchanged.
 * Test support only: never used to decide anything in production.
 */
import { NftError, findFailingLine, type NftListOptions, type NftRunner } from '../kernel/nft.js';

interface FChain {
  readonly name: string;
  base?: { type: string; hook: string; priority: number };
  comment?: string;
  rules: string[];
}

interface FSet {
  readonly name: string;
  readonly kind: 'set' | 'map';
  readonly type: string;
  flags: string[];
  timeout?: number;
  /** Maximum number of elements (dynamic sets). */
  size?: number;
  /** key → value ('' for set elements). */
  elements: Map<string, string>;
}

interface FTable {
  readonly family: string;
  readonly name: string;
  comment?: string;
  chains: Map<string, FChain>;
  sets: Map<string, FSet>;
}

class FakeError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

const ENOENT = 'Could not process rule: No such file or directory';
const EBUSY = 'Could not process rule: Device or resource busy';
const EEXIST = 'Could not process rule: File exists';
const EOPNOTSUPP = 'Could not process rule: Operation not supported';
const ENFILE = 'Could not process rule: Too many open files in system';

const CHAIN_REF = /\b(?:jump|goto) ([A-Za-z_.][A-Za-z0-9_./-]*)/g;
const SET_REF = /@([A-Za-z_.][A-Za-z0-9_./-]*)/g;

function refsOf(re: RegExp, text: string): string[] {
  const out: string[] = [];
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) out.push(m[1]!);
  return out;
}

function cloneTable(t: FTable): FTable {
  const chains = new Map<string, FChain>();
  for (const [k, c] of t.chains) chains.set(k, { ...c, rules: [...c.rules] });
  const sets = new Map<string, FSet>();
  for (const [k, s] of t.sets) sets.set(k, { ...s, flags: [...s.flags], elements: new Map(s.elements) });
  return { ...t, chains, sets };
}

/** Splits `{ a, b }` bodies at top-level commas (ferry's keys hold no nested braces). */
function splitItems(body: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of body) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function braceBody(rest: string): string {
  const a = rest.indexOf('{');
  const b = rest.lastIndexOf('}');
  if (a < 0 || b < a) throw new FakeError('syntax error, expected { ... }');
  return rest.slice(a + 1, b).trim();
}

function specFields(body: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of body.split(';')) {
    const p = part.trim();
    if (!p) continue;
    if (p.startsWith('type ') && p.includes(' hook ')) {
      const mm = /^type (\S+) hook (\S+) priority (-?\d+)$/.exec(p);
      if (!mm) throw new FakeError(`syntax error in chain spec: ${p}`);
      m.set('type', mm[1]!);
      m.set('hook', mm[2]!);
      m.set('priority', mm[3]!);
      continue;
    }
    const sp = p.indexOf(' ');
    if (sp < 0) throw new FakeError(`syntax error: ${p}`);
    m.set(p.slice(0, sp), p.slice(sp + 1).trim());
  }
  return m;
}

function unquote(s: string | undefined): string | undefined {
  return s === undefined ? undefined : s.replace(/^"|"$/g, '');
}

export class FakeNft implements NftRunner {
  readonly via = 'exec' as const;
  private tables = new Map<string, FTable>();
  /** Every script given to apply(), in order (also failed ones). */
  readonly scripts: string[] = [];
  /** Every list command, in order. */
  readonly listed: string[] = [];
  /** When set, the next apply fails with this (after recording the script) and clears it. */
  failNext: Error | undefined;

  async apply(script: string): Promise<void> {
    this.scripts.push(script);
    if (this.failNext) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    this.applySync(script);
  }

  /** apply() without the promise: executes the script atomically or throws NftError. */
  applySync(script: string): void {
    const working = new Map<string, FTable>();
    for (const [k, t] of this.tables) working.set(k, cloneTable(t));
    const lines = script.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (!line || line.startsWith('#')) continue;
      try {
        this.exec(working, line);
      } catch (e) {
        if (!(e instanceof FakeError)) throw e;
        const stderr = `/dev/stdin:${i + 1}:1-${line.length}: Error: ${e.reason}\n${line}\n${'^'.repeat(line.length)}\n`;
        throw new NftError('exec', stderr, findFailingLine(stderr, script));
      }
    }
    this.tables = working;
  }

  private table(ts: Map<string, FTable>, fam: string, name: string): FTable {
    const t = ts.get(`${fam} ${name}`);
    if (!t) throw new FakeError(ENOENT);
    return t;
  }

  private exec(ts: Map<string, FTable>, line: string): void {
    const words = line.split(/\s+/);
    const [verb, obj, fam, tname] = words;
    if (!verb || !obj || !fam || !tname) throw new FakeError(`syntax error: ${line}`);
    if (obj === 'table') {
      const key = `${fam} ${tname}`;
      if (verb === 'add') {
        if (!ts.has(key)) ts.set(key, { family: fam, name: tname, chains: new Map(), sets: new Map() });
        const c = line.includes('{') ? unquote(specFields(braceBody(line)).get('comment')) : undefined;
        if (c !== undefined) ts.get(key)!.comment = c;
      } else if (verb === 'delete') {
        if (!ts.delete(key)) throw new FakeError(ENOENT);
      } else if (verb === 'flush') {
        const t = this.table(ts, fam, tname);
        for (const c of t.chains.values()) c.rules = [];
        for (const s of t.sets.values()) s.elements.clear();
      } else throw new FakeError(`unsupported: ${line}`);
      return;
    }
    const t = this.table(ts, fam, tname);
    const name = words[4];
    if (!name) throw new FakeError(`syntax error: ${line}`);
    switch (`${verb} ${obj}`) {
      case 'add chain':
        return this.addChain(t, name, line);
      case 'flush chain':
        this.chain(t, name).rules = [];
        return;
      case 'delete chain': {
        this.chain(t, name);
        if (this.chainReferenced(t, name)) throw new FakeError(EBUSY);
        t.chains.delete(name);
        return;
      }
      case 'add rule': {
        const c = this.chain(t, name);
        const rule = words.slice(5).join(' ');
        this.checkRefs(t, rule);
        c.rules.push(rule);
        return;
      }
      case 'add set':
      case 'add map':
        return this.addSet(t, obj, name, line);
      case 'flush set':
      case 'flush map':
        this.set(t, name).elements.clear();
        return;
      case 'delete set':
      case 'delete map': {
        this.set(t, name);
        if (this.setReferenced(t, name)) throw new FakeError(EBUSY);
        t.sets.delete(name);
        return;
      }
      case 'add element':
      case 'create element':
        return this.addElements(t, this.set(t, name), line, verb === 'create');
      case 'delete element': {
        const s = this.set(t, name);
        for (const item of splitItems(braceBody(line))) {
          const key = item.split(' : ')[0]!.trim();
          if (!s.elements.delete(key)) throw new FakeError(ENOENT);
        }
        return;
      }
      default:
        throw new FakeError(`unsupported by FakeNft: ${line}`);
    }
  }

  private chain(t: FTable, name: string): FChain {
    const c = t.chains.get(name);
    if (!c) throw new FakeError(ENOENT);
    return c;
  }

  private set(t: FTable, name: string): FSet {
    const s = t.sets.get(name);
    if (!s) throw new FakeError(ENOENT);
    return s;
  }

  private checkRefs(t: FTable, text: string): void {
    for (const c of refsOf(CHAIN_REF, text)) if (!t.chains.has(c)) throw new FakeError(ENOENT);
    for (const s of refsOf(SET_REF, text)) if (!t.sets.has(s)) throw new FakeError(ENOENT);
  }

  private chainReferenced(t: FTable, name: string): boolean {
    for (const c of t.chains.values()) {
      if (c.name === name) continue;
      for (const r of c.rules) if (refsOf(CHAIN_REF, r).includes(name)) return true;
    }
    for (const s of t.sets.values()) {
      if (s.kind !== 'map') continue;
      for (const v of s.elements.values()) if (refsOf(CHAIN_REF, v).includes(name)) return true;
    }
    return false;
  }

  private setReferenced(t: FTable, name: string): boolean {
    for (const c of t.chains.values()) for (const r of c.rules) if (refsOf(SET_REF, r).includes(name)) return true;
    return false;
  }

  private addChain(t: FTable, name: string, line: string): void {
    const spec = line.includes('{') ? specFields(braceBody(line)) : new Map<string, string>();
    const base = spec.has('hook') ? { type: spec.get('type')!, hook: spec.get('hook')!, priority: Number(spec.get('priority')) } : undefined;
    const existing = t.chains.get(name);
    if (existing) {
      if (base) {
        const b = existing.base;
        if (!b || b.type !== base.type || b.hook !== base.hook || b.priority !== base.priority) throw new FakeError(EOPNOTSUPP);
      }
      return;
    }
    const c: FChain = { name, rules: [] };
    if (base) c.base = base;
    const comment = unquote(spec.get('comment'));
    if (comment !== undefined) c.comment = comment;
    t.chains.set(name, c);
  }

  private addSet(t: FTable, kind: string, name: string, line: string): void {
    const spec = specFields(braceBody(line));
    const type = spec.has('typeof') ? `typeof ${spec.get('typeof')!}` : spec.get('type');
    if (!type) throw new FakeError('set needs a type');
    const existing = t.sets.get(name);
    if (existing) {
      if (existing.type !== type || existing.kind !== kind) throw new FakeError(EEXIST);
      return;
    }
    const s: FSet = { name, kind: kind === 'map' ? 'map' : 'set', type, flags: spec.get('flags')?.split(',') ?? [], elements: new Map() };
    const timeout = spec.get('timeout');
    if (timeout !== undefined) s.timeout = Number(timeout.replace(/s$/, ''));
    const size = spec.get('size');
    if (size !== undefined) s.size = Number(size);
    t.sets.set(name, s);
  }

  private addElements(t: FTable, s: FSet, line: string, create: boolean): void {
    for (const item of splitItems(braceBody(line))) {
      const sep = item.indexOf(' : ');
      const key = (sep < 0 ? item : item.slice(0, sep)).trim();
      const value = sep < 0 ? '' : item.slice(sep + 3).trim();
      if ((s.kind === 'map') !== (sep >= 0)) throw new FakeError(s.kind === 'map' ? 'map element needs a value' : 'set element cannot have a value');
      if (value) this.checkRefs(t, value);
      const had = s.elements.get(key);
      if (had !== undefined) {
        if (create || had !== value) throw new FakeError(EEXIST);
        continue;
      }
      if (s.size !== undefined && s.elements.size >= s.size) throw new FakeError(ENFILE);
      s.elements.set(key, value);
    }
  }

  // ---- listing ----

  async list(cmd: string, opts: NftListOptions = {}): Promise<string> {
    this.listed.push(cmd);
    const w = cmd.trim().split(/\s+/);
    const fail = (): never => {
      const stderr = `Error: ${ENOENT}\n${cmd}\n`;
      throw new NftError('exec', stderr, { lineNo: 1, text: cmd });
    };
    if (w[0] !== 'list') fail();
    if (w[1] === 'chains') {
      const fam = w[2];
      const chains: { family: string; table: string; name: string }[] = [];
      for (const t of this.tables.values()) {
        if (fam && t.family !== fam) continue;
        for (const c of t.chains.values()) chains.push({ family: t.family, table: t.name, name: c.name });
      }
      if (opts.json) {
        return JSON.stringify({ nftables: [{ metainfo: { json_schema_version: 1 } }, ...chains.map((c) => ({ chain: c }))] });
      }
      return chains.map((c) => `table ${c.family} ${c.table} {\n\tchain ${c.name} {\n\t}\n}`).join('\n') + '\n';
    }
    if (w[1] === 'maps' || w[1] === 'sets') {
      const fam = w[2];
      const kind = w[1] === 'maps' ? 'map' : 'set';
      const items: { family: string; table: string; name: string }[] = [];
      for (const t of this.tables.values()) {
        if (fam && t.family !== fam) continue;
        for (const s of t.sets.values()) if (s.kind === kind) items.push({ family: t.family, table: t.name, name: s.name });
      }
      if (!opts.json) return fail();
      return JSON.stringify({ nftables: [{ metainfo: { json_schema_version: 1 } }, ...items.map((m) => ({ [kind]: m }))] });
    }
    if (w[1] === 'chain' && w[2] && w[3] && w[4]) {
      const t = this.tables.get(`${w[2]} ${w[3]}`);
      const c = t?.chains.get(w[4]);
      if (!t || !c) return fail();
      return `table ${t.family} ${t.name} {\n\tchain ${c.name} {\n${c.rules.map((r) => `\t\t${r}\n`).join('')}\t}\n}\n`;
    }
    if (w[1] === 'table' && w[2] && w[3]) {
      const t = this.tables.get(`${w[2]} ${w[3]}`);
      if (!t) return fail();
      return this.dumpTable(t);
    }
    if (w[1] === 'ruleset') return this.dump();
    if (w[1] === 'tables') return [...this.tables.values()].map((t) => `table ${t.family} ${t.name}\n`).join('');
    return fail();
  }

  // ---- inspection for tests ----

  hasTable(family: string, name: string): boolean {
    return this.tables.has(`${family} ${name}`);
  }

  chainNames(family: string, table: string): string[] {
    return [...(this.tables.get(`${family} ${table}`)?.chains.keys() ?? [])].sort();
  }

  rules(family: string, table: string, chain: string): readonly string[] | undefined {
    return this.tables.get(`${family} ${table}`)?.chains.get(chain)?.rules;
  }

  /** The `size` a set or map was added with (undefined: none, or no such set). */
  setSize(family: string, table: string, name: string): number | undefined {
    return this.tables.get(`${family} ${table}`)?.sets.get(name)?.size;
  }

  mapNames(family: string, table: string): string[] {
    return [...(this.tables.get(`${family} ${table}`)?.sets.values() ?? [])].filter((s) => s.kind === 'map').map((s) => s.name).sort();
  }

  setNames(family: string, table: string): string[] {
    return [...(this.tables.get(`${family} ${table}`)?.sets.values() ?? [])].filter((s) => s.kind === 'set').map((s) => s.name).sort();
  }

  elements(family: string, table: string, set: string): ReadonlyMap<string, string> | undefined {
    return this.tables.get(`${family} ${table}`)?.sets.get(set)?.elements;
  }

  /** A canonical text of one table: chains and sets sorted by name, elements sorted. */
  dumpTable(t: FTable): string {
    const out: string[] = [`table ${t.family} ${t.name}${t.comment !== undefined ? ` # ${t.comment}` : ''}`];
    for (const name of [...t.sets.keys()].sort()) {
      const s = t.sets.get(name)!;
      const attrs = [s.type.startsWith('typeof ') ? s.type : `type ${s.type}`];
      if (s.size !== undefined) attrs.push(`size ${s.size}`);
      if (s.flags.length) attrs.push(`flags ${s.flags.join(',')}`);
      if (s.timeout !== undefined) attrs.push(`timeout ${s.timeout}s`);
      out.push(`  ${s.kind} ${name} { ${attrs.join('; ')} }`);
      const items = [...s.elements].map(([k, v]) => (v ? `${k} : ${v}` : k)).sort();
      for (const it of items) out.push(`    ${it}`);
    }
    for (const name of [...t.chains.keys()].sort()) {
      const c = t.chains.get(name)!;
      out.push(`  chain ${name}${c.base ? ` { type ${c.base.type} hook ${c.base.hook} priority ${c.base.priority} }` : ''}`);
      for (const r of c.rules) out.push(`    ${r}`);
    }
    return out.join('\n') + '\n';
  }

  /** Every table, canonical. Two fakes with equal dumps hold equal rulesets. */
  dump(): string {
    return [...this.tables.keys()].sort().map((k) => this.dumpTable(this.tables.get(k)!)).join('');
  }

  /**
   * dump() up to the numbering of endpoint blocks, which depends on sync history: each
   * `numgen random mod N offset B map @M` is replaced by the N elements of M it selects, and
   * such maps keep only the elements no rule reaches (a leak) or `<missing>` for a hole.
   * Two fakes with equal resolved dumps forward every packet alike.
   */
  dumpResolved(): string {
    const ref = /numgen random mod (\d+) offset (\d+) map @(\S+)/;
    const out: string[] = [];
    for (const key of [...this.tables.keys()].sort()) {
      const t = this.tables.get(key)!;
      const reached = new Map<string, Set<string>>();
      const chains = new Map<string, FChain>();
      for (const [name, c] of t.chains) {
        const rules = c.rules.map((r) => {
          const m = ref.exec(r);
          const map = m ? t.sets.get(m[3]!) : undefined;
          if (!m || !map || map.kind !== 'map') return r;
          const n = Number(m[1]);
          const base = Number(m[2]);
          let seen = reached.get(map.name);
          if (!seen) reached.set(map.name, (seen = new Set()));
          const items: string[] = [];
          for (let i = 0; i < n; i++) {
            const k = String(base + i);
            seen.add(k);
            items.push(`${i} : ${map.elements.get(k) ?? '<missing>'}`);
          }
          return r.replace(ref, `numgen random mod ${n} map { ${items.join(', ')} }`);
        });
        chains.set(name, { ...c, rules });
      }
      const sets = new Map(t.sets);
      for (const [name, seen] of reached) {
        const s = t.sets.get(name)!;
        sets.set(name, { ...s, elements: new Map([...s.elements].filter(([k]) => !seen.has(k))) });
      }
      out.push(this.dumpTable({ ...t, chains, sets }));
    }
    return out.join('');
  }
}
