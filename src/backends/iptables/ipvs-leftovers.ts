/**
 * What kube-proxy's ipvs mode leaves on a node besides its iptables chains (those go with the
 * kube-proxy layout, cleanup.ts): the dummy interface `kube-ipvs0`, which holds every ClusterIP
 * as a local address, and the IPVS virtual servers. kube-proxy removes both at every start of
 * another mode and under --cleanup (pkg/proxy/ipvs CleanupLeftovers, from platformCleanup).
 *
 * Left in place, kube-ipvs0 keeps each ClusterIP local to the node: a host-network client then
 * connects *from* the ClusterIP (the route lookup finds the local route before DNAT), and an
 * endpoint on another node answers an address nothing translates back; a ClusterIP ferry does not
 * translate any more is delivered to the node itself, where IPVS still forwards it to old pod IPs.
 * Deleting the interface ends both. The virtual servers themselves need ipvsadm, which ferry does
 * not ship: when they remain, a warning says so and how to remove them.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Logger } from '../../util/log.js';
import { run } from '../../util/exec.js';

export const IPVS_INTERFACE = 'kube-ipvs0';

/** Virtual servers in /proc/net/ip_vs (lines of `TCP`/`UDP`/`SCTP`/`FWM` services); 0 without IPVS. */
export function ipvsServiceCount(procText: string): number {
  return procText.split('\n').filter((l) => /^(TCP|UDP|SCTP|FWM)\s/.test(l)).length;
}

/** Removes kube-ipvs0 if it exists; returns what it removed, for the log. */
export async function removeIpvsLeftovers(log: Logger, sysClassNet = '/sys/class/net', procIpvs = '/proc/net/ip_vs'): Promise<string[]> {
  if (!existsSync(`${sysClassNet}/${IPVS_INTERFACE}`)) return [];
  await run(['ip', 'link', 'del', IPVS_INTERFACE]);
  let services = 0;
  try {
    services = ipvsServiceCount(readFileSync(procIpvs, 'utf8'));
  } catch {
    // No IPVS in this kernel (or namespace): nothing more to say.
  }
  if (services > 0) {
    log.warn(`kube-proxy's IPVS virtual servers remain (${services}); ferry does not remove them: run \`ipvsadm -C\` on the node once kube-proxy is gone`, { file: procIpvs });
  }
  return [`kube-proxy's IPVS interface ${IPVS_INTERFACE}`];
}
