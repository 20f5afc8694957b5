// Finding 4 of issue #15 against a real ferry process: the API server is down for 30 s and comes
// back on the same port with its store intact; a change made at its return becomes live. How long
// that took is printed (the figure for the issue), never asserted: the deadline is generous.
import t from 'tap';
import type { ApiCore } from '../../../src/sim/apiserver/index.js';
import { METRICS_PORT, type ProxyMode } from '../lib/harness.js';
import { eventually, NotYet } from '../lib/eventually.js';
import { withOneNode } from './node.js';

const MODE = (process.env['FERRY_E2E_MODE'] ?? 'iptables') as ProxyMode;
const DOWN_MS = Number(process.env['FERRY_E2E_API_DOWN_MS'] ?? 30_000);

function create(core: ApiCore, name: string): string {
  const o = core.registry.create(core.services.def, 'default', {
    metadata: { name },
    spec: { selector: { app: 'echo-1' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] },
  }) as { spec?: { clusterIP?: string } };
  return o.spec!.clusterIP!;
}

t.test(`${MODE}: after a ${DOWN_MS / 1000} s API server outage, a change made at its return becomes live`, async (t) => {
  await withOneNode(t, { mode: MODE, pods: 1 }, async (env) => {
    env.startFerry();
    await env.waitHealthy();
    const before = create(env.core, 'before');
    await env.waitReachable(before, 80, 'a Service created before the outage answers');

    await env.apiDown();
    const downAt = Date.now();
    await eventually(
      async () => {
        if (!/watch for \S+ failed/.test(env.log())) throw new NotYet('no failure logged yet');
      },
      { what: 'ferry notices the API server is gone', timeoutMs: 20_000 },
    );
    await new Promise((r) => setTimeout(r, Math.max(0, DOWN_MS - (Date.now() - downAt))));
    t.match(env.log(), /watch for \S+ failed/, 'ferry noticed the outage');

    await env.apiUp();
    const upAt = Date.now();
    const after = create(env.core, 'after');
    await env.core.controller.settled();
    // Planned and applied: /debug/plan shows the last table the backend accepted (cheap to poll).
    await eventually(
      async () => {
        const r = await env.localHttp(METRICS_PORT, '/debug/plan');
        if (!r.body.includes('default/after:')) throw new NotYet(`not planned yet (HTTP ${r.code})`);
      },
      { what: 'the Service created at the return is in the applied plan', timeoutMs: 60_000, intervalMs: 20 },
    );
    const plannedMs = Date.now() - upAt;
    await env.waitReachable(after, 80, 'the Service created at the return answers', 60_000);
    const liveMs = Date.now() - upAt;
    t.pass(`applied ${plannedMs} ms and answering ${liveMs} ms after the API server returned`);
    t.comment(`FIGURE: API server down ${Math.round((upAt - downAt) / 1000)} s; change applied ${plannedMs} ms, answering ${liveMs} ms (probe process start included) after its return (${MODE})`);
    t.match(env.log(), /watch for \S+ recovered after \d+ attempts/, 'recovery logged once per watch');
    const retries = env.log().split('\n').filter((l) => /watch for services still failing/.test(l)).length;
    t.comment(`services watch retried ${retries} times during the outage (≈ ${(DOWN_MS / Math.max(retries, 1)).toFixed(0)} ms apart: capped backoff)`);
  });
});
