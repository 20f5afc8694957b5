/**
 * The kernel backends by proxy mode: how to create one for the daemon and how to remove what
 * any of them may have installed (`ferry --cleanup`). The dry-run backend is not here: it is
 * not a mode and installs nothing. This table only wires; it must not hold backend logic.
 */
import type { ProxyConfig, ProxyMode } from '../config/types.js';
import type { Backend } from '../plan/types.js';
import { createNftablesBackend } from '../backends/nftables/backend.js';
import { defaultNft } from '../backends/kernel/nft.js';
import { defaultConntrack } from '../backends/kernel/conntrack.js';
import { createUserspaceBackend, cleanupUserspace } from '../backends/userspace/index.js';
import { createIptablesBackend, cleanupIptables } from '../backends/iptables/index.js';
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
  /** Creates the backend the daemon syncs. */
  create(config: ProxyConfig): Promise<Backend>;
  /** Removes everything this mode may have installed, whether or not it is running. */
  cleanup(): Promise<void>;
}

export const BACKENDS: Record<ProxyMode, BackendEntry> = {
  nftables: {
    create: async (config) =>
      createNftablesBackend({
        nft: defaultNft(),
        conntrack: defaultConntrack(),
        masqueradeMark: 1 << config.masqueradeBit,
        log: logger('nftables'),
      }),
    // Removes ferry's `ferry` tables and kube-proxy's `kube-proxy` nftables tables.
    cleanup: async () => createNftablesBackend({ nft: defaultNft() }).cleanup(),
  },
  iptables: {
    create: async (config) =>
      createIptablesBackend({
        conntrack: defaultConntrack(),
        masqueradeMark: 1 << config.masqueradeBit,
        log: logger('iptables'),
      }),
    // Removes every KUBE-* chain and the jumps to them (ferry's and kube-proxy's), nft and legacy.
    cleanup: async () => cleanupIptables({ log: logger('iptables') }),
  },
  userspace: {
    create: async () => createUserspaceBackend({ log: logger('userspace') }),
    cleanup: async () => cleanupUserspace(),
  },
};
