/**
 * A list+watch of one resource that survives the API server and keeps no objects.
 *
 * Each item is handed to the sink as decoded JSON the moment it arrives and then forgotten: the
 * sink (the model's tracker) decodes what the planner reads and drops the rest, so the cluster
 * exists once in memory, in its compact form. The informer itself remembers only each object's
 * key and resourceVersion, to report deletions after a relist and to skip objects that did not
 * change.
 *
 * Lists are paginated (`limit`/`continue`, as client-go's reflector), so a 44,000-Service list
 * is decoded a page at a time instead of as one giant response; a continue token that expired
 * (`410` on a later page) falls back to one unpaginated list, as client-go's pager. After a
 * list, a watch resumes from the list's resourceVersion, with bookmarks; a watch the server ends
 * normally (its timeout), or one silent for `watchIdleMs` (a connection that died without a
 * word), is resumed from the last resourceVersion seen; `410 Gone` relists at once. A watch
 * refused as retriable (429, 5xx, connection refused) or whose stream cannot be read is retried
 * from the same resourceVersion after a capped, jittered exponential backoff, as client-go's
 * reflector; any other failure relists after it. The backoff resets only once a watch is shown
 * to work (an event, or open for a second): a list that succeeds while its watch keeps failing
 * does not. Logs state changes (failing, recovered), not every retry. An item without a name is
 * logged and skipped; it never fails the list.
 *
 * Stage: kube. Feeds events to a sink; never interprets the objects.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { ApiStatusError, MAX_LIST_BYTES, WatchIdleError, WatchStreamError, getJSON, watchStream } from './rest.js';

/** Receives decoded JSON objects exactly as the API server sent them (untrusted). */
export interface InformerSink {
  upsert(obj: unknown): void;
  /** `obj` may be a stub holding only metadata.namespace/name (an object deleted while not watching). */
  remove(obj: unknown): void;
}

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

/** A watch the server ends sooner than this without an event counts as a failure (client-go: 1 s). */
const SHORT_WATCH_MS = 1000;

/**
 * 200 ms doubling to 1.6 s (±20%): after an outage the proxy is current within 2 s of the API
 * server's return, while one node retries at most about once a second — jitter spreads a
 * cluster's nodes, so their relists do not arrive in one wave.
 */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 200, maxMs: 1600 };

/**
 * A watch that receives nothing, not even a bookmark, for this long is presumed dead and resumed
 * from its last resourceVersion. The API server sends bookmarks about once a minute; client-go
 * notices a dead connection by HTTP/2 pings after ~45 s. Without this, a black-holed connection
 * lasted until TCP keepalive gave up (~12 min) while ferry reported itself synced.
 */
export const DEFAULT_WATCH_IDLE_MS = 150_000;

/** Items per list page (client-go's reflector pages by 500 too). */
export const DEFAULT_PAGE_SIZE = 500;

export interface InformerOptions {
  /** Plural resource name for logs ("services"). */
  readonly resource: string;
  /** Collection path, e.g. /api/v1/services. */
  readonly path: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly kubeConfig: KubeConfig;
  readonly sink: InformerSink;
  readonly backoff?: Backoff;
  readonly pageSize?: number;
  readonly log?: Logger;
  /** Called for every listed or watched item that is skipped as malformed. */
  readonly onBadItem?: (reason: string) => void;
  /** How a list page is fetched (tests wrap it to see when pages are asked for); getJSON. */
  readonly get?: typeof getJSON;
  /** Silence after which a watch is resumed; DEFAULT_WATCH_IDLE_MS. */
  readonly watchIdleMs?: number;
  /**
   * An API group this API server may not serve at all (ServiceCIDRs before Kubernetes 1.33): a
   * 404 on the list is taken as an empty list, as client-go's reflector takes it — synced, no
   * objects, not a failure — and asked again after the backoff's longest step.
   */
  readonly mayBeAbsent?: boolean;
}

