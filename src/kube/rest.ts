/**
 * GETs against the API server, answered as decoded JSON and nothing more: client-node's
 * generated API methods turn every list into class instances (Date objects, a second copy of
 * each object), which is exactly the waste a node proxy cannot afford at 10,000 Services. The
 * kubeconfig's TLS material and credentials still come from client-node (applyToHTTPSOptions),
 * so auth works as for any other client-node request. Watches are read here too, line by line
 * with a bound on a line and a timer on silence, which client-node's Watch has neither of.
 *
 * Stage: kube. Never interprets what it fetched.
 */
import { constants as bufferConstants } from 'node:buffer';
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
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

/**
 * Largest page accepted. A page is bounded by `limit` (500 objects of at most ~1.5 MiB in
 * theory, a few MB in practice); JSON.parse of a body near V8's string limit would exhaust the
 * heap long before a larger bound tripped.
 */
export const MAX_PAGE_BYTES = 64 * 1024 * 1024;
/** Largest unpaginated list accepted: V8's longest string (a body any longer cannot be decoded). */
export const MAX_LIST_BYTES = bufferConstants.MAX_STRING_LENGTH;
/**
 * A request that receives nothing for this long fails (one hung page fails the list and the
 * backoff runs, instead of the kernel's ~15 min retransmission timeout on a dead connection).
 */
export const REQUEST_TIMEOUT_MS = 60_000;
/** Longest watch event line accepted: the API server caps objects at ~1.5 MiB. */
export const MAX_WATCH_LINE_BYTES = 4 * 1024 * 1024;

export interface GetLimits {
  /** Largest body accepted; MAX_PAGE_BYTES. */
  readonly maxBytes?: number;
  /** Longest silence; REQUEST_TIMEOUT_MS. */
  readonly timeoutMs?: number;
}

type Query = Readonly<Record<string, string | number | boolean | undefined>>;

interface Prepared {
  readonly url: URL;
  readonly opts: RequestOptions;
  readonly https: boolean;
  readonly proxied: boolean;
}

async function prepare(kc: KubeConfig, path: string, query: Query): Promise<Prepared> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const opts: RequestOptions = { headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  return { url, opts, https: url.protocol === 'https:', proxied: !!cluster.proxyUrl };
}

/** The error of a non-2xx answer, from its body (a Status when the API server wrote it). */
function statusError(what: string, status: number, text: string): ApiStatusError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const rec = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
  const reason = typeof rec.reason === 'string' ? rec.reason : '';
  const message = typeof rec.message === 'string' ? rec.message : text.slice(0, 200);
  return new ApiStatusError(status, reason, `${what}: ${status}${reason ? ` ${reason}` : ''}: ${message}`);
}

export async function getJSON(kc: KubeConfig, path: string, query: Query, signal?: AbortSignal, limits: GetLimits = {}): Promise<unknown> {
  const { url, opts, https, proxied } = await prepare(kc, path, query);
  const maxBytes = limits.maxBytes ?? MAX_PAGE_BYTES;
  const timeoutMs = limits.timeoutMs ?? REQUEST_TIMEOUT_MS;
  // A kubeconfig `proxy-url`: client-node's agent is the one that speaks to the proxy (its Watch
  // uses it too); ours would go straight to the server, which such a network does not allow.
  const agent = proxied ? opts.agent : https ? httpsAgent : httpAgent;
  return new Promise((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)(url, { ...opts, method: 'GET', agent, signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      res.on('data', (b: Buffer) => {
        if (tooLarge) return;
        size += b.length;
        if (size > maxBytes) {
          // Rejected here and the connection dropped without an error: destroy(err) would raise
          // it where nothing listens, and 'end' may still come with what was read.
          tooLarge = true;
          chunks.length = 0;
          reject(new Error(`GET ${url.pathname}: response larger than ${maxBytes} bytes`));
          req.destroy();
          return;
        }
        chunks.push(b);
      });
      res.on('error', reject);
      res.on('end', () => {
        if (tooLarge) return;
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
        chunks.length = 0;
        const text = body.toString('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          reject(statusError(`GET ${url.pathname}`, status, text));
          return;
        }
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(new Error(`GET ${url.pathname}: response is not JSON: ${e instanceof Error ? e.message : String(e)}`));
        }
      });
    });
    // Silence on the socket (connecting, waiting for the answer, or mid-body) fails the request.
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url.pathname}: no answer for ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** A watch fell silent: nothing arrived for `idleMs`. */
export class WatchIdleError extends Error {
  readonly code = 'FERRY_ERR_WATCH_IDLE';
  constructor(
    readonly path: string,
    readonly idleMs: number,
    /** The server had answered 200: a stream that went quiet, not a server that never answered. */
    readonly answered: boolean,
  ) {
    super(answered ? `watch ${path}: nothing received for ${idleMs} ms` : `watch ${path}: no answer for ${idleMs} ms`);
    this.name = 'WatchIdleError';
  }
}

