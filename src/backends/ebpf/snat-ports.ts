/**
 * Which source ports the tc program may give a masqueraded (SNAT) connection: the node's ports
 * outside its ephemeral range (net.ipv4.ip_local_port_range), from 1024 up, and outside the
 * default NodePort range 30000-32767.
 *
 * Outside the ephemeral range: a port the node's own sockets never pick by themselves keeps every
 * translated tuple apart from the node's own connections to the same endpoint (the kernel's NAT
 * gets that from conntrack, which sees both; the tc program does not see the node's sockets).
 *
 * Outside the NodePorts: once a connection's reply entry has expired (or was pushed out of the
 * LRU), the endpoint's next packet (endpoint → node address:SNAT port) is a new packet to a
 * node address; with a SNAT port that is also a NodePort it would meet that NodePort's wildcard
 * entry and be translated to an unrelated Service. The range is the API server's setting
 * (--service-node-port-range), which ferry cannot see: the default is kept clear.
 *
 * With the default ephemeral range (32768-60999) that is 1024-29999 and 61000-65535: 33,512
 * ports per endpoint. A translated tuple is held 120 s after the endpoint closed first (its
 * TIME_WAIT, tc_lb.c), so the range bounds how many such connections per second one endpoint
 * can take: about 280/s here, where 61000-65535 alone gave 38/s. The program takes two ranges:
 * where the exclusions leave three pieces (an ephemeral range above 32768 that starts above it),
 * the two largest are used.
 *
 * Pure: the range is read by the applier (kernel/bpf.ts).
 */

export interface SnatPortPlan {
  /** [min, count] of each range; count 0 = unused. */
  readonly lo: readonly [number, number];
  readonly hi: readonly [number, number];
  readonly total: number;
  /**
   * Too few ports lie outside the ephemeral range, so 1024-65535 is used (but the NodePorts): a
   * translated flow may then meet a connection the node opened itself to the same endpoint (say
   * so in the log).
   */
  readonly sharedWithNode: boolean;
}

const FIRST = 1024;
const LAST = 65535;
/** Below this many ports outside the ephemeral range, SNAT would fail under modest load. */
const MIN_PORTS = 1024;
/** The API server's default --service-node-port-range, never a SNAT port. */
export const NODEPORT_RANGE: readonly [number, number] = [30000, 32767];

/** [min, max] pieces of `from` with `cut` ([min, max]) taken out. */
function without(from: readonly (readonly [number, number])[], cut: readonly [number, number]): [number, number][] {
  const out: [number, number][] = [];
  for (const [a, b] of from) {
    if (cut[1] < a || cut[0] > b) {
      out.push([a, b]);
      continue;
    }
    if (a < cut[0]) out.push([a, cut[0] - 1]);
    if (b > cut[1]) out.push([cut[1] + 1, b]);
  }
  return out;
}

/** The two largest pieces, in port order, as the program's (lo, hi). */
function plan(pieces: [number, number][], sharedWithNode: boolean): SnatPortPlan {
  const two = [...pieces]
    .sort((x, y) => y[1] - y[0] - (x[1] - x[0]))
    .slice(0, 2)
    .sort((x, y) => x[0] - y[0]);
  const range = (p: [number, number] | undefined): [number, number] => (p ? [p[0], p[1] - p[0] + 1] : [0, 0]);
  const lo = range(two[0]);
  const hi = range(two[1]);
  return { lo, hi, total: lo[1] + hi[1], sharedWithNode };
}

export function snatPortPlan(ephemeralMin: number, ephemeralMax: number): SnatPortPlan {
  const all: [number, number][] = [[FIRST, LAST]];
  const pieces = without(without(all, [ephemeralMin, ephemeralMax]), NODEPORT_RANGE);
  const p = plan(pieces, false);
  if (p.total >= MIN_PORTS) return p;
  return plan(without(all, NODEPORT_RANGE), true);
}

/** "32768 60999" (the file's text) as [min, max]; undefined when it does not read as such. */
export function parsePortRange(text: string): [number, number] | undefined {
  const m = /^\s*(\d{1,5})\s+(\d{1,5})\s*$/.exec(text);
  if (!m) return undefined;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a <= b && b <= LAST ? [a, b] : undefined;
}

/** As the log line says it: "1024-32767,61000-65535". */
export function describeSnatPorts(p: SnatPortPlan): string {
  return [p.lo, p.hi]
    .filter(([, n]) => n > 0)
    .map(([min, n]) => `${min}-${min + n - 1}`)
    .join(',');
}
