// getJSON: lists go where client-node's watches go — through a kubeconfig's proxy-url when it
// has one.
import t from 'tap';
import { createServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { MAX_PAGE_BYTES, getJSON } from '../../../src/kube/rest.js';

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

function kubeConfigFor(port: number): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }, { name: 'u' });
  return kc;
}

t.test('a list request with no answer fails after the timeout instead of waiting for TCP', async (t) => {
  // Accepts the request and never answers: a server behind a black hole, a hung connection.
  const api = createServer(() => {});
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    api.closeAllConnections();
    return new Promise<void>((r) => api.close(() => r()));
  });
  const kc = kubeConfigFor((api.address() as AddressInfo).port);
  await t.rejects(getJSON(kc, '/api/v1/services', { limit: 500 }, undefined, { timeoutMs: 100 }), /GET \/api\/v1\/services: no answer for 100 ms/);
});

t.test('a page larger than the bound fails the request', async (t) => {
  const api = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(`{"items":[],"pad":"${'x'.repeat(4096)}"}`));
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => api.close(() => r())));
  const kc = kubeConfigFor((api.address() as AddressInfo).port);
  await t.rejects(getJSON(kc, '/api/v1/services', {}, undefined, { maxBytes: 1024 }), /response larger than 1024 bytes/);
  t.ok(await getJSON(kc, '/api/v1/services', {}, undefined, { maxBytes: 8192 }), 'within the bound');
  t.equal(MAX_PAGE_BYTES, 64 * 1024 * 1024, 'pages: 64 MiB, far below what JSON.parse of one string could hold');
});
