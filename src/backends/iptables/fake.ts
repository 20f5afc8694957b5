/**
 * An in-memory iptables for tests: implements IptablesRunner with the kernel's checks that
 * matter for ferry — chains must exist before rules use them, a jump target must be a chain or a
 * known target, `-X` refuses a chain that is missing or still referenced, `-D` needs an exact
 * match — and iptables-restore's per-table commit (a failing table rolls back; tables already
 * committed stay). Rules are kept as text exactly as given. Not for production use.
 */
import type { IPFamily } from '../../plan/types.js';
import type { RunResult } from '../../util/exec.js';
import { chainsInSave } from './cleanup.js';
import { IptablesRestoreError, type IptablesRunner, type IptablesVariant } from './runner.js';

const BUILTIN: Record<string, readonly string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
};

const TARGETS = new Set(['ACCEPT', 'DROP', 'REJECT', 'RETURN', 'MARK', 'MASQUERADE', 'DNAT', 'SNAT', 'LOG', 'CONNMARK']);

/** table → chain → rules (text after `-A CHAIN `). Insertion order of chains is kept. */
type Tables = Map<string, Map<string, string[]>>;

function cloneTable(t: Map<string, string[]>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of t) out.set(k, [...v]);
  return out;
}

class FakeError extends Error {}

function targetOf(rule: string): string | undefined {
  const m = /(?:^|\s)-[jg]\s+(\S+)/.exec(rule);
  return m?.[1];
}

function splitChain(rest: string): [string, string] {
  const sp = rest.indexOf(' ');
  return sp < 0 ? [rest, ''] : [rest.slice(0, sp), rest.slice(sp + 1)];
}

export class FakeIptables implements IptablesRunner {
  private readonly state: Record<IPFamily, Tables> = { 4: new Map(), 6: new Map() };
  /** Every restore input, in order. */
  readonly restores: { family: IPFamily; input: string }[] = [];
  /** Every exec call, in order. */
  readonly execs: { family: IPFamily; args: readonly string[] }[] = [];
  /** Every saveLines call (the tables read whole), in order. */
  readonly linesSaved: { family: IPFamily; table: string }[] = [];
  /** When set, the next restore fails with this stderr before applying anything. */
  failNextRestore: string | undefined;

  /** The variant only changes what the backend chooses to call (legacy: whole-table reads). */
  constructor(readonly variant: IptablesVariant = 'nft') {}

  private table(family: IPFamily, name: string): Map<string, string[]> {
    let t = this.state[family].get(name);
    if (!t) {
      t = new Map();
      for (const c of BUILTIN[name] ?? []) t.set(c, []);
      this.state[family].set(name, t);
    }
    return t;
  }

  private checkRule(t: Map<string, string[]>, rule: string): void {
    const target = targetOf(rule);
    if (target !== undefined && !TARGETS.has(target) && !t.has(target)) throw new FakeError(`Couldn't load target \`${target}'`);
  }

