/**
 * The byte layouts of the ebpf mode's maps, mirroring native/bpf/maps.h field for field (change
 * both together): encoders from ferry's nouns to map keys and values. Keys and values are kept
 * as binary strings (latin1, one char per byte) so they can be compared and used as Map keys
 * cheaply; the applier turns them into bytes.
 *
 * Pure: no I/O. Addresses and ports are written in network byte order, as the programs read
 * them from struct bpf_sock_addr.
 */
import ipaddr from 'ipaddr.js';
import type { IPFamily, PathVerdict, Protocol } from '../../plan/types.js';

/**
 * The maps ferry writes. The LRUs the programs own (affinity, rev, udpflow, ct, xaffinity) and
 * the addon's record of tc interfaces (ferry_tcif) are not here.
 * ferry_xsvc, ferry_srcrange and ferry_snat feed the tc data path (tc_lb.c).
 */
export type MapName = 'ferry_svc' | 'ferry_backend' | 'ferry_member' | 'ferry_nodeaddr' | 'ferry_setname' | 'ferry_xsvc' | 'ferry_srcrange' | 'ferry_snat' | 'ferry_svcip';
export const WRITTEN_MAPS: readonly MapName[] = ['ferry_svc', 'ferry_backend', 'ferry_member', 'ferry_nodeaddr', 'ferry_setname', 'ferry_xsvc', 'ferry_srcrange', 'ferry_snat', 'ferry_svcip'];
/** Maps keyed by frontend (struct svc_key): one service port owns each key. */
export const FRONTEND_MAPS: ReadonlySet<MapName> = new Set<MapName>(['ferry_svc', 'ferry_xsvc']);

export const NAME_LEN = 256;

/** max_entries of the maps ferry writes, as native/bpf/maps.h declares them. */
export const MAP_CAPACITY: Readonly<Record<'ferry_svc' | 'ferry_xsvc' | 'ferry_backend' | 'ferry_member' | 'ferry_setname' | 'ferry_srcrange', number>> = {
  ferry_svc: 262_144,
  ferry_xsvc: 262_144,
  ferry_backend: 1_048_576,
  ferry_member: 1_048_576,
  ferry_setname: 262_144,
  ferry_srcrange: 65_536,
};

export const MAP_SIZES: Readonly<Record<MapName, { readonly key: number; readonly value: number }>> = {
  ferry_svc: { key: 20, value: 16 },
  ferry_backend: { key: 8, value: 20 },
  ferry_member: { key: 24, value: 4 },
  ferry_nodeaddr: { key: 20, value: 4 },
  ferry_setname: { key: 4, value: NAME_LEN },
  ferry_xsvc: { key: 20, value: 16 },
  ferry_srcrange: { key: 24, value: 4 },
  ferry_snat: { key: 4, value: 16 },
  /** Every ClusterIP (struct nodeaddr_key's layout) → 1. */
  ferry_svcip: { key: 20, value: 4 },
};

export class LayoutError extends Error {
  readonly code = 'FERRY_ERR_EBPF_LAYOUT';
  constructor(message: string) {
    super(message);
    this.name = 'LayoutError';
  }
}

const PROTO: Record<Protocol, number> = { TCP: 6, UDP: 17, SCTP: 132 };
const VERDICT: Record<PathVerdict, number> = { forward: 0, reject: 1, drop: 2 };

/**
 * The address as 16 bytes into `out` at `off`: IPv4 in the first 4, the rest 0; IPv6 as is.
 * False (and `out` untouched) if it does not parse as one of `family`. Writes in place so that a
 * full build of a million elements allocates nothing per address.
 */
export function writeAddr(out: Uint8Array, off: number, ip: string, family: IPFamily): boolean {
  if (family === 4) {
    // Fast path for the common case (canonical dotted IPv4), by hand: no regex, no allocation.
    const v = parseDotted(ip);
    if (v >= 0) {
      out[off] = v >>> 24;
      out[off + 1] = (v >>> 16) & 0xff;
      out[off + 2] = (v >>> 8) & 0xff;
      out[off + 3] = v & 0xff;
      for (let i = off + 4; i < off + 16; i++) out[i] = 0;
      return true;
    }
    if (v === DOTTED_BAD) return false;
  }
  if (!ipaddr.isValid(ip)) return false;
  let a = ipaddr.parse(ip);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
  if (a.kind() !== (family === 4 ? 'ipv4' : 'ipv6')) return false;
  out.fill(0, off, off + 16);
  out.set(a.toByteArray(), off);
  return true;
}

/** parseDotted: not four dotted decimals (let ipaddr.js decide). */
const DOTTED_OTHER = -1;
/** parseDotted: four dotted decimals that are no canonical address (a part above 255 or with a leading zero). */
const DOTTED_BAD = -2;

