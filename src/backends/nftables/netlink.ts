/**
 * A Transaction encoded straight into one nf_tables netlink batch (BATCH_BEGIN .. BATCH_END),
 * the bytes the native addon sends in one sendmsg (native/src/nfnl.cc). No nft text is rendered
 * or parsed: ops carry typed rules (rules.ts) and the element keys the compiler interns as
 * strings, whose layout this module knows per container (names.ts).
 *
 * What the kernel holds afterwards lists (`nft list table`) exactly as if libnftables had
 * applied the same transaction: expressions, registers and set userdata (key/data byte order,
 * `typeof` expressions, comments) are the ones nft 1.0.x writes. The e2e tests compare both.
 *
 * Errors: every message carries its sequence number; `locate()` maps a kernel error (sequence
 * number and, for element messages, the extack offset of the offending element) back to the op.
 * Pure: no I/O.
 */
import { countSetOf, endpointShardProtocol, groupedMapKind, Maps, Sets } from './names.js';
import type { Cond, LocalInterface, PortDispatchScope, Rule } from './rules.js';
import type { Chain, CountRulesOp, ElementParts, ElementRun, EndpointLike, EndpointPieces, FrontendList, FrontendPieces, NamedMap, NamedSet, Op, SlotPieces, Transaction } from './transaction.js';

// ---- netlink / nf_tables constants (linux/netlink.h, linux/netfilter/nf_tables.h) ----
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLM_F_CREATE = 0x400;
const NLM_F_APPEND = 0x800;
const NLA_F_NESTED = 0x8000;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const MSG = {
  NEWTABLE: 0, GETTABLE: 1, DELTABLE: 2, NEWCHAIN: 3, GETCHAIN: 4, DELCHAIN: 5, NEWRULE: 6, DELRULE: 8,
  GETRULE: 7, NEWSET: 9, GETSET: 10, DELSET: 11, NEWSETELEM: 12, DELSETELEM: 14,
} as const;
const NFPROTO = { ip: 2, ip6: 10 } as const;
const HOOK = { prerouting: 0, input: 1, forward: 2, output: 3, postrouting: 4 } as const;
// Set flags.
const SET_ANONYMOUS = 0x1;
const SET_CONSTANT = 0x2;
const SET_INTERVAL = 0x4;
const SET_MAP = 0x8;
const SET_TIMEOUT = 0x10;
const SET_EVAL = 0x20;
const SET_ELEM_INTERVAL_END = 0x1;
/** Element userdata NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN: a range up to the top. */
const OPEN_INTERVAL = Uint8Array.of(1, 4, 1, 0, 0, 0);
// Verdict codes.
const NF_DROP = 0;
const NFT_JUMP = -3;
const NFT_GOTO = -4;
const NFT_RETURN = -5;
// nft's datatype ids (src/datatype.h) and byte orders (BYTEORDER_*).
const T_VERDICT = 1;
const T_INTEGER = 4;
const T_IPADDR = 7;
const T_IP6ADDR = 8;
const T_INET_PROTO = 12;
const T_INET_SERVICE = 13;
const DATA_VERDICT = 0xffffff00;
const BO_INVALID = 0;
const BO_HOST = 1;
const BO_BIG = 2;
// libnftnl udata ids (include/libnftnl/udata.h).
const UD_SET_KEYBYTEORDER = 0;
const UD_SET_DATABYTEORDER = 1;
const UD_SET_MERGE_ELEMENTS = 2;
const UD_SET_KEY_TYPEOF = 3;
const UD_SET_DATA_TYPEOF = 4;
const UD_SET_DATA_INTERVAL = 6;
const UD_SET_COMMENT = 7;
const UD_TABLE_COMMENT = 0;
const UD_CHAIN_COMMENT = 0;
// nft's expression type ids for typeof udata (src/expression.h) and proto template ids.
const EXPR_VERDICT = 1;
const EXPR_PAYLOAD = 7;
const EXPR_CONCAT = 13;
const EXPR_NUMGEN = 23;
const EXPR_META = 9;
const PROTO_DESC_TH = 11;
const PROTO_DESC = { ip: 12, ip6: 13, tcp: 8, udp: 6, sctp: 10 } as const;
const FIELD_SADDR = { ip: 11, ip6: 8 } as const;
const FIELD_DADDR = { ip: 12, ip6: 9 } as const;
const FIELD_DPORT = 2;

export type NlFamily = 'ip' | 'ip6';

/** Grows by doubling; attribute helpers write netlink TLVs (4-byte aligned, host byte order headers). */
/**
 * The batch being written. Its buffer is zero-filled and written only forward (nothing is ever
 * written past `pos` and taken back), so every byte from `pos` on is zero: padding and the unused
 * bytes of a key need no stores (valueAt). The zeroing costs nothing up front: a large buffer's
 * zero pages come from the kernel as they are touched.
 */
class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size = 1 << 16) {
    this.buf = Buffer.alloc(size);
  }
  /** Starts over on a new buffer of `size` bytes (the batch encoder's one Writer: BATCH_WRITER). */
  reset(size: number): void {
    this.buf = size === 0 ? NO_BYTES : Buffer.alloc(size);
    this.pos = 0;
  }
  need(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = Buffer.alloc(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }
  // Byte stores instead of Buffer's write* methods: this is the hot loop of a full sync.
  private le16(v: number, at: number): void {
    const b = this.buf;
    b[at] = v & 0xff;
    b[at + 1] = v >>> 8;
  }
  private be32(v: number, at: number): void {
    const b = this.buf;
    b[at] = v >>> 24;
    b[at + 1] = (v >>> 16) & 0xff;
    b[at + 2] = (v >>> 8) & 0xff;
    b[at + 3] = v & 0xff;
  }
  private le32(v: number, at: number): void {
    const b = this.buf;
    b[at] = v & 0xff;
    b[at + 1] = (v >>> 8) & 0xff;
    b[at + 2] = (v >>> 16) & 0xff;
    b[at + 3] = v >>> 24;
  }
  private pad(): void {
    while (this.pos & 3) this.buf[this.pos++] = 0;
  }
  msg(type: number, flags: number, seq: number, family: number, resId = 0): number {
    this.need(20);
    const start = this.pos;
    this.le32(0, start);
    this.le16(type, start + 4);
    this.le16(flags, start + 6);
    this.le32(seq >>> 0, start + 8);
    this.le32(0, start + 12);
    const b = this.buf;
    b[start + 16] = family;
    b[start + 17] = 0;
    b[start + 18] = resId >>> 8;
    b[start + 19] = resId & 0xff;
    this.pos += 20;
    return start;
  }
  endMsg(start: number): void {
    this.le32(this.pos - start, start);
  }
  nest(type: number): number {
    this.need(4);
    const start = this.pos;
    this.le16(type | NLA_F_NESTED, start + 2);
    this.pos += 4;
    return start;
  }
  endNest(start: number): void {
    this.le16(this.pos - start, start);
  }
  /** Bytes written since `start` (for splitting element lists under the 64 KiB attribute limit). */
  since(start: number): number {
    return this.pos - start;
  }
  private head(type: number, len: number): void {
    this.need(4 + len + 3);
    this.le16(4 + len, this.pos);
    this.le16(type, this.pos + 2);
    this.pos += 4;
  }
  /** A NUL-terminated string attribute of s[from..] (no slice of the string). */
  str(type: number, s: string, from = 0): void {
    const n0 = s.length - from;
    this.need(4 + 3 * n0 + 4);
    const b = this.buf;
    const at = this.pos;
    let n = 0;
    // Names are ASCII (names.ts): a byte loop beats a native call for them. Anything else goes
    // through the UTF-8 encoder.
    for (; n < n0; n++) {
      const c = s.charCodeAt(from + n);
      if (c >= 0x80) break;
      b[at + 4 + n] = c;
    }
    if (n < n0) n = b.write(from ? s.slice(from) : s, at + 4, 'utf8');
    b[at + 4 + n] = 0;
    this.le16(n + 5, at);
    this.le16(type, at + 2);
    this.pos = at + 4 + n + 1;
    this.pad();
  }
  u32(type: number, v: number): void {
    this.head(type, 4);
    this.be32(v >>> 0, this.pos);
    this.pos += 4;
  }
  i32(type: number, v: number): void {
    this.head(type, 4);
    this.be32(v >>> 0, this.pos);
    this.pos += 4;
  }
  u64(type: number, v: number): void {
    this.head(type, 8);
    this.be32(Math.floor(v / 2 ** 32), this.pos);
    this.be32(v >>> 0, this.pos + 4);
    this.pos += 8;
  }
  u8(type: number, v: number): void {
    this.head(type, 1);
    this.buf[this.pos] = v;
    this.pos += 1;
    this.pad();
  }
  bytes(type: number, data: Uint8Array): void {
    this.head(type, data.length);
    this.buf.set(data, this.pos);
    this.pos += data.length;
    this.pad();
  }
  /**
   * Opens `type` holding one NFTA_DATA_VALUE of `len` bytes, zeroed, and returns where they go:
   * keys are written straight into the batch, without a buffer of their own. Zeroed already: the
   * bytes past `pos` always are (Writer). Zeroing them byte by byte here took 62–114 ms of a 44k
   * encode under the profiler (23–24 ms for the whole method without it).
   */
  valueAt(type: number, len: number): number {
    const padded = (len + 3) & ~3;
    this.need(8 + padded);
    const at = this.pos;
    this.le16(8 + padded, at);
    this.le16(type | NLA_F_NESTED, at + 2);
    this.le16(4 + len, at + 4);
    this.le16(1, at + 6);
    this.pos = at + 8 + padded;
    return at + 8;
  }
  /** A NFTA_DATA_VALUE of one u32 in host byte order (registers hold host-order words). */
  valueU32(type: number, v: number): void {
    const at = this.valueAt(type, 4);
    this.le32(v >>> 0, at);
  }
  /** A NFTA_DATA_VALUE nested in `type`. */
  value(type: number, data: Uint8Array): void {
    const n = this.nest(type);
    this.bytes(1, data);
    this.endNest(n);
  }
  /** A verdict; the chain name is `chain` from index `from` (`goto NAME` without slicing). */
  verdict(type: number, code: number, chain: string, from = 0): void {
    const n = this.nest(type);
    const v = this.nest(2); // NFTA_DATA_VERDICT
    this.i32(1, code); // NFTA_VERDICT_CODE
    if (chain.length > from) this.str(2, chain, from); // NFTA_VERDICT_CHAIN
    this.endNest(v);
    this.endNest(n);
  }
}

// ---- libnftnl-style userdata (u8 type, u8 len, value; u32 values in host byte order) ----

