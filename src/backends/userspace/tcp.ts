/**
 * TCP frontends: a listening socket per (address, port) that accepts, picks an endpoint per the
 * IR, connects (retrying on failure, bounded: connectAttempts), and forwards both ways with
 * backpressure and half-close: through the native addon's splice(2) when it is loaded
 * (splice.ts), else by piping Node streams. Reject → the client is reset at once; drop → the
 * accepted connection is closed without a byte (a userspace socket cannot ignore a SYN the
 * kernel has already answered; see docs/userspace.md).
 *
 * Must never leave a socket without an 'error' listener (an unhandled socket error would take
 * the whole proxy down), and never decides which endpoints are eligible: that is the Route's.
 */
import net from 'node:net';
import type { PlannedEndpoint } from '../../plan/types.js';
import type { Logger } from '../../util/log.js';
import { isOutOfDescriptors } from './descriptors.js';
import type { Frontend } from './frontends.js';
import { endpointId, type EndpointPicker } from './picker.js';
import type { Route } from './route.js';
import { abortSplice, spliceSockets } from './splice.js';
import type { ForwarderStats } from './stats.js';

export interface ForwardContext {
  route(frontend: Frontend, clientIP: string): Route;
  readonly stats: ForwarderStats;
  readonly log: Logger;
  /** One connect attempt per entry, each with that timeout (ms); kube-proxy's userspace used 250/500/1000/2000. */
  readonly connectTimeoutsMs: readonly number[];
  /** A socket could not be had (EMFILE/ENFILE): counts it and logs, rate-limited. */
  outOfDescriptors(what: DescriptorShortage, err: unknown, frontend: Frontend): void;
}

/** Where a descriptor was missing: accepting a client, the upstream TCP socket, a UDP session's socket. */
export type DescriptorShortage = 'accept' | 'connect' | 'udp';

