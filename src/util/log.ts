/**
 * The one logger. klog-like: info lines are gated by verbosity (`-v N`), warnings and errors
 * always print. Structured key/value pairs follow the message so logs stay grep-able.
 * Writes to stderr so that stdout stays free for command output (dry-run plans, demo reports).
 */

export type LogFields = Record<string, unknown>;

let verbosity = 0;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setVerbosity(v: number): void {
  verbosity = v;
}

export function getVerbosity(): number {
  return verbosity;
}

/** Tests capture log lines by swapping the sink. */
export function setLogSink(fn: (line: string) => void): void {
  sink = fn;
}

function fmtValue(v: unknown): string {
  if (v instanceof Error) return JSON.stringify(v.message);
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

function stamp(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}.${p(d.getUTCMilliseconds(), 3)}`;
}

function emit(level: 'I' | 'W' | 'E', component: string, msg: string, fields?: LogFields): void {
  let line = `${level}${stamp()} ${process.pid} ${component}] ${msg}`;
  if (fields) {
    for (const [k, v] of Object.entries(fields)) line += ` ${k}=${fmtValue(v)}`;
  }
  sink(line);
}

export interface Logger {
  info(msg: string, fields?: LogFields): void;
  /** Info at verbosity `level` or above. */
  v(level: number, msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export function logger(component: string): Logger {
  return {
    info: (msg, fields) => emit('I', component, msg, fields),
    v: (level, msg, fields) => {
      if (verbosity >= level) emit('I', component, msg, fields);
    },
    warn: (msg, fields) => emit('W', component, msg, fields),
    error: (msg, fields) => emit('E', component, msg, fields),
  };
}
