/**
 * Only one simulated cluster can own the LAN addresses (198.18.0.1 on the host) at a time. A
 * lock file names the owning process and prefix; a lock whose process is gone belongs to a
 * crashed run, whose leftovers are removed before the lock is taken over. A live owner is waited
 * for (tests of different suites may run side by side), then reported by name.
 * Must never remove the namespaces of a live owner.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { logger } from '../../util/log.js';
import { cleanupPrefix } from './cleanup.js';

const log = logger('sim-cluster');
export const LOCK_DIR = '/run/ferry-sim';
export const LOCK_FILE = `${LOCK_DIR}/lan.lock`;

export class LanBusyError extends Error {
  readonly code = 'FERRY_ERR_SIM_LAN_BUSY';
  constructor(
    readonly ownerPrefix: string,
    readonly ownerPid: number,
    readonly waitedMs: number,
  ) {
    super(
      `another simulated cluster (prefix ${ownerPrefix}, pid ${ownerPid}) still owns the LAN 198.18.0.0/24 after waiting ${waitedMs} ms; ` +
        `stop it or run "ferry sim cluster down --prefix ${ownerPrefix}"`,
    );
    this.name = 'LanBusyError';
  }
}

interface Owner {
  pid: number;
  prefix: string;
}

function readOwner(): Owner | undefined {
  try {
    const [pid, prefix] = readFileSync(LOCK_FILE, 'utf8').trim().split(/\s+/);
    return { pid: Number(pid), prefix: prefix ?? '' };
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function acquireLan(prefix: string, waitMs: number): Promise<void> {
  mkdirSync(LOCK_DIR, { recursive: true });
  const start = Date.now();
  let announced = false;
  for (;;) {
    try {
      writeFileSync(LOCK_FILE, `${process.pid} ${prefix}\n`, { flag: 'wx' });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = readOwner();
    if (!owner) continue; // released between our attempt and the read
    if (owner.prefix === prefix && owner.pid === process.pid) return;
    if (!alive(owner.pid)) {
      log.warn('taking over the LAN from a run that is gone; removing its leftovers', { prefix: owner.prefix, pid: owner.pid });
      if (/^fy[a-z0-9]+$/.test(owner.prefix)) await cleanupPrefix(owner.prefix);
      try {
        unlinkSync(LOCK_FILE);
      } catch {
        /* someone else took it over first */
      }
      continue;
    }
    const waited = Date.now() - start;
    if (waited >= waitMs) throw new LanBusyError(owner.prefix, owner.pid, waited);
    if (!announced) {
      log.info('waiting for another simulated cluster to finish', { owner: owner.prefix, pid: owner.pid });
      announced = true;
    }
    await sleep(200);
  }
}

export function releaseLan(prefix: string): void {
  const owner = readOwner();
  if (owner && owner.prefix === prefix && owner.pid === process.pid) {
    try {
      unlinkSync(LOCK_FILE);
    } catch {
      /* already gone */
    }
  }
}

/** After a manual cleanup: drop the lock if the process that held it is gone. */
export function clearStaleLock(): void {
  const owner = readOwner();
  if (!owner || alive(owner.pid)) return;
  try {
    unlinkSync(LOCK_FILE);
  } catch {
    /* already gone */
  }
}
