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
 * is decoded a page at a time instead of as one giant response. After a list, a watch resumes
 * from the list's resourceVersion, with bookmarks; a watch the server ends normally (its
 * timeout) is resumed from the last resourceVersion seen; `410 Gone` relists at once; any other
 * failure relists after a capped, jittered exponential backoff that resets on success. Logs
 * state changes (failing, recovered), not every retry. An item without a name is logged and
 * skipped; it never fails the list.
 *
 * Stage: kube. Feeds events to a sink; never interprets the objects.
 */
import { Watch, type KubeConfig } from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';
import { ApiStatusError, getJSON } from './rest.js';

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
  if (e instanceof ApiStatusError) return e.statusCode === 410;
  // client-node's Watch reports a non-200 answer as an Error carrying statusCode.
  return e instanceof Error && (e as Error & { statusCode?: unknown }).statusCode === 410;
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
  /** What the sink has been told exists: key → resourceVersion. */
  private readonly known = new Map<string, string | undefined>();
  /** Where the next watch resumes. */
  private resourceVersion: string | undefined;
  /** Bumped by stop(): every loop and callback of an older generation falls silent. */
  private generation = 0;
  private stopped = true;
  private synced = false;
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
  }

  /** True once the first list has been delivered to the sink. */
  hasSynced(): boolean {
    return this.synced;
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
          this.healthy();
        }
        const began = Date.now();
        const events = await this.watch(gen);
        // The server ended the watch (its timeout): resume from where it stopped. One that ends
        // at once without a single event is not a timeout but something answering in the API
        // server's place (a proxy, a load balancer): as client-go's "very short watch", wait
        // out the backoff before the next, or every node asks thousands of times a second.
        if (events === 0 && Date.now() - began < SHORT_WATCH_MS && this.live(gen)) {
          this.attempts++;
          const error = `the watch ended after ${Date.now() - began} ms without an event`;
          this.lastError = { at: Date.now(), error };
          const delay = backoffDelay(this.backoff, this.attempts);
          if (this.attempts === 1) this.log.warn(`watch for ${this.opts.resource}: ${error}; retrying`);
          else this.log.v(2, `watch for ${this.opts.resource} still ending at once`, { attempt: this.attempts, retryInMs: delay });
          await this.sleep(delay);
        } else this.healthy();
      } catch (e) {
        if (!this.live(gen)) return;
        needList = true;
        if (e instanceof Gone || isGone(e)) {
          this.log.v(2, `${this.opts.resource}: resourceVersion expired; relisting`);
          continue;
        }
        this.attempts++;
        this.lastError = { at: Date.now(), error: describeError(e) };
        const delay = backoffDelay(this.backoff, this.attempts);
        if (this.attempts === 1) this.log.warn(`watch for ${this.opts.resource} failed: ${describeError(e)}; retrying`);
        else this.log.v(2, `watch for ${this.opts.resource} still failing`, { attempt: this.attempts, retryInMs: delay, error: describeError(e) });
        await this.sleep(delay);
      }
    }
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

  private healthy(): void {
    if (this.attempts > 0) {
      this.log.info(`watch for ${this.opts.resource} recovered after ${this.attempts} attempt${this.attempts === 1 ? '' : 's'}`);
      this.attempts = 0;
    }
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
   */
  private async list(gen: number): Promise<void> {
    const { opts } = this;
    const seen = new Set<string>();
    let listRV: string | undefined;
    let page = 0;
    const abort = (this.listAbort = new AbortController());
    const fetchPage = (cont: string | undefined): Promise<unknown> => {
      const p = (opts.get ?? getJSON)(
        opts.kubeConfig,
        opts.path,
        { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, limit: this.pageSize, continue: cont },
        abort.signal,
      );
      // Awaited in the next round; until then a failure must not count as unhandled.
      p.catch(() => undefined);
      return p;
    };
    let next: Promise<unknown> | undefined = fetchPage(undefined);
    try {
      while (next) {
        const body = await next;
        next = undefined;
        if (!this.live(gen)) return;
        const meta = rec(rec(body)?.metadata);
        if (page === 0) listRV = strField(meta, 'resourceVersion');
        const cont = strField(meta, 'continue') || undefined;
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

  /** Resolves when the server ends the watch, with the number of events it brought; rejects with Gone or the failure. */
  private watch(gen: number): Promise<number> {
    const { opts } = this;
    return new Promise<number>((resolve, reject) => {
      let outcome: Error | undefined;
      let finished = false;
      let events = 0;
      const finish = (err: unknown) => {
        if (finished) return;
        finished = true;
        this.watchAbort?.abort();
        this.watchAbort = undefined;
        if (outcome) reject(outcome);
        else if (err) reject(err);
        else resolve(events);
      };
      const query = {
        labelSelector: opts.labelSelector,
        fieldSelector: opts.fieldSelector,
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        // As client-go: a random 5–10 minutes, so a cluster's watches do not all end together.
        timeoutSeconds: Math.floor(300 + Math.random() * 300),
      };
      new Watch(opts.kubeConfig)
        .watch(
          opts.path,
          query,
          (type: string, obj: unknown) => {
            if (!this.live(gen) || finished) return;
            // The first event proves the watch works again (after very short ones).
            if (events++ === 0 && this.attempts > 0) this.healthy();
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
                outcome = status?.code === 410 ? new Gone() : new Error(`watch error event: ${strField(status, 'message') ?? JSON.stringify(obj).slice(0, 200)}`);
                finish(undefined);
                return;
              }
              default:
                return;
            }
            if (rv !== undefined) this.resourceVersion = rv;
          },
          (err: unknown) => finish(err),
        )
        .then(
          (ctl: AbortController) => {
            if (finished || !this.live(gen)) ctl.abort();
            else this.watchAbort = ctl;
          },
          (e: unknown) => finish(e),
        );
    });
  }
}
