/**
 * Loads ferry's native addon (native/build/Release/ferry_native.node) and types its surface.
 * The addon sends nf_tables netlink batches, applies nft scripts in-process through libnftables, deletes conntrack
 * entries over netlink and splices TCP for the userspace proxy; see docs/native.md. This
 * module must never throw at import time or when the addon is absent: callers fall back to
 * spawning nft/conntrack (src/backends/kernel/) or to Node streams (src/backends/userspace/).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NftRunOptions {
  /** List output as JSON (`nft -j`). */
  json?: boolean;
  /** Include handles in listings (`nft -a`). */
  handles?: boolean;
  /** Omit set and map elements from listings (`nft -t`). */
  terse?: boolean;
  /** Check only: parse, evaluate and let the kernel validate, commit nothing (`nft -c`). */
  dryRun?: boolean;
}

export interface NftRunResult {
  ok: boolean;
  /** What nft printed on stdout (listings). */
  output: string;
  /** nft's error text; on failure it starts `FILE:LINE:COL-COL: Error: ...` for the failing command. */
  error: string;
}

export type ConntrackProtocol = 'tcp' | 'udp' | 'sctp';

/** Entries must match every given field. family and protocol are required. */
export interface ConntrackFilter {
  family: 4 | 6;
  protocol: ConntrackProtocol;
  /** Original destination: the address the client dialed (ClusterIP, node IP, external IP). */
  origDst?: string;
  origDstPort?: number;
  /** Reply source: the NAT'd destination, i.e. the endpoint that answers. */
  replySrc?: string;
  replySrcPort?: number;
}

export interface ConntrackEntry {
  family: 4 | 6;
  protocol: ConntrackProtocol | 'other';
  origSrc: string;
  origSrcPort: number;
  origDst: string;
  origDstPort: number;
  replySrc: string;
  replySrcPort: number;
  replyDst: string;
  replyDstPort: number;
}

/** One message the kernel refused in an nf_tables batch (nfnlBatch). */
export interface NfnlBatchError {
  /** The sequence number the encoder gave the failing message. */
  seq: number;
  /** Positive errno. */
  errno: number;
  /** extack: byte offset of the offending attribute within that message, or -1. */
  offset: number;
  /** extack: the kernel's message, or ''. */
  message: string;
}

export interface NfnlBatchResult {
  /** The whole batch was committed. */
  ok: boolean;
  /** Every message the kernel refused (the batch was then aborted: nothing applied). */
  errors: NfnlBatchError[];
  /** The socket itself failed (open, setns, send, receive), e.g. `socket(NETLINK_NETFILTER): Permission denied`. */
  sysError: string;
}

export interface NfnlDumpResult {
  ok: boolean;
  /** Positive errno of a refused dump, or 0; EINTR (4) also when a commit landed during the dump (NLM_F_DUMP_INTR): ask again. */
  errno: number;
  /** The socket itself failed, or no answer came for 10 s (the message names the request). */
  sysError: string;
  /** The answer messages, concatenated; empty unless ok. */
  data: Buffer;
}

/** Objects of one kind a transaction touched in a watched table (nfnlMonitor), e.g. 12 × delrule in chain services. */
export interface NfnlMonitorChange {
  /** The notification's NFT_MSG_* type. */
  op:
    | 'newtable'
    | 'deltable'
    | 'newchain'
    | 'delchain'
    | 'newrule'
    | 'delrule'
    | 'newset'
    | 'delset'
    | 'newsetelem'
    | 'delsetelem'
    | 'newobj'
    | 'delobj'
    | 'newflowtable'
    | 'delflowtable'
    | 'other';
  /** `ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`, or `unspec`. */
  family: string;
  table: string;
  /** The object's name; for rules their chain, for elements their set or map. */
  name: string;
  count: number;
}

