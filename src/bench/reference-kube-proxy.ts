/**
 * The REFERENCE ruleset: iptables-restore input laid out exactly as stock kube-proxy's iptables
 * mode lays out its rules (pkg/proxy/iptables, as documented in its proxier and the Kubernetes
 * "Virtual IPs and Service Proxies" page), generated here from the IR so that ferry's data path
 * and kube-proxy's can be compared on the same kernel in one run. It is deliberately independent
 * of ferry's own iptables compiler: a bug or an optimisation there must not leak into the
 * reference.
 *
 * Layout (nat table):
 *   PREROUTING, OUTPUT → KUBE-SERVICES; POSTROUTING → KUBE-POSTROUTING
 *   KUBE-SERVICES: one rule per ClusterIP → KUBE-SVC-<hash>; last rule: dst-type LOCAL → KUBE-NODEPORTS
 *   KUBE-NODEPORTS: one rule per NodePort → KUBE-EXT-<hash> → (KUBE-MARK-MASQ) → KUBE-SVC-<hash>
 *   KUBE-SVC-<hash>: masquerade off-cluster sources, then `-m statistic --mode random
 *     --probability 1/(n-i)` → KUBE-SEP-<hash> per endpoint (the last one unconditional)
 *   KUBE-SEP-<hash>: hairpin → KUBE-MARK-MASQ; DNAT --to-destination ip:port
 *   KUBE-MARK-MASQ sets 0x4000; KUBE-POSTROUTING masquerades marked packets (--random-fully).
 * filter: KUBE-SERVICES / KUBE-EXTERNAL-SERVICES reject services without endpoints,
 *   KUBE-FORWARD drops INVALID and accepts marked / established traffic.
 * Partial syncs follow kube-proxy's MinimizeIPTablesRestore: the top-level chains are rewritten in
 * full every time, only the changed services' KUBE-SVC/EXT/SEP chains are written, and chains of
 * removed endpoints are deleted with -X. Large cluster mode (more than 1000 endpoints) drops the
 * per-endpoint comments, as kube-proxy does.
 *
 * Covered: TCP/UDP ClusterIP and NodePort with externalTrafficPolicy Cluster, no affinity
 * (what the benchmark creates). Pure: no I/O.
 */
import { goFixed } from '../util/go-format.js';
import { createHash } from 'node:crypto';
import type { PlannedEndpoint, ProxyTable, ServiceEntry, ServicePortKey } from '../plan/types.js';

const MARK = '0x4000';
const LARGE_CLUSTER_ENDPOINTS = 1000;
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Buffer): string {
  let bits = 0;
  let value = 0;
  const out: string[] = [];
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out.push(B32[(value >>> (bits - 5)) & 31]!);
      bits -= 5;
    }
  }
  return out.join('');
}

/** kube-proxy's chain name scheme: PREFIX + first 16 base32 chars of sha256(what). */
function hashedChain(prefix: string, what: string): string {
  return prefix + base32(createHash('sha256').update(what).digest()).slice(0, 16);
}

function portName(s: ServiceEntry): string {
  return `${s.namespace}/${s.name}${s.portName ? `:${s.portName}` : ''}`;
}

function proto(s: ServiceEntry): string {
  return s.protocol.toLowerCase();
}

export interface ReferenceNames {
  readonly svc: string;
  readonly ext: string;
  sep(ep: PlannedEndpoint): string;
}

export function referenceNames(s: ServiceEntry): ReferenceNames {
  const id = portName(s) + s.protocol;
  return {
    svc: hashedChain('KUBE-SVC-', id),
    ext: hashedChain('KUBE-EXT-', id),
    sep: (ep) => hashedChain('KUBE-SEP-', `${id}${ep.ip}:${ep.port}`),
  };
}

/** kube-proxy's probability string: 1/n with ten decimals, as Go's `%0.10f`. */
function probability(n: number): string {
  return goFixed(1 / n, 10);
}

interface Out {
  natChains: string[];
  natRules: string[];
  filterRules: string[];
}

function totalEndpoints(t: ProxyTable): number {
  let n = 0;
  for (const s of t.services.values()) n += s.cluster.endpoints.length;
  return n;
}

function topLevel(t: ProxyTable, o: Out, large: boolean): void {
  void large;
  for (const s of t.services.values()) {
    const n = referenceNames(s);
    const c = `"${portName(s)} cluster IP"`;
    if (s.cluster.verdict === 'forward') {
      o.natRules.push(`-A KUBE-SERVICES -m comment --comment ${c} -m ${proto(s)} -p ${proto(s)} -d ${s.clusterIP}/32 --dport ${s.port} -j ${n.svc}`);
      if (s.nodePort) {
        o.natRules.push(`-A KUBE-NODEPORTS -m comment --comment ${portName(s)} -m ${proto(s)} -p ${proto(s)} --dport ${s.nodePort} -j ${n.ext}`);
      }
    } else {
      o.filterRules.push(
        `-A KUBE-SERVICES -m comment --comment "${portName(s)} has no endpoints" -m ${proto(s)} -p ${proto(s)} -d ${s.clusterIP}/32 --dport ${s.port} -j REJECT`,
      );
      if (s.nodePort) {
        o.filterRules.push(
          `-A KUBE-EXTERNAL-SERVICES -m comment --comment "${portName(s)} has no endpoints" -m addrtype --dst-type LOCAL -m ${proto(s)} -p ${proto(s)} --dport ${s.nodePort} -j REJECT`,
        );
      }
    }
  }
  o.natRules.push(
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
  );
}

