/**
 * ClusterIP and NodePort allocators, the simulator's equivalent of the real server's bitmap
 * allocators. They only track which values are taken; the Service registry decides when to
 * allocate and release (and rolls back on failure or dry-run).
 * Errors carry the exact wording of the real allocators, which kubectl users see.
 * Pure: no I/O.
 */
import { bigToText, cidrContains, parseCIDR, parseIP, type Family, type ParsedCIDR } from './ip.js';

export class AllocationError extends Error {
  readonly code = 'FERRY_ERR_ALLOCATION';
  constructor(
    readonly kind: 'taken' | 'range' | 'full',
    message: string,
  ) {
    super(message);
    this.name = 'AllocationError';
  }
}

/** At most this many addresses of a huge (IPv6) range are used, like the real bitmap's cap. */
const MAX_RANGE = 1n << 20n;

export class IPAllocator {
  readonly cidr: ParsedCIDR;
  readonly family: Family;
  private readonly first: bigint;
  private readonly size: bigint;
  private readonly used = new Set<string>();

  constructor(cidr: string) {
    const c = parseCIDR(cidr);
    if (!c) throw new Error(`invalid service CIDR ${JSON.stringify(cidr)}`);
    this.cidr = c;
    this.family = c.family;
    const total = 1n << BigInt(c.bits - c.prefix);
    // The network address is never handed out; for IPv4 neither is the broadcast address.
    const usable = c.family === 'IPv4' ? total - 2n : total - 1n;
    if (usable < 1n) throw new Error(`service CIDR ${cidr} is too small`);
    this.first = c.network + 1n;
    this.size = usable > MAX_RANGE ? MAX_RANGE : usable;
  }

  get free(): number {
    return Number(this.size) - this.used.size;
  }

  has(ip: string): boolean {
    const p = parseIP(ip);
    return p !== undefined && this.used.has(p.text);
  }

  inRange(ip: string): boolean {
    const p = parseIP(ip);
    if (!p || !cidrContains(this.cidr, p)) return false;
    return p.value >= this.first && p.value < this.first + this.size;
  }

  /** Take a specific address. */
  allocate(ip: string): string {
    const p = parseIP(ip);
    if (!p || !this.inRange(ip)) {
      throw new AllocationError('range', `provided IP is not in the valid range. The range of valid IPs is ${this.cidr.text}`);
    }
    if (this.used.has(p.text)) throw new AllocationError('taken', 'provided IP is already allocated');
    this.used.add(p.text);
    return p.text;
  }

  /**
   * Take any free address. Like the real allocator, dynamic allocation prefers the upper part
   * of the range so that the lower part stays available for static (user-chosen) addresses.
   */
  allocateNext(): string {
    if (BigInt(this.used.size) >= this.size) throw new AllocationError('full', 'range is full');
    const lowBand = this.size >= 16n ? minBig(maxBig(16n, this.size / 16n), 256n) : 0n;
    const dynSize = this.size - lowBand;
    const tryBand = (start: bigint, size: bigint): string | undefined => {
      if (size <= 0n) return undefined;
      const offset = randomBig(size);
      for (let i = 0n; i < size; i++) {
        const text = bigToText(this.first + start + ((offset + i) % size), this.family);
        if (!this.used.has(text)) {
          this.used.add(text);
          return text;
        }
      }
      return undefined;
    };
    const ip = tryBand(lowBand, dynSize) ?? tryBand(0n, lowBand);
    if (!ip) throw new AllocationError('full', 'range is full');
    return ip;
  }

  release(ip: string): void {
    const p = parseIP(ip);
    if (p) this.used.delete(p.text);
  }
}

export class PortAllocator {
  private readonly used = new Set<number>();
  constructor(
    readonly min: number,
    readonly max: number,
  ) {
    if (!(min >= 1 && max <= 65535 && min <= max)) throw new Error(`invalid port range ${min}-${max}`);
  }

  get rangeText(): string {
    return `${this.min}-${this.max}`;
  }

  has(port: number): boolean {
    return this.used.has(port);
  }

  allocate(port: number): number {
    if (port < this.min || port > this.max) {
      throw new AllocationError('range', `provided port is not in the valid range. The range of valid ports is ${this.rangeText}`);
    }
    if (this.used.has(port)) throw new AllocationError('taken', 'provided port is already allocated');
    this.used.add(port);
    return port;
  }

  /** Like the real allocator: dynamic allocations prefer the upper part of the range. */
  allocateNext(): number {
    const size = this.max - this.min + 1;
    if (this.used.size >= size) throw new AllocationError('full', 'range is full');
    const lowBand = size >= 16 ? Math.min(Math.max(16, Math.floor(size / 32)), 128) : 0;
    const tryBand = (start: number, n: number): number | undefined => {
      if (n <= 0) return undefined;
      const offset = Math.floor(Math.random() * n);
      for (let i = 0; i < n; i++) {
        const p = this.min + start + ((offset + i) % n);
        if (!this.used.has(p)) {
          this.used.add(p);
          return p;
        }
      }
      return undefined;
    };
    const p = tryBand(lowBand, size - lowBand) ?? tryBand(0, lowBand);
    if (p === undefined) throw new AllocationError('full', 'range is full');
    return p;
  }

  release(port: number): void {
    this.used.delete(port);
  }
}

function randomBig(n: bigint): bigint {
  if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return BigInt(Math.floor(Math.random() * Number(n)));
  return BigInt(Math.floor(Math.random() * Number.MAX_SAFE_INTEGER)) % n;
}

function minBig(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

function maxBig(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}
