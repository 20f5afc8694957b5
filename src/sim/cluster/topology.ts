/**
 * Building the cluster's network out of namespaces, veths and routes with `ip`. Each step is one
 * `ip -n NS -batch -` call where possible, so a node or pod costs a handful of processes.
 * Only names starting with the run prefix are created in the host namespace (exactly one: the
 * host end of the LAN), and sysctls are only ever set inside namespaces this run created.
 */
import { run, runIn } from '../../util/exec.js';
import * as A from './addressing.js';

/** Run `ip` commands in a namespace in one process; the error names the failing line. */
export async function ipBatch(netns: string | undefined, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  const argv = netns ? ['ip', '-n', netns, '-batch', '-'] : ['ip', '-batch', '-'];
  await run(argv, { input: lines.join('\n') + '\n' });
}

export async function sysctls(netns: string, settings: Record<string, string | number>): Promise<void> {
  const args = Object.entries(settings).map(([k, v]) => `${k}=${v}`);
  await runIn(netns, ['sysctl', '-q', '-w', ...args]);
}

export async function addNetns(netns: string): Promise<void> {
  await run(['ip', 'netns', 'add', netns]);
}

/** The LAN: a bridge in its own namespace, and the host attached to it by `<p>h`. */
export async function buildLan(prefix: string, dualStack: boolean): Promise<void> {
  const lan = A.lanNetns(prefix);
  const hv = A.hostVeth(prefix);
  await addNetns(lan);
  // Bridge ports forward immediately (STP off) and multicast snooping would only delay IPv6 ND.
  await ipBatch(lan, ['link set lo up', 'link add br0 type bridge stp_state 0 mcast_snooping 0', 'link set br0 up']);
  await ipBatch(undefined, [`link add ${hv} type veth peer name host netns ${lan}`]);
  await ipBatch(lan, ['link set host master br0', 'link set host up']);
  const host = [`addr add ${A.HOST_IP}/24 dev ${hv}`];
  if (dualStack) host.push(`addr add ${A.HOST_IP6}/64 dev ${hv} nodad`);
  host.push(`link set ${hv} up`);
  await ipBatch(undefined, host);
}

/** A namespace with eth0 plugged into the LAN bridge (port name `portName` on the bridge side). */
async function plugIntoLan(prefix: string, netns: string, portName: string): Promise<void> {
  const lan = A.lanNetns(prefix);
  await ipBatch(netns, [`link add eth0 type veth peer name ${portName} netns ${lan}`]);
  await ipBatch(lan, [`link set ${portName} master br0`, `link set ${portName} up`]);
}

const NODE_SYSCTLS = {
  'net.ipv4.ip_forward': 1,
  // A node forwards some traffic back out of the LAN interface it came in on (an external IP
  // translated to an endpoint on another node), and each time would send the client a redirect.
  // Besides being useless on this flat LAN, every redirect restarts the clock of the per-client
  // ICMP rate limit (inet_peer's rate_last, shared by both): a reject's port-unreachable errors
  // to that client were then starved, at random. (IPv6 has no such switch: see ext0 below.)
  'net.ipv4.conf.all.send_redirects': 0,
  'net.ipv4.conf.default.send_redirects': 0,
  'net.ipv4.conf.all.rp_filter': 0,
  'net.ipv4.conf.default.rp_filter': 0,
  'net.ipv6.conf.all.forwarding': 1,
  'net.ipv6.conf.default.forwarding': 1,
  'net.ipv6.conf.all.accept_dad': 0,
  'net.ipv6.conf.default.accept_dad': 0,
};

/**
 * Node i of n: eth0 on the LAN, forwarding on, the pod gateway on lo, routes to every other
 * node's pod CIDR. The default route has no gateway: traffic for addresses nobody on the LAN
 * owns dies in ARP instead of leaving through the host, yet locally generated packets to
 * Service IPs still get a route (and so reach the proxy's output hook).
 */
