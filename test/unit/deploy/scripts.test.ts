// The deployment scripts and cluster definitions that cannot run on a development machine
// (no container engine, no hypervisor provider): checked as far as that is possible offline.
// - scripts/kind-up, scripts/vm and the VM's init scripts parse (`bash -n` / `sh -n`);
//   shellcheck is not run here because scripts/setup does not install it;
// - deploy/kind/cluster.yaml asks for no kube-proxy and 1 control plane + 2 workers;
// - `vagrant validate` passes for both providers and both kernel choices. Vagrant is required:
//   without it this test fails (it does not skip).
import t from 'tap';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { run } from '../../../src/util/exec.js';
import { REPO, at } from './manifests.js';

t.test('the shell scripts parse', async (t) => {
  const scripts: [string, string][] = [
    ['bash', 'scripts/kind-up'],
    ['bash', 'scripts/vm'],
    ['bash', 'scripts/vm.d/guest-init'],
    ['sh', 'scripts/vm.d/bootstrap-init'],
  ];
  for (const [shell, path] of scripts) {
    const r = await run([shell, '-n', join(REPO, path)], { allowFailure: true });
    t.equal(r.exitCode, 0, `${shell} -n ${path}: ${r.stderr.trim() || 'ok'}`);
  }
});

t.test('the kind cluster has no kube-proxy, one control plane and two workers', async (t) => {
  const c: unknown = parse(readFileSync(join(REPO, 'deploy', 'kind', 'cluster.yaml'), 'utf8'));
  t.equal(at(c, 'kind'), 'Cluster');
  t.equal(at(c, 'apiVersion'), 'kind.x-k8s.io/v1alpha4');
  t.equal(at(c, 'networking.kubeProxyMode'), 'none', 'networking.kubeProxyMode: "none"');
  const roles = ((at(c, 'nodes') ?? []) as { role?: string }[]).map((n) => n.role);
  t.same(roles, ['control-plane', 'worker', 'worker']);
  // scripts/kind-up and deploy/kind/ rely on the cluster's name and pod subnet.
  t.equal(at(c, 'name'), 'ferry', 'cluster name ferry (the API server is ferry-control-plane:6443)');
  const overlay = readFileSync(join(REPO, 'deploy', 'kind', 'kustomization.yaml'), 'utf8');
  t.match(overlay, `--cluster-cidr=${String(at(c, 'networking.podSubnet'))}`, 'the overlay passes the cluster\'s pod subnet');
  const kindUp = readFileSync(join(REPO, 'scripts', 'kind-up'), 'utf8');
  t.match(kindUp, 'kind load docker-image', 'kind-up loads the locally built image');
  t.match(kindUp, 'apply -k deploy/kind', 'kind-up applies the kind overlay');
});

t.test('vagrant validate passes for each provider and kernel choice', async (t) => {
  const which = await run(['sh', '-c', 'command -v vagrant'], { allowFailure: true });
  if (which.exitCode !== 0) {
    t.fail('vagrant is not installed: install Debian\'s "vagrant" package (scripts/setup should) — this test does not skip');
    return;
  }
  const dot = mkdtempSync(join(tmpdir(), 'ferry-unit-vagrant-'));
  t.teardown(() => rmSync(dot, { recursive: true, force: true }));
  const cases: Record<string, string>[] = [
    { FERRY_PROVIDER: 'libvirt' },
    { FERRY_PROVIDER: 'virtualbox', FERRY_KERNEL: 'backports', FERRY_NODES: '2' },
  ];
  for (const env of cases) {
    const label = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ');
    // -p: provider plugins (vagrant-libvirt, VirtualBox) are not installed on development machines;
    // FERRY_VALIDATE_ONLY keeps the Vagrantfile from selecting a provider that is absent.
    const r = await run(['env', '-C', REPO, `VAGRANT_DOTFILE_PATH=${dot}`, `VAGRANT_HOME=${join(dot, 'home')}`, 'FERRY_VALIDATE_ONLY=1', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'vagrant', 'validate', '-p'], {
      allowFailure: true,
      timeoutMs: 120_000,
    });
    t.equal(r.exitCode, 0, `${label} vagrant validate -p: ${(r.stdout + r.stderr).trim().split('\n').slice(-3).join(' | ')}`);
  }
  const bad = await run(['env', '-C', REPO, `VAGRANT_DOTFILE_PATH=${dot}`, `VAGRANT_HOME=${join(dot, 'home')}`, 'FERRY_VALIDATE_ONLY=1', 'FERRY_PROVIDER=hyperv', 'vagrant', 'validate', '-p'], {
    allowFailure: true,
    timeoutMs: 120_000,
  });
  t.not(bad.exitCode, 0, 'an unsupported FERRY_PROVIDER is refused');
  t.match(bad.stdout + bad.stderr, 'FERRY_PROVIDER must be libvirt or virtualbox', 'with a message naming the variable');
  const vf = readFileSync(join(REPO, 'Vagrantfile'), 'utf8');
  t.match(vf, '--skip-phases=addon/kube-proxy', 'kubeadm init skips kube-proxy');
});

t.test("the Vagrant control plane's overlay renders, with deploy/'s image and the lab's addresses", async (t) => {
  const vf = readFileSync(join(REPO, 'Vagrantfile'), 'utf8');
  const m = /cat > \/opt\/ferry-overlay\/kustomization\.yaml <<EOF\n([\s\S]*?)\n\s*EOF\n/.exec(vf);
  t.ok(m, 'the Vagrantfile writes /opt/ferry-overlay/kustomization.yaml');
  if (!m) return;
  const yaml = m[1]!.replace(/^ {2}/gm, '').replace(/#\{CP_IP\}/g, '192.168.56.10').replace(/#\{POD_CIDR\}/g, '10.244.0.0/16');
  // The guest's layout: the checkout at /opt/ferry, the overlay at /opt/ferry-overlay.
  const dir = mkdtempSync(join(tmpdir(), 'ferry-unit-overlay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(REPO, 'deploy'), join(dir, 'ferry', 'deploy'), { recursive: true });
  mkdirSync(join(dir, 'ferry-overlay'));
  writeFileSync(join(dir, 'ferry-overlay', 'kustomization.yaml'), yaml);
  const r = await run(['kubectl', 'kustomize', join(dir, 'ferry-overlay')], { allowFailure: true });
  t.equal(r.exitCode, 0, `kubectl kustomize renders it: ${r.stderr.trim() || 'ok'}`);
  const objs = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind?: string; metadata?: { name?: string } });
  const ds = objs.find((o) => o.kind === 'DaemonSet');
  const c = at(ds, 'spec.template.spec.containers.0') as Record<string, unknown> | undefined;
  // buildah pushes the image as docker-archive ...:ferry:dev, which ctr imports as
  // docker.io/library/ferry:dev: the name the Pod asks for must be that one.
  t.match(vf, /docker-archive:\S+:ferry:dev/, 'the image is exported as ferry:dev');
  t.equal(c?.image, 'ferry:dev', 'the Pod asks for ferry:dev (docker.io/library/ferry:dev), the name ctr imported');
  t.ok((c?.args as string[] | undefined)?.includes('--cluster-cidr=10.244.0.0/16'), 'the lab\'s pod CIDR');
  t.same(at(objs.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'ferry-apiserver'), 'data'), { host: '192.168.56.10', port: '6443' }, 'pointed at the control plane');
});
