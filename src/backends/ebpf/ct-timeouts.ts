/**
 * The tc program's connection-tracking timeouts (tc_lb.c ferry_ct_timeouts), from kube-proxy's
 * conntrack settings: what kube-proxy writes into the kernel's conntrack for the other modes
 * (--conntrack-tcp-timeout-established, --conntrack-tcp-timeout-close-wait,
 * --conntrack-udp-timeout, --conntrack-udp-timeout-stream) holds for the flows ebpf mode tracks
 * itself. A setting of 0 leaves the kernel's value alone in kube-proxy; here it takes the node's
 * conntrack value (its sysctl, read by the applier), or the kernel's default where conntrack is
 * not loaded.
 *
 * Pure: the sysctls are read by the applier (kernel/bpf.ts).
 */

/** In milliseconds, as the config holds them; 0 = the node's value. */
export interface CtTimeoutSettings {
  readonly tcpEstablishedTimeoutMs: number;
  readonly tcpCloseWaitTimeoutMs: number;
  readonly udpTimeoutMs: number;
  readonly udpStreamTimeoutMs: number;
}

/** In seconds, each at least 1, in the order the addon takes them. */
export type CtTimeouts = readonly [established: number, closeWait: number, udp: number, udpStream: number];

/** The sysctl of each, under /proc/sys/net/netfilter/, and the kernel's default. */
export const CT_TIMEOUT_SYSCTLS: readonly (readonly [name: string, kernelDefault: number])[] = [
  ['nf_conntrack_tcp_timeout_established', 432000],
  ['nf_conntrack_tcp_timeout_close_wait', 60],
  ['nf_conntrack_udp_timeout', 30],
  ['nf_conntrack_udp_timeout_stream', 120],
];

const MAX_SECONDS = 0xffffffff;

/** `sysctl(name)`: the node's value in seconds, or undefined when it cannot be read. */
export function ctTimeoutsOf(s: CtTimeoutSettings, sysctl: (name: string) => number | undefined): CtTimeouts {
  const ms = [s.tcpEstablishedTimeoutMs, s.tcpCloseWaitTimeoutMs, s.udpTimeoutMs, s.udpStreamTimeoutMs];
  const out = CT_TIMEOUT_SYSCTLS.map(([name, kernelDefault], i) => {
    // Whole seconds, as kube-proxy writes them (a setting under a second would be 0: kept at 1).
    const set = Math.floor(ms[i]! / 1000);
    const node = sysctl(name);
    const secs = ms[i]! > 0 ? Math.max(1, set) : node !== undefined && Number.isInteger(node) && node > 0 ? node : kernelDefault;
    return Math.min(secs, MAX_SECONDS);
  });
  return [out[0]!, out[1]!, out[2]!, out[3]!];
}

/** `established=86400s closeWait=3600s udp=30s udpStream=120s` — for the start-up log. */
export function describeCtTimeouts(t: CtTimeouts): string {
  return `established=${t[0]}s closeWait=${t[1]}s udp=${t[2]}s udpStream=${t[3]}s`;
}
