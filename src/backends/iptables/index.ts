/**
 * The iptables backend's public surface: the factory the CLI wires for `--proxy-mode iptables`,
 * `ferry --cleanup`'s cleanupIptables, and the typed sync error the syncer acts on.
 */
export { createIptablesBackend, cleanupIptables, IptablesSyncError, type IptablesBackend, type IptablesBackendOptions, type IptablesSyncStats } from './backend.js';
export { compileFull, compilePartial, type CompiledFamily, type CompileOptions } from './compiler.js';
export { detectVariant, type IptablesVariant } from './runner.js';