/** a.b.c.d as an unsigned 32-bit number, or DOTTED_OTHER / DOTTED_BAD. */
function parseDotted(ip: string): number {
  let v = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  let bad = false;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46; // the end closes the last part like a '.'
    if (c >= 48 && c <= 57) {
      // Leading zeros are not canonical (and some parsers read them as octal): refuse, as ipaddr.js's callers would.
      if (digits === 1 && part === 0) bad = true;
      part = part * 10 + (c - 48);
      if (++digits > 3) return DOTTED_OTHER;
    } else if (c === 46) {
      if (digits === 0 || ++parts > 4) return DOTTED_OTHER;
      if (part > 255) bad = true;
      v = v * 256 + part;
      part = 0;
      digits = 0;
    } else return DOTTED_OTHER;
  }
  if (parts !== 4) return DOTTED_OTHER;
  return bad ? DOTTED_BAD : v;
}

/** 16 bytes: an IPv4 address in the first 4, the rest 0; IPv6 as is. Undefined if it does not parse. */
export function addrBytes(ip: string, family: IPFamily): Buffer | undefined {
  const out = Buffer.alloc(16);
  return writeAddr(out, 0, ip, family) ? out : undefined;
}

const ZERO_ADDR = Buffer.alloc(16);

/*
 * Writers: each encodes one key or value into `b` at `off`, over bytes that are zero (the
 * element buffers are zero-filled, so padding stays 0 and equal elements are equal bytes).
 * Plain byte stores, no Buffer.write* or subarray: a full build runs them a few million times.
 * The string forms below are the same writers into a buffer of their own (tests, partial syncs).
 */

function u16be(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 8;
  b[off + 1] = v;
}

function u32le(b: Uint8Array, off: number, v: number): void {
  b[off] = v;
  b[off + 1] = v >>> 8;
  b[off + 2] = v >>> 16;
  b[off + 3] = v >>> 24;
}

function u32be(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = v >>> 16;
  b[off + 2] = v >>> 8;
  b[off + 3] = v;
}

/** The 16 address bytes of `addr` (from writeAddr) at `off`. */
function addr16(b: Uint8Array, off: number, addr: Uint8Array): void {
  for (let i = 0; i < 16; i++) b[off + i] = addr[i] as number;
}

/** struct svc_key. `addr` undefined = the NodePort wildcard (any node address), or an address already written at `off`. */
export function writeSvcKey(b: Uint8Array, off: number, addr: Uint8Array | undefined, port: number, protocol: Protocol, family: IPFamily): void {
  if (addr) addr16(b, off, addr);
  u16be(b, off + 16, port);
  b[off + 18] = PROTO[protocol];
  b[off + 19] = family;
}

/** struct svc_val (host byte order for the plain numbers: the program compares them as is). */
export function writeSvcValue(b: Uint8Array, off: number, setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict, flags = 0): void {
  u32le(b, off, setId);
  u32le(b, off + 4, count);
  u32le(b, off + 8, affinityTimeoutSeconds);
  b[off + 12] = VERDICT[verdict];
  b[off + 13] = flags;
}

/**
 * svc_val flags (maps.h FERRY_SF_*): a ClusterIP, which the tc program also serves for what
 * socket LB did not translate, with the IR's clusterIPMasquerade.
 */
export const SF_CLUSTERIP = 1;
export const SF_MASQ_ALL = 2;
export const SF_MASQ_NONLOCAL = 4;
/**
 * Not for socket LB (maps.h FERRY_SF_NOSOCK): an LB IP with loadBalancerSourceRanges, written
 * with externalTrafficPolicy Local for the tc program's short-circuit of a local pod.
 */
export const SF_NOSOCK = 8;
/** The ferry_srcrange set id of a family's local-traffic CIDRs (maps.h FERRY_LOCAL_SET); no endpoint set has it. */
export function localSet(family: IPFamily): number {
  return (0xffffff00 | family) >>> 0;
}

/** The ferry_srcrange set id of a family's service CIDRs (maps.h FERRY_SVCCIDR_SET); no endpoint set has it. */
export function serviceCIDRSet(family: IPFamily): number {
  return (0xfffffe00 | family) >>> 0;
}

/** xsvc_val flags (maps.h FERRY_XF_*). */
export const XF_MASQ = 1;
export const XF_SRCRANGE = 2;
/** externalTrafficPolicy Local: a local pod takes ferry_svc's entry (the cluster-wide set). */
export const XF_LOCAL = 4;

