/**
 * Which source ports the tc program may give a masqueraded (SNAT) connection: the node's ports
 * outside its ephemeral range (net.ipv4.ip_local_port_range), from 1024 up. A port the node's own
 * sockets never pick by themselves keeps every translated tuple apart from the node's own
 * connections to the same endpoint (the kernel's NAT gets that from conntrack, which sees both;
 * the tc program does not see the node's sockets).
 *
 * With the default ephemeral range (32768-60999) that is 1024-32767 and 61000-65535: 36,280
 * ports per endpoint. A translated tuple is held 120 s after the endpoint closed first (its
 * TIME_WAIT, tc_lb.c), so the range bounds how many such connections per second one endpoint
 * can take: about 300/s here, where 61000-65535 alone gave 38/s.
 *
 * Pure: the range is read by the applier (kernel/bpf.ts).
 */

export interface SnatPortPlan {
  /** [min, count] of each range; count 0 = unused. */
  readonly lo: readonly [number, number];
  readonly hi: readonly [number, number];
  readonly total: number;
  /**
   * Too few ports lie outside the ephemeral range, so the whole 1024-65535 is used: a translated
   * flow may then meet a connection the node opened itself to the same endpoint (say so in the log).
   */
  readonly sharedWithNode: boolean;
}

const FIRST = 1024;
const LAST = 65535;
/** Below this many ports outside the ephemeral range, SNAT would fail under modest load. */
const MIN_PORTS = 1024;

export function snatPortPlan(ephemeralMin: number, ephemeralMax: number): SnatPortPlan {
  const lo = Math.max(0, Math.min(ephemeralMin, LAST + 1) - FIRST);
  const hiMin = Math.max(ephemeralMax + 1, FIRST);
  const hi = Math.max(0, LAST + 1 - hiMin);
  if (lo + hi < MIN_PORTS) return { lo: [FIRST, LAST + 1 - FIRST], hi: [0, 0], total: LAST + 1 - FIRST, sharedWithNode: true };
  return { lo: [FIRST, lo], hi: [hi > 0 ? hiMin : 0, hi], total: lo + hi, sharedWithNode: false };
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
