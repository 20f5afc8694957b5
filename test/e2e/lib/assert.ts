/**
 * Assertions over probe results that every case repeats: all answered, answered by exactly these
 * pods, the source seen matches the mode's expectation, failed with exactly this error kind.
 * Each message says what was expected and, on failure, what was seen instead.
 */
import type { ProbeResult } from '../../../src/sim/cluster/index.js';
import type { ProxyEnv } from './harness.js';
import type { Expectation, Refusal, SourceSeen } from './modes.js';
import { errorsSeen, failures, podsSeen, sourcesSeen, summarize } from './results.js';

export interface Assert {
  ok(value: unknown, message: string): unknown;
}

export function allAnswered(t: Assert, rs: readonly ProbeResult[], what: string): boolean {
  const bad = failures(rs);
  return Boolean(t.ok(rs.length > 0 && bad.length === 0, `${what}: all ${rs.length} probes answered${bad.length ? `; got ${summarize(rs)}` : ''}`));
}

export function answeredBy(t: Assert, rs: readonly ProbeResult[], pods: string[], what: string): boolean {
  const seen = podsSeen(rs);
  const want = [...pods].sort();
  const same = seen.length === want.length && seen.every((p, i) => p === want[i]);
  return Boolean(t.ok(same, `${what}: answered by exactly [${want.join(', ')}]${same ? '' : `; got ${summarize(rs)}`}`));
}

const describeSource = (e: Expectation<SourceSeen>, origin: string, viaNode: string): string =>
  e.value === 'origin' ? `the sender's own address ${origin}` : `an address of ${viaNode} (masqueraded)`;

export function sourceIs(
  t: Assert,
  env: ProxyEnv,
  rs: readonly ProbeResult[],
  e: Expectation<SourceSeen>,
  origin: string,
  viaNode: string,
  what: string,
): boolean {
  const match = env.sourceMatches(e.value, origin, viaNode);
  const answered = rs.filter((r) => r.ok);
  const bad = answered.filter((r) => !match(r.seenIP));
  return Boolean(
    t.ok(
      answered.length > 0 && bad.length === 0,
      `${what}: endpoint sees ${describeSource(e, origin, viaNode)} [${e.reason}]${bad.length || answered.length === 0 ? `; got ${summarize(rs)}` : `; saw ${sourcesSeen(rs).join(' ')}`}`,
    ),
  );
}

export function failedWith(t: Assert, rs: readonly ProbeResult[], e: Expectation<Refusal>, what: string): boolean {
  const errs = errorsSeen(rs);
  const good = rs.length > 0 && failures(rs).length === rs.length && errs.length === 1 && errs[0] === e.value;
  return Boolean(t.ok(good, `${what}: every probe fails with '${e.value}' [${e.reason}]${good ? '' : `; got ${summarize(rs)}`}`));
}
