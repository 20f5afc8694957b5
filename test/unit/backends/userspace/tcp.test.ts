/**
 * TCP connect attempts (connectAttempts) against a fake connector: which endpoint each attempt
 * takes and with which timeout, as kube-proxy's userspace TryConnectEndpoints. No sockets.
 */
import t from 'tap';
import { EndpointPicker, endpointId } from '../../../../src/backends/userspace/picker.js';
import { connectAttempts, EndpointConnectError, type Connector } from '../../../../src/backends/userspace/tcp.js';
import type { PlannedEndpoint } from '../../../../src/plan/types.js';
import { ep, fwd } from './fixtures.js';

const KUBE_PROXY_TIMEOUTS = [250, 500, 1000, 2000];
const A = ep('198.18.0.11', 80);
const B = ep('198.18.0.12', 80);
const CLIENT = '192.0.2.50';

/** A connector that fails its first `failures` calls (as a timeout would), then connects; records each call. */
function fake(failures: number, cause?: unknown): { connect: Connector<string>; calls: string[] } {
  const calls: string[] = [];
  const connect = async (e: PlannedEndpoint, ms: number): Promise<string> => {
    calls.push(`${endpointId(e)}@${ms}`);
    if (calls.length <= failures) throw new EndpointConnectError(e, cause ? 'EMFILE' : `no answer within ${ms}ms`, cause);
    return `socket to ${endpointId(e)}`;
  };
  return { connect, calls };
}

function picker(...eps: PlannedEndpoint[]): EndpointPicker {
  const p = new EndpointPicker();
  p.update(fwd(...eps), 0);
  return p;
}

const hooks = (failed: unknown[] = []) => ({ gone: () => false, failed: (e: unknown) => failed.push(e) });

t.test('one endpoint that misses its first 250 ms: tried again with 500 ms, and forwarded', async (t) => {
  const f = fake(1);
  const failed: unknown[] = [];
  const r = await connectAttempts(picker(A), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, hooks(failed));
  t.same(f.calls, ['198.18.0.11:80@250', '198.18.0.11:80@500']);
  t.equal(r.upstream, 'socket to 198.18.0.11:80');
  t.equal(r.attempts, 2);
  t.equal(failed.length, 1, 'the failed attempt is reported');
});

t.test('one endpoint that never answers: all four attempts, with kube-proxy timeouts, then none', async (t) => {
  const f = fake(Infinity);
  const r = await connectAttempts(picker(A), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, hooks());
  t.same(f.calls, ['198.18.0.11:80@250', '198.18.0.11:80@500', '198.18.0.11:80@1000', '198.18.0.11:80@2000']);
  t.equal(r.upstream, undefined);
  t.equal(r.attempts, 4);
});

t.test('two endpoints failing: taken in turn, each again with a longer timeout', async (t) => {
  const f = fake(Infinity);
  await connectAttempts(picker(A, B), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, hooks());
  t.same(f.calls, ['198.18.0.11:80@250', '198.18.0.12:80@500', '198.18.0.11:80@1000', '198.18.0.12:80@2000']);
});

t.test('a failed endpoint is passed over while another remains', async (t) => {
  const f = fake(1);
  const r = await connectAttempts(picker(A, B), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, hooks());
  t.same(f.calls, ['198.18.0.11:80@250', '198.18.0.12:80@500']);
  t.equal(r.upstream, 'socket to 198.18.0.12:80');
});

t.test('out of descriptors: no further attempt, and not reported as the endpoint failing', async (t) => {
  const emfile = Object.assign(new Error('socket: too many open files'), { code: 'EMFILE' });
  const f = fake(Infinity, emfile);
  const failed: unknown[] = [];
  const r = await connectAttempts(picker(A), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, hooks(failed));
  t.equal(f.calls.length, 1);
  t.equal(r.outOfDescriptors, emfile);
  t.equal(failed.length, 0);
});

t.test('the client gone: no further attempt', async (t) => {
  const f = fake(Infinity);
  let gone = false;
  const r = await connectAttempts(picker(A), CLIENT, KUBE_PROXY_TIMEOUTS, f.connect, {
    gone: () => gone,
    failed: () => (gone = true),
  });
  t.equal(f.calls.length, 1);
  t.equal(r.upstream, undefined);
});
