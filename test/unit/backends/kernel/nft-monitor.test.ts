import t from 'tap';
import { addonNftEvents, describeChanges, FakeNftEvents, isTamperWatchable, TamperWatch, type TamperReport } from '../../../../src/backends/kernel/nft-monitor.js';
import type { NativeAddon, NfnlMonitorEvent, NfnlMonitorOptions } from '../../../../src/native/index.js';
import { FakeClock, settle } from '../../../../src/sync/clock.js';
import type { Logger } from '../../../../src/util/log.js';

interface Lines {
  warn: string[];
  info: string[];
}

function recorder(): { log: Logger; lines: Lines } {
  const lines: Lines = { warn: [], info: [] };
  const fmt = (msg: string, f?: Record<string, unknown>) =>
    f ? `${msg} ${JSON.stringify(f, (_k, v: unknown) => (v instanceof Error ? v.message : v))}` : msg;
  return {
    lines,
    log: {
      info: (m, f) => lines.info.push(fmt(m, f)),
      v: (_l, m, f) => lines.info.push(fmt(m, f)),
      warn: (m, f) => lines.warn.push(fmt(m, f)),
      error: (m, f) => lines.warn.push(fmt(m, f)),
    },
  };
}

function setup(opts: { recognisable?: () => boolean; check?: () => Promise<boolean> } = {}) {
  const source = new FakeNftEvents();
  const clock = new FakeClock();
  const reports: TamperReport[] = [];
  const { log, lines } = recorder();
  const watch = new TamperWatch({
    source,
    tables: [
      { family: 'ip', name: 'ferry' },
      { family: 'ip6', name: 'ferry' },
    ],
    onTamper: (r) => reports.push(r),
    ownPathRecognisable: opts.recognisable ?? (() => true),
    ...(opts.check ? { check: opts.check } : {}),
    debounceMs: 50,
    log,
    timers: clock,
  });
  if (!watch.start()) throw new Error('the fake subscription did not start');
  return { source, clock, reports, lines, watch };
}

t.test('a foreign flush of a chain is one repair, named, after the debounce window', async (t) => {
  const { source, clock, reports, lines, watch } = setup();
  source.generation([{ op: 'delrule', name: 'services', count: 7 }], { procName: 'nft', procPid: 99 });
  t.equal(reports.length, 0, 'not before the window');
  await clock.advance(49);
  t.equal(reports.length, 0);
  await clock.advance(1);
  t.equal(reports.length, 1);
  t.same(reports[0], { changes: ['ip ferry: 7 rules deleted in chain services'], by: ['nft (pid 99)'], transactions: 1, cause: 'notifications' });
  t.match(lines.warn.join('\n'), /changed by another program; repairing with a full sync .*7 rules deleted in chain services.*nft \(pid 99\)/);
  t.equal(watch.seen.repairs, 1);
});

t.test('element changes and table deletion read as the issue names them', async (t) => {
  t.same(describeChanges([{ op: 'delsetelem', family: 'ip', table: 'ferry', name: 'service-ips', count: 1 }]), ['ip ferry: element deleted from service-ips']);
  t.same(describeChanges([{ op: 'newsetelem', family: 'ip6', table: 'ferry', name: 'service-ips', count: 2 }]), ['ip6 ferry: 2 elements added to service-ips']);
  t.same(describeChanges([{ op: 'delrule', family: 'ip', table: 'ferry', name: 'services', count: 1 }]), ['ip ferry: rule deleted in chain services']);
  // Deleting a table notifies its chains and sets too; the log says only what happened.
  t.same(
    describeChanges(
      [
        { op: 'delset', family: 'ip', table: 'ferry', name: 'service-ips', count: 1 },
        { op: 'delchain', family: 'ip', table: 'ferry', name: 'services', count: 1 },
        { op: 'deltable', family: 'ip', table: 'ferry', name: 'ferry', count: 1 },
      ],
      3,
    ),
    ['ip ferry: table deleted', '3 more change(s)'],
  );
  t.same(describeChanges([{ op: 'newchain', family: 'ip', table: 'ferry', name: 'x', count: 1 }]), ['ip ferry: chain x added or changed']);
});

