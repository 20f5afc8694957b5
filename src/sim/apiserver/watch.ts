/**
 * One watch stream: replays retained events after the client's resourceVersion (or synthetic
 * ADDED events for the current state), then forwards live store events, as chunked
 * newline-delimited JSON `{"type": ..., "object": ...}`. Applies namespace, label and field
 * filters with the real server's transitions (stops matching → DELETED, starts → ADDED),
 * sends BOOKMARKs, honours timeoutSeconds, and answers expired versions with a 410 ERROR event.
 * It only ever writes to its own response.
 */
import type { ServerResponse } from 'node:http';
import type { KObject } from './objects.js';
import type { ResourceDef } from './resource.js';
import type { FieldSelector, LabelSelector } from './selectors.js';
import type { Store, StoreEvent } from './store.js';
import { partialMetadata, toTable, type IncludeObject } from './tables.js';

export interface WatchFilter {
  namespace?: string;
  labels: LabelSelector;
  fields: FieldSelector;
}

export interface WatchRender {
  /** Send objects as single-row meta.k8s.io Tables (kubectl get -w). */
  table?: { include: IncludeObject; apiVersion: string };
  /** Send objects as PartialObjectMetadata. */
  partial?: boolean;
}

export interface WatchStart {
  /** The client's resourceVersion ('' or '0' = start from the current state with synthetic ADDED events). */
  resourceVersion: string;
  bookmarks: boolean;
  bookmarkIntervalMs: number;
  timeoutSeconds?: number;
  sendInitialEvents?: boolean;
}

type OutEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: unknown };

export class WatchSession {
  private unsubscribe: (() => void) | undefined;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  private sentColumns = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly store: Store,
    private readonly def: ResourceDef,
    private readonly filter: WatchFilter,
    private readonly render: WatchRender,
    private readonly onClose: (s: WatchSession) => void,
  ) {}

  start(opts: WatchStart): void {
    this.res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    this.res.flushHeaders();
    this.res.on('close', () => this.close());
    const rv = opts.resourceVersion;
    if (rv === '' || rv === '0' || opts.sendInitialEvents) {
      if (opts.sendInitialEvents !== false) {
        const objs = this.store.list(this.def.storageKey, this.def.namespaced ? this.filter.namespace : undefined);
        for (const o of objs) if (this.matches(o)) this.send({ type: 'ADDED', object: o });
      }
      if (opts.sendInitialEvents) {
        this.send({
          type: 'BOOKMARK',
          object: {
            kind: this.def.kind,
            apiVersion: this.def.apiVersion,
            metadata: { resourceVersion: String(this.store.resourceVersion), annotations: { 'k8s.io/initial-events-end': 'true' } },
          },
        });
      }
    } else {
      const n = Number(rv);
      const events = Number.isInteger(n) && n >= 0 ? this.store.eventsSince(n) : undefined;
      if (!Number.isInteger(n) || n < 0) {
        this.error(400, 'BadRequest', `invalid resource version: ${rv}`);
        return;
      }
      if (!events) {
        this.error(410, 'Expired', `too old resource version: ${rv} (${this.store.resourceVersion})`);
        return;
      }
      // Ahead of the store (a client of a store that was wiped, or restored from a backup):
      // kube-apiserver's cacher answers an ERROR event once the store has not caught up
      // (storage.NewTooLargeResourceVersionError: 504 Timeout, "Too large resource version"),
      // and client-go relists on it. Here the store never catches up, so at once.
      if (n > this.store.resourceVersion) {
        this.error(504, 'Timeout', `Too large resource version: ${rv}, current: ${this.store.resourceVersion}`);
        return;
      }
      for (const e of events) this.forward(e);
    }
    this.unsubscribe = this.store.subscribe((e) => this.forward(e));
    if (opts.bookmarks && opts.bookmarkIntervalMs > 0) {
      const t = setInterval(() => this.bookmark(), opts.bookmarkIntervalMs);
      t.unref();
      this.timers.push(t);
    }
    if (opts.timeoutSeconds !== undefined && opts.timeoutSeconds > 0) {
      const t = setTimeout(() => this.close(), opts.timeoutSeconds * 1000);
      t.unref();
      this.timers.push(t);
    }
  }

  /** End the stream; the client sees a clean end of the chunked body. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    if (!this.res.writableEnded) this.res.end();
    this.onClose(this);
  }

  private matches(o: KObject): boolean {
    if (this.def.namespaced && this.filter.namespace && o.metadata.namespace !== this.filter.namespace) return false;
    return this.filter.labels.matches(o.metadata.labels) && this.filter.fields.matches((f) => this.def.fieldValue(o, f));
  }

  private forward(e: StoreEvent): void {
    if (this.closed || e.resource !== this.def.storageKey) return;
    if (e.type === 'ADDED') {
      if (this.matches(e.object)) this.send({ type: 'ADDED', object: e.object });
      return;
    }
    if (e.type === 'DELETED') {
      if (this.matches(e.object)) this.send({ type: 'DELETED', object: e.object });
      return;
    }
    const cur = this.matches(e.object);
    const old = e.prev ? this.matches(e.prev) : false;
    if (cur && old) this.send({ type: 'MODIFIED', object: e.object });
    else if (cur) this.send({ type: 'ADDED', object: e.object });
    else if (old && e.prev) {
      // The previous content, stamped with this event's resourceVersion, as the real cacher does.
      this.send({ type: 'DELETED', object: { ...e.prev, metadata: { ...e.prev.metadata, resourceVersion: String(e.rv) } } });
    }
  }

  private bookmark(): void {
    this.send({
      type: 'BOOKMARK',
      object: { kind: this.def.kind, apiVersion: this.def.apiVersion, metadata: { resourceVersion: String(this.store.resourceVersion) } },
    });
  }

  private error(code: number, reason: string, message: string): void {
    this.send({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code } });
    this.close();
  }

  private send(ev: OutEvent): void {
    if (this.closed || this.res.writableEnded) return;
    let object = ev.object;
    if (ev.type !== 'ERROR' && ev.type !== 'BOOKMARK') {
      const o = object as KObject;
      if (this.render.table) {
        const t = toTable(this.def, [o], this.render.table.include, { resourceVersion: o.metadata.resourceVersion }, !this.sentColumns);
        this.sentColumns = true;
        object = { ...t, apiVersion: this.render.table.apiVersion };
      } else if (this.render.partial) {
        object = partialMetadata(o);
      }
    }
    this.res.write(JSON.stringify({ type: ev.type, object }) + '\n');
  }
}
