/**
 * The host's own addresses, for what must follow them: NodePorts with nodePortAddresses unset in
 * the modes that cannot ask the kernel per packet (ebpf, userspace), and CIDR-valued
 * --nodeport-addresses in every mode (kube-proxy selects the host's addresses in the CIDRs).
 *
 * Listing the interfaces on every sync cost a fifth of a one-endpoint sync, and a sync only
 * comes when the cluster changes, so an address added to the node stayed without its NodePorts
 * until the next periodic sync. Here the list is read once and again only when the addon's
 * route netlink subscription (routeWatch: address and link changes) says the kernel's changed;
 * `onChange` is called when the set of addresses is different, so the caller can sync at once.
 * Without the subscription (no addon, or it failed), every current() lists anew, as before.
 */
import { networkInterfaces } from 'node:os';
import type { NativeAddon } from '../../native/index.js';
import { logger, type Logger } from '../../util/log.js';

/**
 * Every address on this host's interfaces (this network namespace; interfaces that are up) but
 * those of `exceptInterface`: userspace mode's own interface holds every ClusterIP, which are no
 * node addresses (kube-proxy's IPVS mode leaves its kube-ipvs0 out the same way), and putting
 * them there would otherwise be a change of the host's addresses, thousands at a time.
 */
export function listLocalAddresses(exceptInterface?: string): string[] {
  const out: string[] = [];
  for (const [name, list] of Object.entries(networkInterfaces())) {
    if (name === exceptInterface) continue;
    for (const a of list ?? []) out.push(a.address);
  }
  return out;
}

/** Where change notifications come from: the addon's subscription or a fake. */
export type RouteWatchSource = (onChange: (error?: string) => void) => { close(): void };

/** The addon's routeWatch, or undefined when the addon is missing or predates it. */
export function addonRouteWatch(addon: NativeAddon | null): RouteWatchSource | undefined {
  const start = addon?.routeWatch;
  if (!addon || !start) return undefined;
  return (onChange) => start.call(addon, onChange);
}

export interface LocalAddressWatchOptions {
  /** Called when the set of addresses changed (not for every notification). */
  readonly onChange: (addresses: readonly string[]) => void;
  readonly watch: RouteWatchSource | undefined;
  /** Lists the addresses; default listLocalAddresses. */
  readonly list?: () => string[];
  readonly log?: Logger;
}

export class LocalAddressWatch {
  private addresses: readonly string[] = [];
  private key = '';
  private sub: { close(): void } | undefined;
  private readonly list: () => string[];
  private readonly log: Logger;

  constructor(private readonly opts: LocalAddressWatchOptions) {
    this.list = opts.list ?? listLocalAddresses;
    this.log = opts.log ?? logger('addresses');
    // Subscribed before the first listing, so no change can fall between the two.
    if (opts.watch) {
      try {
        this.sub = opts.watch((error) => this.notified(error));
      } catch (e) {
        this.log.warn('cannot watch the host for address changes; they are noticed at the next sync', { error: (e as Error).message });
      }
    }
    this.read();
  }

  /** Whether address changes are pushed (else every current() lists). */
  watching(): boolean {
    return this.sub !== undefined;
  }

  /** The host's addresses as last read (sorted); lists them anew when not watching. */
  current(): readonly string[] {
    if (!this.sub) this.read();
    return this.addresses;
  }

  close(): void {
    this.sub?.close();
    this.sub = undefined;
  }

  private notified(error: string | undefined): void {
    if (error !== undefined) {
      // The addon stopped the subscription: fall back to listing at every sync.
      this.sub = undefined;
      this.log.warn('the watch on the host addresses failed; they are listed at every sync from now on', { error });
    }
    if (this.read()) {
      this.log.info('the host addresses changed', { addresses: this.addresses.join(',') });
      this.opts.onChange(this.addresses);
    }
  }

  /** Lists the addresses; whether the set differs from the last listing. */
  private read(): boolean {
    let next: string[];
    try {
      next = [...new Set(this.list())].sort();
    } catch (e) {
      // Keep the last good list: losing every address would withdraw every NodePort.
      this.log.warn('cannot list the host addresses; keeping the last list', { error: (e as Error).message });
      return false;
    }
    const key = next.join(',');
    if (key === this.key) return false;
    this.key = key;
    this.addresses = Object.freeze(next);
    return true;
  }
}