/** Delay before retry number `attempt` (1-based): exponential, capped, ±20% jitter. */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Human-readable reason of a request error. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const parts = [e.message.split('\n')[0] ?? e.message];
  const rec = e as unknown as Record<string, unknown>;
  for (const k of ['code', 'statusCode', 'errno'] as const) {
    const v = rec[k];
    if ((typeof v === 'string' || typeof v === 'number') && !parts[0]!.includes(String(v))) parts.push(`${k}=${v}`);
  }
  return parts.join(' ').slice(0, 300);
}

function rec(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function strField(o: Record<string, unknown> | undefined, k: string): string | undefined {
  const v = o && Object.prototype.hasOwnProperty.call(o, k) ? o[k] : undefined;
  return typeof v === 'string' ? v : undefined;
}

/** `namespace/name` and resourceVersion of an item, or a reason it cannot be one. */
function identity(obj: unknown): { key: string; rv: string | undefined } | string {
  const meta = rec(rec(obj)?.metadata);
  if (!meta) return 'no metadata';
  const name = strField(meta, 'name');
  const ns = strField(meta, 'namespace');
  if (!name) return `metadata.name missing or not a string${ns ? ` (namespace ${JSON.stringify(ns.slice(0, 64))})` : ''}`;
  return { key: `${strField(meta, 'namespace') ?? ''}/${name}`, rv: strField(meta, 'resourceVersion') };
}

function stub(key: string): unknown {
  const i = key.indexOf('/');
  const namespace = key.slice(0, i);
  return { metadata: { ...(namespace ? { namespace } : {}), name: key.slice(i + 1) } };
}

/** A 410: the resourceVersion (or continue token) is too old; only a fresh list helps. */
function isGone(e: unknown): boolean {
  return e instanceof ApiStatusError && e.statusCode === 410;
}

/**
 * A watch failure that a watch from the same resourceVersion may get past, so nothing needs
 * listing again: client-go's isWatchErrorRetriable (connection refused, 429) and 5xx (an API
 * server restarting or overloaded behind its load balancer); and a stream that could not be
 * read (silent before answering, a line too long or not JSON), whose events the resume brings again.
 */
/**
 * The API server's store is behind the resourceVersion asked for (its etcd restored from a
 * backup, or wiped): kube-apiserver's "Too large resource version" (504 Timeout), on which
 * client-go's reflector relists (IsTooLargeResourceVersion). Retrying the watch from the same
 * resourceVersion would never get past it, and objects gone from the store would never go.
 */
function isTooLargeResourceVersion(e: unknown): boolean {
  return e instanceof ApiStatusError && /too large resource version/i.test(e.message);
}

function isRetriableWatchError(e: unknown): boolean {
  if (e instanceof ApiStatusError) return e.statusCode === 429 || (e.statusCode >= 500 && e.statusCode < 600);
  if (e instanceof WatchIdleError || e instanceof WatchStreamError) return true;
  return e instanceof Error && (e as Error & { code?: unknown }).code === 'ECONNREFUSED';
}

/** How a watch ended without failing. */
interface WatchEnd {
  readonly events: number;
  /** Given up after watchIdleMs of silence (the connection presumed dead), not ended by the server. */
  readonly idle: boolean;
}

class Gone extends Error {
  constructor() {
    super('resourceVersion expired (410 Gone)');
  }
}

export class ResilientInformer {
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly pageSize: number;
  private readonly watchIdleMs: number;
  /** What the sink has been told exists: key → resourceVersion. */
  private readonly known = new Map<string, string | undefined>();
  /** Where the next watch resumes. */
  private resourceVersion: string | undefined;
  /** Bumped by stop(): every loop and callback of an older generation falls silent. */
  private generation = 0;
  private stopped = true;
  private synced = false;
  /** The last list was answered 404 (mayBeAbsent): this API server does not serve the resource. */
  private absent = false;
  private attempts = 0;
  private lastError: { at: number; error: string } | undefined;
  private syncWaiters: (() => void)[] = [];
  private listAbort: AbortController | undefined;
  private watchAbort: AbortController | undefined;
  private wakeSleep: (() => void) | undefined;

  constructor(private readonly opts: InformerOptions) {
    this.log = opts.log ?? logger('kube');
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
    this.watchIdleMs = opts.watchIdleMs ?? DEFAULT_WATCH_IDLE_MS;
  }

  /** True once the first list has been delivered to the sink. */
  hasSynced(): boolean {
    return this.synced;
  }

  /** This API server answers the resource's list with 404 (only with mayBeAbsent). */
  notServed(): boolean {
    return this.absent;
  }

  /** Consecutive failed attempts (0 while healthy). */
  failures(): number {
    return this.attempts;
  }

  /** The most recent failure (also after recovery), for `ferry status`. */
  lastFailure(): { readonly at: number; readonly error: string } | undefined {
    return this.lastError;
  }

  /** Resolves true when synced, false when `timeoutMs` passes first (or the informer stops). */
  waitForSync(timeoutMs?: number): Promise<boolean> {
    if (this.synced) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        resolve(this.synced);
      };
      this.syncWaiters.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.syncWaiters = this.syncWaiters.filter((w) => w !== done);
          resolve(false);
        }, timeoutMs);
      }
    });
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const gen = ++this.generation;
    void this.run(gen);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.listAbort?.abort();
    this.watchAbort?.abort();
    this.wakeSleep?.();
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private live(gen: number): boolean {
    return !this.stopped && gen === this.generation;
  }

  private async run(gen: number): Promise<void> {
    let needList = true;
    while (this.live(gen)) {
      try {
        if (needList) {
          await this.list(gen);
          if (!this.live(gen)) return;
          needList = false;
          if (this.absent) {
            this.absent = false;
            this.log.info(`${this.opts.resource}: served by the API server now`);
          }
          // Synced, but the backoff stays: a list that works while its watch fails right after
          // must not retry at the first step forever (client-go's backoff is not reset by a list).
          this.markSynced();
        }
        const began = Date.now();
        const end = await this.watch(gen);
        if (!this.live(gen)) return;
        if (end.idle) {
          this.log.v(2, `watch for ${this.opts.resource}: nothing received for ${this.watchIdleMs} ms; resuming`, { resourceVersion: this.resourceVersion });
          continue;
        }
        // The server ended the watch (its timeout): resume from where it stopped. One that ends
        // at once without a single event is not a timeout but something answering in the API
        // server's place (a proxy, a load balancer): as client-go's "very short watch", wait
        // out the backoff before the next, or every node asks thousands of times a second.
        if (end.events === 0 && Date.now() - began < SHORT_WATCH_MS) {
          await this.failed(`the watch ended after ${Date.now() - began} ms without an event`, 'still ending at once', ': ');
        } else this.resetBackoff();
      } catch (e) {
        if (!this.live(gen)) return;
        if (e instanceof Gone || isGone(e)) {
          needList = true;
          this.log.v(2, `${this.opts.resource}: resourceVersion expired; relisting`);
          continue;
        }
        if (needList && this.opts.mayBeAbsent && e instanceof ApiStatusError && e.statusCode === 404) {
          this.notServedHere();
          await this.sleep(this.backoff.maxMs);
          continue;
        }
        // A list that failed is listed again; a watch refused as retriable resumes from the same
        // resourceVersion (client-go), any other watch failure relists — a resourceVersion the
        // store is behind too, after the backoff (a server answering it to every attempt would
        // otherwise be listed without pause).
        if (!isRetriableWatchError(e) || isTooLargeResourceVersion(e)) needList = true;
        await this.failed(describeError(e), 'still failing', ' failed: ');
      }
    }
  }

  /** A 404 list (mayBeAbsent): as an empty list — what the sink was told of goes — and synced. */
  private notServedHere(): void {
    if (!this.absent) this.log.info(`${this.opts.resource}: not served by this API server (404); taken as none, asked again every ${this.backoff.maxMs / 1000} s`);
    this.absent = true;
    for (const key of [...this.known.keys()]) this.remove(stub(key));
    this.attempts = 0;
    this.markSynced();
  }

  /** Counts a failed attempt, logs it (the first as a warning), and waits out the backoff. */
  private async failed(error: string, still: string, sep: string): Promise<void> {
    this.attempts++;
    this.lastError = { at: Date.now(), error };
    const delay = backoffDelay(this.backoff, this.attempts);
    if (this.attempts === 1) this.log.warn(`watch for ${this.opts.resource}${sep}${error}; retrying`);
    else this.log.v(2, `watch for ${this.opts.resource} ${still}`, { attempt: this.attempts, retryInMs: delay, error });
    await this.sleep(delay);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeSleep = done;
    });
  }

  /** A watch works again: the next failure starts the backoff from its first step. */
  private resetBackoff(): void {
    if (this.attempts > 0) {
      this.log.info(`watch for ${this.opts.resource} recovered after ${this.attempts} attempt${this.attempts === 1 ? '' : 's'}`);
      this.attempts = 0;
    }
  }

  private markSynced(): void {
    if (!this.synced) {
      this.synced = true;
      this.log.v(2, `initial list of ${this.opts.resource} done`, { count: this.known.size });
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private bad(where: string, reason: string): void {
    this.opts.onBadItem?.(reason);
    this.log.warn(`${this.opts.resource}: skipping a malformed item (${where}): ${reason}`);
  }

  private upsert(obj: unknown, where: string): void {
    const id = identity(obj);
    if (typeof id === 'string') {
      this.bad(where, id);
      return;
    }
    if (this.known.has(id.key) && id.rv !== undefined && this.known.get(id.key) === id.rv) return;
    this.known.set(id.key, id.rv);
    this.deliver(() => this.opts.sink.upsert(obj), id.key);
  }

  private remove(obj: unknown): void {
    const id = identity(obj);
    if (typeof id === 'string' || !this.known.delete(id.key)) return;
    this.deliver(() => this.opts.sink.remove(obj), id.key);
  }

  /** A sink that throws on one object must not stop the others (it is written not to). */
  private deliver(fn: () => void, key: string): void {
    try {
      fn();
    } catch (e) {
      this.log.error(`${this.opts.resource}: handling ${key} failed; skipped`, { error: e });
    }
  }

  /**
   * One paginated list: every item delivered as its page arrives, then deletions reconciled.
   * The next page is asked for as soon as this one's continue token is read, before its items
   * are decoded: the API server prepares page n+1 while ferry decodes page n, instead of each
   * waiting for the other (at most one page in flight beside the one being decoded).
   * A continue token that expired while the list ran (a list slower than etcd's compaction
   * window: 410 on a later page) is followed by one unpaginated list, as client-go's pager
   * (FullListIfExpired): paging again would expire again on the same overloaded server.
   */
  private async list(gen: number): Promise<void> {
    const { opts } = this;
    const seen = new Set<string>();
    let listRV: string | undefined;
    let page = 0;
    let unpaginated = false;
    const abort = (this.listAbort = new AbortController());
    const fetchPage = (cont: string | undefined): Promise<unknown> => {
      const p = (opts.get ?? getJSON)(
        opts.kubeConfig,
        opts.path,
        { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, limit: unpaginated ? undefined : this.pageSize, continue: cont },
        abort.signal,
        unpaginated ? { maxBytes: MAX_LIST_BYTES } : {},
      );
      // Awaited in the next round; until then a failure must not count as unhandled.
      p.catch(() => undefined);
      return p;
    };
    let next: Promise<unknown> | undefined = fetchPage(undefined);
    try {
      while (next) {
        let body: unknown;
        try {
          body = await next;
        } catch (e) {
          if (!isGone(e) || page === 0 || unpaginated || !this.live(gen)) throw e;
          this.log.info(`list of ${opts.resource}: the continue token expired after ${page} page${page === 1 ? '' : 's'}; listing again without pages`, { error: describeError(e) });
          unpaginated = true;
          page = 0;
          seen.clear();
          next = fetchPage(undefined);
          continue;
        }
        next = undefined;
        if (!this.live(gen)) return;
        const meta = rec(rec(body)?.metadata);
        if (page === 0) listRV = strField(meta, 'resourceVersion');
        const cont = unpaginated ? undefined : strField(meta, 'continue') || undefined;
        const items = rec(body)?.items;
        if (!Array.isArray(items)) throw new Error(`list of ${opts.resource}: response has no items array`);
        if (cont) {
          next = fetchPage(cont);
          // The request goes out only once the event loop runs (credentials, then the socket):
          // one turn now, or it would leave after the decode below and overlap nothing.
          await new Promise((r) => setImmediate(r));
          if (!this.live(gen)) return;
        }
        for (let i = 0; i < items.length; i++) {
          const item: unknown = items[i];
          items[i] = undefined; // let the page's objects go as soon as they are decoded
          const id = identity(item);
          if (typeof id !== 'string') seen.add(id.key);
          this.upsert(item, `list page ${page + 1} item ${i}`);
        }
        page++;
      }
    } finally {
      // A list given up (stopped, failed, superseded) leaves no request behind.
      if (next) abort.abort();
      if (this.listAbort === abort) this.listAbort = undefined;
    }
    // Objects deleted while we were not watching: known, but not in the fresh list.
    for (const key of [...this.known.keys()]) {
      if (seen.has(key)) continue;
      this.known.delete(key);
      this.deliver(() => opts.sink.remove(stub(key)), key);
    }
    this.resourceVersion = listRV;
  }

  /**
   * Resolves when the server ends the watch or it falls silent for watchIdleMs after the server
   * answered (re-armed by every byte, bookmarks included); rejects with Gone or the failure.
   */
  private watch(gen: number): Promise<WatchEnd> {
    const { opts } = this;
    const abort = (this.watchAbort = new AbortController());
    let events = 0;
    let outcome: Error | undefined;
    // Open for a second without failing: the watch works again (after very short ones, refusals).
    let proven: NodeJS.Timeout | undefined;
    const query = {
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      // As client-go: a random 5–10 minutes, so a cluster's watches do not all end together.
      timeoutSeconds: Math.floor(300 + Math.random() * 300),
    };
    const onEvent = (type: unknown, obj: unknown): void => {
      if (!this.live(gen) || outcome) return;
      // The first event proves the watch works again (after very short ones).
      if (events++ === 0) this.resetBackoff();
      const rv = strField(rec(rec(obj)?.metadata), 'resourceVersion');
      switch (type) {
        case 'ADDED':
        case 'MODIFIED':
          this.upsert(obj, `watch ${type}`);
          break;
        case 'DELETED':
          this.remove(obj);
          break;
        case 'BOOKMARK':
          break;
        case 'ERROR': {
          const status = rec(obj);
          const code = typeof status?.code === 'number' ? status.code : 0;
          const message = strField(status, 'message') ?? JSON.stringify(obj ?? null).slice(0, 200);
          outcome = code === 410 ? new Gone() : new ApiStatusError(code, strField(status, 'reason') ?? '', `watch error event: ${code ? `${code} ` : ''}${message}`);
          abort.abort();
          return;
        }
        default:
          return;
      }
      if (rv !== undefined) this.resourceVersion = rv;
    };
    const onOpen = (): void => {
      proven = setTimeout(() => {
        if (this.live(gen) && !outcome) this.resetBackoff();
      }, SHORT_WATCH_MS);
    };
    return watchStream(opts.kubeConfig, opts.path, query, { onOpen, onEvent }, abort.signal, { idleMs: this.watchIdleMs }).then(
      (): WatchEnd => {
        if (outcome) throw outcome;
        return { events, idle: false };
      },
      (e: unknown): WatchEnd => {
        if (outcome) throw outcome;
        // Silent after the server answered: a connection that died without a word. Resumed,
        // not counted: nothing says the server is failing, and nothing was lost.
        if (e instanceof WatchIdleError && e.answered) return { events, idle: true };
        throw e;
      },
    ).finally(() => {
      clearTimeout(proven);
      abort.abort();
      if (this.watchAbort === abort) this.watchAbort = undefined;
    });
  }
}
