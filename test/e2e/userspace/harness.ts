/**
 * The userspace e2e test bed: three fresh namespaces `fyt<rand>` (a "node" running ferry, an
 * outside client joined to it by a veth on 192.0.2.0/24, and a "pods" namespace behind the node
 * on 198.18.0.0/24 holding the endpoints), plus agents (agent.ts) started inside them. Everything
 * is removed in teardown, also on failure. Not a test file; also used by scripts/userspace-bench.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runIn } from '../../../src/util/exec.js';
import { freshNetns, type Teardown } from '../kernel/netns.js';
import type { AgentRequest } from './agent.js';

const agentPath = fileURLToPath(new URL('./agent.js', import.meta.url));

export class AgentError extends Error {
  constructor(
    readonly ns: string,
    readonly op: string,
    message: string,
  ) {
    super(`agent in ${ns}: ${op}: ${message}`);
    this.name = 'AgentError';
  }
}

/** A helper process inside `ns`, driven over JSON lines. */
export class Agent {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { op: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly stderr: string[] = [];
  private exited = false;

  constructor(
    readonly ns: string,
    readonly name: string,
  ) {
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, agentPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = createInterface({ input: this.child.stdout! });
    out.on('line', (line) => {
      const msg = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: string };
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(new AgentError(ns, p.op, msg.error ?? 'failed'));
    });
    this.child.stderr!.on('data', (b: Buffer) => {
      this.stderr.push(b.toString());
      if (process.env.FERRY_TEST_VERBOSE) process.stderr.write(`[${name}] ${b.toString()}`);
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      for (const p of this.pending.values()) {
        p.reject(new AgentError(ns, p.op, `agent exited (${code}): ${this.stderr.join('').slice(-2000)}`));
      }
      this.pending.clear();
    });
  }

  static start(t: Teardown, ns: string, name: string): Agent {
    const a = new Agent(ns, name);
    t.teardown(() => a.stop());
    return a;
  }

  call<T = unknown>(req: AgentRequest): Promise<T> {
    if (this.exited) return Promise.reject(new AgentError(this.ns, req.op, `agent exited: ${this.stderr.join('').slice(-2000)}`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { op: req.op, resolve: (v) => resolve(v as T), reject });
      this.child.stdin!.write(JSON.stringify({ id, req }) + '\n');
    });
  }

  /** Everything the agent wrote to stderr (ferry's log lines). */
  log(): string {
    return this.stderr.join('');
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  }
}

export interface Topology {
  readonly node: string;
  readonly client: string;
  readonly pods: string;
  /** The node's address facing the client. */
  readonly nodeIP: string;
  readonly clientIP: string;
  /** The node's address facing the pods. */
  readonly nodePodSideIP: string;
  readonly podIPs: readonly string[];
  /** IPv6: the node's client-facing address and the one pod address. */
  readonly nodeIP6: string;
  readonly podIP6: string;
}

export async function buildTopology(t: Teardown, podCount = 3): Promise<Topology> {
  const node = await freshNetns(t);
  const client = await freshNetns(t);
  const pods = await freshNetns(t);
  const podIPs = Array.from({ length: podCount }, (_, i) => `198.18.0.${11 + i}`);
  await runIn(node, ['ip', 'link', 'add', 'c0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', client]);
  await runIn(node, ['ip', 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pods]);
  await runIn(node, ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'c0']);
  await runIn(node, ['ip', 'addr', 'add', '198.18.0.1/24', 'dev', 'p0']);
  await runIn(node, ['ip', 'link', 'set', 'c0', 'up']);
  await runIn(node, ['ip', 'link', 'set', 'p0', 'up']);
  await runIn(client, ['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0']);
  await runIn(client, ['ip', 'link', 'set', 'eth0', 'up']);
  await runIn(client, ['ip', 'route', 'add', 'default', 'via', '192.0.2.1']);
  for (const ip of podIPs) await runIn(pods, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  // IPv6 alongside (nodad: usable at once).
  await runIn(node, ['ip', 'addr', 'add', '2001:db8:2::1/64', 'dev', 'c0', 'nodad']);
  await runIn(node, ['ip', 'addr', 'add', '2001:db8:18::1/64', 'dev', 'p0', 'nodad']);
  await runIn(client, ['ip', 'addr', 'add', '2001:db8:2::2/64', 'dev', 'eth0', 'nodad']);
  await runIn(client, ['ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:2::1']);
  await runIn(pods, ['ip', 'addr', 'add', '2001:db8:18::11/64', 'dev', 'eth0', 'nodad']);
  await runIn(pods, ['ip', 'link', 'set', 'eth0', 'up']);
  await runIn(pods, ['ip', 'route', 'add', 'default', 'via', '198.18.0.1']);
  await runIn(pods, ['ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:18::1']);
  return { node, client, pods, nodeIP: '192.0.2.1', clientIP: '192.0.2.2', nodePodSideIP: '198.18.0.1', podIPs, nodeIP6: '2001:db8:2::1', podIP6: '2001:db8:18::11' };
}

/** Runs teardown functions in reverse order (for scripts outside tap). */
export class ScriptTeardown implements Teardown {
  private readonly fns: (() => unknown)[] = [];
  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    for (const fn of this.fns.reverse()) {
      try {
        await fn();
      } catch {
        /* best effort */
      }
    }
  }
}
