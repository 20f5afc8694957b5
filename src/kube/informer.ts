/**
 * A list+watch of one resource that survives the API server: client-node's ListWatch stops
 * for good on the first error (connection refused, 5xx, a dropped stream it cannot resume), so
 * this wrapper replaces it with a fresh one after an exponential backoff with jitter, relists,
 * and reconciles what it had seen (objects gone from the new list are reported deleted; objects
 * whose resourceVersion did not change are not reported again). 410 Gone is handled inside
 * ListWatch by relisting. Logs state changes (failing, recovered), not every retry.
 *
 * Stage: kube. Feeds events to a sink; never interprets the objects.
 */
import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { logger, type Logger } from '../util/log.js';

export interface InformerSink<T> {
  upsert(obj: T): void;
  remove(obj: T): void;
}

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

export interface InformerOptions<T extends KubernetesObject> {
  /** Plural resource name for logs ("services"). */
  readonly resource: string;
  /** Watch path, e.g. /api/v1/services. */
  readonly path: string;
  readonly list: () => Promise<KubernetesListObject<T>>;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly kubeConfig: KubeConfig;
  readonly sink: InformerSink<T>;
  readonly backoff?: Backoff;
  readonly log?: Logger;
}

/** Delay before retry number `attempt` (1-based): exponential, capped, ±20% jitter. */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Human-readable reason of a client-node / fetch error. */
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

function keyOf(o: KubernetesObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

export class ResilientInformer<T extends KubernetesObject> {
  private readonly log: Logger;
  private readonly backoff: Backoff;
  /** What the sink has been told exists: key → resourceVersion. */
  private readonly known = new Map<string, { rv: string | undefined; obj: T }>();
  private current: ListWatch<T> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = true;
  private synced = false;
  private attempts = 0;
  private syncWaiters: (() => void)[] = [];

  constructor(private readonly opts: InformerOptions<T>) {
    this.log = opts.log ?? logger('kube');
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
  }

  /** True once the first list has been delivered to the sink. */
  hasSynced(): boolean {
    return this.synced;
  }

  /** Consecutive failed attempts (0 while healthy). */
  failures(): number {
    return this.attempts;
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
    this.launch();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const lw = this.current;
    this.current = undefined;
    for (const w of this.syncWaiters.splice(0)) w();
    if (lw) await lw.stop();
  }

  private launch(): void {
    if (this.stopped) return;
    const { opts } = this;
    // A fresh ListWatch always lists first, so every (re)start reconciles against the server.
    const lw: ListWatch<T> = new ListWatch<T>(
      opts.path,
      new Watch(opts.kubeConfig),
      async () => {
        const list = await opts.list();
        // ListWatch hands the items to our callbacks synchronously right after this promise
        // settles; setImmediate runs after that, when its cache holds the whole list.
        setImmediate(() => this.onListed(lw));
        return list;
      },
      false,
      opts.labelSelector,
      opts.fieldSelector,
    );
    this.current = lw;
    lw.on('add', (o: T) => this.onUpsert(lw, o));
    lw.on('update', (o: T) => this.onUpsert(lw, o));
    lw.on('delete', (o: T) => this.onDelete(lw, o));
    lw.on('error', (e?: unknown) => this.onError(lw, e));
    lw.start().then(
      () => {
        // stop() may have raced with the start: the watch request only exists now.
        if (this.current !== lw) void lw.stop();
      },
      (e: unknown) => this.onError(lw, e),
    );
  }

  private onUpsert(lw: ListWatch<T>, obj: T): void {
    if (lw !== this.current) return;
    const key = keyOf(obj);
    const rv = obj.metadata?.resourceVersion;
    const prev = this.known.get(key);
    if (prev && rv !== undefined && prev.rv === rv) return;
    this.known.set(key, { rv, obj });
    this.opts.sink.upsert(obj);
  }

  private onDelete(lw: ListWatch<T>, obj: T): void {
    if (lw !== this.current) return;
    const key = keyOf(obj);
    if (!this.known.delete(key)) return;
    this.opts.sink.remove(obj);
  }

  private onListed(lw: ListWatch<T>): void {
    if (lw !== this.current) return;
    // Objects deleted while we were not watching: in our memory but not in the fresh cache.
    for (const [key, { obj }] of [...this.known]) {
      const [ns, name] = [obj.metadata?.namespace, obj.metadata?.name ?? ''];
      if (lw.get(name, ns) === undefined) {
        this.known.delete(key);
        this.opts.sink.remove(obj);
      }
    }
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

  private onError(lw: ListWatch<T>, e: unknown): void {
    if (lw !== this.current || this.stopped) return;
    this.current = undefined;
    void lw.stop();
    this.attempts++;
    const delay = backoffDelay(this.backoff, this.attempts);
    if (this.attempts === 1) {
      this.log.warn(`watch for ${this.opts.resource} failed: ${describeError(e)}; retrying`);
    } else {
      this.log.v(2, `watch for ${this.opts.resource} still failing`, { attempt: this.attempts, retryInMs: delay, error: describeError(e) });
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.launch();
    }, delay);
  }
}
