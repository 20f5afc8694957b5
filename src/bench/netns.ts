/**
 * Throw-away network namespaces for the apply benchmark: `fyb<rand>`, loopback up, nothing else.
 * Every namespace created here is remembered until deleted, so the SIGINT handler and the
 * harness's `finally` can remove all of them. Never touches the host's own namespace.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { run } from '../util/exec.js';

const live = new Set<string>();

export function benchNetnsName(): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  const b = randomBytes(5);
  let s = 'fyb';
  for (const x of b) s += alphabet[x % alphabet.length];
  return s;
}

export async function createBenchNetns(): Promise<string> {
  const name = benchNetnsName();
  live.add(name);
  await run(['ip', 'netns', 'add', name]);
  await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export async function deleteBenchNetns(name: string): Promise<void> {
  await run(['ip', 'netns', 'delete', name], { allowFailure: true });
  live.delete(name);
}

/** For signal handlers: synchronous, best effort. */
export function deleteAllBenchNetnsSync(): void {
  for (const name of live) {
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
  live.clear();
}

export async function deleteAllBenchNetns(): Promise<void> {
  for (const name of [...live]) await deleteBenchNetns(name);
}
