/**
 * ferry0: the interface that holds userspace mode's service addresses (ClusterIPs, externalIPs,
 * LB IPs) as /32 and /128 local addresses, so the kernel delivers their packets to ferry's
 * sockets. The only code in this mode that runs `ip`.
 *
 * Link type: `dummy` when the kernel has it; otherwise a bridge with no ports, which holds
 * addresses and forwards nothing (it has no ports to forward to). It is brought up (IPv6 local
 * routes need an up interface) with IPv6 address generation off, so it has no link-local address.
 *
 * Must never touch an address or link other than its own interface's.
 */
import { CommandError, run } from '../../util/exec.js';
import type { Logger } from '../../util/log.js';
import { familyOf, type LocalAddresses } from './frontends.js';

export const DEFAULT_INTERFACE = 'ferry0';

export type LinkType = 'dummy' | 'bridge';

/** What the backend needs from the interface; tests may use an in-memory fake. */
export interface AddressHolder {
  readonly name: string;
  /** Creates the interface if missing and brings it up. */
  ensure(): Promise<LinkType | 'existing'>;
  exists(): Promise<boolean>;
  /** The addresses on the interface now (global scope, normalized by `ip`). */
  addresses(): Promise<Set<string>>;
  /** Adds and removes addresses in one `ip -batch`. Throws AddressApplyError if the result differs. */
  apply(add: readonly string[], remove: readonly string[]): Promise<void>;
  /** Deletes the interface (and so all its addresses); no error if absent. */
  remove(): Promise<void>;
  /** The node's addresses on every other interface. */
  localAddresses(): Promise<LocalAddresses>;
  /**
   * Destinations (CIDRs) of the main routing table's routes out of an interface `match` accepts:
   * where the node sends replies to pods behind those interfaces (detect-local by interface).
   */
  routesVia?(match: (ifname: string) => boolean): Promise<string[]>;
}

/** The `dst` of `ip -j route show` entries whose `dev` matches; a bare address becomes a host prefix. */
export function parseRoutesVia(json: string, family: 4 | 6, match: (ifname: string) => boolean): string[] {
  let list: unknown;
  try {
    list = JSON.parse(json || '[]');
  } catch {
    return [];
  }
  if (!Array.isArray(list)) return [];
  const out: string[] = [];
  for (const r of list as { dst?: unknown; dev?: unknown }[]) {
    if (typeof r.dst !== 'string' || typeof r.dev !== 'string' || r.dst === 'default' || !match(r.dev)) continue;
    out.push(r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`);
  }
  return out;
}

export class AddressApplyError extends Error {
  readonly code = 'FERRY_ERR_USERSPACE_ADDRESSES';
  constructor(
    readonly iface: string,
    readonly missing: readonly string[],
    readonly lingering: readonly string[],
    readonly stderr: string,
  ) {
    super(
      `${iface}: address update incomplete (not added: ${missing.join(' ') || '-'}; not removed: ${lingering.join(' ') || '-'}): ${stderr.trim()}`,
    );
    this.name = 'AddressApplyError';
  }
}

interface IpAddrInfo {
  family?: unknown;
  local?: unknown;
  scope?: unknown;
}

interface IpLink {
  ifname?: unknown;
  addr_info?: unknown;
}

function parseIpAddrJSON(text: string): IpLink[] {
  const parsed: unknown = JSON.parse(text === '' ? '[]' : text);
  return Array.isArray(parsed) ? (parsed as IpLink[]) : [];
}

function addrsOf(link: IpLink): IpAddrInfo[] {
  return Array.isArray(link.addr_info) ? (link.addr_info as IpAddrInfo[]) : [];
}

/** Renders the `ip -batch` script: one line per address. */
export function renderAddressBatch(iface: string, add: readonly string[], remove: readonly string[]): string {
  const lines: string[] = [];
  for (const a of add) {
    lines.push(familyOf(a) === 6 ? `address replace ${a}/128 dev ${iface} nodad` : `address replace ${a}/32 dev ${iface}`);
  }
  for (const a of remove) lines.push(`address del ${a}/${familyOf(a) === 6 ? 128 : 32} dev ${iface}`);
  lines.push('');
  return lines.join('\n');
}

export function ipAddressHolder(name: string = DEFAULT_INTERFACE, log?: Logger): AddressHolder {
  const holder: AddressHolder = {
    name,
    async exists() {
      const r = await run(['ip', '-j', 'link', 'show', 'dev', name], { allowFailure: true });
      return r.exitCode === 0;
    },
    async ensure() {
      if (await holder.exists()) {
        await run(['ip', 'link', 'set', 'dev', name, 'up']);
        return 'existing';
      }
      let type: LinkType = 'dummy';
      const dummy = await run(['ip', 'link', 'add', name, 'type', 'dummy'], { allowFailure: true });
      if (dummy.exitCode !== 0) {
        log?.info('no dummy link type in this kernel; using a bridge without ports', { iface: name, stderr: dummy.stderr.trim() });
        type = 'bridge';
        await run(['ip', 'link', 'add', name, 'type', 'bridge']);
      }
      // Before up: no IPv6 link-local address, no autoconf; it carries no traffic of its own.
      await run(['ip', 'link', 'set', 'dev', name, 'addrgenmode', 'none'], { allowFailure: true });
      await run(['ip', 'link', 'set', 'dev', name, 'up']);
      log?.info('created service address interface', { iface: name, type });
      return type;
    },
    async addresses() {
      const r = await run(['ip', '-j', 'address', 'show', 'dev', name]);
      const out = new Set<string>();
      for (const link of parseIpAddrJSON(r.stdout)) {
        for (const a of addrsOf(link)) {
          if (typeof a.local === 'string' && a.scope !== 'link') out.add(a.local);
        }
      }
      return out;
    },
    async apply(add, remove) {
      if (add.length === 0 && remove.length === 0) return;
      // -force: try every line; the outcome is then checked against the kernel.
      const r = await run(['ip', '-force', '-batch', '-'], { input: renderAddressBatch(name, add, remove), allowFailure: true });
      if (r.exitCode === 0) return;
      const now = await holder.addresses();
      const missing = add.filter((a) => !now.has(a));
      const lingering = remove.filter((a) => now.has(a));
      if (missing.length > 0 || lingering.length > 0) throw new AddressApplyError(name, missing, lingering, r.stderr);
    },
    async remove() {
      if (!(await holder.exists())) return;
      await run(['ip', 'link', 'del', 'dev', name]);
    },
    async localAddresses() {
      const r = await run(['ip', '-j', 'address', 'show']);
      const v4: string[] = [];
      const v6: string[] = [];
      for (const link of parseIpAddrJSON(r.stdout)) {
        if (link.ifname === name) continue;
        for (const a of addrsOf(link)) {
          if (typeof a.local !== 'string') continue;
          if (a.family === 'inet') v4.push(a.local);
          else if (a.family === 'inet6') v6.push(a.local);
        }
      }
      return { 4: v4, 6: v6 };
    },
    async routesVia(match) {
      const out: string[] = [];
      for (const family of [4, 6] as const) {
        const r = await run(['ip', '-j', `-${family}`, 'route', 'show'], { allowFailure: true });
        out.push(...parseRoutesVia(r.stdout, family, match));
      }
      return out;
    },
  };
  return holder;
}

/** `--cleanup`: removes the interface (and with it every service address). */
export async function removeInterface(name: string = DEFAULT_INTERFACE): Promise<void> {
  try {
    await ipAddressHolder(name).remove();
  } catch (e) {
    if (e instanceof CommandError) throw e;
    throw new Error(`cannot remove ${name}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