function serviceChains(t: ProxyTable, s: ServiceEntry, o: Out, large: boolean): void {
  if (s.cluster.verdict !== 'forward') return;
  const n = referenceNames(s);
  const pn = portName(s);
  const p = proto(s);
  o.natChains.push(`:${n.svc} - [0:0]`);
  if (t.localTraffic.kind === 'clusterCIDR') {
    for (const cidr of t.localTraffic.cidrs) {
      o.natRules.push(`-A ${n.svc} -m comment --comment "${pn} cluster IP" -m ${p} -p ${p} -d ${s.clusterIP}/32 --dport ${s.port} ! -s ${cidr} -j KUBE-MARK-MASQ`);
    }
  } else {
    o.natRules.push(`-A ${n.svc} -m comment --comment "${pn} cluster IP" -m ${p} -p ${p} -d ${s.clusterIP}/32 --dport ${s.port} -j KUBE-MARK-MASQ`);
  }
  const eps = s.cluster.endpoints;
  for (let i = 0; i < eps.length; i++) {
    const ep = eps[i]!;
    const sep = n.sep(ep);
    const comment = large ? '' : `-m comment --comment "${pn} -> ${ep.ip}:${ep.port}" `;
    const stat = i < eps.length - 1 ? `-m statistic --mode random --probability ${probability(eps.length - i)} ` : '';
    o.natRules.push(`-A ${n.svc} ${comment}${stat}-j ${sep}`);
    o.natChains.push(`:${sep} - [0:0]`);
    const c2 = large ? '' : `-m comment --comment ${pn} `;
    o.natRules.push(`-A ${sep} ${c2}-s ${ep.ip}/32 -j KUBE-MARK-MASQ`);
    o.natRules.push(`-A ${sep} ${c2}-m ${p} -p ${p} -j DNAT --to-destination ${ep.ip}:${ep.port}`);
  }
  if (s.nodePort) {
    o.natChains.push(`:${n.ext} - [0:0]`);
    o.natRules.push(`-A ${n.ext} -m comment --comment "masquerade traffic for ${pn} external destinations" -j KUBE-MARK-MASQ`);
    o.natRules.push(`-A ${n.ext} -j ${n.svc}`);
  }
}

function assemble(o: Out): string {
  const lines: string[] = [
    '*filter',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-EXTERNAL-SERVICES - [0:0]',
    ':KUBE-FORWARD - [0:0]',
    ':KUBE-NODEPORTS - [0:0]',
    ':KUBE-PROXY-FIREWALL - [0:0]',
    ...o.filterRules,
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    `-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark ${MARK}/${MARK} -j ACCEPT`,
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT',
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-NODEPORTS - [0:0]',
    ':KUBE-POSTROUTING - [0:0]',
    ':KUBE-MARK-MASQ - [0:0]',
    ...o.natChains,
    `-A KUBE-POSTROUTING -m mark ! --mark ${MARK}/${MARK} -j RETURN`,
    `-A KUBE-POSTROUTING -j MARK --xor-mark ${MARK}`,
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    `-A KUBE-MARK-MASQ -j MARK --or-mark ${MARK}`,
    ...o.natRules,
    'COMMIT',
    '',
  ];
  return lines.join('\n');
}

/** Everything: what kube-proxy restores on a full sync (with --noflush, as it does). */
export function referenceFull(t: ProxyTable): string {
  const large = totalEndpoints(t) > LARGE_CLUSTER_ENDPOINTS;
  const o: Out = { natChains: [], natRules: [], filterRules: [] };
  for (const s of t.services.values()) serviceChains(t, s, o, large);
  topLevel(t, o, large);
  return assemble(o);
}

/**
 * A partial sync from `prev` to `next` for the changed keys: the top-level chains in full, the
 * changed services' chains, and -X for chains that no longer exist.
 */
export function referencePartial(prev: ProxyTable, next: ProxyTable, changed: ReadonlySet<ServicePortKey>): string {
  const large = totalEndpoints(next) > LARGE_CLUSTER_ENDPOINTS;
  const o: Out = { natChains: [], natRules: [], filterRules: [] };
  const deletions: string[] = [];
  for (const key of [...changed].sort()) {
    const s = next.services.get(key);
    const want = new Set<string>();
    if (s) {
      const before = o.natChains.length;
      serviceChains(next, s, o, large);
      for (const line of o.natChains.slice(before)) want.add(line.slice(1, line.indexOf(' ')));
    }
    const old = prev.services.get(key);
    if (old && old.cluster.verdict === 'forward') {
      const n = referenceNames(old);
      const had = [n.svc, ...(old.nodePort ? [n.ext] : []), ...old.cluster.endpoints.map((e) => n.sep(e))];
      for (const c of had) {
        if (want.has(c)) continue;
        o.natChains.push(`:${c} - [0:0]`);
        deletions.push(`-X ${c}`);
      }
    }
  }
  topLevel(next, o, large);
  o.natRules.push(...deletions);
  return assemble(o);
}

/** The jumps from the built-in chains, applied once (iptables-restore --noflush input). */
export function referenceJumps(): string {
  return [
    '*filter',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-EXTERNAL-SERVICES - [0:0]',
    ':KUBE-FORWARD - [0:0]',
    '-I INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-I FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-I FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-I OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-I FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    'COMMIT',
    '*nat',
    ':KUBE-SERVICES - [0:0]',
    ':KUBE-POSTROUTING - [0:0]',
    '-I OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-I POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    'COMMIT',
    '',
  ].join('\n');
}