class Udata {
  private readonly parts: number[] = [];
  u32(type: number, v: number): this {
    this.parts.push(type, 4, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
    return this;
  }
  str(type: number, s: string): this {
    const b = Buffer.from(s + '\0', 'utf8');
    this.parts.push(type, b.length, ...b);
    return this;
  }
  nest(type: number, inner: Udata): this {
    const b = inner.bytes();
    this.parts.push(type, b.length, ...b);
    return this;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

function typeofExpr(etype: number, data: Udata): Udata {
  return new Udata().u32(0, etype).nest(1, data);
}
function typeofPayload(desc: number, field: number): Udata {
  return typeofExpr(EXPR_PAYLOAD, new Udata().u32(0, desc).u32(1, field));
}
function typeofConcat(items: Udata[]): Udata {
  const d = new Udata();
  items.forEach((it, i) => d.nest(i, it));
  return typeofExpr(EXPR_CONCAT, d);
}

// ---- addresses and keys ----

/** Thrown for anything the encoder cannot express: a bug in the compiler, never user input. */
export class NetlinkEncodeError extends Error {
  readonly code = 'FERRY_ERR_NFT_ENCODE';
  constructor(
    message: string,
    readonly opIndex: number,
  ) {
    super(message);
    this.name = 'NetlinkEncodeError';
  }
}

/** Parses s[from, to) (default: all of it) as dotted IPv4 into out[at..at+4). */
function parseIPv4(s: string, out: Uint8Array, at: number, from = 0, to = s.length): boolean {
  let part = 0;
  let digits = 0;
  let n = 0;
  for (let i = from; i <= to; i++) {
    const c = i < to ? s.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || part > 255 || n > 3) return false;
      out[at + n++] = part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48);
      digits++;
    } else return false;
  }
  return n === 4;
}

function parseIPv6(s: string, out: Uint8Array, at: number): boolean {
  const words: number[] = [];
  let tail: number[] | undefined;
  let cur = words;
  let i = 0;
  if (s.startsWith('::')) {
    tail = [];
    cur = tail;
    i = 2;
  }
  while (i < s.length) {
    let j = i;
    while (j < s.length && s[j] !== ':') j++;
    const piece = s.slice(i, j);
    if (piece.includes('.')) {
      const v4 = new Uint8Array(4);
      if (!parseIPv4(piece, v4, 0)) return false;
      cur.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else {
      if (piece.length === 0 || piece.length > 4 || !/^[0-9a-fA-F]+$/.test(piece)) return false;
      cur.push(parseInt(piece, 16));
    }
    if (j >= s.length) break;
    if (s[j + 1] === ':') {
      if (tail) return false;
      tail = [];
      cur = tail;
      i = j + 2;
    } else i = j + 1;
  }
  const total = words.length + (tail?.length ?? 0);
  if (tail ? total > 7 : total !== 8) return false;
  const all = tail ? [...words, ...new Array<number>(8 - total).fill(0), ...tail] : words;
  for (let k = 0; k < 8; k++) {
    out[at + 2 * k] = all[k]! >> 8;
    out[at + 2 * k + 1] = all[k]! & 0xff;
  }
  return true;
}

function addrLen(f: NlFamily): 4 | 16 {
  return f === 'ip' ? 4 : 16;
}

/** The address s[from, to) into out[at..]; IPv4 without slicing the string (the hot path). */
function putAddr(f: NlFamily, s: string, out: Uint8Array, at: number, from = 0, to = s.length): boolean {
  if (f === 'ip') return parseIPv4(s, out, at, from, to);
  return parseIPv6(from === 0 && to === s.length ? s : s.slice(from, to), out, at);
}

function addrBytes(f: NlFamily, s: string): Uint8Array {
  const b = new Uint8Array(addrLen(f));
  if (!putAddr(f, s, b, 0)) throw new Error(`not an ${f === 'ip' ? 'IPv4' : 'IPv6'} address: ${s}`);
  return b;
}

const PROTO_NUM: Record<string, number> = { tcp: 6, udp: 17, sctp: 132 };

function protoNum(p: string): number {
  const n = PROTO_NUM[p.toLowerCase()];
  if (n === undefined) throw new Error(`unknown protocol ${p}`);
  return n;
}

/** How the elements of one of ferry's containers are laid out. */
type Layout = 'addr' | 'addrAddr' | 'addrProtoPort' | 'protoPort' | 'slot' | 'grouped' | 'portGrouped';

function layoutOf(container: string): Layout {
  const layout = layoutIfKnown(container);
  if (layout === undefined) throw new Error(`no element layout for container ${container}`);
  return layout;
}

function layoutIfKnown(container: string): Layout | undefined {
  switch (container) {
    case Sets.clusterIPs:
    case Sets.nodePortIPs:
    case Sets.localCIDRs:
    case Sets.serviceCIDRs:
      return 'addr';
    case Sets.hairpin:
      return 'addrAddr';
    case Maps.serviceIPs:
    case Maps.noEndpointServices:
    case Maps.firewallIPs:
    case Sets.masqAll:
    case Sets.masqNonLocal:
      return 'addrProtoPort';
    case Maps.serviceNodePorts:
    case Maps.noEndpointNodePorts:
    case Sets.masqNodePorts:
      return 'protoPort';
  }
  if (endpointShardProtocol(container) !== undefined) return 'slot';
  const c = countSetOf(container);
  if (c !== undefined) return c.kind === 'addr' ? 'addrProtoPort' : 'protoPort';
  const g = groupedMapKind(container);
  if (g !== undefined) return g.kind === 'addr' ? 'grouped' : 'portGrouped';
  return undefined;
}

/** ` . `-separated parts of an element key or value (the compiler's interned spelling). */
function parts(s: string): string[] {
  return s.split(' . ');
}

/** Byte length of a key of `layout`: every field of a concatenation takes whole 4-byte words. */
function keyLen(f: NlFamily, layout: Layout): number {
  const a = addrLen(f);
  switch (layout) {
    case 'addr':
      return a;
    case 'addrAddr':
      return 2 * a;
    case 'addrProtoPort':
      return a + 8;
    case 'protoPort':
      return 8;
    case 'slot':
      return 4;
    case 'grouped':
      return a + 12;
    case 'portGrouped':
      return 12;
  }
}

const SEP = ' . ';

/** Writes `key` (the compiler's spelling, `addr . proto . port` etc.) at `at`; false if malformed. */
function writeKey(f: NlFamily, layout: Layout, key: string, b: Buffer, at: number): boolean {
  const a = addrLen(f);
  switch (layout) {
    case 'addr':
      return putAddr(f, key, b, at);
    case 'addrAddr': {
      const i = key.indexOf(SEP);
      return i > 0 && putAddr(f, key, b, at, 0, i) && putAddr(f, key, b, at + a, i + 3);
    }
    case 'addrProtoPort': {
      const i = key.indexOf(SEP);
      const j = key.indexOf(SEP, i + 3);
      if (i < 0 || j < 0 || !putAddr(f, key, b, at, 0, i)) return false;
      const p = protoAt(key, i + 3, j);
      const port = portOf(key, j + 3);
      if (p === undefined || port < 0) return false;
      b[at + a] = p;
      b[at + a + 4] = port >> 8;
      b[at + a + 5] = port & 0xff;
      return true;
    }
    case 'protoPort': {
      const i = key.indexOf(SEP);
      const p = protoAt(key, 0, i);
      const port = portOf(key, i + 3);
      if (i < 0 || p === undefined || port < 0) return false;
      b[at] = p;
      b[at + 4] = port >> 8;
      b[at + 5] = port & 0xff;
      return true;
    }
    case 'grouped': {
      // `addr . proto . port . index`: the addrProtoPort key, then numgen's u32 in host order.
      // Read in place: a full sync writes hundreds of thousands of these.
      const i = key.indexOf(SEP);
      const j = key.indexOf(SEP, i + 3);
      const k = key.indexOf(SEP, j + 3);
      if (i < 0 || j < 0 || k < 0 || !putAddr(f, key, b, at, 0, i)) return false;
      const p = protoAt(key, i + 3, j);
      const port = portOf(key, j + 3, k);
      const n = portOf(key, k + 3, key.length, 0xffffffff);
      if (p === undefined || port < 0 || n < 0) return false;
      b[at + a] = p;
      b[at + a + 4] = port >> 8;
      b[at + a + 5] = port & 0xff;
      b.writeUInt32LE(n, at + a + 8);
      return true;
    }
    case 'portGrouped': {
      // `proto . port . index`: the protoPort key, then numgen's u32 in host order.
      const i = key.indexOf(SEP);
      const j = key.indexOf(SEP, i + 3);
      if (i < 0 || j < 0) return false;
      const p = protoAt(key, 0, i);
      const port = portOf(key, i + 3, j);
      const n = portOf(key, j + 3, key.length, 0xffffffff);
      if (p === undefined || port < 0 || n < 0) return false;
      b[at] = p;
      b[at + 4] = port >> 8;
      b[at + 5] = port & 0xff;
      b.writeUInt32LE(n, at + 8);
      return true;
    }
    case 'slot': {
      let n = 0;
      for (let i = 0; i < key.length; i++) {
        const c = key.charCodeAt(i) - 48;
        if (c < 0 || c > 9) return false;
        n = n * 10 + c;
      }
      if (key.length === 0 || n > 0xffffffff) return false;
      b.writeUInt32LE(n, at);
      return true;
    }
  }
}

/**
 * Writes frontend `f`'s `addr . proto . port` key (addrProtoPort layout) at `at` from its pieces,
 * or from its spelled key where it has no IPv4 number; false if malformed.
 */
function writeFrontend(f: NlFamily, pieces: FrontendPieces, i: number, b: Buffer, at: number): boolean {
  const { v4s, protos, ports } = pieces;
  const v4 = f === 'ip' && v4s !== undefined && protos !== undefined && ports !== undefined ? v4s[i]! : -1;
  if (v4 === -1) return writeKey(f, 'addrProtoPort', pieces.key(i), b, at);
  const p = protos![i]!;
  const port = ports![i]!;
  if ((p !== 6 && p !== 17 && p !== 132) || !Number.isInteger(port) || port < 0 || port > 65535 || !putV4(v4, b, at)) return false;
  b[at + 4] = p;
  b[at + 8] = port >> 8;
  b[at + 9] = port & 0xff;
  return true;
}

/** A V4Piece (transaction.ts: signed or unsigned 32-bit) big-endian at `at`; false if it is not one. */
function putV4(v: number, b: Uint8Array, at: number): boolean {
  if (!Number.isInteger(v) || v < -0x80000000 || v > 0xffffffff) return false;
  const u = v | 0;
  b[at] = u >>> 24;
  b[at + 1] = (u >>> 16) & 0xff;
  b[at + 2] = (u >>> 8) & 0xff;
  b[at + 3] = u & 0xff;
  return true;
}

/** The protocol named by s[from, to) (`tcp`, `udp`, `sctp`), without slicing. */
function protoAt(s: string, from: number, to: number): number | undefined {
  if (from < 0 || to < 0) return undefined;
  const n = to - from;
  if (n === 3 && s.startsWith('tcp', from)) return 6;
  if (n === 3 && s.startsWith('udp', from)) return 17;
  if (n === 4 && s.startsWith('sctp', from)) return 132;
  return undefined;
}

/** The decimal number s[from, to) (default: to the end), at most `max` (default: a port), or -1. */
function portOf(s: string, from: number, to = s.length, max = 65535): number {
  let n = 0;
  if (from >= to) return -1;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
    if (n > max) return -1;
  }
  return n;
}

/** Writes `addr . port` (endpoints map data) at `at`; false if malformed. */
function writeAddrPort(f: NlFamily, v: string, b: Buffer, at: number): boolean {
  const i = v.indexOf(SEP);
  if (i < 0 || !putAddr(f, v, b, at, 0, i)) return false;
  const port = portOf(v, i + 3, v.length);
  if (port < 0) return false;
  b[at + addrLen(f)] = port >> 8;
  b[at + addrLen(f) + 1] = port & 0xff;
  return true;
}

