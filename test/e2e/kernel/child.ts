/**
 * Child process for the kernel e2e tests, run as `ip netns exec NS node child.js` with a JSON command on stdin, so
 * that the addon acts on the test's namespace. Prints one JSON reply on stdout. Not a test file.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { loadNative, nativeLoadError, type ConntrackFilter, type ConntrackEntry } from '../../../src/native/index.js';
import { addonNft, execNft, NftError, type NftRunner, type FailingLine } from '../../../src/backends/kernel/nft.js';
import { addonConntrack, execConntrack, type Conntrack } from '../../../src/backends/kernel/conntrack.js';

export type ChildCommand =
  | { op: 'nftApply'; via: 'addon' | 'exec'; script: string }
  | { op: 'nftList'; via: 'addon' | 'exec'; cmd: string; json: boolean; handles: boolean }
  /** Applies every script at once (concurrently) through the addon. */
  | { op: 'nftApplyConcurrent'; scripts: string[] }
  | { op: 'nftDryRun'; script: string }
  /** Applies the steps in order in ONE process (one long-lived addon context); never throws. */
  | { op: 'nftSequence'; steps: { via: 'addon' | 'exec'; script: string }[] }
  | { op: 'ctDelete'; via: 'addon' | 'exec'; filters: ConntrackFilter[] }
  | { op: 'ctList'; filter: ConntrackFilter }
  /**
   * Starts a UDP echo server on each `server`, sends `flows` datagrams (each from a fresh
   * socket, so each is its own conntrack entry) to `to`, waits for every echo.
   */
  | { op: 'udpFlows'; flows: { to: string; port: number; server: string; serverPort: number; count: number }[] };

export type ChildReply =
  | { kind: 'ok' }
  | { kind: 'text'; text: string }
  | { kind: 'count'; count: number }
  | { kind: 'entries'; entries: ConntrackEntry[] }
  | { kind: 'ports'; ports: number[] }
  | { kind: 'steps'; errors: (string | null)[] }
  | { kind: 'nftError'; via: 'netlink' | 'addon' | 'exec'; stderr: string; failingLine: FailingLine | null; message: string }
  | { kind: 'error'; name: string; message: string };

function addonOrDie() {
  const addon = loadNative();
  if (!addon) throw new Error(`native addon not loaded: ${nativeLoadError()?.message ?? 'unknown'}`);
  return addon;
}

function nft(via: 'addon' | 'exec'): NftRunner {
  return via === 'addon' ? addonNft(addonOrDie()) : execNft();
}

function conntrack(via: 'addon' | 'exec'): Conntrack {
  return via === 'addon' ? addonConntrack(addonOrDie()) : execConntrack();
}

/** A hang guard, not a timing assertion: a lost datagram must fail the test, not stall it. */
async function withDeadline<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), 10_000);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const family = (addr: string) => (addr.includes(':') ? 'udp6' : 'udp4');

async function udpFlows(flows: Extract<ChildCommand, { op: 'udpFlows' }>['flows']): Promise<number[]> {
  const servers = new Map<string, dgram.Socket>();
  const ports: number[] = [];
  try {
    for (const f of flows) {
      const key = `${f.server}|${f.serverPort}`;
      if (servers.has(key)) continue;
      const s = dgram.createSocket(family(f.server));
      s.on('message', (msg, rinfo) => s.send(msg, rinfo.port, rinfo.address));
      s.bind(f.serverPort, f.server);
      await once(s, 'listening');
      servers.set(key, s);
    }
    for (const f of flows) {
      for (let i = 0; i < f.count; i++) {
        const c = dgram.createSocket(family(f.to));
        try {
          c.bind(0);
          await once(c, 'listening');
          const reply = once(c, 'message');
          c.send(`flow ${i}`, f.port, f.to);
          await withDeadline(reply, `no echo from ${f.to}:${f.port} (server ${f.server}:${f.serverPort})`);
          ports.push(c.address().port);
        } finally {
          c.close();
        }
      }
    }
  } finally {
    for (const s of servers.values()) s.close();
  }
  return ports;
}

async function handle(cmd: ChildCommand): Promise<ChildReply> {
  switch (cmd.op) {
    case 'nftApply':
      await nft(cmd.via).apply(cmd.script);
      return { kind: 'ok' };
    case 'nftList':
      return { kind: 'text', text: await nft(cmd.via).list(cmd.cmd, { json: cmd.json, handles: cmd.handles }) };
    case 'nftApplyConcurrent': {
      const runner = addonNft(addonOrDie());
      await Promise.all(cmd.scripts.map((s) => runner.apply(s)));
      return { kind: 'ok' };
    }
    case 'nftDryRun': {
      const r = await addonOrDie().nftRun(cmd.script, { dryRun: true });
      if (!r.ok) return { kind: 'nftError', via: 'addon', stderr: r.error, failingLine: null, message: r.error };
      return { kind: 'ok' };
    }
    case 'nftSequence': {
      const errors: (string | null)[] = [];
      for (const step of cmd.steps) {
        errors.push(await nft(step.via).apply(step.script).then(() => null, (e: unknown) => (e instanceof Error ? e.message : String(e))));
      }
      return { kind: 'steps', errors };
    }
    case 'ctDelete':
      return { kind: 'count', count: await conntrack(cmd.via).delete(cmd.filters) };
    case 'ctList':
      return { kind: 'entries', entries: await addonOrDie().conntrackList(cmd.filter) };
    case 'udpFlows':
      return { kind: 'ports', ports: await udpFlows(cmd.flows) };
  }
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const cmd = JSON.parse(Buffer.concat(chunks).toString()) as ChildCommand;
  let reply: ChildReply;
  try {
    reply = await handle(cmd);
  } catch (e) {
    if (e instanceof NftError) {
      reply = { kind: 'nftError', via: e.via, stderr: e.stderr, failingLine: e.failingLine ?? null, message: e.message };
    } else if (e instanceof Error) {
      reply = { kind: 'error', name: e.name, message: e.message };
    } else {
      reply = { kind: 'error', name: 'unknown', message: String(e) };
    }
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}

await main();
