/**
 * Address parsing for the model and the planner: one parser (kube-proxy's reading, ipaddr.js for IPv6) that yields
 * canonical strings, so that equal addresses compare equal as strings everywhere downstream.
 * Pure; never throws on bad input (returns undefined instead).
 */
import ipaddr from 'ipaddr.js';
import { canonicalIPv4 } from '../util/ipv4.js';
import type { IPFamily } from './types.js';

export interface ParsedIP {
  /** Canonical text: dotted quad, or RFC 5952 for IPv6. */
  readonly ip: string;
  readonly family: IPFamily;
  /** An IPv4 address as a 32-bit number (src/util/ipv4.ts); -1 for IPv6. */
  readonly v4: number;
}

export interface ParsedCIDR {
  /** Canonical network/prefix, host bits cleared (as Go's net.ParseCIDR returns it). */
  readonly cidr: string;
  readonly family: IPFamily;
  readonly addr: ipaddr.IPv4 | ipaddr.IPv6;
  readonly bits: number;
}

const MAX_TEXT = 64;

/**
 * Four decimal parts 0-255 without leading zeros: exactly what the strict parser below accepts as
 * IPv4, and already canonical. Checked by hand because a list of 440,000 endpoints otherwise
 * spends a second in regular expressions and ipaddr.js objects.
 */
export function isCanonicalIPv4(text: string): boolean {
  return canonicalIPv4(text) >= 0;
}

/**
 * IP parsing as kube-proxy's (`ParseIPSloppy`): IPv4 is four decimal parts, and a part with
 * leading zeros is read as decimal ("010.244.001.005" is 10.244.1.5) — API servers before 1.33
 * accepted such addresses and kube-proxy serves them, so existing objects may hold them; ipaddr.js
 * would read them as octal and accept "1.2.3", which Kubernetes means neither. IPv6 zone ids and
 * IPv4-mapped IPv6 addresses are rejected: neither can be a Service or endpoint address (docs/ir.md).
 */
export function parseIP(text: unknown): ParsedIP | undefined {
  if (typeof text !== 'string' || text.length === 0 || text.length > MAX_TEXT) return undefined;
  const v4 = canonicalIPv4(text);
  if (v4 >= 0) return { ip: text, family: 4, v4 };
  if (text.includes(':')) {
    if (text.includes('%') || !ipaddr.IPv6.isValid(text)) return undefined;
    let a: ipaddr.IPv6;
    try {
      a = ipaddr.IPv6.parse(text);
    } catch {
      return undefined;
    }
    if (a.isIPv4MappedAddress()) return undefined;
    return { ip: a.toString(), family: 6, v4: -1 };
  }
  if (!DECIMAL_QUAD.test(text)) return undefined;
  const parts = text.split('.').map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  const ip = parts.join('.');
  return { ip, family: 4, v4: canonicalIPv4(ip) };
}

const DECIMAL_QUAD = /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/;

/**
 * CIDR parsing as kube-proxy's (`ParseCIDRSloppy`): the address as parseIP reads it, and a prefix
 * length of decimal digits where leading zeros are allowed (`/016` is /16: Go's ParseCIDR reads
 * it so, and API servers before 1.33 validated source ranges with that parser). Refusing it would
 * drop a loadBalancerSourceRanges entry, and an emptied list allows every source.
 */
