import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfigError, loadKubeConfig } from '../../../src/kube/client.js';

const dir = mkdtempSync(join(tmpdir(), 'ferry-kc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const sa = join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
mkdirSync(sa, { recursive: true });
writeFileSync(join(sa, 'token'), 'tok');
writeFileSync(join(sa, 'ca.crt'), 'not-a-real-ca');
const env = { KUBERNETES_SERVICE_HOST: '198.51.100.1', KUBERNETES_SERVICE_PORT: '443' };

t.test('in-cluster config when neither --kubeconfig nor --master is given', async (t) => {
  const kc = loadKubeConfig({ env, inClusterPathPrefix: dir });
  t.equal(kc.getCurrentCluster()?.server, 'https://198.51.100.1:443');
  t.equal(kc.getCurrentUser()?.authProvider?.config?.tokenFile, join(sa, 'token'));
});

t.test('in-cluster is always https, as client-go: the token never goes out over plain http', async (t) => {
  // client-node alone picks http:// for ports 80, 8080 and 8001.
  for (const port of ['80', '8080', '8001', '6443']) {
    const c = loadKubeConfig({ env: { ...env, KUBERNETES_SERVICE_PORT: port }, inClusterPathPrefix: dir }).getCurrentCluster();
    t.equal(c?.server, `https://198.51.100.1:${port}`, `port ${port}`);
    t.equal(c?.skipTLSVerify, false, `port ${port}: TLS verified`);
  }
  const v6 = loadKubeConfig({ env: { KUBERNETES_SERVICE_HOST: '2001:db8::1', KUBERNETES_SERVICE_PORT: '8080' }, inClusterPathPrefix: dir });
  t.equal(v6.getCurrentCluster()?.server, 'https://[2001:db8::1]:8080');
  t.equal(v6.getCurrentUser()?.authProvider?.config?.tokenFile, join(sa, 'token'), 'still the service-account token');
});

t.test('--master overrides the in-cluster server and a kubeconfig server', async (t) => {
  t.equal(loadKubeConfig({ env, inClusterPathPrefix: dir, master: 'https://203.0.113.9:6443' }).getCurrentCluster()?.server, 'https://203.0.113.9:6443');
  const file = join(dir, 'kubeconfig');
  writeFileSync(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]',
      'users: [{name: u, user: {token: x}}]',
      'contexts: [{name: ctx, context: {cluster: c, user: u}}]',
      'current-context: ctx',
    ].join('\n'),
  );
  t.equal(loadKubeConfig({ kubeconfig: file }).getCurrentCluster()?.server, 'https://192.0.2.1:6443');
  const over = loadKubeConfig({ kubeconfig: file, master: 'http://127.0.0.1:8080' }).getCurrentCluster();
  t.equal(over?.server, 'http://127.0.0.1:8080');
  t.equal(over?.skipTLSVerify, true, 'plain http needs skipTLSVerify with client-node');
  const plain = join(dir, 'plain');
  writeFileSync(plain, 'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "http://127.0.0.1:8080"}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n');
  t.equal(loadKubeConfig({ kubeconfig: plain }).getCurrentCluster()?.skipTLSVerify, true, 'an http:// kubeconfig works as with client-go');
});

t.test('no configuration at all is a clear error', async (t) => {
  t.throws(() => loadKubeConfig({ env: {}, inClusterPathPrefix: dir }), KubeConfigError);
  t.throws(() => loadKubeConfig({ env: {}, inClusterPathPrefix: dir }), /not running in a Pod/);
  t.throws(() => loadKubeConfig({ kubeconfig: join(dir, 'missing') }), /--kubeconfig: cannot load/);
});
