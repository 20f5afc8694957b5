/**
 * Zero-copy TCP forwarding for the userspace proxy: hands an accepted client socket and its
 * connected upstream socket to the native addon's spliceBidirectional(), which moves the bytes
 * kernel-side on its own thread (splice(2) through a pipe per direction, half-close, reset →
 * reset). Node keeps owning both sockets and destroys them once the addon is done. Used by
 * tcp.ts when the addon is loaded; `FERRY_USERSPACE_SPLICE=0` turns it off (the stream pipe
 * remains, for comparison and as the fallback).
 *
 * Must never hand over a socket Node has read from (those bytes would be lost or reordered), and
 * never let Node read or write a socket once handed over: the addon is its only reader/writer
 * until its promise resolves.
 */
import type net from 'node:net';
import { loadNative, nativeLoadError, type SplicePromise, type SpliceResult } from '../../native/index.js';
import type { Logger } from '../../util/log.js';

export const SPLICE_ENV = 'FERRY_USERSPACE_SPLICE';

interface Splicer {
  spliceBidirectional(fdA: number, fdB: number): SplicePromise;
  spliceAbort(handle: number): boolean;
}

/** undefined: not looked up yet; null: streams only. */
let splicer: Splicer | null | undefined;

/** Loads the splice entry points once per process and logs which data path TCP uses. */
function loadSplicer(log: Logger): Splicer | null {
  if (splicer !== undefined) return splicer;
  splicer = null;
  if (process.env[SPLICE_ENV] === '0') {
    log.info('userspace TCP data path', { via: 'streams', reason: `${SPLICE_ENV}=0` });
    return splicer;
  }
  const addon = loadNative();
  const bidi = addon?.spliceBidirectional;
  const abort = addon?.spliceAbort;
  if (addon && typeof bidi === 'function' && typeof abort === 'function') {
    splicer = { spliceBidirectional: bidi.bind(addon), spliceAbort: abort.bind(addon) };
    log.info('userspace TCP data path', { via: 'splice' });
  } else {
    const reason = addon ? 'native addon built without splice (rebuild native/)' : `native addon not loaded: ${nativeLoadError()?.message ?? 'unknown'}`;
    log.info('userspace TCP data path', { via: 'streams', reason });
  }
  return splicer;
}

/**
 * The kernel fd behind a net.Socket, or -1 (no handle: destroyed or still resolving; or a
 * platform without fds). Node has no public accessor: the libuv handle object (`TCPWrap`, the
 * socket's `_handle`) has an `fd` getter. This is the one place that reaches into it.
 */
export function socketFd(s: net.Socket): number {
  const h = handleOf(s);
  const fd = h?.['fd'];
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : -1;
}

function handleOf(s: net.Socket): Record<string, unknown> | undefined {
  const h: unknown = (s as unknown as { _handle?: unknown })._handle;
  return typeof h === 'object' && h !== null ? (h as Record<string, unknown>) : undefined;
}

/**
 * Nothing read or queued by Node, and libuv not reading: every byte the peer sent is still in
 * the kernel, so the addon sees the stream from its first byte.
 */
function untouched(s: net.Socket): boolean {
  return !s.destroyed && !s.connecting && s.readableLength === 0 && s.writableLength === 0 && handleOf(s)?.['reading'] !== true;
}

/** Accepted client socket → the handle of its running splice. */
const running = new WeakMap<net.Socket, number>();

/**
 * Starts forwarding client ⇄ upstream in the addon. False when it cannot (addon absent, turned
 * off, a socket already read from, no fd, the addon refused); the caller then pipes streams.
 * On true the sockets belong to the addon until it is done; then both are destroyed: plainly
 * after a clean end or an abort, with a reset after an error (a reset on one side resets the
 * other, as the stream pipe does).
 */
export function spliceSockets(client: net.Socket, upstream: net.Socket, log: Logger): boolean {
  const sp = loadSplicer(log);
  if (!sp || !untouched(client) || !untouched(upstream)) return false;
  const a = socketFd(client);
  const b = socketFd(upstream);
  if (a < 0 || b < 0) return false;
  // Paused and without a 'data' listener, nothing restarts Node's reading.
  client.pause();
  upstream.pause();
  let p: SplicePromise;
  try {
    p = sp.spliceBidirectional(a, b);
  } catch (e) {
    log.v(2, 'splice unavailable for this connection; piping streams', { err: e });
    return false;
  }
  running.set(client, p.handle);
  void p.then((r) => {
    running.delete(client);
    settle(client, upstream, r, log);
  });
  return true;
}

function settle(client: net.Socket, upstream: net.Socket, r: SpliceResult, log: Logger): void {
  if (r.error === undefined || r.code === 'ABORTED') {
    client.destroy();
    upstream.destroy();
    return;
  }
  log.v(3, 'spliced connection ended with an error', { error: r.error, clientToUpstream: r.aToB, upstreamToClient: r.bToA });
  if (!client.destroyed) client.resetAndDestroy();
  if (!upstream.destroyed) upstream.resetAndDestroy();
}

/**
 * Ends the splice of this client's connection, if it has one (a frontend going away). The
 * sockets may be destroyed right after: the addon works on its own dups and releases them when
 * the abort lands.
 */
export function abortSplice(client: net.Socket): boolean {
  const h = running.get(client);
  if (h === undefined || !splicer) return false;
  return splicer.spliceAbort(h);
}
