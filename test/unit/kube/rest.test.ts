// getJSON: lists go where client-node's watches go — through a kubeconfig's proxy-url when it
// has one.
import t from 'tap';
import { createServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { getJSON } from '../../../src/kube/rest.js';

t.test("a kubeconfig's proxy-url carries the lists too", async (t) => {
  // A forward proxy stand-in: client-node's agent tunnels (CONNECT host:port), and the tunnel
  // is handed to a stand-in API server that answers the list.
  const seen: string[] = [];
  const api = createServer((req, res) => {
    seen.push(`GET ${req.url ?? ''}`);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"items":[],"metadata":{"resourceVersion":"7"}}');
  });
  const proxy = createServer((_req, res) => res.writeHead(405).end());
  proxy.on('connect', (req: IncomingMessage, socket: Duplex) => {
    seen.push(`CONNECT ${req.url ?? ''}`);
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    api.emit('connection', socket);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => proxy.close(() => r())));
  const kc = new KubeConfig();
  // The server itself is unreachable (port 1): only the way through the proxy can answer.
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'http://127.0.0.1:1', skipTLSVerify: true, proxyUrl: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const body = await getJSON(kc, '/api/v1/services', { limit: 500 });
  t.same(body, { items: [], metadata: { resourceVersion: '7' } });
  t.same(seen, ['CONNECT 127.0.0.1:1', 'GET /api/v1/services?limit=500'], 'through the proxy to the server');
});