export function parseCIDR(text: unknown): ParsedCIDR | undefined {
  if (typeof text !== 'string' || text.length > MAX_TEXT + 4) return undefined;
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ipPart = parseIP(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  // The length cap above bounds the digits, so Number() is exact for any that pass the range check.
  if (!ipPart || !/^[0-9]+$/.test(bitsText)) return undefined;
  const bits = Number(bitsText);
  if (bits > (ipPart.family === 4 ? 32 : 128)) return undefined;
  const canonical = `${ipPart.ip}/${bits}`;
  const net =
    ipPart.family === 4 ? ipaddr.IPv4.networkAddressFromCIDR(canonical) : ipaddr.IPv6.networkAddressFromCIDR(canonical);
  return { cidr: `${net.toString()}/${bits}`, family: ipPart.family, addr: net, bits };
}

/** Whether `ip` (canonical or not) lies inside `cidr`. False for mismatched families or junk. */
export function cidrContains(cidr: ParsedCIDR, ip: string): boolean {
  const p = parseIP(ip);
  if (!p || p.family !== cidr.family) return false;
  const a = p.family === 4 ? ipaddr.IPv4.parse(p.ip) : ipaddr.IPv6.parse(p.ip);
  return cidr.family === 4
    ? (a as ipaddr.IPv4).match(cidr.addr as ipaddr.IPv4, cidr.bits)
    : (a as ipaddr.IPv6).match(cidr.addr as ipaddr.IPv6, cidr.bits);
}

/** 127.0.0.0/8 or ::1, for an address as the IR holds it (canonical text). */
export function isLoopback(ip: string): boolean {
  return ip.includes(':') ? ip === '::1' || ip === '0:0:0:0:0:0:0:1' : ip.startsWith('127.');
}

export function familyOfIP(ip: string): IPFamily | undefined {
  return parseIP(ip)?.family;
}

/** Whether `ip` lies inside any of `cidrs` (of its own family); junk entries never match. */
export function inAnyCIDR(ip: string, cidrs: readonly string[]): boolean {
  for (const c of cidrs) {
    const parsed = parseCIDR(c);
    if (parsed && cidrContains(parsed, ip)) return true;
  }
  return false;
}

/**
 * Why `ip` (canonical, from parseIP) cannot be a destination the proxy programs — a ClusterIP,
 * an external or load-balancer IP, an endpoint — or undefined when it can. Refused: unspecified
 * (0.0.0.0/8 "this network", ::), loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16,
 * fe80::/10), multicast (224.0.0.0/4, ff00::/8) and the limited broadcast 255.255.255.255.
 *
 * The API server refuses unspecified, loopback and link-local unicast/multicast addresses for
 * externalIPs and endpoint addresses (ValidateNonSpecialIP / ValidateEndpointIP) and allocates
 * ClusterIPs only inside the service CIDRs; a proxy on every node must not rely on that: a
 * programmed 127.0.0.1 captures the node's own loopback traffic (ferry's API connection and
 * /healthz included). Multicast and broadcast go further than the API server: neither can be
 * the destination of a connection, so programming them only breaks whatever else uses them.
 */
export function specialIPClass(ip: string): string | undefined {
  // Canonical IPv4 (every endpoint of an IPv4 cluster): decided from the first two parts, the
  // same classes ipaddr.js's range() names, without building its objects (a second of CPU for
  // 440,000 endpoints otherwise).
  if (isCanonicalIPv4(ip)) {
    const dot = ip.indexOf('.');
    const o1 = Number(ip.slice(0, dot));
    if (o1 === 0) return 'unspecified (0.0.0.0/8)';
    if (o1 === 127) return 'loopback (127.0.0.0/8)';
    if (o1 >= 224 && o1 <= 239) return 'multicast (224.0.0.0/4)';
    if (ip === '255.255.255.255') return 'the broadcast address';
    if (o1 === 169 && ip.startsWith('169.254.')) return 'link-local (169.254.0.0/16)';
    return undefined;
  }
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.parse(ip);
  } catch {
    return 'not a valid IP';
  }
  switch (a.range()) {
    case 'unspecified':
      return a.kind() === 'ipv4' ? 'unspecified (0.0.0.0/8)' : 'unspecified (::)';
    case 'loopback':
      return a.kind() === 'ipv4' ? 'loopback (127.0.0.0/8)' : 'loopback (::1)';
    case 'linkLocal':
      return a.kind() === 'ipv4' ? 'link-local (169.254.0.0/16)' : 'link-local (fe80::/10)';
    case 'multicast':
      return a.kind() === 'ipv4' ? 'multicast (224.0.0.0/4)' : 'multicast (ff00::/8)';
    case 'broadcast':
      return 'the broadcast address';
    default:
      return undefined;
  }
}