/** struct xsvc_val: a frontend as packets from the network reach it (tc). */
export function writeXsvcValue(b: Uint8Array, off: number, setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict, flags: number): void {
  writeSvcValue(b, off, setId, count, affinityTimeoutSeconds, verdict);
  b[off + 13] = flags;
}

/**
 * struct srcrange_key: an LPM trie key (prefix length, then the set id big endian, then the
 * address), so a lookup with (set id, source) matches the CIDRs recorded under that set only.
 * False (nothing written) if the CIDR does not parse as one of `family`.
 */
export function writeSrcRangeKey(b: Uint8Array, off: number, setId: number, cidr: string, family: IPFamily): boolean {
  const slash = cidr.indexOf('/');
  const ip = slash < 0 ? cidr : cidr.slice(0, slash);
  const bits = slash < 0 ? (family === 4 ? 32 : 128) : Number(cidr.slice(slash + 1));
  const max = family === 4 ? 32 : 128;
  if (!Number.isInteger(bits) || bits < 0 || bits > max) return false;
  if (!writeAddr(b, off + 8, ip, family)) return false;
  // Host bits beyond the prefix are cleared: the trie compares only the prefix, but equal keys must be equal bytes.
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    b[off + 8 + i] = (b[off + 8 + i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  u32le(b, off, 32 + bits);
  u32be(b, off + 4, setId);
  return true;
}

export function writeBackendKey(b: Uint8Array, off: number, setId: number, slot: number): void {
  u32le(b, off, setId);
  u32le(b, off + 4, slot);
}

/** struct backend_val. */
export function writeBackendValue(b: Uint8Array, off: number, addr: Uint8Array, port: number, family: IPFamily): void {
  addr16(b, off, addr);
  u16be(b, off + 16, port);
  b[off + 18] = family;
}

/** struct member_key. */
export function writeMemberKey(b: Uint8Array, off: number, setId: number, addr: Uint8Array, port: number, family: IPFamily): void {
  u32le(b, off, setId);
  addr16(b, off + 4, addr);
  u16be(b, off + 20, port);
  b[off + 22] = family;
}

export function writeU32(b: Uint8Array, off: number, n: number): void {
  u32le(b, off, n);
}

/** struct nodeaddr_key. */
export function writeNodeAddrKey(b: Uint8Array, off: number, addr: Uint8Array, family: IPFamily): void {
  addr16(b, off, addr);
  b[off + 16] = family;
}

/** ferry_setname's value: the name, NUL-terminated. */
export function writeSetNameValue(b: Buffer, off: number, name: string): void {
  // ASCII (every name Kubernetes validation admits) byte by byte; anything else through utf8.
  if (name.length < NAME_LEN) {
    let i = 0;
    for (; i < name.length; i++) {
      const c = name.charCodeAt(i);
      if (c >= 0x80) break;
      b[off + i] = c;
    }
    if (i === name.length) return;
  }
  const n = b.write(name, off, NAME_LEN - 1, 'utf8');
  // A write stops early only when the next character's (at most 4) bytes do not fit.
  if (n < NAME_LEN - 1 - 4 || Buffer.byteLength(name, 'utf8') === n) return;
  b.fill(0, off, off + NAME_LEN);
  throw new LayoutError(`endpoint set name longer than ${NAME_LEN - 1} bytes: ${name}`);
}

/** One element as a binary string, through its writer. */
function encoded(size: number, write: (b: Buffer) => void): string {
  const b = Buffer.alloc(size);
  write(b);
  return b.toString('latin1');
}

export function svcKey(addr: Buffer | undefined, port: number, protocol: Protocol, family: IPFamily): string {
  return encoded(20, (b) => writeSvcKey(b, 0, addr, port, protocol, family));
}

export function svcValue(setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict): string {
  return encoded(16, (b) => writeSvcValue(b, 0, setId, count, affinityTimeoutSeconds, verdict));
}

export function xsvcValue(setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict, flags: number): string {
  return encoded(16, (b) => writeXsvcValue(b, 0, setId, count, affinityTimeoutSeconds, verdict, flags));
}

/** Undefined if the CIDR does not parse as one of `family`. */
export function srcRangeKey(setId: number, cidr: string, family: IPFamily): string | undefined {
  const b = Buffer.alloc(24);
  return writeSrcRangeKey(b, 0, setId, cidr, family) ? b.toString('latin1') : undefined;
}

/** ferry_snat: key (family), value (the node address masqueraded traffic leaves with). */
export function snatKey(family: IPFamily): string {
  return u32Value(family);
}

export function snatValue(addr: Buffer): string {
  return addr.toString('latin1');
}

export function backendKey(setId: number, slot: number): string {
  return encoded(8, (b) => writeBackendKey(b, 0, setId, slot));
}

export function backendValue(addr: Buffer, port: number, family: IPFamily): string {
  return encoded(20, (b) => writeBackendValue(b, 0, addr, port, family));
}

export function memberKey(setId: number, addr: Buffer, port: number, family: IPFamily): string {
  return encoded(24, (b) => writeMemberKey(b, 0, setId, addr, port, family));
}

export function u32Value(n: number): string {
  return encoded(4, (b) => writeU32(b, 0, n));
}

export function nodeAddrKey(addr: Buffer, family: IPFamily): string {
  return encoded(20, (b) => writeNodeAddrKey(b, 0, addr, family));
}

export function setNameKey(setId: number): string {
  return u32Value(setId);
}

export function setNameValue(name: string): string {
  return encoded(NAME_LEN, (b) => writeSetNameValue(b, 0, name));
}

/** The name in a ferry_setname value at `off` of `b`. */
export function readSetName(b: Buffer, off: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + NAME_LEN ? off + NAME_LEN : end);
}

export function decodeSetName(value: string): string {
  return readSetName(Buffer.from(value, 'latin1'), 0);
}

export function decodeU32(key: string): number {
  return Buffer.from(key, 'latin1').readUInt32LE(0);
}

/** A readable form of a svc_key, for logs and test failures. */
export function describeSvcKey(key: string): string {
  const b = Buffer.from(key, 'latin1');
  const family = b.readUInt8(19);
  const proto = b.readUInt8(18);
  const port = b.readUInt16BE(16);
  const p = Object.entries(PROTO).find(([, v]) => v === proto)?.[0] ?? String(proto);
  if (b.subarray(0, 16).equals(ZERO_ADDR)) return `${p} *:${port} (NodePort, IPv${family})`;
  const ip = family === 4 ? ipaddr.fromByteArray([...b.subarray(0, 4)]).toString() : ipaddr.fromByteArray([...b.subarray(0, 16)]).toString();
  return family === 4 ? `${p} ${ip}:${port}` : `${p} [${ip}]:${port}`;
}

/**
 * native/bpf/sock_term.c's struct sockterm_key: a stale (frontend, backend) pair of connected UDP
 * sockets. Frontend address all zero: its port on any address (a NodePort); backend address all
 * zero as well: a NodePort's untranslated sockets. Ports in network order.
 */
export const SOCKTERM_KEY_SIZE = 40;

/** Writes a sockterm_key; false if an address given does not parse as `family`. */
export function writeSockTermKey(b: Uint8Array, off: number, front: string | undefined, frontPort: number, back: string | undefined, backPort: number, family: IPFamily): boolean {
  b.fill(0, off, off + SOCKTERM_KEY_SIZE);
  if (front !== undefined && !writeAddr(b, off, front, family)) return false;
  if (back !== undefined && !writeAddr(b, off + 16, back, family)) return false;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  v.setUint16(off + 32, frontPort, false);
  v.setUint16(off + 34, backPort, false);
  b[off + 36] = family;
  return true;
}

/** native/bpf/sock_term.c's struct sock_rec: one connected UDP socket. */
export const SOCK_REC_SIZE = 64;

export interface SockRecord {
  readonly cookie: bigint;
  readonly family: IPFamily;
  readonly src: string;
  readonly srcPort: number;
  /** Where the socket sends: the backend socket LB chose, or the frontend itself (untranslated). */
  readonly dst: string;
  readonly dstPort: number;
  /** The frontend the application connected to. */
  readonly frontend: string;
  readonly frontendPort: number;
  readonly translated: boolean;
}

function addrText(b: Uint8Array, off: number, family: IPFamily): string {
  if (family === 4) return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
  return ipaddr.fromByteArray(Array.from(b.subarray(off, off + 16))).toString();
}

/** The records in `b` (a whole number of them; a record of another family than 4 or 6 is skipped). */
export function readSockRecords(b: Uint8Array): SockRecord[] {
  if (b.byteLength % SOCK_REC_SIZE !== 0) throw new LayoutError(`socket records: ${b.byteLength} bytes is not a whole number of ${SOCK_REC_SIZE}-byte records`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: SockRecord[] = [];
  for (let off = 0; off < b.byteLength; off += SOCK_REC_SIZE) {
    const family = b[off + 62];
    if (family !== 4 && family !== 6) continue;
    out.push({
      cookie: v.getBigUint64(off, true),
      family,
      src: addrText(b, off + 8, family),
      srcPort: v.getUint16(off + 56, true),
      dst: addrText(b, off + 24, family),
      dstPort: v.getUint16(off + 58, false),
      frontend: addrText(b, off + 40, family),
      frontendPort: v.getUint16(off + 60, false),
      translated: b[off + 63] === 1,
    });
  }
  return out;
}
