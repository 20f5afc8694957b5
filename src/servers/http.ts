/**
 * Small shared HTTP plumbing for ferry's servers: listen on an IP:port and report the bound
 * address, write a JSON response with kube-proxy's headers, close without waiting for idle
 * keep-alive clients. No routing decisions live here.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export class ListenError extends Error {
  readonly code = 'FERRY_ERR_LISTEN';
  constructor(
    readonly what: string,
    readonly host: string,
    readonly port: number,
    readonly reason: string,
  ) {
    super(`cannot serve ${what} on ${host.includes(':') ? `[${host}]` : host}:${port}: ${reason}`);
    this.name = 'ListenError';
  }
}

export interface ListenOptions {
  /**
   * A wildcard takes its own family only, as Go's "tcp4" / "tcp6" listeners: `0.0.0.0` IPv4 and
   * `::` IPv6. Without it, both take both families, as Go's "tcp".
   */
  readonly familyOnly?: boolean;
}

/**
 * Starts an HTTP server; resolves with it once listening, rejects with ListenError.
 *
 * `0.0.0.0` is served on both families, as kube-proxy's Go listener does with the same address
 * (a dual-stack socket): Node's 0.0.0.0 takes IPv4 only, and an IPv6 load balancer's health
 * check of a dual-stack node would be refused. libuv, as Go, clears IPV6_V6ONLY on the socket,
 * so net.ipv6.bindv6only does not matter; only where IPv6 is unusable (no IPv6 in the kernel,
 * or disabled) it stays IPv4.
 */
export async function listen(what: string, host: string, port: number, handler: Handler, opts: ListenOptions = {}): Promise<Server> {
  if (opts.familyOnly) return listenOn(what, host, port, handler, host, host.includes(':'));
  if (host === '0.0.0.0') {
    try {
      return await listenOn(what, '::', port, handler, host);
    } catch (e) {
      if (!(e instanceof ListenError && /EAFNOSUPPORT|EADDRNOTAVAIL|EPROTONOSUPPORT/.test(e.reason))) throw e;
    }
  }
  return listenOn(what, host, port, handler, host);
}

function listenOn(what: string, host: string, port: number, handler: Handler, asked: string, ipv6Only = false): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(handler);
    // Health checkers and scrapers reconnect often; do not let idle sockets pile up.
    server.keepAliveTimeout = 5000;
    const onError = (e: Error) => {
      server.close();
      reject(new ListenError(what, asked, port, e.message));
    };
    server.once('error', onError);
    server.listen({ host, port, exclusive: true, ipv6Only }, () => {
      server.off('error', onError);
      server.on('error', () => {
        /* per-connection errors are the client's problem */
      });
      resolve(server);
    });
  });
}

export function boundPort(server: Server): number {
  return (server.address() as AddressInfo).port;
}

/** Closes a server and its open connections. */
export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export function sendJSON(res: ServerResponse, status: number, body: string, headers: Readonly<Record<string, string>> = {}): void {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
