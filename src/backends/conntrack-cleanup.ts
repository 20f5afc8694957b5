/**
 * Which conntrack entries a sync makes stale, for every backend. Only connectionless protocols
 * matter (UDP, and SCTP — kube-proxy cleans UDP only; an SCTP association pinned to a removed
 * endpoint is as stuck, so ferry cleans it the same way): their flows keep following an old NAT
 * decision for as long as packets keep coming, so
 *  - an endpoint that left a service port's sets loses its flows *through that service port's
 *    frontends* (original destination and reply source, as kube-proxy's filters: flows to the
 *    pod that never went through the Service, pod to pod or a hostPort, are not the proxy's);
 *  - a frontend that had no usable endpoints (rejected, dropped or not there) and now forwards
 *    loses the flows that were recorded without DNAT (filter by original destination).
 * With no previous tables (ferry's first sync after a start) nothing is known about what the
 * kernel held, and only the flows that cannot have been DNAT-ed are cleared: those whose reply
 * comes from the frontend itself. Flows of healthy Services survive a restart, as with kube-proxy,
 * which never clears a flow whose reply source is a serving endpoint.
 * Pure: computes filters, never deletes anything.
 */
import type { EndpointSet, IPFamily, ProxyTables, ServiceEntry, ServicePortKey } from '../plan/types.js';
import type { ConntrackFilter, ConntrackProtocol } from './kernel/conntrack.js';

export type { ConntrackFilter };

function connectionless(svc: ServiceEntry): ConntrackProtocol | undefined {
  if (svc.protocol === 'UDP') return 'udp';
  if (svc.protocol === 'SCTP') return 'sctp';
  return undefined;
}

function forwards(set: EndpointSet | undefined): boolean {
  return set !== undefined && set.verdict === 'forward' && set.endpoints.length > 0;
}

function endpointIDs(svc: ServiceEntry | undefined): Map<string, { ip: string; port: number }> {
  const out = new Map<string, { ip: string; port: number }>();
  if (!svc) return out;
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

/**
 * The conntrack deletions a sync from `prev` (what the kernel held: the tables last programmed
 * successfully, also when this sync is a full one) to `next` calls for. `prev` null: nothing is
 * known (the first sync after a start), and of every forwarding UDP/SCTP frontend only the flows
 * answered by the frontend itself (never DNAT-ed) are cleared. `changed` (optional) limits the
 * work to those service ports; unchanged ones produce nothing.
 */
export function staleConntrack(prev: ProxyTables | null, next: ProxyTables, changed?: ReadonlySet<ServicePortKey>): ConntrackFilter[] {
  const out: ConntrackFilter[] = [];
  const seen = new Set<string>();
  const push = (f: ConntrackFilter): void => {
    const id = `${f.family}|${f.protocol}|${f.origDst ?? ''}|${f.origDstPort ?? ''}|${f.replySrc ?? ''}|${f.replySrcPort ?? ''}`;
    if (seen.has(id)) return;
    seen.add(id);
    out.push(f);
  };

  for (const family of [4, 6] as IPFamily[]) {
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
        const nextEps = endpointIDs(ns);
        const pFronts = frontends(ps);
        for (const [id, ep] of endpointIDs(ps)) {
          if (nextEps.has(id)) continue;
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
        const before = frontends(ps);
        for (const f of frontends(ns).values()) {
          if (!f.forwards || before.get(f.id)?.forwards) continue;
          if (prevT === undefined) {
            // Unknown past: only what was certainly not DNAT-ed, answered by the frontend itself
            // (a NodePort's by its port on whichever node address).
            push(f.addr === undefined ? { family, protocol, origDstPort: f.port, replySrcPort: f.port } : { family, protocol, origDst: f.addr, origDstPort: f.port, replySrc: f.addr, replySrcPort: f.port });
          } else push(f.addr === undefined ? { family, protocol, origDstPort: f.port } : { family, protocol, origDst: f.addr, origDstPort: f.port });
        }
      }
    }
  }
  return out;
}