export async function buildNode(prefix: string, i: number, n: number, dualStack: boolean): Promise<void> {
  const ns = A.nodeNetns(prefix, i);
  await addNetns(ns);
  await sysctls(ns, NODE_SYSCTLS);
  await plugIntoLan(prefix, ns, `n${i}`);
  const lines = [
    'link set lo up',
    `addr add ${A.podGateway(i)}/32 dev lo`,
    `addr add ${A.nodeIP(i)}/24 dev eth0`,
    'link set eth0 up',
    'route add default dev eth0',
  ];
  // External and LB IPs that the proxy does not take leave through ext0 (a bridge without ports,
  // where they die as they would in ARP; this kernel has no dummy device), not back out of the
  // LAN interface they came in on: IPv6 has no switch for the redirect that forwarding out of
  // the same interface sends, and each one takes from the per-client budget of ICMPv6 errors,
  // so the reject's port-unreachable errors went missing at random.
  lines.push('link add ext0 type bridge', 'link set ext0 up', `route add ${A.EXTERNAL_CIDR} dev ext0`);
  if (dualStack) {
    lines.push(`addr add ${A.nodeIP6(i)}/64 dev eth0 nodad`, 'route add ::/0 dev eth0', `route add ${A.EXTERNAL_CIDR6} dev ext0`);
  }
  for (let j = 1; j <= n; j++) {
    if (j === i) continue;
    lines.push(`route add ${A.podCIDR(j)} via ${A.nodeIP(j)} dev eth0`);
    if (dualStack) lines.push(`route add ${A.podCIDR6(j)} via ${A.nodeIP6(j)} dev eth0`);
  }
  await ipBatch(ns, lines);
  await sysctls(ns, { 'net.ipv4.conf.eth0.rp_filter': 0, 'net.ipv4.conf.lo.rp_filter': 0 });
}

/** The outside client: on the LAN, no route to pod CIDRs; tests add routes for external IPs. */
export async function buildClient(prefix: string, dualStack: boolean): Promise<void> {
  const ns = A.clientNetns(prefix);
  await addNetns(ns);
  // No IPv6 redirects: a node forwards traffic for an external IP back out of the LAN interface
  // it came in on and tells the client the address is on-link, so the client's next packets
  // would go to a neighbour that does not exist (a timeout instead of the proxy's answer). A
  // client behind a router never hears a node's redirects; IPv4's are refused anyway (the named
  // gateway is not on the client's subnet).
  await sysctls(ns, {
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
    'net.ipv6.conf.all.accept_redirects': 0,
    'net.ipv6.conf.default.accept_redirects': 0,
  });
  await plugIntoLan(prefix, ns, 'client');
  const lines = ['link set lo up', `addr add ${A.CLIENT_IP}/24 dev eth0`, 'link set eth0 up'];
  if (dualStack) lines.push(`addr add ${A.CLIENT_IP6}/64 dev eth0 nodad`);
  await ipBatch(ns, lines);
}

/**
 * Pod k on node i, ptp style (like kindnet): a /32 (/128) on the pod's eth0, a veth whose node
 * end carries a host route to the pod, the gateway reached via a link-scope route (v4: the
 * node's lo address; v6: the fixed link-local fe80::1 on the node end).
 */
export async function buildPod(prefix: string, i: number, k: number, dualStack: boolean): Promise<void> {
  const podNs = A.podNetns(prefix, i, k);
  const nodeNs = A.nodeNetns(prefix, i);
  const veth = A.podVeth(prefix, i, k);
  const ip = A.podIP(i, k);
  await addNetns(podNs);
  if (dualStack) await sysctls(podNs, { 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv6.conf.default.accept_dad': 0 });
  // `src` makes the node talk to its pods from its node IP, as on a real node, not from the gateway.
  const node = [`link add ${veth} type veth peer name eth0 netns ${podNs}`, `link set ${veth} up`, `route add ${ip}/32 dev ${veth} src ${A.nodeIP(i)}`];
  if (dualStack) {
    node.push(`addr add ${A.POD_GATEWAY6}/64 dev ${veth} nodad`, `route add ${A.podIP6(i, k)}/128 dev ${veth} src ${A.nodeIP6(i)}`);
  }
  await ipBatch(nodeNs, node);
  const gw = A.podGateway(i);
  const pod = [
    'link set lo up',
    'link set eth0 up',
    `addr add ${ip}/32 dev eth0`,
    `route add ${gw} dev eth0 scope link`,
    `route add default via ${gw} dev eth0`,
  ];
  if (dualStack) pod.push(`addr add ${A.podIP6(i, k)}/128 dev eth0 nodad`, `route add ::/0 via ${A.POD_GATEWAY6} dev eth0`);
  await ipBatch(podNs, pod);
}

/** Deleting the pod namespace takes its eth0, and with it the node end of the veth and its routes. */
export async function removePodLinks(prefix: string, i: number, k: number): Promise<void> {
  await run(['ip', '-n', A.nodeNetns(prefix, i), 'link', 'del', A.podVeth(prefix, i, k)], { allowFailure: true });
}
