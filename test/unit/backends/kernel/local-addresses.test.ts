/**
 * LocalAddressWatch: the host's addresses read once and again only when notified, onChange only
 * when the set differs, a failed listing keeping the last good one, and the fallback to listing
 * at every call when the subscription cannot be made or fails. And the addon's routeWatch in a
 * network namespace of the test's own: an address added or removed there is reported.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { addonRouteWatch, LocalAddressWatch, type RouteWatchSource } from '../../../../src/backends/kernel/local-addresses.js';
import { defaultNativePath, loadNative } from '../../../../src/native/index.js';
import type { Logger } from '../../../../src/util/log.js';

function quiet(lines: string[]): Logger {
  const put = (msg: string) => lines.push(msg);
  return { info: put, warn: put, error: put, v: (_l: number, msg: string) => put(msg) } as Logger;
}

/** A subscription the test fires by hand. */
function fakeWatch(): { source: RouteWatchSource; fire(error?: string): void; closed(): boolean } {
  let cb: ((error?: string) => void) | undefined;
  let closed = false;
  return {
    source: (onChange) => {
      cb = onChange;
      return { close: () => (closed = true) };
    },
    fire: (error) => cb?.(error),
    closed: () => closed,
  };
}

t.test('read once, re-read when notified, onChange only when the set differs', async (t) => {
  let host = ['198.18.0.10', '127.0.0.1'];
  let lists = 0;
  const seen: (readonly string[])[] = [];
  const w = fakeWatch();
  const lines: string[] = [];
  const a = new LocalAddressWatch({ watch: w.source, list: () => (lists++, [...host]), onChange: (x) => seen.push(x), log: quiet(lines) });
  t.ok(a.watching());
  t.same(a.current(), ['127.0.0.1', '198.18.0.10'], 'sorted');
  a.current();
  t.equal(lists, 1, 'current() does not list while watching');
  w.fire();
  t.same(seen, [], 'a notification that changes nothing (a link flap) calls nobody');
  host = ['198.18.0.10', '127.0.0.1', '198.18.0.200', '198.18.0.200'];
  w.fire();
  t.same(seen, [['127.0.0.1', '198.18.0.10', '198.18.0.200']], 'an address gained: onChange with the new set, once each');
  t.same(a.current(), ['127.0.0.1', '198.18.0.10', '198.18.0.200']);
  a.close();
  t.ok(w.closed(), 'close() ends the subscription');
});

t.test('a listing that fails keeps the last good one', async (t) => {
  let fail = false;
  const w = fakeWatch();
  const lines: string[] = [];
  const seen: (readonly string[])[] = [];
  const a = new LocalAddressWatch({
    watch: w.source,
    list: () => {
      if (fail) throw new Error('getifaddrs: ENOMEM');
      return ['198.18.0.10'];
    },
    onChange: (x) => seen.push(x),
    log: quiet(lines),
  });
  fail = true;
  w.fire();
  t.same(a.current(), ['198.18.0.10'], 'NodePorts are not withdrawn because a listing failed');
  t.same(seen, []);
  t.match(lines.join('\n'), /cannot list the host addresses; keeping the last list/);
});

t.test('without a subscription, or after it failed, every current() lists', async (t) => {
  let host = ['198.18.0.10'];
  let lists = 0;
  const lines: string[] = [];
  const none = new LocalAddressWatch({ watch: undefined, list: () => (lists++, [...host]), onChange: () => t.fail('no onChange without a watch'), log: quiet(lines) });
  t.notOk(none.watching());
  host = ['198.18.0.11'];
  t.same(none.current(), ['198.18.0.11'], 'listed at the call');
  t.equal(lists, 2);

  const throwing = new LocalAddressWatch({
    watch: () => {
      throw new Error('socket: EMFILE');
    },
    list: () => ['198.18.0.10'],
    onChange: () => undefined,
    log: quiet(lines),
  });
  t.notOk(throwing.watching(), 'a subscription that cannot be made: listing instead');
  t.match(lines.join('\n'), /cannot watch the host for address changes/);

  const w = fakeWatch();
  host = ['198.18.0.10'];
  const seen: (readonly string[])[] = [];
  const failing = new LocalAddressWatch({ watch: w.source, list: () => [...host], onChange: (x) => seen.push(x), log: quiet(lines) });
  host = ['198.18.0.12'];
  w.fire('read address and link changes: EBADF');
  t.notOk(failing.watching(), 'a subscription that failed: listing from now on');
  t.same(seen, [['198.18.0.12']], 'what changed up to the failure is still reported');
  host = ['198.18.0.13'];
  t.same(failing.current(), ['198.18.0.13']);
  t.match(lines.join('\n'), /the watch on the host addresses failed/);
});

/**
 * Runs `body` in a child inside a network namespace of its own (the watch sees the namespace its
 * thread is in), with `a` the addon, `w` a routeWatch whose reports go to `events` ('change' or
 * 'error …'), `step(fn, ms)` and `execFileSync`; `body` ends with `report({...})`. What it reported,
 * or undefined after failing the test.
 */
