// `ferry demo`, the README's first command, through the real CLI in every mode the suite runs
// (FERRY_E2E_MODES): a three-node simulated cluster, one ferry per node, every probe answered,
// `ferry status` and `ferry trace` working on the client pod's node (with --kernel in the rule
// modes, where the kernel must agree with the prediction), exit status 0 — and nothing left
// behind (namespaces, interfaces, cgroups, pins: what the suite's leak check looks for).
import t from 'tap';
import { listLeftovers } from '../../../src/sim/cluster/cleanup.js';
import { run } from '../../../src/util/exec.js';
import { modes, type ProxyMode } from '../lib/modes.js';
import { childEnv, FERRY_BIN, SCRUB } from './proc.js';

/** Probes the demo makes: the pod's ClusterIP, each node's NodePort and the externalIP from outside; ebpf adds three socket-level ones. */
function expectedProbes(mode: ProxyMode, nodes: number): number {
  return 1 + nodes + 1 + (mode === 'ebpf' ? 3 : 0);
}

for (const mode of modes()) {
  t.test(`ferry demo --proxy-mode ${mode}`, async (t) => {
    const before = new Set(await listLeftovers('fy'));
    const r = await run(['env', ...SCRUB, process.execPath, FERRY_BIN, 'demo', '--proxy-mode', mode], { allowFailure: true, env: childEnv(), timeoutMs: 240_000 });
    const out = r.stdout;
    t.equal(r.exitCode, 0, `exit 0 (stderr: ${r.stderr.trim().split('\n').slice(-5).join(' | ')})`);
    t.match(out, /All checks passed\. Tearing down/, 'the demo says every check passed');
    t.notMatch(out, /FAILED|failed \(exit/, 'no check failed');
    const answered = out.split('\n').filter((l) => / answered by web-\d, which saw the client as /.test(l));
    t.equal(answered.length, expectedProbes(mode, 3), 'every probe answered by a web pod');
    t.match(out, new RegExp(`\\$ ferry status +# in node-\\d`), 'ferry status ran on the client pod\'s node');
    t.match(out, /syncs +\d+ \(0 failed\)/, 'status shows syncs and no failure');
    t.match(out, new RegExp(`trace \\S+ → \\S+:80/TCP on node node-\\d \\(${mode} mode\\)`), 'ferry trace explained the pod\'s flow');
    if (mode === 'nftables' || mode === 'iptables') t.match(out, /the kernel agrees with the prediction/, 'trace --kernel: the kernel agrees');
    const left = (await listLeftovers('fy')).filter((x) => !before.has(x));
    t.same(left, [], 'nothing left behind');
  });
}