/** A frontend's socket could not be opened (address in use, address not local, ...). */
export class ListenError extends Error {
  readonly code = 'FERRY_ERR_USERSPACE_LISTEN';
  constructor(
    readonly frontend: Frontend,
    override readonly cause: unknown,
  ) {
    super(`cannot listen on ${frontend.key} for ${frontend.service}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'ListenError';
  }
}

export class EndpointConnectError extends Error {
  readonly code = 'FERRY_ERR_USERSPACE_CONNECT';
  constructor(
    readonly endpoint: PlannedEndpoint,
    readonly reason: string,
    /** The socket's error, if there was one (not on a timeout). */
    override readonly cause?: unknown,
  ) {
    super(`connect to ${endpointId(endpoint)} failed: ${reason}`);
    this.name = 'EndpointConnectError';
  }
}

const KEEPALIVE_DELAY_MS = 30_000;
const BACKLOG = 4096;

function noop(): void {
  /* errors are acted on through 'close'/hadError or by the pairing logic */
}

function errCode(e: unknown): string {
  if (e && typeof e === 'object' && 'code' in e && typeof e.code === 'string') return e.code;
  return e instanceof Error ? e.message : String(e);
}

/** Connects to `ep`; rejects on error or after `timeoutMs`. The socket has an error listener. */
export function connectEndpoint(ep: PlannedEndpoint, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({
      host: ep.ip,
      port: ep.port,
      allowHalfOpen: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_DELAY_MS,
    });
    // Paused before it connects, Node never starts reading it, so it can still be handed to
    // splice (splice.ts); the stream pipe resumes it.
    s.pause();
    s.on('error', noop);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new EndpointConnectError(ep, `no answer within ${timeoutMs}ms`));
    }, timeoutMs);
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(new EndpointConnectError(ep, errCode(e), e));
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', noop);
      resolve(s);
    });
  });
}

/** Opens a connection to an endpoint within a timeout (connectEndpoint; a fake in tests). */
export type Connector<S> = (ep: PlannedEndpoint, timeoutMs: number) => Promise<S>;

export interface ConnectOutcome<S> {
  /** The connected socket; undefined when every attempt failed or there was nothing to try. */
  readonly upstream?: S;
  /** Connects started. */
  readonly attempts: number;
  /** Set when the last attempt could not get a descriptor (EMFILE/ENFILE): no further attempt was made. */
  readonly outOfDescriptors?: unknown;
}

/**
 * kube-proxy's userspace `TryConnectEndpoints`: one connect per timeout in `timeoutsMs`, each
 * with the next, longer timeout. An endpoint that failed is passed over while others remain;
 * once every endpoint has failed the round starts again, as kube-proxy's round robin wrapped
 * around, so a Service with one endpoint gets every attempt (250, 500, 1000, 2000 ms) instead of
 * one 250 ms try. With affinity, a failed sticky endpoint is passed over too (kube-proxy's
 * sessionAffinityReset). `gone()` ends the attempts early (the client left); `failed` hears of
 * each failed connect.
 */
export async function connectAttempts<S>(
  picker: EndpointPicker,
  clientIP: string,
  timeoutsMs: readonly number[],
  connect: Connector<S>,
  hooks: { gone(): boolean; failed(err: unknown): void },
): Promise<ConnectOutcome<S>> {
  const tried = new Set<string>();
  let attempts = 0;
  for (const timeoutMs of timeoutsMs) {
    if (hooks.gone()) break;
    let ep = picker.pick(clientIP, tried);
    if (!ep && tried.size > 0) {
      tried.clear();
      ep = picker.pick(clientIP, tried);
    }
    if (!ep) break;
    tried.add(endpointId(ep));
    attempts++;
    try {
      const upstream = await connect(ep, timeoutMs);
      picker.confirm(clientIP, ep);
      return { upstream, attempts };
    } catch (e) {
      // Not the endpoint's fault, and another attempt needs a socket just the same.
      if (e instanceof EndpointConnectError && isOutOfDescriptors(e.cause)) return { attempts, outOfDescriptors: e.cause };
      hooks.failed(e);
    }
  }
  return { attempts };
}

/**
 * Pipes client ⇄ upstream. Each direction's FIN is passed on (half-close); an error (RST) on one
 * side resets the other; once one side is fully closed the other is ended after its writes flush.
 */
export function joinSockets(client: net.Socket, upstream: net.Socket): void {
  if (upstream.destroyed) {
    client.resetAndDestroy();
    return;
  }
  upstream.on('error', () => {
    if (!client.destroyed) client.resetAndDestroy();
  });
  client.on('error', () => {
    if (!upstream.destroyed) upstream.resetAndDestroy();
  });
  upstream.on('close', () => {
    if (!client.destroyed) client.destroySoon();
  });
  client.on('close', () => {
    if (!upstream.destroyed) upstream.destroySoon();
  });
  client.pipe(upstream);
  upstream.pipe(client);
}

export class TcpListener {
  private readonly server: net.Server;
  /** Accepted client → its upstream once connected. */
  private readonly conns = new Map<net.Socket, net.Socket | undefined>();
  private closed = false;

  constructor(
    public frontend: Frontend,
    private readonly ctx: ForwardContext,
  ) {
    this.server = net.createServer({
      allowHalfOpen: true,
      // Nothing is read from the client before its endpoint is connected: the kernel buffers.
      pauseOnConnect: true,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_DELAY_MS,
    });
    this.server.on('connection', (c: net.Socket) => this.onConnection(c));
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void => reject(new ListenError(this.frontend, e));
      this.server.once('error', onError);
      this.server.listen({ host: this.frontend.ip, port: this.frontend.port, exclusive: true, backlog: BACKLOG }, () => {
        this.server.off('error', onError);
        this.server.on('error', (e) => {
          // libuv answers most accept EMFILEs itself (it resets the pending connections through a
          // reserve descriptor); the ones it passes on are counted with the others.
          if (isOutOfDescriptors(e)) this.ctx.outOfDescriptors('accept', e, this.frontend);
          else this.ctx.log.error('listener error', { frontend: this.frontend.key, err: e });
        });
        resolve();
      });
    });
  }

  /** Stops listening and ends every connection of this frontend (its address may be going away). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.close();
    for (const [client, upstream] of this.conns) {
      abortSplice(client);
      client.destroy();
      upstream?.destroy();
    }
    this.conns.clear();
  }

  get connections(): number {
    return this.conns.size;
  }

  private onConnection(client: net.Socket): void {
    const { stats } = this.ctx;
    stats.tcpAccepted++;
    client.on('error', noop);
    const clientIP = client.remoteAddress;
    if (this.closed || clientIP === undefined) {
      client.destroy();
      return;
    }
    const route = this.ctx.route(this.frontend, clientIP);
    if (route.verdict === 'reject') {
      stats.tcpRejected++;
      client.resetAndDestroy();
      return;
    }
    if (route.verdict === 'drop') {
      stats.tcpDropped++;
      client.destroy();
      return;
    }
    this.conns.set(client, undefined);
    stats.tcpActive++;
    client.once('close', () => {
      this.conns.delete(client);
      stats.tcpActive--;
    });
    void this.forward(client, clientIP, route.picker);
  }

  private async forward(client: net.Socket, clientIP: string, picker: EndpointPicker): Promise<void> {
    const { stats, log, connectTimeoutsMs } = this.ctx;
    const r = await connectAttempts(picker, clientIP, connectTimeoutsMs, connectEndpoint, {
      gone: () => client.destroyed,
      failed: (e) => {
        stats.tcpConnectFailures++;
        log.v(2, 'endpoint connect failed', { frontend: this.frontend.key, service: this.frontend.service, err: e });
      },
    });
    if (r.outOfDescriptors !== undefined) this.ctx.outOfDescriptors('connect', r.outOfDescriptors, this.frontend);
    const upstream = r.upstream;
    if (client.destroyed) {
      upstream?.destroy();
      return;
    }
    if (!upstream) {
      stats.tcpRejected++;
      log.v(2, 'no endpoint answered; resetting client', { frontend: this.frontend.key, attempts: r.attempts });
      client.resetAndDestroy();
      return;
    }
    stats.tcpForwarded++;
    this.conns.set(client, upstream);
    if (!spliceSockets(client, upstream, log)) joinSockets(client, upstream);
  }
}
