/**
 * The tamper watch against a real bin/ferry (nftables mode, netlink path) on one simulated node:
 * another program — the nft command run inside the node's namespace — flushes a chain, deletes
 * a map element, adds one, deletes the whole table; each time ferry puts its table back as it
 * was (compared as a canonical `nft -j list table`), says what changed in its log and counts one
 * repair in ferry_nftables_tamper_repairs_total. How long each repair took is printed (the
 * issue's figure), never asserted: the deadline is generous. A change to another table in the
 * same namespace triggers nothing, and ferry's own syncs (the first full one, a Service churn,
 * the repairs themselves) never count as tampering.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { scaledMs } from '../../../src/util/timescale.js';
import { runIn } from '../../../src/util/exec.js';
import { clusterIPOf, eventually, METRICS_PORT, NotYet, serviceDoc, withProxyCluster, type ProxyEnv } from '../lib/harness.js';

t.setTimeout(scaledMs(10 * 60_000));

const DEADLINE_MS = 5_000;

/** `nft -j list table` with what ferry does not control removed (handles, counter values), objects and elements sorted. */
async function canonical(ns: string, family: 'ip' | 'ip6'): Promise<string> {
  const r = await runIn(ns, ['nft', '-j', 'list', 'table', family, 'ferry'], { allowFailure: true });
  if (r.exitCode !== 0) return `<no table: ${r.stderr.trim()}>`;
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === 'handle' || k === 'packets' || k === 'bytes') continue;
        o[k] = k === 'elem' && Array.isArray(x) ? x.map(strip).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))) : strip(x);
      }
      return o;
    }
    return v;
  };
  const items = (JSON.parse(r.stdout) as { nftables: unknown[] }).nftables.filter((i) => !(i && typeof i === 'object' && 'metainfo' in i));
  // Objects in a stable order (a re-created table lists them in creation order), rules kept in
  // their chain's order (the sort is stable).
  const key = (i: unknown): string => {
    const [kind, body] = Object.entries(i as Record<string, Record<string, unknown>>)[0] ?? ['', {}];
    return kind === 'rule' ? `rule ${String(body['chain'])}` : `${kind} ${String(body['name'])}`;
  };
  return JSON.stringify(strip([...items].sort((a, b) => key(a).localeCompare(key(b)))));
}

/** The top-level objects (chains with their rules, sets with their elements) that differ, for failure messages. */
function difference(want: string, got: string): string {
  if (got.startsWith('<')) return got;
  const a = new Set((JSON.parse(want) as unknown[]).map((x) => JSON.stringify(x)));
  const b = new Set((JSON.parse(got) as unknown[]).map((x) => JSON.stringify(x)));
  const lines: string[] = [];
  for (const x of a) if (!b.has(x)) lines.push(`- ${x}`);
  for (const x of b) if (!a.has(x)) lines.push(`+ ${x}`);
  return lines.join('\n').slice(0, 6000);
}

async function repairs(ns: string): Promise<number> {
  const r = await runIn(ns, ['curl', '-s', '--max-time', '5', `http://127.0.0.1:${METRICS_PORT}/metrics`]);
  const m = /^ferry_nftables_tamper_repairs_total (\d+)$/m.exec(r.stdout);
  if (!m) throw new Error(`ferry_nftables_tamper_repairs_total missing from /metrics:\n${r.stdout.slice(0, 2000)}`);
  return Number(m[1]);
}

async function nft(ns: string, script: string): Promise<void> {
  await runIn(ns, ['nft', '-f', '-'], { input: script });
}

