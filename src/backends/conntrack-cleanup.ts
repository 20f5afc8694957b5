/**
 * Which conntrack entries a sync makes stale, for every backend. Only connectionless protocols
 * matter (UDP, SCTP): their flows keep following an old NAT decision for as long as packets keep
 * coming, so
 *  - an endpoint that left a service's sets must lose its flows (filter by reply source), and
 *  - a frontend that had no usable endpoints (rejected, dropped or not there) and now forwards
 *    must lose the flows that were recorded without DNAT (filter by original destination).
 * This is what kube-proxy clears. Pure: computes filters, never deletes anything.
 */
import type { EndpointSet, IPFamily, ProxyTable, ProxyTables, ServiceEntry, ServicePortKey } from '../plan/types.js';
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

/** ip|port|protocol → how many UDP/SCTP service ports of a table forward to it. */
type Serving = Map<string, number>;

/**
 * The Serving index of the last table it was computed for. It moves from a table to the next
 * (updated by the changed keys; the previous table loses it), so a sync that removes a UDP
 * endpoint does not walk every service port. A cache: a table without one gets it rebuilt.
 */
const servingOf = new WeakMap<ProxyTable, Serving>();

function countServing(idx: Serving, s: ServiceEntry | undefined, delta: 1 | -1): void {
  const pr = s && connectionless(s);
  if (!pr) return;
  for (const ep of endpointIDs(s).values()) {
    const id = `${ep.ip}|${ep.port}|${pr}`;
    const n = (idx.get(id) ?? 0) + delta;
    if (n > 0) idx.set(id, n);
    else idx.delete(id);
  }
}

function buildServing(t: ProxyTable): Serving {
  const idx: Serving = new Map();
  for (const s of t.services.values()) countServing(idx, s, 1);
  servingOf.set(t, idx);
  return idx;
}

/** prev's index moved to next, or undefined when prev has none. `keys` must cover every difference. */
function carryServing(prevT: ProxyTable, nextT: ProxyTable, keys: Iterable<ServicePortKey>): Serving | undefined {
  const have = servingOf.get(nextT);
  if (have) return have;
  const idx = servingOf.get(prevT);
  if (!idx) return undefined;
  servingOf.delete(prevT);
  for (const k of keys) {
    const ps = prevT.services.get(k);
    const ns = nextT.services.get(k);
    if (ps === ns) continue;
    countServing(idx, ps, -1);
    countServing(idx, ns, 1);
  }
  servingOf.set(nextT, idx);
  return idx;
}

/**
 * The conntrack deletions a sync from `prev` to `next` calls for. `prev` null (first sync, or
 * after a failure) counts as "nothing was there": every forwarding UDP/SCTP frontend is cleared.
 * `changed` (optional) limits the work to those service ports; unchanged ones produce nothing.
 *
 * A stale endpoint is cleared by reply source alone, unless the same ip:port still serves another
 * service port of this family: then only the old service's frontends are cleared, so the other
 * service's flows survive.
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

    // ip|port|protocol served over next: carried forward from prev's (the cost of the changed
    // keys), else built from the whole table — once, at a full sync, so that later partial syncs
    // carry it (only UDP/SCTP service ports add to it).
    const stillServing = (prevT && changed ? carryServing(prevT, nextT, keys) : undefined) ?? servingOf.get(nextT) ?? buildServing(nextT);
    const servingInNext = (ip: string, port: number, protocol: ConntrackProtocol): boolean => (stillServing.get(`${ip}|${port}|${protocol}`) ?? 0) > 0;

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
          if (!servingInNext(ep.ip, ep.port, protocol)) {
            push({ family, protocol, replySrc: ep.ip, replySrcPort: ep.port });
            continue;
          }
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
          push(f.addr === undefined ? { family, protocol, origDstPort: f.port } : { family, protocol, origDst: f.addr, origDstPort: f.port });
        }
      }
    }
  }
  return out;
}