/** A watch stream that cannot be read as events: a line too long, or not JSON. */
export class WatchStreamError extends Error {
  readonly code = 'FERRY_ERR_WATCH_STREAM';
  constructor(message: string) {
    super(message);
    this.name = 'WatchStreamError';
  }
}

export interface WatchHandlers {
  /** The server answered 200: events may follow. */
  onOpen(): void;
  /** One event; a throw ends the watch with that error. */
  onEvent(type: unknown, object: unknown): void;
}

export interface WatchLimits {
  /** Longest silence before the watch is given up; covers connecting and the answer too. */
  readonly idleMs: number;
  /** Longest event line; MAX_WATCH_LINE_BYTES. */
  readonly maxLineBytes?: number;
}

/**
 * One watch request (`watch=true` added to `query`), its newline-delimited JSON events handed
 * to `handlers` as they arrive. Resolves when the server ends the stream; rejects with an
 * ApiStatusError for a non-200 answer, WatchIdleError, WatchStreamError, or the connection's
 * error. A last line cut short by the end of the stream is dropped: it was never complete, and
 * a watch resumed from the last resourceVersion receives that event again.
 *
 * Each watch gets client-node's agent for the cluster (TLS, proxy-url), as client-node's Watch
 * does: a watch holds its connection for minutes and must not take a pooled socket from lists.
 */
export async function watchStream(
  kc: KubeConfig,
  path: string,
  query: Query,
  handlers: WatchHandlers,
  signal: AbortSignal,
  limits: WatchLimits,
): Promise<void> {
  const { url, opts, https } = await prepare(kc, path, { ...query, watch: true });
  const maxLine = limits.maxLineBytes ?? MAX_WATCH_LINE_BYTES;
  const what = `watch ${url.pathname}`;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let answered = false;
    let timer: NodeJS.Timeout | undefined;
    let req: ClientRequest | undefined;
    const settle = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (err) {
        req?.destroy();
        reject(err);
      } else resolve();
    };
    const onAbort = () => settle(new Error(`${what}: stopped`));
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => settle(new WatchIdleError(url.pathname, limits.idleMs, answered)), limits.idleMs);
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort);
    arm();
    const stream = (res: IncomingMessage) => {
      answered = true;
      handlers.onOpen();
      // The line being read, as the chunks that hold it so far (no newline yet).
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const line = (b: Buffer) => {
        if (b.length === 0 || settled) return;
        let event: unknown;
        try {
          event = JSON.parse(b.toString('utf8'));
        } catch (e) {
          throw new WatchStreamError(`${what}: an event is not JSON (${e instanceof Error ? e.message : String(e)})`);
        }
        const rec = typeof event === 'object' && event !== null ? (event as Record<string, unknown>) : {};
        handlers.onEvent(rec.type, rec.object);
      };
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        arm();
        try {
          let start = 0;
          for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
            const tail = chunk.subarray(start, nl);
            if (pendingBytes + tail.length > maxLine) throw tooLong(pendingBytes + tail.length);
            line(pending.length === 0 ? tail : Buffer.concat([...pending, tail]));
            pending = [];
            pendingBytes = 0;
            start = nl + 1;
          }
          if (start < chunk.length) {
            pendingBytes += chunk.length - start;
            if (pendingBytes > maxLine) throw tooLong(pendingBytes);
            pending.push(chunk.subarray(start));
          }
        } catch (e) {
          settle(e instanceof Error ? e : new Error(String(e)));
        }
      });
      res.on('end', () => settle(undefined));
      res.on('error', (e) => settle(e));
      res.on('close', () => {
        if (!res.complete) settle(new Error(`${what}: connection closed before the end of the stream`));
      });
    };
    const tooLong = (n: number) => new WatchStreamError(`${what}: an event line passed ${maxLine} bytes (${n} without a newline); watch abandoned`);
    req = (https ? httpsRequest : httpRequest)(url, { ...opts, method: 'GET', agent: opts.agent }, (res) => {
      if (res.statusCode === 200) {
        stream(res);
        return;
      }
      // The answer to a refused watch is a Status; read a little of it for the error.
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        if (size < 65536) chunks.push(b);
        size += b.length;
      });
      res.on('end', () => settle(statusError(what, res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'))));
      res.on('error', (e) => settle(e));
    });
    req.on('error', (e) => settle(e));
    req.end();
  });
}