/** Polls (every 5 ms) until the table lists as `want`; returns the elapsed time since `since`. */
async function undoneAfter(ns: string, want: string, since: number, what: string): Promise<number> {
  let last = '';
  for (;;) {
    last = await canonical(ns, 'ip');
    if (last === want) return Date.now() - since;
    if (Date.now() - since > scaledMs(DEADLINE_MS)) throw new Error(`${what}: not undone within ${DEADLINE_MS} ms; differences:\n${difference(want, last)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Waits for the counter to reach `want`; returns it 1.5 s later (it must not move on: the repair itself is ferry's). */
async function settledRepairs(ns: string, want: number, what: string): Promise<number> {
  await eventually(
    async () => {
      const n = await repairs(ns);
      if (n !== want) throw new NotYet(`ferry_nftables_tamper_repairs_total ${n}, want ${want}`);
    },
    { what, timeoutMs: scaledMs(DEADLINE_MS), intervalMs: 50 },
  );
  await new Promise((r) => setTimeout(r, 1500));
  return repairs(ns);
}

t.test('nftables tamper watch: changes by another program are undone; own syncs and other tables count nothing', async (t) => {
  await withProxyCluster(t, { mode: 'nftables', nodes: 1, dualStack: false }, async (env: ProxyEnv) => {
    env.diagnoseOnFailure(t);
    const c = env.cluster;
    const node = c.nodes[0]!;
    const ns = node.netns;
    const logText = (): string => readFileSync(env.ferries[0]!.logFile, 'utf8');

    await Promise.all([c.addPod({ name: 'web-1', node: node.name, labels: { app: 'web' } }), c.addPod({ name: 'web-2', node: node.name, labels: { app: 'web' } })]);
    await env.apply([serviceDoc('web', { selector: { app: 'web' } })]);
    await env.barrier();

    await t.test("ferry's own syncs never count: first full sync, a Service churn", async (t) => {
      for (let round = 0; round < 3; round++) {
        await env.apply(Array.from({ length: 10 }, (_, i) => serviceDoc(`churn-${i}`, { selector: { app: 'web' } })));
        await env.barrier();
        await Promise.all(Array.from({ length: 10 }, (_, i) => env.deleteService(`churn-${i}`)));
        await env.barrier();
      }
      t.equal(await repairs(ns), 0, 'no repair after a churn of 30 Services (dozens of own transactions)');
      t.match(logText(), /watching nf_tables notifications for changes by others/, 'the watch is running');
      t.notMatch(logText(), /tamper watch unavailable/, 'the watch is running (netlink path)');
    });

    const web = await env.service('web');
    const ip = clusterIPOf(web, 4);
    const good = await canonical(ns, 'ip');
    t.match(good, new RegExp(ip.replace(/\./g, '\\.')), 'the Service is in service-ips');
    const measured: Record<string, number> = {};
    let expected = 0;

    const tamper = async (what: string, script: string, logPattern: RegExp): Promise<void> => {
      await t.test(what, async (t) => {
        const since = Date.now();
        await nft(ns, script);
        const ms = await undoneAfter(ns, good, since, what);
        measured[what] = ms;
        t.comment(`${what}: undone ${ms} ms after the nft command returned`);
        t.pass(`undone within the ${DEADLINE_MS} ms deadline`);
        expected++;
        t.equal(await settledRepairs(ns, expected, `one repair counted for ${what}`), expected, 'one repair counted, and no more after the repair (its own full sync)');
        t.match(logText(), logPattern, 'the log names what changed');
      });
    };

    await tamper('nft flush chain ip ferry services', 'flush chain ip ferry services\n', /changed by another program; repairing.*rules? deleted in chain services/);
    await tamper(
      'nft delete element from service-ips',
      `delete element ip ferry service-ips { ${ip} . tcp . 80 }\n`,
      /changed by another program; repairing.*element deleted from service-ips/,
    );
    await tamper(
      'nft add element to service-ips',
      // Another program's Service: a ClusterIP nobody allocated, sent to ferry's reject chain.
      `add element ip ferry service-ips { 10.96.255.254 . tcp . 80 : goto reject-chain }\n`,
      /changed by another program; repairing.*element added to service-ips/,
    );
    await tamper('nft delete table ip ferry', 'delete table ip ferry\n', /changed by another program; repairing.*ip ferry: table deleted/);

    await t.test('another table in the same namespace: nothing happens', async (t) => {
      const before = await repairs(ns);
      await nft(ns, 'add table ip other\nadd chain ip other c\nadd rule ip other c counter\nadd set ip other s { type ipv4_addr; }\nadd element ip other s { 10.1.2.3 }\n');
      await nft(ns, 'flush chain ip other c\ndelete element ip other s { 10.1.2.3 }\n');
      await nft(ns, 'delete table ip other\n');
      // An inet table of the same name is not ferry's either.
      await nft(ns, 'add table inet ferry\nadd chain inet ferry services\ndelete table inet ferry\n');
      await new Promise((r) => setTimeout(r, 1500));
      t.equal(await repairs(ns), before, 'the counter stays');
      const now = await canonical(ns, 'ip');
      t.equal(now, good, "ferry's table is as it was", { diff: difference(good, now) });
    });

    t.comment(`repair times (nft command returned -> table listed as before): ${JSON.stringify(measured)}`);
  });
});
