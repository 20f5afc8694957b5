/**
 * Which conntrack entries a sync makes stale, for the NAT backends (nftables, iptables). Only
 * connectionless protocols matter (UDP, and SCTP — kube-proxy cleans UDP only; an SCTP
 * association pinned to a removed endpoint is as stuck, so ferry cleans it the same way): their
 * flows keep following an old NAT decision for as long as packets keep coming.
 *
 * A flow through a service port's frontend (ClusterIP, externalIP, LB IP: address and port;
 * NodePort: the port on any address) is stale when its reply source is not a *serving* endpoint
 * of that service port (ServiceEntry.serving) — kube-proxy's CleanStaleEntries. Traffic policies,
 * topology hints and the terminating state are not looked at: an endpoint that starts terminating
 * but still serves, or that a policy or topology change takes out of this node's sets, keeps its
 * flows ("consistent with TCP services"). Reply sources are compared by address and port
 * (kube-proxy: address only), so a flow to a serving pod on a port it no longer serves for this
 * service port is stale too.
 *  - With the tables the kernel held (`prev`): an endpoint that served and no longer does loses
 *    its flows through that service port's frontends (original destination and reply source, as
 *    kube-proxy's filters: flows to the pod that never went through the Service, pod to pod or a
 *    hostPort, are not the proxy's); a frontend that starts forwarding loses the flows it
 *    answered itself (recorded without DNAT before there was a rule, or while it rejected).
 *  - Without them (ferry's first sync after a start): from the UDP/SCTP entries listed from the
 *    kernel, every one to a frontend whose reply source is not a serving endpoint — what kube-proxy
 *    does on its first sync, where every endpoint is a change. Endpoints replaced while ferry was
 *    down lose their flows; flows of serving endpoints survive the restart. Without a listing
 *    (it failed) only the flows answered by the frontend itself are cleared.
 * Pure: computes filters, never lists or deletes anything.
 */
import type { IPFamily, ProxyTables, ServiceEntry, ServicePortKey } from '../plan/types.js';
import type { ConntrackEntry, ConntrackFilter, ConntrackProtocol } from './kernel/conntrack.js';

export type { ConntrackFilter, ConntrackEntry };

function connectionless(svc: ServiceEntry): ConntrackProtocol | undefined {
  if (svc.protocol === 'UDP') return 'udp';
  if (svc.protocol === 'SCTP') return 'sctp';
  return undefined;
}

function forwards(set: ServiceEntry['cluster'] | undefined): boolean {
  return set !== undefined && set.verdict === 'forward' && set.endpoints.length > 0;
}

/**
 * `ip|port` of every endpoint whose flows through this service port are kept: the serving ones,
 * and whatever a set forwards to (the same, unless a slice says ready but not serving, or the
 * entry was built without `serving`).
 */
function servingIDs(svc: ServiceEntry | undefined): Map<string, { ip: string; port: number }> {
  const out = new Map<string, { ip: string; port: number }>();
  if (!svc) return out;
  for (const ep of svc.serving ?? []) out.set(`${ep.ip}|${ep.port}`, { ip: ep.ip, port: ep.port });
  for (const set of [svc.internal, svc.external, svc.cluster]) {
    if (!forwards(set)) continue;
    for (const ep of set.endpoints) out.set(`${ep.ip}|${ep.port}`, { ip: ep.ip, port: ep.port });
  }
  return out;
}

/** A service port's frontends and whether each forwards. `addr` undefined: NodePort (any address). */
interface Frontend {
  readonly id: string;
  readonly addr?: string;
  readonly port: number;
  readonly forwards: boolean;
}

function frontends(svc: ServiceEntry | undefined): Map<string, Frontend> {
  const out = new Map<string, Frontend>();
  if (!svc) return out;
  if (svc.clusterIP) out.set(`${svc.clusterIP}|${svc.port}`, { id: `${svc.clusterIP}|${svc.port}`, addr: svc.clusterIP, port: svc.port, forwards: forwards(svc.internal) });
  const ext = forwards(svc.external);
  for (const ip of [...svc.externalIPs, ...svc.loadBalancerIPs]) out.set(`${ip}|${svc.port}`, { id: `${ip}|${svc.port}`, addr: ip, port: svc.port, forwards: ext });
  if (svc.nodePort > 0) out.set(`*|${svc.nodePort}`, { id: `*|${svc.nodePort}`, port: svc.nodePort, forwards: ext });
  return out;
}

/** The flows a frontend answered itself: never DNAT-ed (a NodePort's by its port on whichever node address). */
function answeredByFrontend(family: IPFamily, protocol: ConntrackProtocol, f: Frontend): ConntrackFilter {
  return f.addr === undefined
    ? { family, protocol, origDstPort: f.port, replySrcPort: f.port }
    : { family, protocol, origDst: f.addr, origDstPort: f.port, replySrc: f.addr, replySrcPort: f.port };
}

/** One table read a first sync needs: the entries of one family and protocol. */
export interface ConntrackListing {
  readonly family: IPFamily;
  readonly protocol: ConntrackProtocol;
}

/**
 * The listings a first sync's cleanup needs: each served family and connectionless protocol that
 * some service port of `next` has (UDP on most clusters: one table read per family; SCTP is a
 * second read, and only where an SCTP Service exists).
 */
export function conntrackListings(next: ProxyTables, families: readonly IPFamily[]): ConntrackListing[] {
  const out: ConntrackListing[] = [];
  for (const family of [4, 6] as IPFamily[]) {
    if (!families.includes(family)) continue;
    const found = new Set<ConntrackProtocol>();
    for (const svc of next[family].services.values()) {
      const p = connectionless(svc);
      if (p) found.add(p);
      if (found.size === 2) break;
    }
    for (const protocol of ['udp', 'sctp'] as const) if (found.has(protocol)) out.push({ family, protocol });
  }
  return out;
}

