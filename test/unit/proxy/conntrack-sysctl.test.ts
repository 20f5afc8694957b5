// The node settings ferry makes at start (conntrack sysctls, oom_score_adj), decided against an
// in-memory /proc and /sys: what is written, what is left alone, and that failures are reported
// without throwing.
import t from 'tap';
import {
  HASHSIZE_PATH,
  OOM_SCORE_ADJ_PATH,
  SYSCTL_DIR,
  applyConntrack,
  applyOomScoreAdj,
  conntrackMax,
  type ProcFs,
} from '../../../src/proxy/conntrack-sysctl.js';
import { checkDetectLocal, detectLocalSpec, prepareNode } from '../../../src/proxy/startup.js';
import { resolveConfig } from '../../../src/config/resolve.js';
import type { ConntrackConfig } from '../../../src/config/types.js';
import { setLogSink } from '../../../src/util/log.js';

const S = (name: string) => `${SYSCTL_DIR}/${name}`;

class FakeFs implements ProcFs {
  readonly files = new Map<string, string>();
  readonly writes: [string, string][] = [];
  readonly readOnly = new Set<string>();
  constructor(init: Record<string, number>) {
    for (const [k, v] of Object.entries(init)) this.files.set(k, `${v}\n`);
  }
  async read(path: string): Promise<string> {
    const v = this.files.get(path);
    if (v === undefined) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });
    return v;
  }
  async write(path: string, value: string): Promise<void> {
    if (this.readOnly.has(path) || !this.files.has(path)) {
      throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' });
    }
    this.writes.push([path, value.trim()]);
    this.files.set(path, value);
  }
}

/** A kernel with its usual defaults. */
function kernel(): FakeFs {
  return new FakeFs({
    [S('nf_conntrack_max')]: 65536,
    [HASHSIZE_PATH]: 16384,
    [S('nf_conntrack_tcp_timeout_established')]: 432000,
    [S('nf_conntrack_tcp_timeout_close_wait')]: 60,
    [S('nf_conntrack_tcp_be_liberal')]: 0,
    [S('nf_conntrack_udp_timeout')]: 30,
    [S('nf_conntrack_udp_timeout_stream')]: 120,
    [OOM_SCORE_ADJ_PATH]: 0,
  });
}

const KUBE_PROXY: ConntrackConfig = {
  maxPerCore: 32768,
  min: 131072,
  tcpEstablishedTimeoutMs: 86_400_000,
  tcpCloseWaitTimeoutMs: 3_600_000,
  tcpBeLiberal: false,
  udpTimeoutMs: 0,
  udpStreamTimeoutMs: 0,
};
const LEAVE_ALONE: ConntrackConfig = { maxPerCore: 0, min: 0, tcpEstablishedTimeoutMs: 0, tcpCloseWaitTimeoutMs: 0, tcpBeLiberal: false, udpTimeoutMs: 0, udpStreamTimeoutMs: 0 };

t.test('nf_conntrack_max is max(maxPerCore × CPUs, min); maxPerCore 0 leaves it alone', async (t) => {
  t.equal(conntrackMax(32768, 131072, 2), 131072, 'min wins on a small machine');
  t.equal(conntrackMax(32768, 131072, 16), 524288, 'per-core wins on a large one');
  t.equal(conntrackMax(0, 131072, 16), 0, 'maxPerCore 0 also ignores min');
});

t.test("kube-proxy's defaults on a fresh kernel", async (t) => {
  const fs = kernel();
  const out = await applyConntrack(KUBE_PROXY, { fs, cpus: 8 });
  t.same(fs.writes, [
    [S('nf_conntrack_max'), '262144'],
    [HASHSIZE_PATH, '65536'],
    [S('nf_conntrack_tcp_timeout_established'), '86400'],
    [S('nf_conntrack_tcp_timeout_close_wait'), '3600'],
  ]);
  t.ok(out.every((o) => o.result === 'set'), 'each reported as set');
  t.same(out.map((o) => o.before), [65536, 16384, 432000, 60], 'with the value it replaced');
});

t.test('nf_conntrack_max is only ever raised; hashsize only grown', async (t) => {
  const fs = kernel();
  fs.files.set(S('nf_conntrack_max'), '1048576\n');
  let out = await applyConntrack({ ...LEAVE_ALONE, maxPerCore: 32768, min: 131072 }, { fs, cpus: 8 });
  t.same(fs.writes, [], 'a higher max stays; hashsize is not touched');
  t.equal(out[0]?.result, 'unchanged');
  const fs2 = kernel();
  fs2.files.set(HASHSIZE_PATH, '1000000\n');
  out = await applyConntrack({ ...LEAVE_ALONE, maxPerCore: 32768, min: 131072 }, { fs: fs2, cpus: 8 });
  t.same(fs2.writes, [[S('nf_conntrack_max'), '262144']], 'a larger hash table stays');
});

t.test('a max that cannot be written (non-init netns, read-only /proc/sys) never touches the host-global hashsize', async (t) => {
  const fs = kernel();
  fs.readOnly.add(S('nf_conntrack_max'));
  const out = await applyConntrack(KUBE_PROXY, { fs, cpus: 8 });
  t.equal(out[0]?.result, 'failed');
  t.match(out[0]?.error, /EACCES/);
  t.notOk(fs.writes.some(([p]) => p === HASHSIZE_PATH), 'hashsize untouched');
  t.same(
    fs.writes.map(([p]) => p),
    [S('nf_conntrack_tcp_timeout_established'), S('nf_conntrack_tcp_timeout_close_wait')],
    'the per-netns timeouts are still set',
  );
});

