/**
 * Child of leftovers.test.ts, run as `ip netns exec NS node leftovers-child.js MODE`: what the
 * daemon removes at the start of MODE (removeForeign with the real backends), in the test's
 * namespace only. Prints the log lines on stdout. Not a test file.
 */
import { removeForeign } from '../../../src/proxy/daemon.js';
import { BACKENDS } from '../../../src/proxy/backends.js';
import { setLogSink } from '../../../src/util/log.js';
import type { ProxyConfig, ProxyMode } from '../../../src/config/types.js';

setLogSink((l) => process.stdout.write(l + '\n'));
const mode = process.argv[2] as ProxyMode;
// Only what removeForeign reads; the bpffs directory does not exist in the test.
const config = { ebpfBpffsDir: '/sys/fs/bpf/ferry-leftovers-test-absent' } as unknown as ProxyConfig;
await removeForeign(mode, config, BACKENDS);