t.test("ferry's own transactions never count, however many", async (t) => {
  const { source, clock, reports, watch } = setup();
  for (let i = 0; i < 100; i++) source.generation([{ op: 'newsetelem', name: 'service-ips', count: 5000 }], { own: true, procName: 'node' });
  await clock.advance(10_000);
  t.equal(reports.length, 0);
  t.equal(watch.seen.own, 100);
});

t.test('other tables and other families of the same name are ignored', async (t) => {
  const { source, clock, reports, watch } = setup();
  source.generation([{ op: 'delrule', table: 'other', name: 'c' }]);
  source.generation([{ op: 'delrule', family: 'inet', table: 'ferry', name: 'c' }]);
  source.generation([{ op: 'delrule', family: 'bridge', table: 'ferry', name: 'c' }]);
  await clock.advance(1000);
  t.equal(reports.length, 0);
  t.equal(watch.seen.ignored, 3);
  // A mixed transaction reports only ferry's part.
  source.generation([
    { op: 'delrule', table: 'other', name: 'c' },
    { op: 'delsetelem', family: 'ip6', table: 'ferry', name: 'service-ips' },
  ]);
  await clock.advance(50);
  t.same(reports[0]?.changes, ['ip6 ferry: element deleted from service-ips']);
});

t.test('a burst of foreign transactions folds into one repair; a later one is another', async (t) => {
  const { source, clock, reports } = setup();
  source.generation([{ op: 'delsetelem', name: 'service-ips' }], { procPid: 1 });
  await clock.advance(10);
  source.generation([{ op: 'delsetelem', name: 'service-ips' }], { procPid: 1 });
  source.generation([{ op: 'newsetelem', name: 'service-ips' }], { procPid: 2, procName: 'evil' });
  // Own transactions in between change nothing.
  source.generation([{ op: 'newsetelem', name: 'service-ips' }], { own: true });
  await clock.advance(40);
  t.equal(reports.length, 1);
  t.same(reports[0]?.changes, ['ip ferry: element deleted from service-ips', 'ip ferry: element added to service-ips']);
  t.same(reports[0]?.by, ['nft (pid 1)', 'evil (pid 2)']);
  t.equal(reports[0]?.transactions, 3);
  source.generation([{ op: 'deltable', name: 'ferry' }]);
  await clock.advance(50);
  t.equal(reports.length, 2);
  t.same(reports[1]?.changes, ['ip ferry: table deleted']);
});

t.test('repairs that keep coming are spaced, never back to back', async (t) => {
  const { source, clock, reports, lines } = setup();
  for (let i = 0; i < 5; i++) {
    source.generation([{ op: 'delrule', name: 'services' }]);
    await clock.advance(50);
  }
  t.equal(reports.length, 5);
  source.generation([{ op: 'delrule', name: 'services' }]);
  await clock.advance(1000);
  t.equal(reports.length, 5, 'the sixth within 10 s waits');
  await clock.advance(4000);
  t.equal(reports.length, 6);
  t.match(lines.warn.join('\n'), /keeps being changed by others; spacing repairs/);
  // The sixth came at 250 ms, 0 ms after the fifth repair: due 5 s after it, 4,950 ms past its debounce.
  t.equal(reports[5]?.heldBackMs, 4950, 'the report says how long the guard held it back');
  t.ok(reports.slice(0, 5).every((r) => r.heldBackMs === undefined), 'the first five were not held back');
  t.match(lines.warn.join('\n'), /repairing with a full sync .*"heldBackMs":4950/, 'and so does the log line');
});