/** What an nfnlMonitor() subscription reports. */
export type NfnlMonitorEvent =
  | {
      /** One committed transaction (ended by its NFT_MSG_NEWGEN) that touched a watched table. */
      kind: 'generation';
      genId: number;
      /** NFTA_GEN_PROC_PID: the committing thread's id in the init pid namespace (not process.pid for ferry's own batches). */
      procPid: number;
      procName: string;
      /** Port id of the committing netlink socket. */
      portid: number;
      /** Committed by one of this process's nfnlBatch() sockets. */
      own: boolean;
      changes: NfnlMonitorChange[];
      /** Notifications beyond the itemized objects. */
      more: number;
    }
  | {
      /** The socket's receive buffer overflowed: notifications were lost. */
      kind: 'overrun';
      /** One of this process's batches was in flight in that namespace, or ended less than 2 s ago. */
      ownRecent: boolean;
    }
  | {
      /** The socket failed; the subscription has ended. */
      kind: 'error';
      error: string;
    };

export interface NfnlMonitorOptions {
  /** Names of the tables whose objects are reported (any family). */
  tables: string[];
  /** Watch this network namespace (`/var/run/netns/NAME`) instead of the process's. */
  netns?: string;
  /** Receive buffer in bytes (SO_RCVBUFFORCE); default 32 MiB. */
  rcvbuf?: number;
}

export interface NfnlMonitorHandle {
  /** Ends the subscription; no event is delivered after it returns. Idempotent. */
  stop(): void;
}

/** How a spliceBidirectional() forwarding ended. */
export interface SpliceResult {
  /** Bytes read from fdA and written to fdB. */
  aToB: number;
  bToA: number;
  /**
   * Absent when both directions saw EOF and passed it on. Otherwise what stopped both directions,
   * e.g. `ECONNRESET: Connection reset by peer (splice from b)`, or `aborted` after spliceAbort().
   */
  error?: string;
  /** errno name of `error` (`ECONNRESET`, `EPIPE`, ...) or `ABORTED`. */
  code?: string;
}

/** The promise of spliceBidirectional(), carrying the handle that spliceAbort() takes. */
export interface SplicePromise extends Promise<SpliceResult> {
  readonly handle: number;
}

