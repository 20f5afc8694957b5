/**
 * Who holds a frontend's port when ferry cannot bind it (EADDRINUSE): the sockets of this network
 * namespace on that port, from /proc/net/{tcp,tcp6,udp,udp6}. A host program listening on the
 * wildcard (0.0.0.0:P, [::]:P; a hostNetwork ingress controller, node-exporter, a node-local DNS)
 * blocks ferry's ClusterIP:P and, because ferry0's addresses are local, receives that Service's
 * traffic itself. The bind failure's log line names the holder so that can be seen.
 *
 * parseProcNet is pure; readPortHolders reads /proc, and only after a bind failed. It never
 * names the process: mapping a socket's inode to one means reading every process's descriptors.
 */
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { IPFamily } from '../../plan/types.js';
import type { ForwardedProtocol, Frontend } from './frontends.js';

export interface PortHolder {
  /** The socket's local address, normalized (`0.0.0.0`, `::`, `198.19.0.10`). */
  readonly address: string;
  readonly port: number;
  readonly family: IPFamily;
  /** Bound to every local address of its family (and of IPv4 too, for `::` without IPV6_V6ONLY). */
  readonly wildcard: boolean;
  readonly uid: number;
  readonly inode: number;
}

/** TCP sockets in LISTEN: only they make a listener's bind fail (Node sets SO_REUSEADDR). */
const TCP_LISTEN = 0x0a;

/** The kernel prints each 32-bit word of an address as the hex of its value in host byte order. */
function addressBytes(hex: string, littleEndian: boolean): number[] | undefined {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return undefined;
  const out: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = [0, 2, 4, 6].map((i) => parseInt(hex.slice(w + i, w + i + 2), 16));
    out.push(...(littleEndian ? word.reverse() : word));
  }
  return out;
}

/**
 * The sockets of one /proc/net table (`family`: 4 for tcp/udp, 6 for tcp6/udp6) bound to
 * `port`: for TCP the listeners, for UDP every socket.
 */
export function parseProcNet(
  text: string,
  protocol: ForwardedProtocol,
  family: IPFamily,
  port: number,
  littleEndian = endianness() === 'LE',
): PortHolder[] {
  const out: PortHolder[] = [];
  for (const line of text.split('\n')) {
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !f[0]?.endsWith(':')) continue;
    const [addrHex, portHex] = (f[1] as string).split(':');
    if (addrHex === undefined || portHex === undefined || parseInt(portHex, 16) !== port) continue;
    if (protocol === 'TCP' && parseInt(f[3] as string, 16) !== TCP_LISTEN) continue;
    const bytes = addressBytes(addrHex, littleEndian);
    if (!bytes || bytes.length !== (family === 4 ? 4 : 16)) continue;
    let a: ipaddr.IPv4 | ipaddr.IPv6 = ipaddr.fromByteArray(bytes);
    if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
    out.push({
      address: a.toString(),
      port,
      family,
      wildcard: a.range() === 'unspecified',
      uid: Number(f[7]),
      inode: Number(f[9]),
    });
  }
  return out;
}

/** Whether a socket bound as `h` takes traffic to the frontend's address and port. */
export function holdsFrontend(h: PortHolder, f: Frontend): boolean {
  if (h.port !== f.port) return false;
  if (h.address === f.ip) return true;
  // `::` takes IPv4 too unless the socket is IPV6_V6ONLY, which /proc/net does not show.
  return h.wildcard && (h.family === f.family || h.family === 6);
}

/** `0.0.0.0:443`, `[::]:53`. */
export function holderAddress(h: PortHolder): string {
  return h.address.includes(':') ? `[${h.address}]:${h.port}` : `${h.address}:${h.port}`;
}

export type ProcNetReader = (file: string) => string;

function readProc(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return ''; // no such table (IPv6 off): nothing holds a port there
  }
}

/** The sockets that hold frontend `f`'s address and port, read from this network namespace. */
export function readPortHolders(f: Frontend, read: ProcNetReader = readProc): PortHolder[] {
  const base = f.protocol === 'TCP' ? 'tcp' : 'udp';
  const out: PortHolder[] = [];
  for (const [file, family] of [
    [`/proc/net/${base}`, 4],
    [`/proc/net/${base}6`, 6],
  ] as const) {
    for (const h of parseProcNet(read(file), f.protocol, family, f.port)) if (holdsFrontend(h, f)) out.push(h);
  }
  return out;
}
