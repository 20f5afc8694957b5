/**
 * Counters of the userspace data path, for logs, tests and metrics. Plain mutable numbers: the
 * hot path increments them without allocation.
 */
export interface ForwarderStats {
  tcpAccepted: number;
  tcpForwarded: number;
  /** Connections reset at once: verdict reject, or every endpoint attempt failed. */
  tcpRejected: number;
  /** Connections closed without reply: verdict drop or outside loadBalancerSourceRanges. */
  tcpDropped: number;
  /** Failed connects to an endpoint (each retry counts). */
  tcpConnectFailures: number;
  tcpActive: number;
  udpSessionsCreated: number;
  udpSessionsActive: number;
  udpEvictions: number;
  udpExpirations: number;
  /** Datagrams discarded: verdict drop/reject, no endpoint, or queue overflow while connecting. */
  udpDropped: number;
}

export function newStats(): ForwarderStats {
  return {
    tcpAccepted: 0,
    tcpForwarded: 0,
    tcpRejected: 0,
    tcpDropped: 0,
    tcpConnectFailures: 0,
    tcpActive: 0,
    udpSessionsCreated: 0,
    udpSessionsActive: 0,
    udpEvictions: 0,
    udpExpirations: 0,
    udpDropped: 0,
  };
}
