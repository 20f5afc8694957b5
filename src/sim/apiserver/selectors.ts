/**
 * Label and field selectors with the grammar of k8s.io/apimachinery/pkg/labels and
 * pkg/fields: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`,
 * comma = AND. Parse errors are SelectorError so the HTTP layer answers 400 BadRequest.
 * Pure: no I/O.
 */

export class SelectorError extends Error {
  readonly code = 'FERRY_ERR_SELECTOR';
  constructor(message: string) {
    super(message);
    this.name = 'SelectorError';
  }
}

export type LabelOp = '=' | '!=' | 'in' | 'notin' | 'exists' | '!' | 'gt' | 'lt';

export interface Requirement {
  key: string;
  op: LabelOp;
  values: string[];
}

export interface LabelSelector {
  readonly requirements: readonly Requirement[];
  matches(labels: Record<string, string> | undefined): boolean;
  readonly empty: boolean;
}

const QUALIFIED_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export function isQualifiedName(key: string): boolean {
  if (!QUALIFIED_NAME.test(key)) return false;
  const slash = key.indexOf('/');
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const prefix = slash >= 0 ? key.slice(0, slash) : '';
  return name.length <= 63 && prefix.length <= 253;
}

export function isLabelValue(v: string): boolean {
  return v.length <= 63 && LABEL_VALUE.test(v);
}

type Tok =
  | { t: 'id'; v: string }
  | { t: 'op'; v: '=' | '==' | '!=' | '!' | '>' | '<' }
  | { t: '('; v: '(' }
  | { t: ')'; v: ')' }
  | { t: ','; v: ',' };

function tokenize(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
    } else if (c === '(' || c === ')' || c === ',') {
      out.push({ t: c, v: c } as Tok);
      i++;
    } else if (c === '=' && s[i + 1] === '=') {
      out.push({ t: 'op', v: '==' });
      i += 2;
    } else if (c === '!' && s[i + 1] === '=') {
      out.push({ t: 'op', v: '!=' });
      i += 2;
    } else if (c === '=' || c === '!' || c === '>' || c === '<') {
      out.push({ t: 'op', v: c });
      i++;
    } else {
      let j = i;
      while (j < s.length && !' \t\n\r(),=!<>'.includes(s[j]!)) j++;
      out.push({ t: 'id', v: s.slice(i, j) });
      i = j;
    }
  }
  return out;
}

function checkKey(key: string): void {
  if (!isQualifiedName(key)) {
    throw new SelectorError(
      `unable to parse requirement: invalid label key "${key}": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    );
  }
}

function checkValue(v: string): void {
  if (!isLabelValue(v)) {
    throw new SelectorError(
      `unable to parse requirement: invalid label value: "${v}": at key: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    );
  }
}

export function parseLabelSelector(input: string | undefined | null): LabelSelector {
  const reqs: Requirement[] = [];
  const toks = tokenize(input ?? '');
  let i = 0;
  const peek = (): Tok | undefined => toks[i];
  const expectId = (what: string): string => {
    const t = toks[i];
    if (!t || t.t !== 'id') throw new SelectorError(`found '${t ? t.v : ''}', expected: ${what}`);
    i++;
    return t.v;
  };
  while (i < toks.length) {
    let t = toks[i]!;
    if (t.t === 'op' && t.v === '!') {
      i++;
      const key = expectId('identifier after \'!\'');
      checkKey(key);
      reqs.push({ key, op: '!', values: [] });
    } else if (t.t === 'id') {
      i++;
      const key = t.v;
      checkKey(key);
      const n = peek();
      if (!n || n.t === ',') {
        reqs.push({ key, op: 'exists', values: [] });
      } else if (n.t === 'op') {
        i++;
        if (n.v === '!') throw new SelectorError(`found '!', expected: '=', '!=', '==', 'in', notin'`);
        const val = n.v === '>' || n.v === '<' ? expectId('integer value') : peek()?.t === 'id' ? expectId('') : '';
        if (n.v === '>' || n.v === '<') {
          if (!/^-?\d+$/.test(val)) throw new SelectorError(`unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer`);
          reqs.push({ key, op: n.v === '>' ? 'gt' : 'lt', values: [val] });
        } else {
          checkValue(val);
          reqs.push({ key, op: n.v === '!=' ? '!=' : '=', values: [val] });
        }
      } else if (n.t === 'id' && (n.v === 'in' || n.v === 'notin')) {
        i++;
        t = toks[i] ?? { t: ',', v: ',' };
        if (t.t !== '(') throw new SelectorError(`found '${t.v}', expected: '('`);
        i++;
        const values: string[] = [];
        if (toks[i]?.t === ')') {
          i++;
        } else {
          for (;;) {
            const v = toks[i];
            let val = '';
            if (v && v.t === 'id') {
              val = v.v;
              i++;
            }
            checkValue(val);
            values.push(val);
            const d = toks[i];
            if (!d) throw new SelectorError(`found '', expected: ',' or ')'`);
            i++;
            if (d.t === ')') break;
            if (d.t !== ',') throw new SelectorError(`found '${d.v}', expected: ',' or ')'`);
          }
        }
        if (values.length === 0) throw new SelectorError(`unable to parse requirement: for 'in', 'notin' operators, values set can't be empty`);
        reqs.push({ key, op: n.v, values });
      } else {
        throw new SelectorError(`found '${n.v}', expected: in, notin, =, ==, !=, gt, lt`);
      }
    } else {
      throw new SelectorError(`found '${t.v}', expected: !, identifier, or 'end of string'`);
    }
    const sep = peek();
    if (sep) {
      if (sep.t !== ',') throw new SelectorError(`found '${sep.v}', expected: ',' or 'end of string'`);
      i++;
      if (i >= toks.length) throw new SelectorError(`found '', expected: identifier after ','`);
    }
  }
  return makeLabelSelector(reqs);
}

