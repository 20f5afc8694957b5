/**
 * Userspace mode's public surface: the backend factory and the --cleanup helper.
 */
export {
  createUserspaceBackend,
  cleanupUserspace,
  DEFAULT_CONNECT_TIMEOUTS_MS,
  DEFAULT_MAX_UDP_SESSIONS,
  DEFAULT_UDP_IDLE_TIMEOUT_MS,
  isUserspaceBackend,
  type UserspaceBackend,
  type UserspaceInternals,
  type UserspaceOptions,
  type UserspaceStats,
} from './backend.js';
export { DEFAULT_INTERFACE, type AddressHolder } from './iface.js';