/**
 * The conntrack deletions a sync from `prev` (what the kernel held: the tables last programmed
 * successfully, also when this sync is a full one) to `next` calls for. `changed` (optional)
 * limits the work to those service ports; unchanged ones produce nothing. `prev` null: nothing is
 * known of the rules the flows met (the first sync after a start); `listed` then holds the
 * kernel's UDP/SCTP entries (conntrackListings) and every one to a frontend of `next` whose reply
 * source is not a serving endpoint is deleted. Without `listed`, only the flows each forwarding
 * frontend answered itself are.
 */
export function staleConntrack(
  prev: ProxyTables | null,
  next: ProxyTables,
  changed?: ReadonlySet<ServicePortKey>,
  listed?: readonly ConntrackEntry[],
): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  const seen = new Set<string>();
  const push = (f: ConntrackFilter): void => {
    const id = `${f.family}|${f.protocol}|${f.origDst ?? ''}|${f.origDstPort ?? ''}|${f.replySrc ?? ''}|${f.replySrcPort ?? ''}`;
    if (seen.has(id)) return;
    seen.add(id);
    out.push(f);
  };

  for (const family of [4, 6] as IPFamily[]) {
    if (prev === null && listed !== undefined) {
      reconcile(family, next, listed, push);
      continue;
    }
    const prevT = prev?.[family];
    const nextT = next[family];
    const keys = new Set<ServicePortKey>();
    if (changed) {
      for (const k of changed) keys.add(k);
    } else {
      if (prevT) for (const k of prevT.services.keys()) keys.add(k);
      for (const k of nextT.services.keys()) keys.add(k);
    }

    // Only UDP and SCTP service ports leave conntrack entries to clear: the others are dropped
    // before sorting (a full sync at 44k Services would otherwise sort every key).
    const connectionlessKeys: ServicePortKey[] = [];
    for (const key of keys) {
      const svc = nextT.services.get(key) ?? prevT?.services.get(key);
      if (svc !== undefined && connectionless(svc)) connectionlessKeys.push(key);
    }
    for (const key of connectionlessKeys.sort()) {
      const ps = prevT?.services.get(key);
      const ns = nextT.services.get(key);
      const svc = ns ?? ps;
      if (svc === undefined || ps === ns) continue;
      // The protocol is part of the key, so prev and next agree on it.
      const protocol = connectionless(svc)!;

      if (ps) {
        const kept = servingIDs(ns);
        const pFronts = frontends(ps);
        for (const [id, ep] of servingIDs(ps)) {
          if (kept.has(id)) continue;
          for (const f of pFronts.values()) {
            push(
              f.addr === undefined
                ? { family, protocol, origDstPort: f.port, replySrc: ep.ip, replySrcPort: ep.port }
                : { family, protocol, origDst: f.addr, origDstPort: f.port, replySrc: ep.ip, replySrcPort: ep.port },
            );
          }
        }
      }

      if (ns) {
        // A frontend that starts forwarding: the flows recorded without DNAT before (no rule yet,
        // or it rejected or dropped) would never reach an endpoint. Flows DNAT-ed to a serving
        // endpoint are kept, as kube-proxy keeps them: a policy change that made this path drop
        // for a while (Local, no local endpoint) and forward again is no reason to cut them.
        const before = frontends(ps);
        for (const f of frontends(ns).values()) {
          if (!f.forwards || before.get(f.id)?.forwards) continue;
          push(answeredByFrontend(family, protocol, f));
        }
      }
    }
  }
  return out;
}

/**
 * kube-proxy's CleanStaleEntries for one family, from listed entries: each entry to a frontend of
 * a connectionless service port in `next` (whatever that frontend's verdict) whose reply source
 * is not one of the port's serving endpoints. One filter per frontend and reply source.
 */
function reconcile(family: IPFamily, next: ProxyTables, listed: readonly ConntrackEntry[], push: (f: ConntrackFilter) => void): void {
  // `protocol|addr|port` (NodePorts: `protocol|*|nodePort`) → the serving `ip|port`s. Two service
  // ports on one frontend (a conflict the API server allows for externalIPs) keep both's flows.
  const kept = new Map<string, Set<string>>();
  for (const svc of next[family].services.values()) {
    const protocol = connectionless(svc);
    if (!protocol) continue;
    const ids = servingIDs(svc);
    for (const f of frontends(svc).values()) {
      const k = `${protocol}|${f.addr ?? '*'}|${f.port}`;
      let set = kept.get(k);
      if (!set) kept.set(k, (set = new Set()));
      for (const id of ids.keys()) set.add(id);
    }
  }
  if (kept.size === 0) return;
  for (const e of listed) {
    if (e.family !== family || (e.protocol !== 'udp' && e.protocol !== 'sctp')) continue;
    const reply = `${e.replySrc}|${e.replySrcPort}`;
    const byAddr = kept.get(`${e.protocol}|${e.origDst}|${e.origDstPort}`);
    if (byAddr !== undefined && !byAddr.has(reply)) {
      push({ family, protocol: e.protocol, origDst: e.origDst, origDstPort: e.origDstPort, replySrc: e.replySrc, replySrcPort: e.replySrcPort });
    }
    const byPort = kept.get(`${e.protocol}|*|${e.origDstPort}`);
    if (byPort !== undefined && !byPort.has(reply)) {
      push({ family, protocol: e.protocol, origDstPort: e.origDstPort, replySrc: e.replySrc, replySrcPort: e.replySrcPort });
    }
  }
}