  private apply(t: Map<string, string[]>, table: string, line: string): void {
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if ((BUILTIN[table] ?? []).includes(name)) return;
      t.set(name, []);
      return;
    }
    const op = line.slice(0, 2);
    const [chain, rule] = splitChain(line.slice(3));
    switch (op) {
      case '-A':
      case '-I': {
        const rules = t.get(chain);
        if (!rules) throw new FakeError(`chain ${chain} does not exist`);
        let r = rule;
        let pos = op === '-A' ? rules.length : 0;
        if (op === '-I') {
          const m = /^(\d+) (.*)$/.exec(rule);
          if (m) {
            pos = Number(m[1]) - 1;
            r = m[2]!;
          }
        }
        this.checkRule(t, r);
        rules.splice(pos, 0, r);
        return;
      }
      case '-D': {
        const rules = t.get(chain);
        const i = rules ? rules.indexOf(rule) : -1;
        if (!rules || i < 0) throw new FakeError(`Bad rule (does a matching rule exist in that chain?)`);
        rules.splice(i, 1);
        return;
      }
      case '-N': {
        if (t.has(chain)) throw new FakeError('Chain already exists');
        t.set(chain, []);
        return;
      }
      case '-X': {
        const rules = t.get(chain);
        if (!rules) throw new FakeError(`chain ${chain} does not exist`);
        if (rules.length > 0) throw new FakeError(`chain ${chain} is not empty`);
        for (const [other, rs] of t) for (const r of rs) if (targetOf(r) === chain) throw new FakeError(`chain ${chain} is referenced by ${other}`);
        t.delete(chain);
        return;
      }
      default:
        throw new FakeError(`unknown command ${line}`);
    }
  }

  async restore(family: IPFamily, pieces: string | readonly string[]): Promise<void> {
    const input = typeof pieces === 'string' ? pieces : pieces.join('');
    this.restores.push({ family, input });
    if (this.failNextRestore !== undefined) {
      const stderr = this.failNextRestore;
      this.failNextRestore = undefined;
      throw new IptablesRestoreError(family, 1, stderr, 1);
    }
    const lines = input.split('\n');
    let cur: { name: string; t: Map<string, string[]> } | undefined;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line === '' || line.startsWith('#')) continue;
      try {
        if (line.startsWith('*')) {
          const name = line.slice(1);
          cur = { name, t: cloneTable(this.table(family, name)) };
        } else if (line === 'COMMIT') {
          if (!cur) throw new FakeError('COMMIT outside a table');
          this.state[family].set(cur.name, cur.t);
          cur = undefined;
        } else {
          if (!cur) throw new FakeError('rule outside a table');
          this.apply(cur.t, cur.name, line);
        }
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new IptablesRestoreError(family, i + 1, `iptables-restore: ${msg}\nError occurred at line: ${i + 1}\n`, 2);
      }
    }
  }

  async chains(family: IPFamily, table: string): Promise<string[]> {
    return chainsInSave(await this.save(family, table));
  }

  async saveLines(family: IPFamily, table: string, onLine: (line: string) => void): Promise<boolean> {
    this.linesSaved.push({ family, table });
    const text = await this.save(family, table);
    for (const line of text.split('\n')) if (line !== '') onLine(line);
    return true;
  }

  async save(family: IPFamily, table: string): Promise<string> {
    const t = this.table(family, table);
    const builtin = BUILTIN[table] ?? [];
    const out = [`*${table}`];
    for (const c of builtin) out.push(`:${c} ACCEPT [0:0]`);
    const user = [...t.keys()].filter((c) => !builtin.includes(c)).sort();
    for (const c of user) out.push(`:${c} - [0:0]`);
    for (const c of [...builtin, ...user]) for (const r of t.get(c) ?? []) out.push(`-A ${c} ${r}`);
    out.push('COMMIT');
    return out.join('\n') + '\n';
  }

  async exec(family: IPFamily, args: readonly string[]): Promise<RunResult> {
    this.execs.push({ family, args });
    let table = 'filter';
    const rest = [...args];
    const ti = rest.indexOf('-t');
    if (ti >= 0) {
      table = rest[ti + 1]!;
      rest.splice(ti, 2);
    }
    const op = rest[0]!;
    const chain = rest[1]!;
    const rule = rest.slice(2).map((a) => (/[\s]/.test(a) ? `"${a}"` : a)).join(' ');
    const t = this.table(family, table);
    const fail = (msg: string): RunResult => ({ stdout: '', stderr: msg, exitCode: 1 });
    try {
      switch (op) {
        case '-C':
          return (t.get(chain) ?? []).includes(rule) ? { stdout: '', stderr: '', exitCode: 0 } : fail('Bad rule');
        case '-S':
          return t.has(chain)
            ? { stdout: `-N ${chain}\n` + (t.get(chain) ?? []).map((r) => `-A ${chain} ${r}\n`).join(''), stderr: '', exitCode: 0 }
            : fail(`No chain/target/match by that name.`);
        case '-N':
        case '-X':
          this.apply(t, table, `${op} ${chain}`);
          return { stdout: '', stderr: '', exitCode: 0 };
        case '-I':
        case '-A':
        case '-D':
          this.apply(t, table, `${op} ${chain} ${rule}`);
          return { stdout: '', stderr: '', exitCode: 0 };
        default:
          return fail(`fake: unsupported ${op}`);
      }
    } catch (e) {
      return fail(e instanceof Error ? e.message : String(e));
    }
  }

  /** Every table of a family as save text, tables sorted: for equality checks. */
  async dump(family: IPFamily): Promise<string> {
    let out = '';
    for (const name of [...this.state[family].keys()].sort()) out += await this.save(family, name);
    return out;
  }

  /** Simulates someone flushing everything (`iptables -F; -X` in every table). */
  flushAll(): void {
    this.state[4].clear();
    this.state[6].clear();
  }
}
