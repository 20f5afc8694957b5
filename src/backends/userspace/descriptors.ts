/**
 * File-descriptor accounting for userspace mode. Every frontend, every forwarded TCP connection
 * and every UDP session holds descriptors, and the process's open-files limit (RLIMIT_NOFILE) is
 * shared by all of them: without a bound, a DNS-like load (a new source port per query, each
 * session kept for the idle timeout) fills the table and new TCP connections are then reset by
 * libuv before Node ever sees them. This module reads the limit and derives how many UDP sessions
 * may hold a socket at once.
 *
 * Pure apart from readLimits(): no sockets, no timers.
 */
import { readFileSync } from 'node:fs';

/**
 * Descriptors set aside for the process itself: stdio, libuv's epoll, eventfd, signal pipe and
 * EMFILE reserve, the addon's netlink sockets and splice poller, API server watches, /healthz,
 * /metrics and healthCheckNodePort servers, and the pipes of an `ip` spawn. A bare Node process
 * holds about 20; the daemon a few dozen.
 */
export const RESERVED_DESCRIPTORS = 128;

/** UDP keeps working, if barely, when the frontends take every descriptor. */
export const MIN_UDP_SESSIONS = 16;

/** The process's open-files limit; Infinity where the kernel reports "unlimited". */
export interface OpenFilesLimit {
  readonly soft: number;
  readonly hard: number;
}

/** "Max open files" out of /proc/self/limits; undefined when the line is missing. */
export function parseOpenFilesLimit(limits: string): OpenFilesLimit | undefined {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
  if (!m) return undefined;
  const num = (v: string): number => (v === 'unlimited' ? Infinity : Number(v));
  const soft = num(m[1]!);
  const hard = num(m[2]!);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

/** `soft/hard`, as logged. */
export function formatOpenFilesLimit(l: OpenFilesLimit | undefined): string {
  if (!l) return '';
  const f = (n: number): string => (Number.isFinite(n) ? String(n) : 'unlimited');
  return `${f(l.soft)}/${f(l.hard)}`;
}

/** /proc/self/limits, or '' when it cannot be read (out of descriptors, no procfs). */
export function readLimits(): string {
  try {
    return readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return '';
  }
}

/**
 * How many UDP sessions may hold a socket at once:
 *
 *   min(maxSessions, max(MIN_UDP_SESSIONS, ⌊(soft − RESERVED_DESCRIPTORS − frontends) / 2⌋))
 *
 * Half of what the process and its listening sockets leave goes to UDP sessions (one descriptor
 * each), the other half stays free for TCP connections (two descriptors each with streams, eight
 * with splice). Without a known limit, only maxSessions bounds the table.
 */
export function udpSessionBudget(limit: OpenFilesLimit | undefined, frontends: number, maxSessions: number): number {
  if (!limit || !Number.isFinite(limit.soft)) return maxSessions;
  const spare = limit.soft - RESERVED_DESCRIPTORS - frontends;
  return Math.min(maxSessions, Math.max(MIN_UDP_SESSIONS, Math.floor(spare / 2)));
}

/** EMFILE (this process) or ENFILE (the whole system): no descriptor for another socket. */
export function isOutOfDescriptors(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'EMFILE' || code === 'ENFILE';
}
