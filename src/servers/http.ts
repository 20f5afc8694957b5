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

/** Starts an HTTP server; resolves with it once listening, rejects with ListenError. */
export function listen(what: string, host: string, port: number, handler: Handler): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(handler);
    // Health checkers and scrapers reconnect often; do not let idle sockets pile up.
    server.keepAliveTimeout = 5000;
    const onError = (e: Error) => {
      server.close();
      reject(new ListenError(what, host, port, e.message));
    };
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
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

export function sendJSON(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'X-Content-Type-Options': 'nosniff',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