t.test('on the fallback apply path the watch stands aside (own changes would look foreign), warning once', async (t) => {
  let netlink = false;
  const { source, clock, reports, lines } = setup({ recognisable: () => netlink });
  source.generation([{ op: 'delrule', name: 'services' }]);
  source.generation([{ op: 'delrule', name: 'services' }]);
  await clock.advance(1000);
  t.equal(reports.length, 0);
  t.equal(lines.warn.filter((l) => /cannot tell ferry's own changes apart/.test(l)).length, 1);
  netlink = true;
  source.generation([{ op: 'delrule', name: 'services' }]);
  await clock.advance(50);
  t.equal(reports.length, 1);
});

t.test('lost notifications: during an own sync only the canary check decides; otherwise repair', async (t) => {
  let intact = true;
  let checks = 0;
  const { source, clock, reports } = setup({
    check: async () => {
      checks++;
      return intact;
    },
  });
  source.emit({ kind: 'overrun', ownRecent: true });
  await settle();
  await clock.advance(100);
  t.equal(checks, 1);
  t.equal(reports.length, 0, 'own flood, canary fine: nothing');
  intact = false;
  source.emit({ kind: 'overrun', ownRecent: true });
  await settle();
  await clock.advance(50);
  t.equal(reports.length, 1);
  t.equal(reports[0]?.cause, 'overrun');
  source.emit({ kind: 'overrun', ownRecent: false });
  await clock.advance(50);
  t.equal(reports.length, 2, 'a flood nobody at ferry caused: repair without asking');
  t.equal(checks, 2);
});

t.test('an unusable subscription warns and reports false; a failing socket ends the watch with a warning', async (t) => {
  const source = new FakeNftEvents();
  source.failWith = new Error('nfnlMonitor: socket(NETLINK_NETFILTER): Operation not permitted');
  const { log, lines } = recorder();
  const w = new TamperWatch({ source, tables: [{ family: 'ip', name: 'ferry' }], onTamper: () => t.fail('no repair'), ownPathRecognisable: () => true, log });
  t.equal(w.start(), false);
  t.match(lines.warn[0], /tamper watch unavailable.*Operation not permitted/);

  const s2 = setup();
  s2.source.emit({ kind: 'error', error: 'recv(nf_tables monitor): Bad file descriptor' });
  t.equal(s2.watch.running, false);
  t.match(s2.lines.warn.join('\n'), /tamper watch stopped: its socket failed/);
  // The addon's thread is gone, but only stop() closes its socket and leaves the group.
  t.equal(s2.source.stops, 1, 'the failed subscription is stopped, not just dropped');
  t.equal(s2.source.started, false);
  s2.watch.stop();
  t.equal(s2.source.stops, 1, 'and stopped once');
});

t.test('stop() ends the subscription and drops a pending repair', async (t) => {
  const { source, clock, reports, watch } = setup();
  source.generation([{ op: 'delrule', name: 'services' }]);
  watch.stop();
  t.equal(source.started, false);
  t.equal(source.stops, 1);
  await clock.advance(1000);
  t.equal(reports.length, 0);
  t.equal(clock.pendingTimers(), 0);
  source.generation([{ op: 'delrule', name: 'services' }]);
  await clock.advance(1000);
  t.equal(reports.length, 0);
  watch.stop();
  t.equal(source.stops, 1, 'idempotent');
});

t.test('addonNftEvents passes tables and the namespace path; absent without nfnlMonitor', async (t) => {
  t.equal(addonNftEvents(null, { tables: ['ferry'] }), undefined);
  const calls: NfnlMonitorOptions[] = [];
  let delivered: ((e: NfnlMonitorEvent) => void) | undefined;
  const addon = {
    abiVersion: 1,
    nfnlMonitor(opts: NfnlMonitorOptions, onEvent: (e: NfnlMonitorEvent) => void) {
      calls.push(opts);
      delivered = onEvent;
      return { stop: () => undefined };
    },
  } as unknown as NativeAddon;
  const src = addonNftEvents(addon, { tables: ['ferry'], netns: 'fyx1' });
  const got: NfnlMonitorEvent[] = [];
  src!.start((e) => got.push(e));
  t.same(calls, [{ tables: ['ferry'], netns: '/var/run/netns/fyx1' }]);
  delivered!({ kind: 'overrun', ownRecent: false });
  t.equal(got.length, 1);
  t.equal(addonNftEvents({ abiVersion: 1 } as unknown as NativeAddon, { tables: ['ferry'] }), undefined);
});

t.test('isTamperWatchable', async (t) => {
  t.equal(isTamperWatchable({ watchTamper: () => undefined }), true);
  t.equal(isTamperWatchable({ name: 'iptables' }), false);
  t.equal(isTamperWatchable(null), false);
});
