/**
 * The kernel backends by proxy mode: how to create one for the daemon and how to remove what
 * any of them may have installed (`ferry --cleanup`). The dry-run backend is not here: it is
 * not a mode and installs nothing. This table only wires; it must not hold backend logic.
 */
import type { ProxyConfig, ProxyMode } from '../config/types.js';
import type { Backend, IPFamily } from '../plan/types.js';
import { run } from '../util/exec.js';
import { detectVariant, execRunner } from '../backends/iptables/runner.js';
import { createNftablesBackend, removeTables } from '../backends/nftables/backend.js';
import { FERRY_TABLE, KUBE_PROXY_TABLE } from '../backends/nftables/names.js';
import { isKubeProxyLayout } from '../backends/iptables/cleanup.js';
import { removeIpvsLeftovers } from '../backends/iptables/ipvs-leftovers.js';
import { existsSync } from 'node:fs';
import { defaultNft, execNft } from '../backends/kernel/nft.js';
import { probeNftables } from '../backends/nftables/probe.js';
import { DEFAULT_MASQUERADE_MARK } from '../backends/nftables/compiler.js';
import { defaultConntrack } from '../backends/kernel/conntrack.js';
import { createUserspaceBackend, cleanupUserspace, DEFAULT_INTERFACE } from '../backends/userspace/index.js';
import { createIptablesBackend, cleanupIptables } from '../backends/iptables/index.js';
import { createEbpfBackend } from '../backends/ebpf/backend.js';
import { KernelBpfMaps, probeBpf, removePins, resolveCgroupRoot } from '../backends/kernel/bpf.js';
import { KernelUdpSockets } from '../backends/kernel/udp-sockets.js';
import { DEFAULTS, localhostNodePortsServed } from '../config/resolve.js';
import { logger } from '../util/log.js';

export class BackendNotImplementedError extends Error {
  readonly code = 'FERRY_ERR_BACKEND_NOT_IMPLEMENTED';
  constructor(
    readonly mode: ProxyMode,
    detail = 'is not implemented yet',
  ) {
    super(`the ${mode} proxy mode ${detail}`);
    this.name = 'BackendNotImplementedError';
  }
}

export interface BackendEntry {
  /** Creates the backend the daemon syncs, for the families this node serves. */
  create(config: ProxyConfig, families: readonly IPFamily[]): Promise<Backend>;
  /**
   * Proves this mode can program this node's kernel at all (the tools or the addon work, the
   * kernel has the tables) with a transaction that leaves nothing behind. Throws, with the
   * kernel's or the tool's own words, when it cannot. Used for --proxy-mode-fallback.
   */
  probe(families: readonly IPFamily[]): Promise<void>;
  /**
   * Removes everything this mode may have installed, whether or not it is running. `config`
   * names where a mode keeps its state when that is configurable (ebpf's bpffs directory).
   */
  cleanup(config?: ProxyConfig): Promise<void>;
  /**
   * At the start of mode `running`: removes what this entry's mode (or kube-proxy, where it is
   * the same layout) may have left that would still catch `running`'s traffic — kube-proxy's
   * platformCleanup at every start. Nothing of the running mode's own state. Returns what it
   * removed, for the log.
   */
  removeForeign?(running: ProxyMode, config: ProxyConfig): Promise<string[]>;
}