/** The addon's exports. Everything acts on the network namespace of the calling process. */
export interface NativeAddon {
  /** One nft script as one transaction, off the main thread. Resolves (never rejects) with nft's verdict. */
  nftRun(script: string, opts?: NftRunOptions): Promise<NftRunResult>;
  /** The same, blocking the event loop: for tests and one-shot tools only. */
  nftRunSync(script: string, opts?: NftRunOptions): NftRunResult;
  /**
   * Sends one encoded nf_tables batch (src/backends/nftables/netlink.ts) in one sendmsg, off the
   * main thread; resolves with the kernel's verdict (a failed send or an unreadable answer
   * included); rejects only when the addon itself cannot go on (a namespace it could not leave, no
   * memory). `netns`: a namespace file (`/var/run/netns/NAME`) to act in instead of the
   * process's. Absent in older builds.
   */
  nfnlBatch?(batch: Uint8Array, netns?: string): Promise<NfnlBatchResult>;
  /**
   * nfnlBatch on the calling thread, blocking it for the kernel's part: for small batches, where
   * that is less than the hop to a pool thread and back. Never in another namespace (a TypeError
   * if `netns` is given): entering one would move the JS thread. Absent in older builds.
   */
  nfnlBatchSync?(batch: Uint8Array, netns?: string): NfnlBatchResult;
  /** Sends one encoded nf_tables dump request; resolves with the answer messages. Absent in older builds. */
  nfnlDump?(request: Uint8Array, netns?: string): Promise<NfnlDumpResult>;
  /**
   * Subscribes to nf_tables notifications (NFNLGRP_NFTABLES) on a thread of the addon and
   * reports each committed transaction that touched one of `tables`, folded into one event.
   * Throws (code FERRY_ERR_NFNL_MONITOR) when the socket cannot be opened or subscribed. The
   * subscription never keeps the process alive. Absent in older builds.
   */
  nfnlMonitor?(opts: NfnlMonitorOptions, onEvent: (e: NfnlMonitorEvent) => void): NfnlMonitorHandle;
  /**
   * Fixes glibc malloc's mmap and trim thresholds (mallopt), which turns off their growth after
   * large frees (native/src/addon.cc). False where the C library is not glibc or refused. Absent
   * in older builds.
   */
  mallocFixThresholds?(mmapBytes: number, trimBytes: number): boolean;
  /**
   * Deletes the entries that match at least one of the filters, reading each family's table once
   * however many filters there are; resolves with how many were deleted. Rejects with an Error
   * carrying `errno`: a failed dump deletes nothing, a failed deletion does not stop the others.
   */
  conntrackDelete(filters: ConntrackFilter | readonly ConntrackFilter[]): Promise<number>;
  conntrackList(filter: ConntrackFilter): Promise<ConntrackEntry[]>;
  /**
   * Forwards bytes both ways between two connected, non-blocking TCP sockets with splice(2), on
   * the addon's poller thread. EOF on one side becomes shutdown(SHUT_WR) on the other (half-close);
   * an error stops both directions. Resolves (never rejects) when both directions are done. Works
   * on its own dups: never closes fdA/fdB; the caller destroys its sockets after it resolves.
   * Throws when it cannot start (not a socket, blocking fd, out of fds). Absent in older builds.
   */
  spliceBidirectional?(fdA: number, fdB: number): SplicePromise;
  /** Ends a forwarding now; its promise resolves with code `ABORTED`. False if it already ended. */
  spliceAbort?(handle: number): boolean;
  /**
   * ebpf mode (native/src/bpf.cc). Loads the BPF object, reusing maps pinned under `pinDir` by
   * name, and attaches each program to `cgroup` through a link pinned as `pinDir/link_<prog>`; a
   * link already pinned on the same cgroup gets the new program swapped in (no gap). A map pinned
   * with another layout (an older ferry's) is unpinned first and created anew (`unpinned`). The
   * object's `ferry_host_netns` gets the cookie of the calling process's network namespace
   * (SO_NETNS_COOKIE; left 0 where the kernel has none): localhost NodePorts only there. On the
   * libuv thread pool (loading and verifying is kernel time); rejects with an Error with code
   * FERRY_ERR_BPF, `errno`, `step` and libbpf's words. Absent in older builds.
   */
  bpfLoadAsync?(opts: { object: string; pinDir: string; cgroup: string; ctEntries?: number }): Promise<{ attached: string[]; replaced: string[]; unpinned?: string[] }>;
  /** Loads the object with small unpinned maps and no attachment: does this kernel accept it? */
  bpfProbe?(object: string): void;
  /**
   * Upserts `keys.length / keySize` elements into the pinned map, in batches. Sizes that are not
   * the map's throw a RangeError (code FERRY_ERR_BPF) naming the map and both sizes; so do the
   * other map calls.
   */
  bpfMapUpdate?(path: string, keys: Uint8Array, values: Uint8Array, keySize: number, valueSize: number): number;
  /** Deletes each key from the pinned map; absent keys are not an error. */
  bpfMapDelete?(path: string, keys: Uint8Array, keySize: number): number;
  /** Every element of the pinned map. */
  bpfMapDump?(path: string, keySize: number, valueSize: number): { keys: Buffer; values: Buffer; count: number };
  /**
   * The same three on the libuv thread pool: several maps are written or read at once and the
   * event loop is free meanwhile. The addon holds `keys`/`values` (not a copy) until the promise
   * settles: do not change them before. Rejects with the errors the synchronous forms throw.
   */
  bpfMapUpdateAsync?(path: string, keys: Uint8Array, values: Uint8Array, keySize: number, valueSize: number): Promise<number>;
  bpfMapDeleteAsync?(path: string, keys: Uint8Array, keySize: number): Promise<number>;
  bpfMapDumpAsync?(path: string, keySize: number, valueSize: number): Promise<{ keys: Buffer; values: Buffer; count: number }>;
  /**
   * tc (native/bpf/tc_lb.c): loads the object (maps by pin name) and pins its program under
   * pinDir. snatPorts = [loMin, loCount, hiMin, hiCount]: the SNAT source port ranges (default:
   * the object's, 61000-65535). ctTimeouts = [established, closeWait, udp, udpStream] in
   * seconds, each ≥ 1 (default: the object's, 86400/3600/30/120). Resolves to the maps it
   * unpinned for another layout, as bpfLoadAsync; on the thread pool too.
   */
  bpfTcLoadAsync?(
    object: string,
    pinDir: string,
    snatPorts?: [number, number, number, number],
    ctEntries?: number,
    ctTimeouts?: readonly [number, number, number, number],
  ): Promise<string[]>;
  /** Attaches (or replaces in place) the pinned tc program on clsact ingress of each named interface; returns those done. */
  bpfTcAttach?(pinDir: string, names: string[]): string[];
  /** Detaches ferry's tc filter from every interface recorded in pinDir/ferry_tcif; returns their names. */
  bpfTcDetach?(pinDir: string): string[];
  /** The interfaces of this process's network namespace (netlink; never /sys, which may be another namespace's). */
  bpfInterfaces?(): { name: string; index: number }[];
  /**
   * Connected UDP sockets (native/bpf/sock_term.c) in each network namespace named (nsfs paths,
   * /proc/PID/ns/net): without termKeys, lists every one (64-byte records: the backend it sends
   * to and the frontend it asked for, from ferry_rev pinned under pinDir); with them, destroys
   * each whose (frontend, backend) is one of the keys (bpf_sock_destroy, Linux 6.5+) and returns
   * their records. `gone`: namespaces whose file had disappeared. On the thread pool; rejects
   * with FERRY_ERR_BPF and `step`.
   */
  bpfUdpSocketsAsync?(object: string, pinDir: string, netns: string[], termKeys?: Uint8Array, keySize?: number): Promise<{ records: Buffer; gone: string[] }>;
  /**
   * Calls onChange (on the main thread) whenever an address or a link of this network namespace
   * changed; with a message when the subscription failed and stopped. Does not keep the process alive.
   */
  routeWatch?(onChange: (error?: string) => void): { close(): void };
  readonly abiVersion: number;
}