t.test('zero timeouts are left alone; liberal only switched on; values equal to the wanted are not rewritten', async (t) => {
  const fs = kernel();
  await applyConntrack(LEAVE_ALONE, { fs, cpus: 4 });
  t.same(fs.writes, [], 'all zero: nothing written');
  await applyConntrack({ ...LEAVE_ALONE, tcpBeLiberal: true, udpTimeoutMs: 30_000, udpStreamTimeoutMs: 300_000 }, { fs, cpus: 4 });
  t.same(fs.writes, [
    [S('nf_conntrack_udp_timeout_stream'), '300'],
    [S('nf_conntrack_tcp_be_liberal'), '1'],
  ], 'udp_timeout already 30: not rewritten');
});

t.test('a missing conntrack module is a failure per setting, not an exception', async (t) => {
  const fs = new FakeFs({});
  const out = await applyConntrack(KUBE_PROXY, { fs, cpus: 2 });
  t.equal(out.length, 3, 'max, established, close_wait tried');
  t.ok(out.every((o) => o.result === 'failed' && /ENOENT/.test(o.error ?? '')));
});

t.test('oom_score_adj', async (t) => {
  const fs = kernel();
  t.equal((await applyOomScoreAdj(-999, fs)).result, 'set');
  t.equal(fs.files.get(OOM_SCORE_ADJ_PATH), '-999\n');
  t.equal((await applyOomScoreAdj(-999, fs)).result, 'unchanged');
  fs.readOnly.add(OOM_SCORE_ADJ_PATH);
  t.equal((await applyOomScoreAdj(-500, fs)).result, 'failed');
});

const config = (flags: Record<string, string | boolean>) => resolveConfig({ flags: new Map(Object.entries(flags)), hostname: 'n' });

t.test('prepareNode: logs ignored settings once, applies the settings, skips them in --dry-run and oom in --init-only', async (t) => {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  t.teardown(() => setLogSink((l) => process.stderr.write(l + '\n')));
  let fs = kernel();
  fs.readOnly.add(S('nf_conntrack_max'));
  const out = await prepareNode(config({ 'kube-api-qps': '50', 'feature-gates': 'A=true' }), { fs, cpus: 8 });
  const ignoredLines = lines.filter((l) => l.includes('no effect in ferry'));
  t.equal(ignoredLines.length, 1, 'one line');
  t.match(ignoredLines[0], /--kube-api-qps \(ferry only lists and watches/);
  t.match(ignoredLines[0], /--feature-gates \(ferry implements the GA behaviour/);
  t.ok(lines.some((l) => /cannot set conntrack nf_conntrack_max; continuing without it .*EACCES/.test(l)), 'a failure is one clear line');
  t.ok(lines.some((l) => /set conntrack nf_conntrack_tcp_timeout_established/.test(l)));
  t.equal(out.at(-1)?.path, OOM_SCORE_ADJ_PATH);
  t.equal(fs.files.get(OOM_SCORE_ADJ_PATH), '-999\n');

  fs = kernel();
  t.same(await prepareNode(config({ 'dry-run': true }), { fs, cpus: 8 }), []);
  t.same(fs.writes, [], '--dry-run touches nothing');

  fs = kernel();
  await prepareNode(config({ 'init-only': true }), { fs, cpus: 8 });
  t.notOk(fs.writes.some(([p]) => p === OOM_SCORE_ADJ_PATH), '--init-only leaves oom alone');
  t.ok(fs.writes.some(([p]) => p === S('nf_conntrack_max')));
});

t.test('interface-based detect-local modes: every mode matches the interface', async (t) => {
  for (const mode of ['nftables', 'iptables', 'userspace']) {
    t.doesNotThrow(() => checkDetectLocal(config({ 'proxy-mode': mode, 'detect-local-mode': 'BridgeInterface', 'pod-bridge-interface': 'cbr0' })), mode);
    t.doesNotThrow(() => checkDetectLocal(config({ 'proxy-mode': mode, 'detect-local-mode': 'InterfaceNamePrefix', 'pod-interface-name-prefix': 'veth' })), mode);
  }
  t.doesNotThrow(() =>
    checkDetectLocal(config({ 'proxy-mode': 'nftables', 'proxy-mode-fallback': 'userspace', 'detect-local-mode': 'InterfaceNamePrefix', 'pod-interface-name-prefix': 'veth' })),
  );
  t.doesNotThrow(() => checkDetectLocal(config({ 'detect-local-mode': 'NodeCIDR' })));
  t.doesNotThrow(() => checkDetectLocal(config({ 'detect-local-mode': 'BridgeInterface', 'pod-bridge-interface': 'cbr0', 'dry-run': true })), 'dry-run shows the plan');
  t.same(detectLocalSpec({ mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' }), { kind: 'interfaceNamePrefix', prefix: 'veth' });
  t.same(detectLocalSpec({ mode: 'BridgeInterface', bridgeInterface: 'cbr0' }), { kind: 'bridgeInterface', name: 'cbr0' });
  t.same(detectLocalSpec({ mode: 'NodeCIDR' }), { kind: 'nodeCIDR' });
});