export const BACKENDS: Record<ProxyMode, BackendEntry> = {
  nftables: {
    create: async (config, families) =>
      createNftablesBackend({
        nft: defaultNft(),
        conntrack: defaultConntrack(),
        families,
        masqueradeMark: 1 << config.masqueradeBit,
        log: logger('nftables'),
      }),
    // The first sync's rules for one Service, in a table the same transaction deletes, through
    // the runner the backend uses (src/backends/nftables/probe.ts).
    probe: async (families) => probeNftables(defaultNft(), families, DEFAULT_MASQUERADE_MARK),
    // Removes ferry's `ferry` tables and kube-proxy's `kube-proxy` nftables tables.
    cleanup: async () => createNftablesBackend({ nft: defaultNft() }).cleanup(),
    // kube-proxy's nftables table always (ferry's nftables mode replaces it); ferry's own only
    // when another mode runs. Through the nft command, not libnftables in this process: it runs
    // after the first sync, and libnftables fills its cache with the whole ruleset for a listing
    // (ferry's own table included) and keeps it: +260 MiB of native memory at 10k Services.
    removeForeign: async (running) => (await removeTables(execNft(), running === 'nftables' ? [KUBE_PROXY_TABLE] : [FERRY_TABLE, KUBE_PROXY_TABLE])).map((t) => `nftables table ${t}`),
  },
  iptables: {
    create: async (config, families) =>
      createIptablesBackend({
        conntrack: defaultConntrack(),
        families: [...families],
        masqueradeMark: 1 << config.masqueradeBit,
        localhostNodePorts: localhostNodePortsServed(config),
        log: logger('iptables'),
      }),
    probe: async (families) => {
      const runner = execRunner((await detectVariant()).variant);
      for (const f of families) await runner.restore(f, '*nat\n:KUBE-FERRY-PROBE - [0:0]\n-X KUBE-FERRY-PROBE\nCOMMIT\n');
    },
    // Removes kube-proxy's layouts (iptables and ipvs: ferry's iptables mode writes the former)
    // and the jumps to them, nft and legacy — never another program's KUBE-* chains — and the
    // ipvs mode's interface kube-ipvs0.
    cleanup: async () => {
      await cleanupIptables({ log: logger('iptables') });
      await removeIpvsLeftovers(logger('iptables'));
    },
    // Only kube-proxy's layout (which ferry's iptables mode writes too): not another program's
    // KUBE-* chains. cleanupIptables logs what it removed. kube-ipvs0 in every mode: no mode of
    // ferry's has it, and it keeps every ClusterIP a local address.
    removeForeign: async (running) => {
      if (running !== 'iptables') await cleanupIptables({ log: logger('iptables'), ours: isKubeProxyLayout });
      return removeIpvsLeftovers(logger('iptables'));
    },
  },
  ebpf: {
    create: async (config, families) =>
      createEbpfBackend({
        maps: new KernelBpfMaps({
          pinDir: config.ebpfBpffsDir,
          cgroupRoot: config.ebpfCgroupRoot,
          interfaces: config.ebpfInterfaces ?? 'all',
          ...(config.ebpfCtMax !== undefined ? { ctConnections: config.ebpfCtMax } : {}),
          ctTimeouts: config.conntrack,
        }),
        families,
        localhostNodePorts: localhostNodePortsServed(config),
        sockets: new KernelUdpSockets({ pinDir: config.ebpfBpffsDir, cgroupRoot: () => resolveCgroupRoot(config.ebpfCgroupRoot), log: logger('ebpf') }),
        log: logger('ebpf'),
      }),
    // The verifier accepts the programs on this kernel (maps unpinned, nothing attached).
    probe: async () => probeBpf(),
    // Detaches the tc filters ferry_tcif records; unpinning the links detaches the cgroup
    // programs; unpinning the maps frees them.
    cleanup: async (config) => removePins(config?.ebpfBpffsDir ?? DEFAULTS.ebpfBpffsDir),
    // Its programs would keep rewriting connects before the running mode's rules see them.
    removeForeign: async (running, config) => {
      if (running === 'ebpf' || !existsSync(config.ebpfBpffsDir)) return [];
      await removePins(config.ebpfBpffsDir);
      return [`ebpf programs and pins under ${config.ebpfBpffsDir}`];
    },
  },
  userspace: {
    create: async (config, families) =>
      createUserspaceBackend({ families: [...families], localhostNodePorts: localhostNodePortsServed(config), log: logger('userspace') }),
    // Needs no netfilter; `ip` must work, which every sync proves anyway.
    probe: async () => {
      await run(['ip', '-V']);
    },
    cleanup: async () => cleanupUserspace(),
    // ferry0 holds every ClusterIP as a local address: the kernel would answer them itself.
    removeForeign: async (running) => {
      if (running === 'userspace' || !existsSync(`/sys/class/net/${DEFAULT_INTERFACE}`)) return [];
      await cleanupUserspace();
      return [`the userspace mode's interface ${DEFAULT_INTERFACE}`];
    },
  },
};