/** Bumped with every incompatible change of the addon's exports (native/src/addon.cc). */
export const NATIVE_ABI_VERSION = 2;

export interface LoadNativeOptions {
  /** Load this file instead of the default location (tests). */
  path?: string;
}

let cached: { addon: NativeAddon | null; error: Error | null } | undefined;
let lastError: Error | null = null;

/**
 * The default location: `native/build/Release/ferry_native.node` in the package root, found by
 * walking up from this file (it runs as dist/src/native/index.js) to the directory holding
 * package.json. FERRY_NATIVE_PATH overrides it.
 */
export function defaultNativePath(): string {
  const env = process.env['FERRY_NATIVE_PATH'];
  if (env) return resolve(env);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) break;
    const up = dirname(dir);
    if (up === dir) {
      dir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
      break;
    }
    dir = up;
  }
  return join(dir, 'native', 'build', 'Release', 'ferry_native.node');
}

function isNativeAddon(m: unknown): m is NativeAddon {
  if (typeof m !== 'object' || m === null) return false;
  const o = m as Record<string, unknown>;
  return (
    typeof o['nftRun'] === 'function' &&
    typeof o['nftRunSync'] === 'function' &&
    typeof o['conntrackDelete'] === 'function' &&
    typeof o['conntrackList'] === 'function' &&
    o['abiVersion'] === NATIVE_ABI_VERSION
  );
}

function tryLoad(path: string): { addon: NativeAddon | null; error: Error | null } {
  try {
    const req = createRequire(import.meta.url);
    const m: unknown = req(path);
    if (!isNativeAddon(m)) {
      return { addon: null, error: new Error(`${path} is not a ferry native addon of ABI version ${NATIVE_ABI_VERSION} (rebuild native/)`) };
    }
    return { addon: m, error: null };
  } catch (e) {
    return { addon: null, error: e instanceof Error ? e : new Error(String(e)) };
  }
}

/**
 * The addon, or null when it cannot be loaded (not built, built for another Node, missing
 * shared libraries). The reason is kept for logging: nativeLoadError(). The default location is
 * loaded once per process; an explicit path is loaded every time.
 */
export function loadNative(opts: LoadNativeOptions = {}): NativeAddon | null {
  if (opts.path !== undefined) {
    const r = tryLoad(resolve(opts.path));
    lastError = r.error;
    return r.addon;
  }
  cached ??= tryLoad(defaultNativePath());
  lastError = cached.error;
  return cached.addon;
}

/** Why the last loadNative() returned null; null after a successful load. */
export function nativeLoadError(): Error | null {
  return lastError;
}