export function makeLabelSelector(reqs: Requirement[]): LabelSelector {
  return {
    requirements: reqs,
    empty: reqs.length === 0,
    matches(labels) {
      const l = labels ?? {};
      for (const r of reqs) {
        const has = Object.prototype.hasOwnProperty.call(l, r.key);
        const v = l[r.key];
        switch (r.op) {
          case '=':
            if (!has || v !== r.values[0]) return false;
            break;
          case '!=':
            if (has && v === r.values[0]) return false;
            break;
          case 'in':
            if (!has || !r.values.includes(v!)) return false;
            break;
          case 'notin':
            if (has && r.values.includes(v!)) return false;
            break;
          case 'exists':
            if (!has) return false;
            break;
          case '!':
            if (has) return false;
            break;
          case 'gt':
          case 'lt': {
            if (!has || !/^-?\d+$/.test(v!)) return false;
            const n = Number(v);
            const bound = Number(r.values[0]);
            if (r.op === 'gt' ? !(n > bound) : !(n < bound)) return false;
            break;
          }
        }
      }
      return true;
    },
  };
}

/** A label selector that is exactly the equality map (Service.spec.selector semantics). */
export function selectorFromMap(m: Record<string, string>): LabelSelector {
  return makeLabelSelector(Object.entries(m).map(([key, v]) => ({ key, op: '=', values: [v] })));
}

export interface FieldRequirement {
  field: string;
  op: '=' | '!=';
  value: string;
}

export interface FieldSelector {
  readonly requirements: readonly FieldRequirement[];
  readonly empty: boolean;
  /** `get` returns the value of a supported field for an object. */
  matches(get: (field: string) => string | undefined): boolean;
}

/** Field selectors allow `\,` `\=` `\\` escapes in values, like fields.ParseSelector. */
export function parseFieldSelector(input: string | undefined | null, supported: readonly string[]): FieldSelector {
  const reqs: FieldRequirement[] = [];
  const s = input ?? '';
  if (s.trim() !== '') {
    for (const part of splitUnescaped(s, ',')) {
      const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/.exec(part.trim());
      if (!m) throw new SelectorError(`invalid selector: '${s}'; can't understand '${part}'`);
      const field = m[1]!.trim();
      if (!supported.includes(field)) throw new SelectorError(`field label not supported: ${field}`);
      reqs.push({ field, op: m[2] === '!=' ? '!=' : '=', value: unescape(m[3]!) });
    }
  }
  return {
    requirements: reqs,
    empty: reqs.length === 0,
    matches(get) {
      for (const r of reqs) {
        const v = get(r.field) ?? '';
        if (r.op === '=' ? v !== r.value : v === r.value) return false;
      }
      return true;
    },
  };
}

function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i++;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

function unescape(s: string): string {
  return s.replace(/\\(.)/g, '$1');
}

/** Service.spec.selector / labels formatted like labels.FormatLabels: sorted `k=v` joined by commas. */
export function formatLabels(m: Record<string, string> | undefined): string {
  const keys = Object.keys(m ?? {}).sort();
  if (keys.length === 0) return '<none>';
  return keys.map((k) => `${k}=${m![k]}`).join(',');
}
