/**
 * Narrowing helpers for API objects that arrive over the network. The generated client types
 * are a hint only: any field may be missing, null, of the wrong type or absurdly large.
 * Everything here is pure and total: it never throws, whatever it is given.
 */

export type Rec = Readonly<Record<string, unknown>>;

export function isRecord(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The field as a record, or undefined. */
export function rec(v: unknown): Rec | undefined {
  return isRecord(v) ? v : undefined;
}

export function field(obj: unknown, name: string): unknown {
  if (!isRecord(obj)) return undefined;
  // Own properties only: a crafted "__proto__" or "constructor" key must not reach prototypes.
  return Object.prototype.hasOwnProperty.call(obj, name) ? obj[name] : undefined;
}

/** A string field, or undefined when absent or of another type. */
export function str(obj: unknown, name: string): string | undefined {
  const v = field(obj, name);
  return typeof v === 'string' ? v : undefined;
}

/** An array field; undefined when absent or not an array. */
export function arr(obj: unknown, name: string): readonly unknown[] | undefined {
  const v = field(obj, name);
  return Array.isArray(v) ? v : undefined;
}

export function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

/** A label map with only string values kept (others dropped); {} when absent. */
export function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isRecord(v)) return out;
  for (const k of Object.keys(v)) {
    const x = v[k];
    if (typeof x === 'string') out[k] = x;
  }
  return out;
}

/** Short, safe rendering of an untrusted value for a problem message. */
export function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? v.slice(0, 64) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return `array(${v.length})`;
  return typeof v;
}

/** Bounded problem list: a garbage object must not produce a megabyte log line. */
export class Problems {
  static readonly LIMIT = 20;
  readonly list: string[] = [];
  private dropped = 0;

  add(msg: string): void {
    if (this.list.length < Problems.LIMIT) this.list.push(msg);
    else this.dropped++;
  }

  result(): string[] {
    if (this.dropped > 0) return [...this.list, `... and ${this.dropped} more problems`];
    return this.list;
  }
}