/** Writes an endpoint's address and port (endpoints map data) at `at`; false if malformed. */
function writeEndpoint(f: NlFamily, ip: string, port: number, b: Buffer, at: number): boolean {
  if (!Number.isInteger(port) || port < 0 || port > 65535 || !putAddr(f, ip, b, at)) return false;
  b[at + addrLen(f)] = port >> 8;
  b[at + addrLen(f) + 1] = port & 0xff;
  return true;
}

/** writeEndpoint for an IPv4 endpoint whose address is already a number (V4Piece). */
function writeEndpointV4(v4: number, port: number, b: Buffer, at: number): boolean {
  if (!Number.isInteger(port) || port < 0 || port > 65535 || !putV4(v4, b, at)) return false;
  b[at + 4] = port >> 8;
  b[at + 5] = port & 0xff;
  return true;
}

/** An endpoint as the IR holds it: the address as a number where it has one, else read. */
function writeEndpointOf(f: NlFamily, ep: EndpointLike, b: Buffer, at: number): boolean {
  if (f === 'ip') {
    // Read and narrowed in one place (`v | 0`, V4Piece): a number held in a variable that may
    // also be `undefined` is a new heap number for every address from 128.0.0.0 up.
    const v = ep.v4;
    if (typeof v === 'number' && v >= 0) return writeEndpointV4(v | 0, ep.port, b, at);
  }
  return writeEndpoint(f, ep.ip, ep.port, b, at);
}

/** Element i's endpoint from its pieces: the address as a number where it has one, else read. */
function writeEndpointPiece(f: NlFamily, pieces: EndpointPieces, i: number, b: Buffer, at: number): boolean {
  const v4 = f === 'ip' ? pieces.v4?.(i) : undefined;
  return v4 !== undefined && v4 !== -1 ? writeEndpointV4(v4, pieces.port(i), b, at) : writeEndpoint(f, pieces.ip(i), pieces.port(i), b, at);
}

