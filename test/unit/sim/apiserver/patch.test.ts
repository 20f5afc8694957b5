import t from 'tap';

function thrown(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    return e;
  }
}
import { jsonMergePatch, jsonPatch, PatchError, strategicMergePatch, type PatchSchema } from '../../../../src/sim/apiserver/patch.js';

const schema: PatchSchema = (path) => {
  const p = path.join('.');
  if (p === 'spec.ports') return { mergeKey: 'port' };
  if (p === 'spec.containers') return { mergeKey: 'name' };
  if (p === 'status.conditions') return { mergeKey: 'type' };
  if (p === 'metadata.finalizers') return { set: true };
  return undefined;
};

const svc = {
  metadata: { name: 'web', labels: { a: '1', b: '2' }, finalizers: ['x/one'] },
  spec: {
    ports: [
      { name: 'http', port: 80, targetPort: 8080, nodePort: 30080 },
      { name: 'https', port: 443, targetPort: 8443, nodePort: 30443 },
    ],
    externalIPs: ['192.0.2.1', '192.0.2.2'],
    selector: { app: 'web' },
  },
};

t.test('strategic merge: lists with a merge key merge element-wise', async (t) => {
  const out = strategicMergePatch(svc, { spec: { ports: [{ port: 80, targetPort: 9090 }] } }, schema) as typeof svc;
  t.same(out.spec.ports, [
    { name: 'http', port: 80, targetPort: 9090, nodePort: 30080 },
    { name: 'https', port: 443, targetPort: 8443, nodePort: 30443 },
  ]);
  t.same(svc.spec.ports[0]!.targetPort, 8080, 'the original is not mutated');
});

t.test('strategic merge: $patch delete, $setElementOrder, new elements', async (t) => {
  const patch = {
    spec: {
      '$setElementOrder/ports': [{ port: 8080 }, { port: 443 }],
      ports: [{ port: 8080, name: 'alt' }, { $patch: 'delete', port: 80 }],
    },
  };
  const out = strategicMergePatch(svc, patch, schema) as typeof svc;
  t.same(out.spec.ports, [
    { port: 8080, name: 'alt' },
    { name: 'https', port: 443, targetPort: 8443, nodePort: 30443 },
  ]);
});

t.test('strategic merge: lists without a merge key are replaced; maps merge; null deletes', async (t) => {
  const out = strategicMergePatch(svc, { metadata: { labels: { a: null, c: '3' } }, spec: { externalIPs: ['192.0.2.9'] } }, schema) as typeof svc;
  t.same(out.metadata.labels, { b: '2', c: '3' });
  t.same(out.spec.externalIPs, ['192.0.2.9']);
});

t.test('strategic merge: primitive set lists (finalizers) union and $deleteFromPrimitiveList', async (t) => {
  const added = strategicMergePatch(svc, { metadata: { finalizers: ['x/two', 'x/one'] } }, schema) as typeof svc;
  t.same(added.metadata.finalizers, ['x/one', 'x/two']);
  const removed = strategicMergePatch(added, { metadata: { '$deleteFromPrimitiveList/finalizers': ['x/one'] } }, schema) as typeof svc;
  t.same(removed.metadata.finalizers, ['x/two']);
});

t.test('strategic merge: $patch replace on a map and on a list; $retainKeys', async (t) => {
  const m = strategicMergePatch(svc, { spec: { selector: { $patch: 'replace', app: 'db' } } }, schema) as typeof svc;
  t.same(m.spec.selector, { app: 'db' });
  const l = strategicMergePatch(svc, { spec: { ports: [{ $patch: 'replace' }, { port: 1 }] } }, schema) as typeof svc;
  t.same(l.spec.ports, [{ port: 1 }]);
  const r = strategicMergePatch({ spec: { a: 1, b: 2, c: 3 } }, { spec: { $retainKeys: ['a', 'c'], c: 4 } }, schema);
  t.same(r, { spec: { a: 1, c: 4 } });
});

t.test('strategic merge: conditions merge by type', async (t) => {
  const pod = { status: { conditions: [{ type: 'Ready', status: 'False' }, { type: 'PodScheduled', status: 'True' }] } };
  const out = strategicMergePatch(pod, { status: { conditions: [{ type: 'Ready', status: 'True' }] } }, schema);
  t.same(out, { status: { conditions: [{ type: 'Ready', status: 'True' }, { type: 'PodScheduled', status: 'True' }] } });
});

t.test('strategic merge: a list element without its merge key is a bad request', async (t) => {
  t.match(thrown(() => strategicMergePatch(svc, { spec: { ports: [{ name: 'x' }] } }, schema)), { httpCode: 400 });
});

t.test('JSON merge patch (RFC 7386)', async (t) => {
  const out = jsonMergePatch(svc, { metadata: { labels: { a: null } }, spec: { ports: [{ port: 1 }] } }) as typeof svc;
  t.same(out.metadata.labels, { b: '2' });
  t.same(out.spec.ports, [{ port: 1 }], 'lists are replaced');
});

t.test('JSON patch (RFC 6902)', async (t) => {
  const out = jsonPatch(svc, [
    { op: 'test', path: '/metadata/name', value: 'web' },
    { op: 'add', path: '/metadata/labels/c', value: '3' },
    { op: 'remove', path: '/metadata/labels/a' },
    { op: 'replace', path: '/spec/ports/0/port', value: 81 },
    { op: 'add', path: '/spec/externalIPs/-', value: '192.0.2.3' },
    { op: 'add', path: '/spec/externalIPs/0', value: '192.0.2.0' },
    { op: 'copy', from: '/spec/selector', path: '/metadata/annotations' },
    { op: 'move', from: '/metadata/labels/b', path: '/metadata/labels/d' },
    { op: 'add', path: '/metadata/labels/x~1y', value: 'slash' },
  ]) as typeof svc & { metadata: { annotations: Record<string, string> } };
  t.same(out.metadata.labels, { c: '3', d: '2', 'x/y': 'slash' });
  t.equal(out.spec.ports[0]!.port, 81);
  t.same(out.spec.externalIPs, ['192.0.2.0', '192.0.2.1', '192.0.2.2', '192.0.2.3']);
  t.same(out.metadata.annotations, { app: 'web' });
  t.same(svc.metadata.labels, { a: '1', b: '2' }, 'the original is not mutated');
  t.throws(() => jsonPatch(svc, [{ op: 'test', path: '/metadata/name', value: 'db' }]), PatchError, 'a failed test');
  t.match(thrown(() => jsonPatch(svc, [{ op: 'remove', path: '/spec/nope' }])), { httpCode: 422 }, 'removing a missing path');
  t.match(thrown(() => jsonPatch(svc, [{ op: 'replace', path: '/spec/ports/7/port', value: 1 }])), { httpCode: 422 });
});
