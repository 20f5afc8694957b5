/**
 * kube-proxy's iptables chain names, computed exactly as kube-proxy computes them, so that CNIs,
 * firewalls and scripts that know kube-proxy's layout find the same chains under ferry.
 *
 * kube-proxy (pkg/proxy/iptables/proxier.go): `portProtoHash(servicePortName, protocol)` is
 * base32(sha256(servicePortName + protocol))[:16] with Go's StdEncoding, where servicePortName is
 * ServicePortName.String() (`namespace/name:portName`, or `namespace/name` for an unnamed port)
 * and protocol is lowercase (`tcp`). SVC/SVL/EXT/FW share that hash; SEP adds the endpoint as
 * net.JoinHostPort(ip, port) (`10.0.0.1:80`, `[2001:db8::1]:80`) to the hashed string.
 *
 * Pure; must never produce a name longer than 28 characters (iptables' limit).
 */
import { createHash } from 'node:crypto';
import type { PlannedEndpoint, ServiceEntry } from '../../plan/types.js';

/** kube-proxy's fixed chains. */
export const Chain = {
  services: 'KUBE-SERVICES',
  externalServices: 'KUBE-EXTERNAL-SERVICES',
  nodePorts: 'KUBE-NODEPORTS',
  postrouting: 'KUBE-POSTROUTING',
  markMasq: 'KUBE-MARK-MASQ',
  forward: 'KUBE-FORWARD',
  proxyFirewall: 'KUBE-PROXY-FIREWALL',
  canary: 'KUBE-PROXY-CANARY',
  /** filter: the martian-source drop guarding localhost NodePorts (kubelet writes the same rule). */
  kubeletFirewall: 'KUBE-FIREWALL',
} as const;

export const Prefix = {
  svc: 'KUBE-SVC-',
  svl: 'KUBE-SVL-',
  ext: 'KUBE-EXT-',
  fw: 'KUBE-FW-',
  sep: 'KUBE-SEP-',
} as const;

/**
 * Per-service chain prefixes a full sync deletes when it finds them unused in the nat table:
 * kube-proxy's current five, plus KUBE-XLB- from kube-proxy before 1.24, so switching from an
 * old kube-proxy leaves nothing behind.
 */
export const SERVICE_CHAIN_PREFIXES: readonly string[] = [Prefix.svc, Prefix.svl, Prefix.ext, Prefix.fw, Prefix.sep, 'KUBE-XLB-'];

/**
 * Chains named KUBE-* that belong to kubelet, not to kube-proxy: cleanup leaves them alone
 * (kube-proxy's CleanupLeftovers does not delete them either).
 */
export const KUBELET_CHAINS: ReadonlySet<string> = new Set(['KUBE-FIREWALL', 'KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT', 'KUBE-MARK-DROP']);

export function isServiceChain(name: string): boolean {
  for (const p of SERVICE_CHAIN_PREFIXES) if (name.startsWith(p)) return true;
  return false;
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (Go's base32.StdEncoding) of the first bytes, enough for `chars` characters. */
export function base32Prefix(bytes: Uint8Array, chars: number): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < bytes.length && out.length < chars; i++) {
    acc = ((acc << 8) | bytes[i]!) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (out.length < chars && bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

function hash16(s: string): string {
  return base32Prefix(createHash('sha256').update(s).digest(), 16);
}

/** kube-proxy's ServicePortName.String(): `ns/name:port`, or `ns/name` for an unnamed port. */
export function servicePortName(svc: Pick<ServiceEntry, 'namespace' | 'name' | 'portName'>): string {
  return svc.portName ? `${svc.namespace}/${svc.name}:${svc.portName}` : `${svc.namespace}/${svc.name}`;
}

/** net.JoinHostPort: IPv6 addresses in brackets. */
export function endpointString(ep: Pick<PlannedEndpoint, 'ip' | 'port'>): string {
  return ep.ip.includes(':') ? `[${ep.ip}]:${ep.port}` : `${ep.ip}:${ep.port}`;
}

export interface ServiceChainNames {
  /** kube-proxy's servicePortName string, also the comment on most rules. */
  readonly portName: string;
  /** Lowercase protocol (`tcp`), as in `-m tcp -p tcp`. */
  readonly proto: string;
  readonly svc: string;
  readonly svl: string;
  readonly ext: string;
  readonly fw: string;
}

export function serviceChainNames(svc: Pick<ServiceEntry, 'namespace' | 'name' | 'portName' | 'protocol'>): ServiceChainNames {
  const portName = servicePortName(svc);
  const proto = svc.protocol.toLowerCase();
  const h = hash16(portName + proto);
  return { portName, proto, svc: Prefix.svc + h, svl: Prefix.svl + h, ext: Prefix.ext + h, fw: Prefix.fw + h };
}

/** KUBE-SEP-<hash of servicePortName + protocol + "ip:port">. */
export function endpointChainName(names: Pick<ServiceChainNames, 'portName' | 'proto'>, ep: Pick<PlannedEndpoint, 'ip' | 'port'>): string {
  return Prefix.sep + hash16(names.portName + names.proto + endpointString(ep));
}
