/**
 * Address parsing for the simulator's validation and allocation, on top of ipaddr.js:
 * strict dotted-quad IPv4 and zone-less IPv6, canonical text forms, bigint arithmetic.
 * Pure: no I/O.
 */
import ipaddr from 'ipaddr.js';

export type Family = 'IPv4' | 'IPv6';

export interface ParsedIP {
  family: Family;
  /** Canonical text (RFC 5952 for IPv6). */
  text: string;
  value: bigint;
}

export function parseIP(s: unknown): ParsedIP | undefined {
  if (typeof s !== 'string' || s === '') return undefined;
  if (ipaddr.IPv4.isValidFourPartDecimal(s)) {
    const a = ipaddr.IPv4.parse(s);
    return { family: 'IPv4', text: a.toString(), value: bytesToBig(a.toByteArray()) };
  }
  if (s.includes(':') && !s.includes('%') && ipaddr.IPv6.isValid(s)) {
    const a = ipaddr.IPv6.parse(s);
    return { family: 'IPv6', text: a.toRFC5952String(), value: bytesToBig(a.toByteArray()) };
  }
  return undefined;
}

export interface ParsedCIDR {
  family: Family;
  prefix: number;
  bits: 32 | 128;
  /** Network address (host bits cleared). */
  network: bigint;
  text: string;
}

export function parseCIDR(s: unknown): ParsedCIDR | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIP(s.slice(0, slash));
  const ps = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(ps)) return undefined;
  const prefix = Number(ps);
  const bits = ip.family === 'IPv4' ? 32 : 128;
  if (prefix > bits) return undefined;
  const hostBits = BigInt(bits - prefix);
  const network = (ip.value >> hostBits) << hostBits;
  return { family: ip.family, prefix, bits, network, text: `${bigToText(network, ip.family)}/${prefix}` };
}

export function cidrContains(c: ParsedCIDR, ip: ParsedIP): boolean {
  if (c.family !== ip.family) return false;
  const hostBits = BigInt(c.bits - c.prefix);
  return ip.value >> hostBits === c.network >> hostBits;
}

function bytesToBig(bytes: number[]): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

export function bigToText(v: bigint, family: Family): string {
  const n = family === 'IPv4' ? 4 : 16;
  const bytes: number[] = new Array<number>(n);
  for (let i = n - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  const a = ipaddr.fromByteArray(bytes);
  return a.kind() === 'ipv6' ? (a as ipaddr.IPv6).toRFC5952String() : a.toString();
}