function putPort(b: Uint8Array, at: number, s: string | number): void {
  const n = typeof s === 'number' ? s : Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port ${s}`);
  b[at] = n >> 8;
  b[at + 1] = n & 0xff;
}

/** `addr . port` data of an endpoints map element. */
function addrPortBytes(f: NlFamily, addr: string, port: string | number): Uint8Array {
  const a = addrLen(f);
  const b = new Uint8Array(a + 4);
  if (!putAddr(f, addr, b, 0)) throw new Error(`bad address ${addr}`);
  putPort(b, a, port);
  return b;
}

function verdictOf(v: string): { code: number; chain: string } {
  if (v === 'drop') return { code: NF_DROP, chain: '' };
  if (v === 'return') return { code: NFT_RETURN, chain: '' };
  if (v.startsWith('goto ')) return { code: NFT_GOTO, chain: v.slice(5) };
  if (v.startsWith('jump ')) return { code: NFT_JUMP, chain: v.slice(5) };
  throw new Error(`not a verdict: ${v}`);
}

// ---- set and map declarations ----

interface SetDecl {
  flags: number;
  keyType: number;
  keyLen: number;
  dataType?: number;
  dataLen?: number;
  udata: Udata;
}

function concatType(ids: readonly number[]): number {
  let t = 0;
  for (const id of ids) t = (t << 6) | id;
  return t >>> 0;
}

const TYPE_IDS: Record<string, { id: number; len: number; order: number }> = {
  ipv4_addr: { id: T_IPADDR, len: 4, order: BO_BIG },
  ipv6_addr: { id: T_IP6ADDR, len: 16, order: BO_BIG },
  inet_proto: { id: T_INET_PROTO, len: 4, order: BO_BIG },
  inet_service: { id: T_INET_SERVICE, len: 4, order: BO_BIG },
};

/** `type A . B` declarations: ferry uses a handful, all made of the TYPE_IDS names. */
function keyOfType(spec: string): { type: number; len: number; order: number; concat: boolean } {
  const names = parts(spec.trim());
  const ids: number[] = [];
  let len = 0;
  for (const n of names) {
    const t = TYPE_IDS[n];
    if (!t) throw new Error(`unsupported set type ${spec}`);
    ids.push(t.id);
    len += t.len;
  }
  if (names.length === 1) {
    const t = TYPE_IDS[names[0]!]!;
    return { type: t.id, len: addrOrPlainLen(names[0]!), order: t.order, concat: false };
  }
  return { type: concatType(ids), len, order: BO_INVALID, concat: true };
}

function addrOrPlainLen(name: string): number {
  return name === 'inet_proto' ? 1 : name === 'inet_service' ? 2 : TYPE_IDS[name]!.len;
}

/** nft 1.0.x marks a `type` concatenation with a typeof record that has no expressions. */
function concatMarker(): Udata {
  return new Udata().u32(0, EXPR_CONCAT).nest(1, new Udata());
}

/** The affinity set's key, `ip saddr . numgen random mod 1 . numgen random mod 1` (skeleton.ts). */
function affinitySetDecl(f: NlFamily, s: NamedSet): SetDecl {
  if (s.name !== Sets.affinity || s.type !== `${f} saddr . numgen random mod 1 . numgen random mod 1`) throw new Error(`unsupported typeof set ${s.name}: ${s.type}`);
  const numgen = typeofExpr(EXPR_NUMGEN, new Udata().u32(0, 1).u32(1, 1).u32(2, 0));
  const ud = new Udata().u32(UD_SET_KEYBYTEORDER, BO_INVALID).nest(UD_SET_KEY_TYPEOF, typeofConcat([typeofPayload(PROTO_DESC[f], FIELD_SADDR[f]), numgen, numgen]));
  if (s.comment !== undefined) ud.str(UD_SET_COMMENT, s.comment);
  return { flags: setFlags(s), keyType: concatType([f === 'ip' ? T_IPADDR : T_IP6ADDR, T_INTEGER, T_INTEGER]), keyLen: addrLen(f) + 8, udata: ud };
}

function setFlags(s: NamedSet): number {
  let flags = 0;
  for (const f of s.flags ?? []) {
    if (f === 'interval') flags |= SET_INTERVAL;
    else if (f === 'timeout') flags |= SET_TIMEOUT;
    else if (f === 'dynamic') flags |= SET_EVAL;
    else throw new Error(`unsupported set flag ${f}`);
  }
  if (s.timeoutSeconds !== undefined) flags |= SET_TIMEOUT;
  return flags;
}

function setDecl(f: NlFamily, s: NamedSet): SetDecl {
  if (s.typeof) return affinitySetDecl(f, s);
  const k = keyOfType(s.type);
  const flags = setFlags(s);
  const ud = new Udata().u32(UD_SET_KEYBYTEORDER, k.order);
  if (k.concat) ud.nest(UD_SET_KEY_TYPEOF, concatMarker());
  if (s.comment !== undefined) ud.str(UD_SET_COMMENT, s.comment);
  return { flags, keyType: k.type, keyLen: k.len, udata: ud };
}

function mapDecl(f: NlFamily, m: NamedMap): SetDecl {
  const gm = m.typeof ? groupedMapKind(m.name) : undefined;
  if (gm !== undefined) {
    // `ip daddr . meta l4proto . th dport . numgen random mod 2 : ip daddr . PROTO dport`; a
    // NodePort one without the `ip daddr`.
    const byAddr = gm.kind === 'addr';
    const proto = gm.proto.toLowerCase() as 'tcp' | 'udp' | 'sctp';
    const keyExprs = [
      typeofExpr(EXPR_META, new Udata().u32(0, META_L4PROTO)),
      typeofPayload(PROTO_DESC_TH, FIELD_DPORT),
      typeofExpr(EXPR_NUMGEN, new Udata().u32(0, 1).u32(1, 2).u32(2, 0)),
    ];
    if (byAddr) keyExprs.unshift(typeofPayload(PROTO_DESC[f], FIELD_DADDR[f]));
    const ud = new Udata()
      .u32(UD_SET_KEYBYTEORDER, BO_INVALID)
      .u32(UD_SET_DATABYTEORDER, BO_INVALID)
      .nest(UD_SET_KEY_TYPEOF, typeofConcat(keyExprs))
      .nest(UD_SET_DATA_TYPEOF, typeofConcat([typeofPayload(PROTO_DESC[f], FIELD_DADDR[f]), typeofPayload(PROTO_DESC[proto], FIELD_DPORT)]))
      .u32(UD_SET_DATA_INTERVAL, 0);
    if (m.comment !== undefined) ud.str(UD_SET_COMMENT, m.comment);
    const a = addrLen(f);
    const addrT = f === 'ip' ? T_IPADDR : T_IP6ADDR;
    return {
      flags: SET_MAP,
      keyType: byAddr ? concatType([addrT, T_INET_PROTO, T_INET_SERVICE, T_INTEGER]) : concatType([T_INET_PROTO, T_INET_SERVICE, T_INTEGER]),
      keyLen: byAddr ? a + 12 : 12,
      dataType: concatType([addrT, T_INET_SERVICE]),
      dataLen: a + 4,
      udata: ud,
    };
  }
  if (m.typeof) {
    // `numgen random mod 2 : ip daddr . PROTO dport` (endpoint shards) is the only typeof map.
    const p = endpointShardProtocol(m.name);
    if (p === undefined) throw new Error(`unsupported typeof map ${m.name}: ${m.type}`);
    const proto = p.toLowerCase() as 'tcp' | 'udp' | 'sctp';
    const ud = new Udata()
      .u32(UD_SET_KEYBYTEORDER, BO_HOST)
      .u32(UD_SET_DATABYTEORDER, BO_INVALID)
      .nest(UD_SET_KEY_TYPEOF, typeofExpr(EXPR_NUMGEN, new Udata().u32(0, 1).u32(1, 2).u32(2, 0)))
      .nest(UD_SET_DATA_TYPEOF, typeofConcat([typeofPayload(PROTO_DESC[f], FIELD_DADDR[f]), typeofPayload(PROTO_DESC[proto], FIELD_DPORT)]))
      .u32(UD_SET_DATA_INTERVAL, 0);
    if (m.comment !== undefined) ud.str(UD_SET_COMMENT, m.comment);
    const a = addrLen(f);
    return { flags: SET_MAP, keyType: T_INTEGER, keyLen: 4, dataType: concatType([f === 'ip' ? T_IPADDR : T_IP6ADDR, T_INET_SERVICE]), dataLen: a + 4, udata: ud };
  }
  const colon = m.type.indexOf(' : ');
  if (colon < 0 || m.type.slice(colon + 3).trim() !== 'verdict') throw new Error(`unsupported map type ${m.type}`);
  const k = keyOfType(m.type.slice(0, colon));
  const ud = new Udata().u32(UD_SET_KEYBYTEORDER, k.order).u32(UD_SET_DATABYTEORDER, BO_INVALID);
  if (k.concat) ud.nest(UD_SET_KEY_TYPEOF, concatMarker());
  ud.u32(UD_SET_DATA_INTERVAL, 0);
  if (m.comment !== undefined) ud.str(UD_SET_COMMENT, m.comment);
  return { flags: SET_MAP, keyType: k.type, keyLen: k.len, dataType: DATA_VERDICT, dataLen: 0, udata: ud };
}

// ---- rule expressions ----

/** nft numbers registers in 4-byte units and names a 16-byte-aligned one by its 16-byte register. */
function reg(idx: number): number {
  return idx % 4 === 0 ? 1 + idx / 4 : 8 + idx;
}

const NFT_PAYLOAD_NETWORK = 1;
const NFT_PAYLOAD_TRANSPORT = 2;
const META_MARK = 3;
const META_L4PROTO = 16;
const META_IIFNAME = 6;
const IFNAMSIZ = 16;
const CT_STATE = 0;
const CT_STATUS = 2;
const FIB_F_SADDR = 1;
const FIB_F_DADDR = 2;
const FIB_RESULT_ADDRTYPE = 3;
const RTN_LOCAL = 2;
const NF_NAT_RANGE_PROTO_SPECIFIED = 2;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10;

function u32le(v: number): Uint8Array {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

/** Writes a rule's expressions; anonymous sets it needs are declared by the caller first. */
class Exprs {
  constructor(
    private readonly w: Writer,
    private readonly f: NlFamily,
    /** Sets created earlier in this batch (same family and table) → their NFTA_SET_ID, as nft passes them. */
    private readonly ids: ReadonlyMap<string, number>,
  ) {}
  // Expressions never nest: the open one's two positions live here (no allocation per expression).
  private e = 0;
  private d = 0;
  private begin(name: string): void {
    this.e = this.w.nest(1); // NFTA_LIST_ELEM
    this.w.str(1, name); // NFTA_EXPR_NAME
    this.d = this.w.nest(2); // NFTA_EXPR_DATA
  }
  private end(): void {
    this.w.endNest(this.d);
    this.w.endNest(this.e);
  }
  payload(dreg: number, base: number, offset: number, len: number): void {
    this.begin('payload');
    this.w.u32(1, dreg);
    this.w.u32(2, base);
    this.w.u32(3, offset);
    this.w.u32(4, len);
    this.end();
  }
  saddr(dreg: number): void {
    this.payload(dreg, NFT_PAYLOAD_NETWORK, this.f === 'ip' ? 12 : 8, addrLen(this.f));
  }
  daddr(dreg: number): void {
    this.payload(dreg, NFT_PAYLOAD_NETWORK, this.f === 'ip' ? 16 : 24, addrLen(this.f));
  }
  dport(dreg: number): void {
    this.payload(dreg, NFT_PAYLOAD_TRANSPORT, 2, 2);
  }
  meta(key: number, dreg: number): void {
    this.begin('meta');
    this.w.u32(1, dreg);
    this.w.u32(2, key);
    this.end();
  }
  metaSet(key: number, sreg: number): void {
    this.begin('meta');
    this.w.u32(2, key);
    this.w.u32(3, sreg);
    this.end();
  }
  ct(key: number, dreg: number): void {
    this.begin('ct');
    this.w.u32(1, dreg);
    this.w.u32(2, key);
    this.end();
  }
  /** `op`: nft names the operation (NFT_BITWISE_BOOL) for a mark computation, not for a flag test. */
  bitwise(r: number, mask: number, xor: number, op = false): void {
    this.begin('bitwise');
    this.w.u32(1, r);
    this.w.u32(2, r);
    this.w.u32(3, 4);
    this.w.valueU32(4, mask);
    this.w.valueU32(5, xor);
    if (op) this.w.u32(6, 0); // NFT_BITWISE_BOOL
    this.end();
  }
  /** `saddr != PREFIX` as nft writes it: a shorter load for whole bytes, else a mask. */
  notPrefix(cidr: string): void {
    const slash = cidr.indexOf('/');
    const a = addrLen(this.f);
    const len = slash < 0 ? a * 8 : Number(cidr.slice(slash + 1));
    const net = addrBytes(this.f, slash < 0 ? cidr : cidr.slice(0, slash));
    const base = this.f === 'ip' ? 12 : 8;
    if (len > 0 && len % 8 === 0) {
      this.payload(1, NFT_PAYLOAD_NETWORK, base, len / 8);
      this.cmp(1, true, net.subarray(0, len / 8));
      return;
    }
    const mask = new Uint8Array(a);
    for (let i = 0; i < a; i++) {
      const bits = Math.max(0, Math.min(8, len - 8 * i));
      mask[i] = (0xff << (8 - bits)) & 0xff;
      net[i] = net[i]! & mask[i]!;
    }
    this.payload(1, NFT_PAYLOAD_NETWORK, base, a);
    this.begin('bitwise');
    this.w.u32(1, 1);
    this.w.u32(2, 1);
    this.w.u32(3, a);
    this.w.value(4, mask);
    this.w.value(5, new Uint8Array(a));
    this.end();
    this.cmp(1, true, net);
  }
  cmpU32(sreg: number, neq: boolean, v: number): void {
    this.begin('cmp');
    this.w.u32(1, sreg);
    this.w.u32(2, neq ? 1 : 0);
    this.w.valueU32(3, v);
    this.end();
  }
  cmp(sreg: number, neq: boolean, data: Uint8Array): void {
    this.begin('cmp');
    this.w.u32(1, sreg);
    this.w.u32(2, neq ? 1 : 0);
    this.w.value(3, data);
    this.end();
  }
  immediate(dreg: number, data: Uint8Array): void {
    this.begin('immediate');
    this.w.u32(1, dreg);
    this.w.value(2, data);
    this.end();
  }
  verdict(code: number, chain = ''): void {
    this.begin('immediate');
    this.w.u32(1, 0);
    this.w.verdict(2, code, chain);
    this.end();
  }
  lookup(set: string, sreg: number, opts: { dreg?: number; inv?: boolean; setId?: number } = {}): void {
    this.begin('lookup');
    this.w.str(1, set);
    this.w.u32(2, sreg);
    if (opts.dreg !== undefined) this.w.u32(3, opts.dreg);
    const id = opts.setId ?? this.ids.get(set);
    if (id !== undefined) this.w.u32(4, id);
    if (opts.inv) this.w.u32(5, 1);
    this.end();
  }
  /** `zeroOffset`: write an offset of 0 too (nft does for a numgen inside a concatenation). */
  numgen(mod: number, offset: number, dreg = 1, zeroOffset = false): void {
    this.begin('numgen');
    this.w.u32(1, dreg);
    this.w.u32(2, mod);
    this.w.u32(3, 1); // NFT_NG_RANDOM
    if (offset || zeroOffset) this.w.u32(4, offset);
    this.end();
  }
  fib(flags: number): void {
    this.begin('fib');
    this.w.u32(1, 1);
    this.w.u32(2, FIB_RESULT_ADDRTYPE);
    this.w.u32(3, flags);
    this.end();
  }
  dnat(addrReg: number, protoReg: number, flags: number): void {
    this.begin('nat');
    this.w.u32(1, 1); // NFT_NAT_DNAT
    this.w.u32(2, NFPROTO[this.f]);
    this.w.u32(3, addrReg);
    this.w.u32(5, protoReg);
    if (flags) this.w.u32(7, flags);
    this.end();
  }
  masq(flags: number): void {
    this.begin('masq');
    this.w.u32(1, flags);
    this.end();
  }
  reject(): void {
    this.begin('reject');
    this.w.u32(1, 0); // NFT_REJECT_ICMP_UNREACH
    this.w.u8(2, this.f === 'ip' ? 3 : 4); // port unreachable
    this.end();
  }
  dynsetUpdate(set: string, sreg: number, timeoutSeconds?: number): void {
    this.begin('dynset');
    this.w.str(1, set);
    const id = this.ids.get(set);
    if (id !== undefined) this.w.u32(2, id);
    this.w.u32(3, 1); // NFT_DYNSET_OP_UPDATE
    this.w.u32(4, sreg);
    if (timeoutSeconds !== undefined) this.w.u64(6, timeoutSeconds * 1000); // NFTA_DYNSET_TIMEOUT, ms
    this.end();
  }
  /** `ip saddr . numgen random mod 1 offset A . numgen random mod 1 offset B` (rules.ts affinityKeyText). */
  affinityKey(id: readonly [number, number]): void {
    const a = addrLen(this.f) / 4;
    this.saddr(1);
    this.numgen(1, id[0], reg(a), true);
    this.numgen(1, id[1], reg(a + 1), true);
  }
  cond(c: Cond, iif?: LocalInterface): void {
    if (c === '') return;
    if (c === 'fromNode') {
      this.fib(FIB_F_SADDR);
      this.cmpU32(1, false, RTN_LOCAL);
      return;
    }
    if (iif) {
      // As nft: an exact name compares all IFNAMSIZ bytes (NUL padded); a prefix only its own.
      const name = new TextEncoder().encode(iif.name);
      const data = iif.prefix ? name : new Uint8Array(IFNAMSIZ);
      if (!iif.prefix) data.set(name.subarray(0, IFNAMSIZ - 1));
      this.meta(META_IIFNAME, 1);
      this.cmp(1, c === 'notLocalSrc', data);
      return;
    }
    this.saddr(1);
    this.lookup(Sets.localCIDRs, 1, { inv: c === 'notLocalSrc' });
  }
  l4proto(p: string): void {
    this.meta(META_L4PROTO, 1);
    this.begin('cmp');
    this.w.u32(1, 1);
    this.w.u32(2, 0);
    const at = this.w.valueAt(3, 1);
    this.w.buf[at] = protoNum(p);
    this.end();
  }
  notLoopback(): void {
    if (this.f === 'ip') {
      this.payload(1, NFT_PAYLOAD_NETWORK, 16, 1);
      this.cmp(1, true, Uint8Array.of(127));
    } else {
      this.daddr(1);
      const lo = new Uint8Array(16);
      lo[15] = 1;
      this.cmp(1, true, lo);
    }
  }
  portScope(scope: PortDispatchScope): void {
    if (scope === 'nodePortIPs') {
      this.daddr(1);
      this.lookup(Sets.nodePortIPs, 1);
      return;
    }
    if (scope === 'fibLocalNotLoopback') {
      this.fib(FIB_F_DADDR);
      this.cmpU32(1, false, RTN_LOCAL);
    }
    this.notLoopback();
  }
}

/** An anonymous set a rule needs, declared just before the rule in the same batch. */
interface AnonSet {
  name: '__set%d' | '__map%d';
  decl: SetDecl;
  elements: { key: Uint8Array; data?: Uint8Array; verdict?: { code: number; chain: string }; end?: boolean; open?: boolean }[];
}

/**
 * CIDRs as nft encodes an interval set: [start, end) pairs, sorted. An anonymous set (nft merges
 * its elements) joins overlapping and adjacent ranges and opens with an end element at 0; a
 * range reaching the top of the address space has no end element but an "open" userdata flag.
 */
function intervalElements(f: NlFamily, cidrs: readonly string[], anonymous: boolean): AnonSet['elements'] {
  const bits = f === 'ip' ? 32 : 128;
  const ranges: [bigint, bigint][] = [];
  for (const c of cidrs) {
    const slash = c.indexOf('/');
    const addr = slash < 0 ? c : c.slice(0, slash);
    const len = slash < 0 ? bits : Number(c.slice(slash + 1));
    const start = bigOf(addrBytes(f, addr));
    const size = 1n << BigInt(bits - len);
    const lo = (start / size) * size;
    ranges.push([lo, lo + size]);
  }
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  if (anonymous) {
    const merged: [bigint, bigint][] = [];
    for (const r of ranges) {
      const last = merged[merged.length - 1];
      if (last && r[0] <= last[1]) {
        if (r[1] > last[1]) last[1] = r[1];
      } else merged.push([r[0], r[1]]);
    }
    ranges.length = 0;
    ranges.push(...merged);
  }
  const top = 1n << BigInt(bits);
  const out: AnonSet['elements'] = [];
  if (anonymous && ranges.length > 0 && ranges[0]![0] !== 0n) out.push({ key: bytesOf(0n, bits / 8), end: true });
  for (const [lo, hi] of ranges) {
    if (hi >= top) {
      out.push({ key: bytesOf(lo, bits / 8), open: true });
      continue;
    }
    out.push({ key: bytesOf(lo, bits / 8) });
    out.push({ key: bytesOf(hi, bits / 8), end: true });
  }
  return out;
}

function bigOf(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

function bytesOf(v: bigint, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return b;
}

function anonSetOf(f: NlFamily, r: Rule): AnonSet | undefined {
  switch (r.k) {
    case 'firewallDrop': {
      if (r.sources.length === 1) return undefined; // nft compares against a lone prefix directly
      const elements = intervalElements(f, r.sources, true);
      const ud = new Udata().u32(UD_SET_KEYBYTEORDER, BO_BIG).u32(UD_SET_MERGE_ELEMENTS, 1).nest(UD_SET_KEY_TYPEOF, typeofPayload(PROTO_DESC[f], FIELD_SADDR[f]));
      return { name: '__set%d', decl: { flags: SET_ANONYMOUS | SET_CONSTANT | SET_INTERVAL, keyType: f === 'ip' ? T_IPADDR : T_IP6ADDR, keyLen: addrLen(f), udata: ud }, elements };
    }
    case 'dnatAnon': {
      const ud = new Udata().u32(UD_SET_KEYBYTEORDER, BO_HOST).u32(UD_SET_DATABYTEORDER, BO_INVALID).u32(UD_SET_DATA_INTERVAL, 0);
      const elements = r.eps.map((ep, i) => ({ key: u32le(i), data: addrPortBytes(f, ep.ip, ep.port) }));
      const decl: SetDecl = {
        flags: SET_ANONYMOUS | SET_CONSTANT | SET_MAP,
        keyType: T_INTEGER,
        keyLen: 4,
        dataType: concatType([f === 'ip' ? T_IPADDR : T_IP6ADDR, T_INET_SERVICE]),
        dataLen: addrLen(f) + 4,
        udata: ud,
      };
      return { name: '__map%d', decl, elements };
    }
    case 'randomChain': {
      const ud = new Udata()
        .u32(UD_SET_KEYBYTEORDER, BO_HOST)
        .u32(UD_SET_DATABYTEORDER, BO_INVALID)
        .nest(UD_SET_DATA_TYPEOF, typeofExpr(EXPR_VERDICT, new Udata()))
        .u32(UD_SET_DATA_INTERVAL, 0);
      const elements = r.chains.map((c, i) => ({ key: u32le(i), verdict: { code: NFT_GOTO, chain: c } }));
      return { name: '__map%d', decl: { flags: SET_ANONYMOUS | SET_CONSTANT | SET_MAP, keyType: T_INTEGER, keyLen: 4, dataType: DATA_VERDICT, dataLen: 0, udata: ud }, elements };
    }
    default:
      return undefined;
  }
}

function writeRule(x: Exprs, f: NlFamily, r: Rule, anonId: number): void {
  const a = addrLen(f) / 4; // register index after an address
  switch (r.k) {
    case 'verdict':
      x.cond(r.cond, r.iif);
      x.verdict(r.verdict === 'jump' ? NFT_JUMP : r.verdict === 'goto' ? NFT_GOTO : r.verdict === 'return' ? NFT_RETURN : NF_DROP, r.chain);
      return;
    case 'ctNewJump':
      x.ct(CT_STATE, 1);
      x.bitwise(1, 0x8, 0);
      x.cmpU32(1, true, 0);
      x.verdict(NFT_JUMP, r.chain);
      return;
    case 'daddrSetDrop':
      x.daddr(1);
      x.lookup(r.set, 1);
      x.verdict(NF_DROP, '');
      return;
    case 'reject':
      if (r.daddrSet) {
        x.daddr(1);
        x.lookup(r.daddrSet, 1);
      }
      x.reject();
      return;
    case 'markOr':
      x.meta(META_MARK, 1);
      x.bitwise(1, ~r.mark >>> 0, r.mark, true);
      x.metaSet(META_MARK, 1);
      return;
    case 'markXor':
      x.meta(META_MARK, 1);
      x.bitwise(1, 0xffffffff, r.mark, true);
      x.metaSet(META_MARK, 1);
      return;
    case 'markUnsetReturn':
      x.meta(META_MARK, 1);
      x.bitwise(1, r.mark, 0, true);
      x.cmpU32(1, false, 0);
      x.verdict(NFT_RETURN);
      return;
    case 'masqFullyRandom':
      x.masq(NF_NAT_RANGE_PROTO_RANDOM_FULLY);
      return;
    case 'hairpin':
      x.ct(CT_STATUS, 1);
      x.bitwise(1, 0x20, 0); // IPS_DST_NAT
      x.cmpU32(1, true, 0);
      x.saddr(1);
      x.daddr(reg(a));
      x.lookup(r.set, 1);
      x.verdict(NFT_JUMP, r.chain);
      return;
    case 'dispatch':
      x.daddr(1);
      x.meta(META_L4PROTO, reg(a));
      x.dport(reg(a + 1));
      x.lookup(r.map, 1, { dreg: 0 });
      return;
    case 'portDispatch':
      x.portScope(r.scope);
      x.meta(META_L4PROTO, 1);
      x.dport(reg(1));
      x.lookup(r.map, 1, { dreg: 0 });
      return;
    case 'portScopeJump':
      x.portScope(r.scope);
      x.verdict(NFT_JUMP, r.chain);
      return;
    case 'dnat':
      x.cond(r.cond, r.iif);
      x.l4proto(r.proto);
      x.immediate(1, addrBytes(f, r.ip));
      x.immediate(2, Uint8Array.of(r.port >> 8, r.port & 0xff));
      x.dnat(1, 2, NF_NAT_RANGE_PROTO_SPECIFIED);
      return;
    case 'dnatAnon':
      x.cond(r.cond, r.iif);
      x.l4proto(r.proto);
      x.numgen(r.eps.length, 0);
      x.lookup('__map%d', 1, { dreg: 1, setId: anonId });
      x.dnat(1, reg(a), 0);
      return;
    case 'dnatSlot':
      x.cond(r.cond, r.iif);
      x.l4proto(r.proto);
      x.numgen(r.n, r.base);
      x.lookup(r.map, 1, { dreg: 1 });
      x.dnat(1, reg(a), 0);
      return;
    case 'frontendJump':
      if (r.byPort) {
        x.meta(META_L4PROTO, 1);
        x.dport(reg(1));
      } else {
        x.daddr(1);
        x.meta(META_L4PROTO, reg(a));
        x.dport(reg(a + 1));
      }
      x.lookup(r.set, 1);
      x.cond(r.cond, r.iif);
      x.verdict(NFT_JUMP, r.chain);
      return;
    case 'dnatCount':
      if (r.byPort) {
        x.meta(META_L4PROTO, 1);
        x.dport(reg(1));
        x.lookup(r.set, 1);
        x.l4proto(r.proto);
        x.meta(META_L4PROTO, 1);
        x.dport(reg(1));
        x.numgen(r.n, 0, reg(2), true);
        x.lookup(r.map, 1, { dreg: 1 });
        x.dnat(1, reg(a), 0);
        return;
      }
      x.daddr(1);
      x.meta(META_L4PROTO, reg(a));
      x.dport(reg(a + 1));
      x.lookup(r.set, 1);
      x.l4proto(r.proto);
      x.daddr(1);
      x.meta(META_L4PROTO, reg(a));
      x.dport(reg(a + 1));
      x.numgen(r.n, 0, reg(a + 2), true);
      x.lookup(r.map, 1, { dreg: 1 });
      x.dnat(1, reg(a), 0);
      return;
    case 'affinityCheck':
      x.cond(r.cond, r.iif);
      x.affinityKey(r.id);
      x.lookup(r.set, 1);
      x.verdict(NFT_GOTO, r.chain);
      return;
    case 'randomChain':
      x.cond(r.cond, r.iif);
      x.numgen(r.chains.length, 0);
      x.lookup('__map%d', 1, { dreg: 0, setId: anonId });
      return;
    case 'affinityUpdate':
      x.affinityKey(r.id);
      x.dynsetUpdate(r.set, 1, r.timeoutSeconds);
      return;
    case 'firewallDrop':
      if (r.sources.length === 1) x.notPrefix(r.sources[0]!);
      else {
        x.saddr(1);
        x.lookup('__set%d', 1, { inv: true, setId: anonId });
      }
      x.verdict(NF_DROP);
      return;
  }
}

// ---- the batch ----

export interface EncodedBatch {
  /** BATCH_BEGIN .. BATCH_END, ready for one sendmsg. */
  readonly bytes: Uint8Array;
  /** Messages between BEGIN and END. */
  readonly messages: number;
  /**
   * The op a kernel error points at (sequence number, extack offset or -1), or undefined;
   * `element`: which element of an element run, when known; `elements`: how many elements the
   * refused message carried, when the one at fault is not known.
   */
  locate(seq: number, offset: number): { opIndex: number; element?: number; elements?: number } | undefined;
  /**
   * Lets go of the batch's buffer once it is sent and any error located: `bytes` is empty and
   * `locate` finds nothing afterwards. The encoder's closures share one context that holds the
   * buffer, and V8 can keep such a context alive after the batch is dropped (in a daemon at 44k
   * Services, one full sync in four kept its 52 MB buffer past two full collections, held from a
   * handle scope through this context: docs/memory.md, fifteenth pass).
   */
  release(): void;
}

const NO_BYTES = Buffer.alloc(0);

function splitTarget(target: string, index: number): { family: NlFamily; table: string } {
  const sp = target.indexOf(' ');
  const fam = target.slice(0, sp);
  if ((fam !== 'ip' && fam !== 'ip6') || sp < 0) throw new NetlinkEncodeError(`op ${index}: target ${target} is not "ip|ip6 TABLE"`, index);
  return { family: fam, table: target.slice(sp + 1) };
}

/** Most bytes of element attributes in one message: the list is one attribute (16-bit length). */
const ELEMENT_LIST_LIMIT = 60_000;

/**
 * One rule of a chain as the kernel holds it (parseDumpedRules): its handle (a kernel's dump
 * always has one; a message without, as in a batch, leaves it undefined) and the set its first
 * lookup reads.
 */
export interface DumpedRule {
  readonly handle: number | undefined;
  readonly set: string | undefined;
}

/** The key parseDumpedRules gives a rule: the set its first lookup reads (every rule of the endpoint-count chain has its own). */
function ruleSetKey(r: Rule): string | undefined {
  return r.k === 'frontendJump' || r.k === 'dnatCount' ? r.set : undefined;
}

/**
 * How a CountRulesOp changes the chain in place, given its rules as the kernel holds them:
 * the handles to delete, and each new rule with the handle of the rule it goes after — or
 * undefined when the chain is not what the op expects (then it is rewritten instead).
 */
function countRulesInPlace(op: CountRulesOp, held: readonly DumpedRule[] | undefined): { deletes: number[]; inserts: { rule: Rule; after: number }[] } | undefined {
  if (held === undefined) return undefined;
  const added = new Set(op.added);
  const removed = new Set(op.removed);
  const handleOf = new Map<string, number>();
  const kept: string[] = [];
  const deletes: number[] = [];
  for (const r of held) {
    if (r.set === undefined || r.handle === undefined || handleOf.has(r.set)) return undefined;
    handleOf.set(r.set, r.handle);
    if (removed.has(r.set)) deletes.push(r.handle);
    else kept.push(r.set);
  }
  if (deletes.length !== removed.size) return undefined;
  // The kept rules must be the wanted ones that are not new, in the same order.
  const wanted = op.rules.map(ruleSetKey);
  const stay = wanted.filter((k) => k === undefined || !added.has(k));
  if (stay.length !== kept.length || stay.some((k, j) => k !== kept[j])) return undefined;
  // Each new rule goes after the nearest kept rule before it; inserted last first, so that new
  // rules that share that predecessor end up in order.
  const inserts: { rule: Rule; after: number }[] = [];
  let after: number | undefined;
  for (let j = 0; j < op.rules.length; j++) {
    const k = wanted[j]!;
    if (k !== undefined && added.has(k)) {
      if (after === undefined) return undefined;
      inserts.push({ rule: op.rules[j]!, after });
    } else after = handleOf.get(k!);
  }
  if (inserts.length !== added.size) return undefined;
  return { deletes, inserts: inserts.reverse() };
}

/** Bytes an element of `layout` takes in a batch (its nest, key and, in a map, value attributes). */
function elementBytes(family: NlFamily, layout: Layout, mapped: boolean): number {
  const key = 8 + ((keyLen(family, layout) + 3) & ~3);
  if (!mapped) return 4 + key;
  // Endpoint values are `addr . port`; the rest are verdicts (a nest, the code, a chain name).
  const value = layout === 'slot' || layout === 'grouped' || layout === 'portGrouped' ? 8 + ((addrLen(family) + 4 + 3) & ~3) : 24 + VERDICT_CHAIN_BYTES;
  return 4 + key + value;
}

/** What a verdict's chain name is taken to need (ferry's names are shorter; a longer one grows the buffer). */
const VERDICT_CHAIN_BYTES = 48;

/** Bytes of a message other than an element run's, taken generously: a rule can be a few hundred. */
const OTHER_OP_BYTES = 160;

/**
 * A close estimate of the batch's size, so that its buffer is allocated once and not much larger
 * than it needs: a full sync at 44k Services is a 25 MB batch, and the flat 80 bytes an op this
 * replaced made it 53 MB — enough external memory at once to start a major collection of the
 * daemon's heap (150 ms at that size) in nearly every full sync. Element runs are counted by
 * their layout (exact for ferry's sets and maps); every other op as OTHER_OP_BYTES. An estimate
 * short of the batch only means the buffer grows.
 */
function batchBytes(ops: readonly Op[]): number {
  let bytes = 4096;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.kind !== 'elements') {
      bytes += OTHER_OP_BYTES;
      continue;
    }
    // A container without a layout fails in the encoding, with the op named.
    const layout = layoutIfKnown(op.set) ?? 'addr';
    const family: NlFamily = op.target.startsWith('ip6 ') ? 'ip6' : 'ip';
    const run = elementBytes(family, layout, op.run.value !== undefined) * op.run.count;
    // A message per ELEMENT_LIST_LIMIT bytes of elements: its header, table and set names, list nest.
    bytes += run + (Math.ceil(run / ELEMENT_LIST_LIMIT) + 1) * 128;
  }
  return bytes;
}


/** Element `nth` of a list: its key and, for a map, its value. False when either does not encode. */
function writeElement(w: Writer, nth: number, family: NlFamily, layout: Layout, key: string, value: string | undefined): boolean {
  const el = w.nest(nth);
  // valueAt() may grow (replace) the buffer: take w.buf only after it.
  const kat = w.valueAt(1, keyLen(family, layout));
  let ok = writeKey(family, layout, key, w.buf, kat);
  if (ok && value !== undefined) ok = writeElementValue(w, family, layout, addrLen(family), value);
  w.endNest(el);
  return ok;
}

// One message's worth of an element run, by layout (encodeTransaction, op `elements`): each
// writes elements k, k + 1, … into the open list `list` until the run ends or the list is full,
// and returns the next k. Element j of the message is nested as j + 1. A malformed element
// throws, naming op `i`, the element and the set.

/** Spelled elements: key(k) and value(k), parsed. */
function spelledElements(w: Writer, family: NlFamily, layout: Layout, run: ElementRun, k: number, list: number, i: number, set: string): number {
  const count = run.count;
  let n = 0;
  while (k < count && w.since(list) < ELEMENT_LIST_LIMIT) {
    const key = run.key(k);
    const value = run.value?.(k);
    if (!writeElement(w, ++n, family, layout, key, value)) throw cannotEncode(i, key, value, set);
    k++;
  }
  return k;
}

/** An endpoint shard's elements from their pieces (SlotPieces): the slot, then the endpoint. */
function slotElements(w: Writer, family: NlFamily, run: ElementRun, slots: SlotPieces, k: number, list: number, i: number, set: string): number {
  const alen = addrLen(family);
  const count = run.count;
  let n = 0;
  while (k < count && w.since(list) < ELEMENT_LIST_LIMIT) {
    const el = w.nest(++n);
    const slot = slots.slot(k);
    let ok = Number.isInteger(slot) && slot >= 0 && slot <= 0xffffffff;
    if (ok) {
      // valueAt() may grow (replace) the buffer: take w.buf only after it.
      const kat = w.valueAt(1, 4);
      w.buf.writeUInt32LE(slot, kat);
      const vat = w.valueAt(2, alen + 4);
      ok = writeEndpointPiece(family, slots, k, w.buf, vat);
    }
    w.endNest(el);
    if (!ok) throw cannotEncode(i, run.key(k), run.value?.(k), set);
    k++;
  }
  return k;
}

/** IPv4 addresses (`cluster-ips`) or pairs of one address (`hairpin`) from their numbers; an element without one is spelled. */
function addressElements(w: Writer, layout: Layout, run: ElementRun, addresses: ArrayLike<number>, k: number, list: number, i: number, set: string): number {
  const klen = keyLen('ip', layout);
  const pair = layout === 'addrAddr';
  const count = run.count;
  let n = 0;
  while (k < count && w.since(list) < ELEMENT_LIST_LIMIT) {
    const v4 = addresses[k]!;
    if (v4 === -1) {
      const key = run.key(k);
      const value = run.value?.(k);
      if (!writeElement(w, ++n, 'ip', layout, key, value)) throw cannotEncode(i, key, value, set);
      k++;
      continue;
    }
    const el = w.nest(++n);
    const kat = w.valueAt(1, klen);
    const ok = putV4(v4, w.buf, kat) && (!pair || putV4(v4, w.buf, kat + 4));
    w.endNest(el);
    if (!ok) throw cannotEncode(i, run.key(k), undefined, set);
    k++;
  }
  return k;
}

/** `addr . proto . port` keys (count and masquerade sets) from their pieces. */
function frontendElements(w: Writer, family: NlFamily, run: ElementRun, frontendList: FrontendList, k: number, list: number, i: number, set: string): number {
  const klen = keyLen(family, 'addrProtoPort');
  const { frontends, members } = frontendList;
  const count = run.count;
  let n = 0;
  while (k < count && w.since(list) < ELEMENT_LIST_LIMIT) {
    const el = w.nest(++n);
    const kat = w.valueAt(1, klen);
    const ok = writeFrontend(family, frontends, members[k]!, w.buf, kat);
    w.endNest(el);
    if (!ok) throw cannotEncode(i, run.key(k), undefined, set);
    k++;
  }
  return k;
}

/**
 * Where a grouped run's elements stand between messages: element k is endpoint `bj` of frontend
 * members[bm] (k only ever moves on by one), and `head` that frontend's key, written once for
 * all its endpoints.
 */
class GroupedCursor {
  bm = 0;
  bj = 0;
  last = -1;
  headOk = false;
  eps: readonly EndpointLike[] = [];
  head = Buffer.alloc(0);
  /** At the start of a run whose keys are `klen` bytes (the head is all but the index). */
  reset(klen: number): this {
    this.bm = 0;
    this.bj = 0;
    this.last = -1;
    this.headOk = false;
    this.eps = NO_ENDPOINTS;
    if (this.head.length !== klen - 4) this.head = Buffer.alloc(klen - 4);
    return this;
  }
}

const NO_ENDPOINTS: readonly EndpointLike[] = [];

/*
 * The batch encoder's Writer and grouped-run cursor, one each for the process, reused by every
 * encoding (their buffers are not: each encoding gets its own). V8 ties the optimized code of a
 * class's methods, and of every loop that inlines them, to the hidden class of its instances,
 * and a hidden class lives only as long as some instance does: with a Writer per encoding, the
 * first major collection after a full sync took the Writer's hidden class with the batch, threw
 * away all of that code, and the next full sync's encoding started over in the interpreter
 * (docs/memory.md, seventeenth pass).
 */
const BATCH_WRITER = new Writer(0);
const GROUPED_CURSOR = new GroupedCursor();

/** A grouped endpoints map (`addr . proto . port . index` or a NodePort's `proto . port . index` → endpoint) from its parts, frontend by frontend. */
function groupedElements(w: Writer, family: NlFamily, layout: Layout, run: ElementRun, parts: ElementParts, c: GroupedCursor, k: number, list: number, i: number, set: string): number {
  const klen = keyLen(family, layout);
  const alen = addrLen(family);
  const head = c.head;
  const members = parts.members;
  const per = parts.n;
  const count = run.count;
  let { bm, bj, last, headOk, eps } = c;
  let n = 0;
  while (k < count && w.since(list) < ELEMENT_LIST_LIMIT) {
    const f = members[bm]!;
    if (f !== last) {
      last = f;
      eps = parts.endpoints[f]!;
      head.fill(0);
      // A NodePort's head is its `proto . port` key: few, read as spelled.
      headOk = layout === 'grouped' ? writeFrontend(family, parts.frontends, f, head, 0) : writeKey(family, 'protoPort', parts.frontends.key(f), head, 0);
    }
    const index = bj;
    if (++bj === per) {
      bj = 0;
      bm++;
    }
    const ep = eps[index];
    const el = w.nest(++n);
    const kat = w.valueAt(1, klen);
    let ok = headOk && ep !== undefined;
    if (ok) {
      w.buf.set(head, kat);
      w.buf.writeUInt32LE(index, kat + klen - 4);
      // valueAt() may grow (replace) the buffer: take w.buf only after it.
      const vat = w.valueAt(2, alen + 4);
      ok = writeEndpointOf(family, ep!, w.buf, vat);
    }
    w.endNest(el);
    if (!ok) throw cannotEncode(i, run.key(k), run.value?.(k), set);
    k++;
  }
  c.bm = bm;
  c.bj = bj;
  c.last = last;
  c.headOk = headOk;
  c.eps = eps;
  return k;
}

/** Encodes the whole transaction. Throws NetlinkEncodeError naming the op it cannot express. */
export function encodeTransaction(
  tx: Transaction,
  opts: {
    seqBase?: number;
    /** tests: start small to exercise growth */ initialBytes?: number;
    /** The rules the kernel holds in a chain a CountRulesOp changes (by `target`, then chain); without them the chain is rewritten. */
    chainRules?: (target: string, chain: string) => readonly DumpedRule[] | undefined;
  } = {},
): EncodedBatch {
  const ops = tx.ops;
  // Sized for the batch so that it is allocated once: growing a buffer of tens of MB copies it.
  const w = BATCH_WRITER;
  w.reset(opts.initialBytes ?? batchBytes(ops));
  const seqBase = (opts.seqBase ?? 1) >>> 0;
  // Per message (index = sequence number - seqBase - 1): its first op, how many ops, whether it
  // is an element list. Plain number arrays: no object per message.
  const spanFirst: number[] = [];
  const spanCount: number[] = [];
  const spanElems: number[] = [];
  // For a message of an element run: the index in the run of its first element; else -1.
  const spanRun: number[] = [];
  const starts: number[] = [];
  let setId = 0;
  // Per target (`ip ferry`): family, table and the sets created in this batch (NFTA_SET_ID
  // references). Looked up by the op's target string: no slicing per op.
  const targets = new Map<string, { family: NlFamily; table: string; ids: Map<string, number> }>();
  const targetOf = (target: string, index: number): { family: NlFamily; table: string; ids: Map<string, number> } => {
    let t = targets.get(target);
    if (!t) {
      t = { ...splitTarget(target, index), ids: new Map() };
      targets.set(target, t);
    }
    return t;
  };
  const begin = w.msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seqBase, 0, NFNL_SUBSYS_NFTABLES);
  w.endMsg(begin);
  const msg = (type: number, flags: number, family: NlFamily, first: number, count = 1, elements = 0): number => {
    spanFirst.push(first);
    spanCount.push(count);
    spanElems.push(elements);
    spanRun.push(-1);
    const start = w.msg((NFNL_SUBSYS_NFTABLES << 8) | type, NLM_F_REQUEST | flags, seqBase + spanFirst.length, NFPROTO[family]);
    starts.push(start);
    return start;
  };

  const writeSet = (family: NlFamily, table: string, name: string, d: SetDecl, id: number, first: number, extra?: (w: Writer) => void): void => {
    const m = msg(MSG.NEWSET, NLM_F_CREATE, family, first);
    w.str(1, table);
    w.str(2, name);
    w.u32(3, d.flags);
    w.u32(4, d.keyType);
    w.u32(5, d.keyLen);
    if (d.dataType !== undefined) {
      w.u32(6, d.dataType);
      w.u32(7, d.dataLen ?? 0);
    }
    w.u32(10, id);
    extra?.(w);
    w.bytes(13, d.udata.bytes());
    w.endMsg(m);
  };

  /** An element message's frame: table, set (by id too when created in this batch), and the open element list. */
  const elementList = (table: string, set: string, ids: ReadonlyMap<string, number>): number => {
    w.str(1, table);
    w.str(2, set);
    const sid = ids.get(set);
    if (sid !== undefined) w.u32(4, sid);
    return w.nest(3);
  };
  /** A rule appended to `chain` (op `first`); with `after`, inserted after the rule of that handle. */
  const newRule = (family: NlFamily, table: string, ids: ReadonlyMap<string, number>, chain: string, rule: Rule, anonId: number, first: number, after?: number): void => {
    const m = msg(MSG.NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, first);
    w.str(1, table);
    w.str(2, chain);
    if (after !== undefined) w.u64(6, after);
    const ex = w.nest(4);
    writeRule(new Exprs(w, family, ids), family, rule, anonId);
    w.endNest(ex);
    w.endMsg(m);
  };

  let i = 0;
  try {
    while (i < ops.length) {
      const op = ops[i]!;
      const { family, table, ids } = targetOf(op.target, i);
      switch (op.kind) {
        case 'table': {
          const m = msg(op.verb === 'add' ? MSG.NEWTABLE : MSG.DELTABLE, 0, family, i);
          w.str(1, table);
          if (op.verb === 'add') {
            w.u32(2, 0);
            if (op.comment !== undefined) w.bytes(6, new Udata().str(UD_TABLE_COMMENT, op.comment).bytes());
          }
          w.endMsg(m);
          i++;
          break;
        }
        case 'chain': {
          if (op.verb === 'add') {
            const c: Chain = op.chain;
            const m = msg(MSG.NEWCHAIN, NLM_F_CREATE, family, i);
            w.str(1, table);
            w.str(3, c.name);
            if (c.base) {
              w.str(7, c.base.type);
              const h = w.nest(4);
              w.u32(1, HOOK[c.base.hook]);
              w.i32(2, c.base.priority);
              w.endNest(h);
            }
            if (c.comment !== undefined) w.bytes(12, new Udata().str(UD_CHAIN_COMMENT, c.comment).bytes());
            w.endMsg(m);
          } else if (op.verb === 'flush') {
            const m = msg(MSG.DELRULE, 0, family, i);
            w.str(1, table);
            w.str(2, op.name);
            w.endMsg(m);
          } else {
            const m = msg(MSG.DELCHAIN, 0, family, i);
            w.str(1, table);
            w.str(3, op.name);
            w.endMsg(m);
          }
          i++;
          break;
        }
        case 'rule': {
          const anon = anonSetOf(family, op.rule);
          let id = 0;
          if (anon) {
            id = ++setId;
            writeSet(family, table, anon.name, anon.decl, id, i, (w) => {
              const d = w.nest(9); // NFTA_SET_DESC
              w.u32(1, anon.elements.length); // NFTA_SET_DESC_SIZE
              w.endNest(d);
            });
            // As many element messages as the 64 KiB list attribute needs (a map of more
            // endpoints than a block holds can be larger).
            let k = 0;
            while (k < anon.elements.length) {
              const m = msg(MSG.NEWSETELEM, NLM_F_CREATE, family, i);
              w.str(1, table);
              w.str(2, anon.name);
              w.u32(4, id);
              const list = w.nest(3);
              let n = 0;
              while (k < anon.elements.length && w.since(list) < ELEMENT_LIST_LIMIT) {
                const e = anon.elements[k++]!;
                const el = w.nest(++n);
                w.value(1, e.key);
                if (e.data) w.value(2, e.data);
                if (e.verdict) w.verdict(2, e.verdict.code, e.verdict.chain);
                if (e.end) w.u32(3, SET_ELEM_INTERVAL_END);
                if (e.open) w.bytes(6, OPEN_INTERVAL);
                w.endNest(el);
              }
              w.endNest(list);
              w.endMsg(m);
            }
          }
          newRule(family, table, ids, op.chain, op.rule, id, i);
          i++;
          break;
        }
        case 'countRules': {
          for (const r of op.rules) if (anonSetOf(family, r)) throw new NetlinkEncodeError(`op ${i}: a count rule with an anonymous set: ${r.text}`, i);
          const inPlace = countRulesInPlace(op, opts.chainRules?.(op.target, op.chain));
          if (inPlace === undefined) {
            const m = msg(MSG.DELRULE, 0, family, i);
            w.str(1, table);
            w.str(2, op.chain);
            w.endMsg(m);
            for (const r of op.rules) newRule(family, table, ids, op.chain, r, 0, i);
          } else {
            for (const handle of inPlace.deletes) {
              const m = msg(MSG.DELRULE, 0, family, i);
              w.str(1, table);
              w.str(2, op.chain);
              w.u64(3, handle);
              w.endMsg(m);
            }
            for (const { rule, after } of inPlace.inserts) newRule(family, table, ids, op.chain, rule, 0, i, after);
          }
          i++;
          break;
        }
        case 'set':
        case 'map': {
          if (op.verb === 'add') {
            const set = op.kind === 'set' ? (op as { set: NamedSet }).set : undefined;
            const d = set ? setDecl(family, set) : mapDecl(family, (op as { map: NamedMap }).map);
            const name = set ? set.name : (op as { map: NamedMap }).map.name;
            const timeout = set?.timeoutSeconds;
            const size = set ? set.size : (op as { map: NamedMap }).map.size;
            const id = ++setId;
            ids.set(name, id);
            writeSet(family, table, name, d, id, i, timeout === undefined && size === undefined ? undefined : (w) => {
              if (timeout !== undefined) w.u64(11, timeout * 1000);
              if (size !== undefined) {
                const desc = w.nest(9); // NFTA_SET_DESC
                w.u32(1, size); // NFTA_SET_DESC_SIZE
                w.endNest(desc);
              }
            });
          } else {
            const name = (op as { name: string }).name;
            const m = msg(op.verb === 'flush' ? MSG.DELSETELEM : MSG.DELSET, 0, family, i);
            w.str(1, table);
            w.str(2, name);
            w.endMsg(m);
            if (op.verb === 'delete') ids.delete(name);
          }
          i++;
          break;
        }
        case 'elements': {
          const { run } = op;
          if (op.set === Sets.localCIDRs || op.set === Sets.serviceCIDRs) throw new NetlinkEncodeError(`op ${i}: element runs are not for interval sets (${op.set})`, i);
          const layout = layoutOf(op.set);
          const parts = layout === 'grouped' || layout === 'portGrouped' ? run.parts : undefined;
          const frontends = layout === 'addrProtoPort' ? run.frontends : undefined;
          const slots = layout === 'slot' ? run.slots : undefined;
          const addresses = family === 'ip' && (layout === 'addr' || layout === 'addrAddr') ? run.addresses : undefined;
          const cursor = parts ? GROUPED_CURSOR.reset(keyLen(family, layout)) : undefined;
          let k = 0;
          while (k < run.count) {
            const spanAt = spanFirst.length;
            const m = msg(MSG.NEWSETELEM, NLM_F_CREATE, family, i, 0, 1);
            spanRun[spanAt] = k;
            const list = elementList(table, op.set, ids);
            // One message's elements (up to ELEMENT_LIST_LIMIT bytes), by a loop of the run's
            // layout: small functions of their own, which V8 optimizes within the first
            // messages, where one loop for every layout in this function stayed unoptimized for
            // most of a full sync at 44k Services (compiled on the side, 20–50 ms a time, and
            // thrown away as each new kind of run met it).
            const from = k;
            if (slots) k = slotElements(w, family, run, slots, k, list, i, op.set);
            else if (addresses) k = addressElements(w, layout, run, addresses, k, list, i, op.set);
            else if (frontends) k = frontendElements(w, family, run, frontends, k, list, i, op.set);
            else if (parts && cursor) k = groupedElements(w, family, layout, run, parts, cursor, k, list, i, op.set);
            else k = spelledElements(w, family, layout, run, k, list, i, op.set);
            w.endNest(list);
            w.endMsg(m);
            spanCount[spanAt] = k - from;
          }
          i++;
          break;
        }
        case 'element': {
          const layout = layoutOf(op.set);
          const interval = op.set === Sets.localCIDRs || op.set === Sets.serviceCIDRs;
          const add = op.verb === 'add';
          if (interval) {
            // Interval sets: the whole run of adds is one message of [start, end) elements.
            let j = i;
            const cidrs: string[] = [];
            while (j < ops.length) {
              const e = ops[j]!;
              if (e.kind !== 'element' || e.verb !== op.verb || e.set !== op.set || e.target !== op.target) break;
              cidrs.push(e.key);
              j++;
            }
            const m = msg(add ? MSG.NEWSETELEM : MSG.DELSETELEM, add ? NLM_F_CREATE : 0, family, i, j - i);
            const list = elementList(table, op.set, ids);
            let k = 0;
            for (const e of intervalElements(family, cidrs, false)) {
              const el = w.nest(++k);
              w.value(1, e.key);
              if (e.end) w.u32(3, SET_ELEM_INTERVAL_END);
              if (e.open) w.bytes(6, OPEN_INTERVAL);
              w.endNest(el);
            }
            w.endNest(list);
            w.endMsg(m);
            i = j;
            break;
          }
          const spanAt = spanFirst.length;
          const m = msg(add ? MSG.NEWSETELEM : MSG.DELSETELEM, add ? NLM_F_CREATE : 0, family, i, 0, 1);
          const list = elementList(table, op.set, ids);
          let j = i;
          while (j < ops.length && w.since(list) < ELEMENT_LIST_LIMIT) {
            const e = ops[j]!;
            if (e.kind !== 'element' || e.verb !== op.verb || e.set !== op.set || e.target !== op.target) break;
            // A delete names the key only.
            if (!writeElement(w, j - i + 1, family, layout, e.key, add ? e.value : undefined)) throw cannotEncode(j, e.key, e.value, op.set);
            j++;
          }
          w.endNest(list);
          w.endMsg(m);
          spanCount[spanAt] = j - i;
          i = j;
          break;
        }
      }
    }
  } catch (e) {
    w.reset(0);
    if (e instanceof NetlinkEncodeError) throw e;
    throw new NetlinkEncodeError(`op ${i}: ${e instanceof Error ? e.message : String(e)}`, i);
  }
  const end = w.msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seqBase + spanFirst.length + 1, 0, NFNL_SUBSYS_NFTABLES);
  w.endMsg(end);
  let bytes = w.buf.subarray(0, w.pos);
  // The batch is the caller's now; the Writer holds no buffer between encodings.
  w.reset(0);

  return {
    get bytes() {
      return bytes;
    },
    messages: spanFirst.length,
    release() {
      bytes = NO_BYTES;
    },
    locate(seq, offset) {
      if (bytes.length === 0) return undefined;
      const k = ((seq - seqBase) >>> 0) - 1;
      const first = spanFirst[k];
      const count = spanCount[k]!;
      if (first === undefined) return undefined;
      const runAt = spanRun[k]!;
      // Of a run, the message's first element (and how many it carried when the kernel named none).
      const whole = { opIndex: first, ...(runAt >= 0 ? { element: runAt } : {}), ...(count > 1 ? { elements: count } : {}) };
      if (!spanElems[k] || offset < 0) return whole;
      // Walk the element list of that message to find which element starts at `offset`.
      const start = starts[k]!;
      let p = start + 20;
      const msgEnd = start + bytes.readUInt32LE(start);
      while (p < msgEnd) {
        const len = bytes.readUInt16LE(p);
        const type = bytes.readUInt16LE(p + 2) & ~NLA_F_NESTED;
        if (type === 3) {
          let q = p + 4;
          let idx = 0;
          while (q < p + len) {
            const l = bytes.readUInt16LE(q);
            if (offset >= q - start && offset < q - start + l) return runAt >= 0 ? { opIndex: first, element: runAt + idx } : { opIndex: first + idx };
            q += (l + 3) & ~3;
            idx++;
          }
          break;
        }
        p += (len + 3) & ~3;
      }
      return whole;
    },
  };
}

// ---- dumps: names of chains and sets of one table ----

/**
 * A dump request for the chains (or sets, maps included) of one family, or for the rules of one
 * chain (`chain` given; the kernel filters rule dumps by table and chain).
 */
export function encodeDumpRequest(kind: 'chains' | 'sets' | 'rules', family: NlFamily, table: string, chain?: string): Uint8Array {
  const w = new Writer(256);
  const type = kind === 'chains' ? MSG.GETCHAIN : kind === 'sets' ? MSG.GETSET : MSG.GETRULE;
  const m = w.msg((NFNL_SUBSYS_NFTABLES << 8) | type, NLM_F_REQUEST | NLM_F_DUMP, 1, NFPROTO[family]);
  // The kernel filters set and rule dumps by table; chain dumps are filtered in parseDumpNames.
  if (kind !== 'chains') w.str(1, table);
  if (kind === 'rules' && chain !== undefined) w.str(2, chain);
  w.endMsg(m);
  return w.buf.subarray(0, w.pos);
}

/** How many rules of `table` `chain` a rule dump's answer holds. */
export function countDumpedRules(data: Uint8Array, table: string, chain: string): number {
  return parseDumpedRules(data, table, chain).length;
}

/**
 * The rules of `table` `chain` in a rule dump's answer, in order: each one's handle and the set
 * its first lookup expression reads (undefined if it has none).
 */
export function parseDumpedRules(data: Uint8Array, table: string, chain: string): DumpedRule[] {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out: DumpedRule[] = [];
  // Attributes nested in [from, to): calls fn(type, start of payload, payload length).
  const each = (from: number, to: number, fn: (type: number, at: number, len: number) => void): void => {
    let q = from;
    while (q + 4 <= to) {
      const al = b.readUInt16LE(q);
      if (al < 4 || q + al > to) break;
      fn(b.readUInt16LE(q + 2) & ~NLA_F_NESTED, q + 4, al - 4);
      q += (al + 3) & ~3;
    }
  };
  const str = (at: number, len: number): string => b.toString('utf8', at, len > 0 && b[at + len - 1] === 0 ? at + len - 1 : at + len);
  let p = 0;
  while (p + 20 <= b.length) {
    const len = b.readUInt32LE(p);
    if (len < 20 || p + len > b.length) break;
    if (b.readUInt16LE(p + 4) === ((NFNL_SUBSYS_NFTABLES << 8) | MSG.NEWRULE)) {
      let t: string | undefined;
      let c: string | undefined;
      let handle: number | undefined;
      let set: string | undefined;
      each(p + 20, p + len, (type, at, alen) => {
        if (type === 1) t = str(at, alen);
        else if (type === 2) c = str(at, alen);
        else if (type === 3 && alen === 8) handle = b.readUInt32BE(at) * 2 ** 32 + b.readUInt32BE(at + 4);
        else if (type === 4) {
          // NFTA_RULE_EXPRESSIONS: NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { NFTA_LOOKUP_SET … } }
          each(at, at + alen, (_, eat, elen) => {
            if (set !== undefined) return;
            let name: string | undefined;
            let data: [number, number] | undefined;
            each(eat, eat + elen, (et, xat, xlen) => {
              if (et === 1) name = str(xat, xlen);
              else if (et === 2) data = [xat, xlen];
            });
            if (name === 'lookup' && data) each(data[0], data[0] + data[1], (lt, lat, llen) => {
              if (lt === 1 && set === undefined) set = str(lat, llen);
            });
          });
        }
      });
      if (t === table && c === chain) out.push({ handle, set });
    }
    p += (len + 3) & ~3;
  }
  return out;
}

export interface DumpedName {
  name: string;
  /** Sets: the NFT_SET_* flags (maps have SET_MAP); chains: 0. */
  flags: number;
}

/** Names (and set flags) of the `table` objects in a dump's concatenated answer messages. */
export function parseDumpNames(data: Uint8Array, table: string, kind: 'chains' | 'sets'): DumpedName[] {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out: DumpedName[] = [];
  const nameAttr = kind === 'chains' ? 3 : 2;
  let p = 0;
  while (p + 20 <= b.length) {
    const len = b.readUInt32LE(p);
    if (len < 20 || p + len > b.length) break;
    // Dump answers come as NEWCHAIN / NEWSET messages; anything else is not a name.
    if (b.readUInt16LE(p + 4) !== ((NFNL_SUBSYS_NFTABLES << 8) | (kind === 'chains' ? MSG.NEWCHAIN : MSG.NEWSET))) {
      p += (len + 3) & ~3;
      continue;
    }
    let q = p + 20;
    let t: string | undefined;
    let name: string | undefined;
    let flags = 0;
    while (q + 4 <= p + len) {
      const al = b.readUInt16LE(q);
      const at = b.readUInt16LE(q + 2) & ~NLA_F_NESTED;
      if (al < 4) break;
      if (at === 1) t = b.toString('utf8', q + 4, q + al - 1);
      else if (at === nameAttr) name = b.toString('utf8', q + 4, q + al - 1);
      else if (kind === 'sets' && at === 3) flags = b.readUInt32BE(q + 4);
      q += (al + 3) & ~3;
    }
    if (t === table && name !== undefined && !(kind === 'sets' && flags & SET_ANONYMOUS)) out.push({ name, flags });
    p += (len + 3) & ~3;
  }
  return out;
}

/** Whether dumped set flags mark a map. */
export function isMapFlags(flags: number): boolean {
  return (flags & SET_MAP) !== 0;
}

/**
 * Writes an element's map value (a verdict, or an endpoint for the endpoint maps) as
 * NFTA_SET_ELEM_DATA; false if `value` is not one.
 */
function cannotEncode(opIndex: number, key: string, value: string | undefined, set: string): NetlinkEncodeError {
  return new NetlinkEncodeError(`op ${opIndex}: cannot encode element ${key}${value !== undefined ? ` : ${value}` : ''} of ${set}`, opIndex);
}

function writeElementValue(w: Writer, family: NlFamily, layout: Layout, alen: number, value: string): boolean {
  if (layout === 'slot' || layout === 'grouped' || layout === 'portGrouped') {
    const vat = w.valueAt(2, alen + 4);
    return writeAddrPort(family, value, w.buf, vat);
  }
  if (value === 'drop') w.verdict(2, NF_DROP, '');
  else if (value.startsWith('goto ')) w.verdict(2, NFT_GOTO, value, 5);
  else if (value.startsWith('jump ')) w.verdict(2, NFT_JUMP, value, 5);
  else return false;
  return true;
}

/**
 * Renders one op as the nft line a script would carry (error messages only); of an element run,
 * the one element `element` when given.
 */
export function describeOp(op: Op, element?: number): string {
  switch (op.kind) {
    case 'elements': {
      if (element === undefined || element < 0 || element >= op.run.count) return `add element ${op.target} ${op.set} { … ${op.run.count} elements }`;
      const v = op.run.value?.(element);
      return `add element ${op.target} ${op.set} { ${v !== undefined ? `${op.run.key(element)} : ${v}` : op.run.key(element)} }`;
    }
    case 'element':
      return `${op.verb} element ${op.target} ${op.set} { ${op.value !== undefined && op.verb === 'add' ? `${op.key} : ${op.value}` : op.key} }`;
    case 'rule':
      return `add rule ${op.target} ${op.chain} ${op.rule.text}`;
    case 'countRules':
      return `rewrite chain ${op.target} ${op.chain} (count rules${op.added.length ? ` added: ${op.added.join(' ')}` : ''}${op.removed.length ? ` removed: ${op.removed.join(' ')}` : ''})`;
    case 'table':
      return `${op.verb} table ${op.target}`;
    case 'chain':
      return op.verb === 'add' ? `add chain ${op.target} ${op.chain.name}` : `${op.verb} chain ${op.target} ${op.name}`;
    case 'set':
    case 'map':
      return op.verb === 'add'
        ? `add ${op.kind} ${op.target} ${op.kind === 'set' ? (op as { set: NamedSet }).set.name : (op as { map: NamedMap }).map.name}`
        : `${op.verb} ${op.kind} ${op.target} ${(op as { name: string }).name}`;
  }
}
