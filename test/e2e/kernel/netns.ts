/**
 * Test helpers for the kernel layer: a fresh network namespace per test (removed in teardown,
 * also on failure) and a child process inside it that drives the addon or the exec fallback.
 * The addon acts on the calling process's namespace, hence the child (`ip netns exec NS node child.js`, command as JSON on stdin).
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { run, runIn } from '../../../src/util/exec.js';
import { NftError, type NftRunner, type NftListOptions, type FailingLine } from '../../../src/backends/kernel/nft.js';
import type { ConntrackFilter, ConntrackEntry } from '../../../src/native/index.js';
import type { ChildCommand, ChildReply } from './child.js';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Creates `fyt<random>` with loopback up; deleted when the test ends. */
export async function freshNetns(t: Teardown): Promise<string> {
  const name = `fyt${randomBytes(4).toString('hex')}`;
  await run(['ip', 'netns', 'add', name]);
  t.teardown(() => run(['ip', 'netns', 'del', name], { allowFailure: true }));
  await runIn(name, ['ip', 'link', 'set', 'lo', 'up']);
  return name;
}

const childPath = fileURLToPath(new URL('./child.js', import.meta.url));

/** Runs one command in a child node process inside `ns` and returns its JSON reply. */
export async function inChild(ns: string, cmd: ChildCommand): Promise<ChildReply> {
  // The command goes on stdin: big scripts exceed the argv limit.
  const r = await runIn(ns, [process.execPath, childPath], { allowFailure: true, input: JSON.stringify(cmd) });
  if (r.exitCode !== 0) throw new Error(`child ${cmd.op} in ${ns} exited ${r.exitCode}: ${r.stderr.trim()}`);
  const reply: unknown = JSON.parse(r.stdout);
  return reply as ChildReply;
}

function fail(reply: ChildReply): never {
  if (reply.kind === 'nftError') {
    throw new NftError(reply.via, reply.stderr, reply.failingLine ?? undefined);
  }
  if (reply.kind === 'error') throw new Error(`${reply.name}: ${reply.message}`);
  throw new Error(`unexpected child reply ${JSON.stringify(reply)}`);
}

/** An NftRunner whose calls run in a child inside `ns`, through the addon or the nft command. */
export function childNft(ns: string, via: 'addon' | 'exec'): NftRunner {
  return {
    via,
    async apply(script) {
      const r = await inChild(ns, { op: 'nftApply', via, script });
      if (r.kind !== 'ok') fail(r);
    },
    async list(cmd, opts: NftListOptions = {}) {
      const r = await inChild(ns, { op: 'nftList', via, cmd, json: opts.json === true, handles: opts.handles === true });
      if (r.kind !== 'text') fail(r);
      return r.text;
    },
  };
}

/** One delete call in a child in `ns`: a filter, or several (one table read with the addon). */
export async function childConntrackDelete(ns: string, via: 'addon' | 'exec', filter: ConntrackFilter | ConntrackFilter[]): Promise<number> {
  const r = await inChild(ns, { op: 'ctDelete', via, filters: Array.isArray(filter) ? filter : [filter] });
  if (r.kind !== 'count') fail(r);
  return r.count;
}

export async function childConntrackList(ns: string, filter: ConntrackFilter): Promise<ConntrackEntry[]> {
  const r = await inChild(ns, { op: 'ctList', filter });
  if (r.kind !== 'entries') fail(r);
  return r.entries;
}

export type { FailingLine };
