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
export type MapName = 'ferry_svc' | 'ferry_backend' | 'ferry_member' | 'ferry_nodeaddr' | 'ferry_setname' | 'ferry_xsvc' | 'ferry_srcrange' | 'ferry_snat';
export const WRITTEN_MAPS: readonly MapName[] = ['ferry_svc', 'ferry_backend', 'ferry_member', 'ferry_nodeaddr', 'ferry_setname', 'ferry_xsvc', 'ferry_srcrange', 'ferry_snat'];
/** Maps keyed by frontend (struct svc_key): one service port owns each key. */
export const FRONTEND_MAPS: ReadonlySet<MapName> = new Set<MapName>(['ferry_svc', 'ferry_xsvc']);

export const NAME_LEN = 256;

export const MAP_SIZES: Readonly<Record<MapName, { readonly key: number; readonly value: number }>> = {
  ferry_svc: { key: 20, value: 16 },
  ferry_backend: { key: 8, value: 20 },
  ferry_member: { key: 24, value: 4 },
  ferry_nodeaddr: { key: 20, value: 4 },
  ferry_setname: { key: 4, value: NAME_LEN },
  ferry_xsvc: { key: 20, value: 16 },
  ferry_srcrange: { key: 24, value: 4 },
  ferry_snat: { key: 4, value: 16 },
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

/** 16 bytes: an IPv4 address in the first 4, the rest 0; IPv6 as is. Undefined if it does not parse. */
const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function addrBytes(ip: string, family: IPFamily): Buffer | undefined {
  // Fast path for the common case (canonical dotted IPv4); everything else through ipaddr.js.
  const m = family === 4 ? DOTTED.exec(ip) : null;
  if (m) {
    const out = Buffer.alloc(16);
    for (let i = 0; i < 4; i++) {
      const part = m[i + 1] as string;
      const v = Number(part);
      // Leading zeros are not canonical (and some parsers read them as octal): refuse, as ipaddr.js's callers would.
      if (v > 255 || (part.length > 1 && part.startsWith('0'))) return undefined;
      out[i] = v;
    }
    return out;
  }
  if (!ipaddr.isValid(ip)) return undefined;
  let a = ipaddr.parse(ip);
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
  const out = Buffer.alloc(16);
  if (family === 4) {
    if (a.kind() !== 'ipv4') return undefined;
    out.set(a.toByteArray(), 0);
  } else {
    if (a.kind() !== 'ipv6') return undefined;
    out.set(a.toByteArray(), 0);
  }
  return out;
}

const ZERO_ADDR = Buffer.alloc(16);

/** struct svc_key. `addr` undefined = the NodePort wildcard (any node address). */
export function svcKey(addr: Buffer | undefined, port: number, protocol: Protocol, family: IPFamily): string {
  const b = Buffer.alloc(20);
  (addr ?? ZERO_ADDR).copy(b, 0);
  b.writeUInt16BE(port, 16);
  b.writeUInt8(PROTO[protocol], 18);
  b.writeUInt8(family, 19);
  return b.toString('latin1');
}

/** struct svc_val (host byte order for the plain numbers: the program compares them as is). */
export function svcValue(setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict): string {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(setId, 0);
  b.writeUInt32LE(count, 4);
  b.writeUInt32LE(affinityTimeoutSeconds, 8);
  b.writeUInt8(VERDICT[verdict], 12);
  return b.toString('latin1');
}

/** xsvc_val flags (maps.h FERRY_XF_*). */
export const XF_MASQ = 1;
export const XF_SRCRANGE = 2;

/** struct xsvc_val: a frontend as packets from the network reach it (tc). */
export function xsvcValue(setId: number, count: number, affinityTimeoutSeconds: number, verdict: PathVerdict, flags: number): string {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(setId, 0);
  b.writeUInt32LE(count, 4);
  b.writeUInt32LE(affinityTimeoutSeconds, 8);
  b.writeUInt8(VERDICT[verdict], 12);
  b.writeUInt8(flags, 13);
  return b.toString('latin1');
}

/**
 * struct srcrange_key: an LPM trie key (prefix length, then the set id big endian, then the
 * address), so a lookup with (set id, source) matches the CIDRs recorded under that set only.
 * Undefined if the CIDR does not parse as one of `family`.
 */
export function srcRangeKey(setId: number, cidr: string, family: IPFamily): string | undefined {
  const slash = cidr.indexOf('/');
  const ip = slash < 0 ? cidr : cidr.slice(0, slash);
  const bits = slash < 0 ? (family === 4 ? 32 : 128) : Number(cidr.slice(slash + 1));
  const max = family === 4 ? 32 : 128;
  if (!Number.isInteger(bits) || bits < 0 || bits > max) return undefined;
  const a = addrBytes(ip, family);
  if (!a) return undefined;
  // Host bits beyond the prefix are cleared: the trie compares only the prefix, but equal keys must be equal bytes.
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    a[i] = (a[i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  const b = Buffer.alloc(24);
  b.writeUInt32LE(32 + bits, 0);
  b.writeUInt32BE(setId, 4);
  a.copy(b, 8);
  return b.toString('latin1');
}

/** ferry_snat: key (family), value (the node address masqueraded traffic leaves with). */
export function snatKey(family: IPFamily): string {
  return u32Value(family);
}

export function snatValue(addr: Buffer): string {
  return addr.toString('latin1');
}

export function backendKey(setId: number, slot: number): string {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(setId, 0);
  b.writeUInt32LE(slot, 4);
  return b.toString('latin1');
}

/** struct backend_val. */
export function backendValue(addr: Buffer, port: number, family: IPFamily): string {
  const b = Buffer.alloc(20);
  addr.copy(b, 0);
  b.writeUInt16BE(port, 16);
  b.writeUInt8(family, 18);
  return b.toString('latin1');
}

/** struct member_key. */
export function memberKey(setId: number, addr: Buffer, port: number, family: IPFamily): string {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(setId, 0);
  addr.copy(b, 4);
  b.writeUInt16BE(port, 20);
  b.writeUInt8(family, 22);
  return b.toString('latin1');
}

export function u32Value(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n, 0);
  return b.toString('latin1');
}

/** struct nodeaddr_key. */
export function nodeAddrKey(addr: Buffer, family: IPFamily): string {
  const b = Buffer.alloc(20);
  addr.copy(b, 0);
  b.writeUInt8(family, 16);
  return b.toString('latin1');
}

export function setNameKey(setId: number): string {
  return u32Value(setId);
}

export function setNameValue(name: string): string {
  const b = Buffer.alloc(NAME_LEN);
  const n = b.write(name, 0, NAME_LEN - 1, 'utf8');
  if (Buffer.byteLength(name, 'utf8') !== n) throw new LayoutError(`endpoint set name longer than ${NAME_LEN - 1} bytes: ${name}`);
  return b.toString('latin1');
}

export function decodeSetName(value: string): string {
  const b = Buffer.from(value, 'latin1');
  const end = b.indexOf(0);
  return b.toString('utf8', 0, end < 0 ? b.length : end);
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
