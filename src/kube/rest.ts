/**
 * One GET against the API server, answered as decoded JSON and nothing more: client-node's
 * generated API methods turn every list into class instances (Date objects, a second copy of
 * each object), which is exactly the waste a node proxy cannot afford at 10,000 Services. The
 * kubeconfig's TLS material and credentials still come from client-node (applyToHTTPSOptions),
 * so auth works as for any other client-node request.
 *
 * Stage: kube. Never interprets what it fetched.
 */
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** The API server answered with an error status. */
export class ApiStatusError extends Error {
  readonly code = 'FERRY_ERR_API_STATUS';
  constructor(
    readonly statusCode: number,
    /** Status.reason when the body is a Status ("Expired", "Gone", "Forbidden"), else "". */
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiStatusError';
  }
}

// Keep-alive: a paginated list is dozens of requests in a row.
const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 4 });
const httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 4 });

/** Largest body accepted (a page of a list; pages are bounded by `limit`). */
const MAX_BODY = 512 * 1024 * 1024;

export async function getJSON(
  kc: KubeConfig,
  path: string,
  query: Readonly<Record<string, string | number | undefined>>,
  signal?: AbortSignal,
): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const opts: RequestOptions = { headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const https = url.protocol === 'https:';
  // A kubeconfig `proxy-url`: client-node's agent is the one that speaks to the proxy (its Watch
  // uses it too); ours would go straight to the server, which such a network does not allow.
  const agent = cluster.proxyUrl ? opts.agent : https ? httpsAgent : httpAgent;
  return new Promise((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)(url, { ...opts, method: 'GET', agent, signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        size += b.length;
        if (size > MAX_BODY) {
          req.destroy(new Error(`GET ${url.pathname}: response larger than ${MAX_BODY} bytes`));
          return;
        }
        chunks.push(b);
      });
      res.on('error', reject);
      res.on('end', () => {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
        chunks.length = 0;
        const text = body.toString('utf8');
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch (e) {
          if ((res.statusCode ?? 0) >= 400) parsed = undefined;
          else {
            reject(new Error(`GET ${url.pathname}: response is not JSON: ${e instanceof Error ? e.message : String(e)}`));
            return;
          }
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          resolve(parsed);
          return;
        }
        const rec = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
        const reason = typeof rec.reason === 'string' ? rec.reason : '';
        const message = typeof rec.message === 'string' ? rec.message : text.slice(0, 200);
        reject(new ApiStatusError(status, reason, `GET ${url.pathname}: ${status}${reason ? ` ${reason}` : ''}: ${message}`));
      });
    });
    req.on('error', reject);
    req.end();
  });
}
