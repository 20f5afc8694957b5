/**
 * glibc's malloc grows its mmap threshold to the size of each large block freed (up to 32 MiB),
 * and its trim threshold with it. In the daemon the large blocks are the full sync's buffers
 * (the netlink batch is tens of MB at 44k Services): after the first one is freed, the next ones
 * come from the heap, and their pages stay resident — fragmented between smaller blocks — after
 * they are freed. Measured at 10k Services × 10 endpoints (docs/memory.md): the process's
 * native memory grew by about 8 MiB with every full resync (steady RSS 177 MiB, 227 after six
 * resyncs); with the thresholds fixed it stayed at ~11 MiB (RSS 156–161 MiB throughout).
 *
 * The daemon fixes both at glibc's own starting values (128 KiB) through the addon: large blocks
 * are always mmap-ed and go back to the kernel when freed.
 */
import { loadNative } from './index.js';

export const MALLOC_MMAP_THRESHOLD = 128 * 1024;
export const MALLOC_TRIM_THRESHOLD = 128 * 1024;

/**
 * What the daemon logs at start: 'fixed', or why not ('not glibc': another C library, or mallopt
 * refused; 'no addon': not loaded, or built before this).
 */
export type MallocTuning = 'fixed' | 'not glibc' | 'no addon';

export function fixMallocThresholds(): MallocTuning {
  const addon = loadNative();
  if (!addon?.mallocFixThresholds) return 'no addon';
  return addon.mallocFixThresholds(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD) ? 'fixed' : 'not glibc';
}