async function watchInNamespace<R>(t: Test, prefix: string, body: string): Promise<R | undefined> {
  if (!addonRouteWatch(loadNative())) {
    t.fail('the native addon is not built or has no routeWatch (run scripts/setup)');
    return undefined;
  }
  const ns = `${prefix}${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const script = `
    const { execFileSync } = require('node:child_process');
    const a = require(${JSON.stringify(defaultNativePath())});
    const events = [];
    const w = a.routeWatch((e) => events.push(e === undefined ? 'change' : 'error ' + e));
    const step = (fn, ms) => new Promise((r) => setTimeout(() => { fn(); r(); }, ms));
    const report = (r) => console.log(JSON.stringify({ ...r, errors: events.filter((e) => e !== 'change') }));
    (async () => {
      ${body}
    })();
  `;
  try {
    const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { encoding: 'utf8', timeout: 30_000 });
    return JSON.parse(out.trim().split('\n').pop() ?? '{}') as R;
  } catch (e) {
    const x = e as { stderr?: string; stdout?: string; status?: number; signal?: string };
    t.fail(`the child failed (status ${x.status}, signal ${x.signal}): ${x.stderr ?? ''} ${x.stdout ?? ''}`);
    return undefined;
  }
}

t.test("the addon's routeWatch reports an address added and removed in a network namespace", async (t) => {
  const r = await watchInNamespace<{ afterUp: number; afterAdd: number; afterDel: number; afterClose: number; errors: string[] }>(
    t,
    'fyrw',
    `
      await step(() => execFileSync('ip', ['link', 'set', 'lo', 'up']), 50);
      await step(() => {}, 200);
      const afterUp = events.length;
      await step(() => execFileSync('ip', ['addr', 'add', '198.18.0.200/32', 'dev', 'lo']), 0);
      await step(() => {}, 200);
      const afterAdd = events.length;
      await step(() => execFileSync('ip', ['addr', 'del', '198.18.0.200/32', 'dev', 'lo']), 0);
      await step(() => {}, 200);
      const afterDel = events.length;
      w.close();
      w.close();
      await step(() => execFileSync('ip', ['addr', 'add', '198.18.0.201/32', 'dev', 'lo']), 0);
      await step(() => {}, 200);
      report({ afterUp, afterAdd, afterDel, afterClose: events.length });
    `,
  );
  if (!r) return;
  t.ok(r.afterUp >= 1, `a link coming up is reported (${r.afterUp})`);
  t.ok(r.afterAdd > r.afterUp, `an address added is reported (${r.afterUp} → ${r.afterAdd})`);
  t.ok(r.afterDel > r.afterAdd, `an address removed is reported (${r.afterAdd} → ${r.afterDel})`);
  t.equal(r.afterClose, r.afterDel, 'nothing after close()');
  t.same(r.errors, [], 'no errors');
});

t.test("the addon's routeWatch survives a flood that overruns its socket (lost notifications are a change)", async (t) => {
  // userspace mode puts every ClusterIP on its interface at once: thousands of RTM_NEWADDR while
  // the event loop is busy (here: the synchronous `ip -batch`) overrun the socket's buffer, and the
  // kernel marks it with ENOBUFS, which a poll sees as an error before any read.
  const r = await watchInNamespace<{ before: number; afterFlood: number; afterOne: number; errors: string[] }>(
    t,
    'fyrf',
    `
      await step(() => execFileSync('ip', ['link', 'set', 'lo', 'up']), 50);
      await step(() => {}, 200);
      const before = events.length;
      let batch = '';
      for (let i = 0; i < 5000; i++) batch += 'addr add 198.18.' + (i >> 8) + '.' + (i & 255) + '/32 dev lo\\n';
      execFileSync('ip', ['-batch', '-'], { input: batch });
      await step(() => {}, 300);
      const afterFlood = events.length;
      await step(() => execFileSync('ip', ['addr', 'add', '198.19.0.1/32', 'dev', 'lo']), 0);
      await step(() => {}, 200);
      const afterOne = events.length;
      w.close();
      report({ before, afterFlood, afterOne });
    `,
  );
  if (!r) return;
  t.same(r.errors, [], 'no error: the subscription goes on');
  t.ok(r.afterFlood > r.before, `the flood is reported as a change (${r.before} → ${r.afterFlood})`);
  t.ok(r.afterOne > r.afterFlood, `and an address added after it is still reported (${r.afterFlood} → ${r.afterOne})`);
});

t.test("listLocalAddresses leaves out userspace mode's own interface when asked", async (t) => {
  const ns = `fyrl${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
  inNs('ip', 'link', 'set', 'lo', 'up');
  inNs('ip', 'link', 'add', 'ferry0', 'type', 'bridge');
  inNs('ip', 'link', 'set', 'ferry0', 'up');
  inNs('ip', 'addr', 'add', '198.18.5.5/32', 'dev', 'ferry0');
  inNs('ip', 'addr', 'add', '198.18.0.11/32', 'dev', 'lo');
  const mod = JSON.stringify(new URL('../../../../src/backends/kernel/local-addresses.js', import.meta.url).href);
  const out = inNs(process.execPath, '--input-type=module', '-e', `const m = await import(${mod}); console.log(JSON.stringify([m.listLocalAddresses(), m.listLocalAddresses('ferry0')]));`);
  const [all, except] = JSON.parse(out.trim()) as [string[], string[]];
  t.ok(all.includes('198.18.5.5') && all.includes('198.18.0.11'), `every interface by default (${all.join(',')})`);
  t.ok(!except.includes('198.18.5.5') && except.includes('198.18.0.11'), `ferry0's addresses left out (${except.join(',')})`);
});
