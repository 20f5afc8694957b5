/**
 * UDP frontends: one bound socket per (address, port). Each client (address, port) gets a
 * session: a socket connected to the endpoint the picker chose, kept in the shared SessionTable
 * (idle timeout, bounded). Replies go back through the frontend's socket, so the client sees
 * them come from the service address it sent to.
 *
 * A session whose endpoint left the IR's set is replaced on its client's next datagram; an ICMP
 * error from the endpoint (ECONNREFUSED) ends the session, so the next datagram picks again. A
 * session whose connect(2) fails (no route to the endpoint) ends at once, its datagrams dropped.
 * Must never send a reply from any socket but the frontend's, and never send on a socket that is
 * not connected (dgram throws ERR_SOCKET_BAD_PORT for a send without a port).
 */
import dgram from 'node:dgram';
import { isOutOfDescriptors } from './descriptors.js';
import type { Frontend } from './frontends.js';
import { endpointId, type EndpointPicker } from './picker.js';
import type { SessionTable } from './sessions.js';
import { ListenError, type ForwardContext } from './tcp.js';

/** Datagrams held per session while its socket connects; beyond, they are dropped (counted). */
const PENDING_LIMIT = 64;

export interface UdpSession {
  readonly upstream: dgram.Socket;
  readonly picker: EndpointPicker;
  readonly endpoint: string;
  /** Datagrams waiting for connect(); null once connected. */
  pending: Buffer[] | null;
  closed: boolean;
}

export interface UdpContext extends ForwardContext {
  readonly sessions: SessionTable<UdpSession>;
  /** A session's socket could not connect to `endpoint`: counts it and logs, once per endpoint of a Service. */
  udpConnectFailed(frontend: Frontend, endpoint: string, err: Error): void;
}

/** SessionTable onClose: releases the session's socket. */
export function closeUdpSession(s: UdpSession): void {
  if (s.closed) return;
  s.closed = true;
  s.pending = null;
  try {
    s.upstream.close();
  } catch {
    /* already closed after an error */
  }
}

export class UdpListener {
  private readonly socket: dgram.Socket;
  private readonly prefix: string;
  private closed = false;

  constructor(
    public frontend: Frontend,
    private readonly ctx: UdpContext,
  ) {
    this.prefix = `${frontend.key}|`;
    this.socket = dgram.createSocket({ type: frontend.family === 6 ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new ListenError(this.frontend, e));
      this.socket.once('error', onError);
      this.socket.bind({ address: this.frontend.ip, port: this.frontend.port, exclusive: true }, () => {
        this.socket.off('error', onError);
        this.socket.on('error', (e) => this.ctx.log.error('UDP socket error', { frontend: this.frontend.key, err: e }));
        resolve();
      });
    });
  }

  /** Closes the socket and every session of this frontend. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.sessions.deleteWhere((key) => key.startsWith(this.prefix));
    try {
      this.socket.close();
    } catch {
      /* never bound */
    }
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const { sessions, stats, log } = this.ctx;
    const key = this.prefix + rinfo.address + '|' + rinfo.port;
    const route = this.ctx.route(this.frontend, rinfo.address);
    let s = sessions.get(key);
    if (route.verdict !== 'forward') {
      if (s) sessions.delete(key);
      stats.udpDropped++;
      return;
    }
    if (s && (s.picker !== route.picker || !route.picker.has(s.endpoint))) {
      sessions.delete(key);
      s = undefined;
    }
    if (!s) {
      s = this.newSession(key, rinfo, route.picker);
      if (!s) {
        stats.udpDropped++;
        return;
      }
    }
    if (s.pending) {
      if (s.pending.length < PENDING_LIMIT) s.pending.push(msg);
      else stats.udpDropped++;
      return;
    }
    try {
      s.upstream.send(msg);
    } catch (e) {
      // Only a socket that is not connected (or already closed) throws here; one datagram and
      // its session are lost, never the process.
      stats.udpDropped++;
      log.v(2, 'UDP send to the endpoint failed; session ended', { frontend: this.frontend.key, endpoint: s.endpoint, err: e });
      if (sessions.get(key) === s) sessions.delete(key);
    }
  }

  private newSession(key: string, client: dgram.RemoteInfo, picker: EndpointPicker): UdpSession | undefined {
    const { sessions, stats, log } = this.ctx;
    const ep = picker.pick(client.address);
    if (!ep) return undefined;
    const upstream = dgram.createSocket({ type: this.frontend.family === 6 ? 'udp6' : 'udp4' });
    const session: UdpSession = { upstream, picker, endpoint: endpointId(ep), pending: [], closed: false };
    upstream.on('error', (e) => {
      // ICMP unreachable from the endpoint, or a send failure: end the session so the next
      // datagram from this client picks again. No descriptor for the socket (its implicit bind
      // fails) ends it too.
      if (isOutOfDescriptors(e)) this.ctx.outOfDescriptors('udp', e, this.frontend);
      else log.v(2, 'UDP session error', { frontend: this.frontend.key, endpoint: session.endpoint, err: e });
      if (!session.closed && sessions.get(key) === session) sessions.delete(key);
      else closeUdpSession(session);
    });
    upstream.on('message', (reply) => {
      if (session.closed || this.closed) return;
      sessions.touch(key);
      this.socket.send(reply, client.port, client.address);
    });
    // dgram passes a failed connect(2) to this callback only (no 'error' event).
    upstream.connect(ep.port, ep.ip, (err?: Error) => {
      const queued = session.pending;
      session.pending = null;
      if (err) {
        stats.udpDropped += queued?.length ?? 0;
        if (!session.closed) this.ctx.udpConnectFailed(this.frontend, session.endpoint, err);
        if (sessions.get(key) === session) sessions.delete(key);
        else closeUdpSession(session);
        return;
      }
      if (session.closed || !queued) return;
      for (const m of queued) upstream.send(m);
    });
    picker.confirm(client.address, ep);
    sessions.add(key, session);
    stats.udpSessionsCreated++;
    return session;
  }
}
