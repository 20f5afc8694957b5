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
  /** Sessions evicted (least recently used first) to make room, whichever bound was reached. */
  udpEvictions: number;
  udpExpirations: number;
  /** Datagrams discarded: verdict drop/reject, no endpoint, queue overflow while connecting, or a session that could not connect. */
  udpDropped: number;
  /** Sessions whose socket could not connect to the endpoint (no route, a blackhole or prohibit route, ...). */
  udpConnectFailures: number;
  /** The bound on UDP sessions in force: maxUdpSessions, or less under the descriptor budget (descriptors.ts). */
  udpSessionLimit: number;
  /** Of udpEvictions, those at the descriptor budget (it was below maxUdpSessions). */
  udpDescriptorEvictions: number;
  /** EMFILE/ENFILE seen by Node: on accept (libuv resets most such connections without a word), for an upstream TCP socket, for a UDP session's socket. */
  tcpAcceptOutOfDescriptors: number;
  tcpConnectOutOfDescriptors: number;
  udpSessionOutOfDescriptors: number;
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
    udpConnectFailures: 0,
    udpSessionLimit: 0,
    udpDescriptorEvictions: 0,
    tcpAcceptOutOfDescriptors: 0,
    tcpConnectOutOfDescriptors: 0,
    udpSessionOutOfDescriptors: 0,
  };
}
