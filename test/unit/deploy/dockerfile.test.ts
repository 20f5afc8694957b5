// The Dockerfile checked without a container engine (none runs on the development machines):
// every COPY source exists in the repository (and is not excluded by .dockerignore), every
// --from names an earlier stage, the runtime stage installs the runtime packages of the
// libraries native/binding.gyp links (derived from its pkg-config names), and the
// entrypoint runs a file the image contains.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './manifests.js';
import { shebangFlags } from '../../../src/bench/launcher.js';

interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly line: number;
}

interface Stage {
  readonly name: string;
  readonly base: string;
  readonly body: Instruction[];
}

/** Splits a Dockerfile into instructions (joining continuation lines) grouped by stage. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      line = line.slice(0, -1) + ' ' + lines[++i]!.replace(/^\s*#.*$/, '');
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start}: cannot parse ${JSON.stringify(line)}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`Dockerfile line ${start}: bad FROM ${args}`);
      stages.push({ base: f[1]!, name: f[2] ?? String(stages.length), body: [] });
      continue;
    }
    const stage = stages[stages.length - 1];
    if (!stage) throw new Error(`Dockerfile line ${start}: ${op} before FROM`);
    stage.body.push({ op, args, line: start });
  }
  return stages;
}

/** pkg-config module → the Debian runtime package that ships its shared library. */
const RUNTIME_PACKAGE: Record<string, string> = {
  libnftables: 'libnftables1',
  libnetfilter_conntrack: 'libnetfilter-conntrack3',
  libmnl: 'libmnl0',
  libbpf: 'libbpf1',
};

/** The pkg-config module names in binding.gyp's `pkg-config --libs ...` invocations. */
function pkgConfigModules(gyp: string): string[] {
  const out = new Set<string>();
  for (const m of gyp.matchAll(/pkg-config\s+--(?:libs|cflags)\s+([^)"]+)\)/g)) {
    for (const name of m[1]!.trim().split(/\s+/)) out.add(name);
  }
  return [...out].sort();
}

const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const stages = parseDockerfile(dockerfile);
const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));

t.test('two stages: a build stage and a runtime stage, both Debian bookworm with Node 20', async (t) => {
  t.same(stages.map((s) => s.name), ['build', 'runtime']);
  for (const s of stages) t.match(s.base, /node:20-bookworm/, `stage ${s.name} is based on Node 20 / bookworm (${s.base})`);
});

t.test('every COPY source exists and is sent in the build context; every --from is an earlier stage', async (t) => {
  let copies = 0;
  stages.forEach((stage, idx) => {
    for (const ins of stage.body.filter((i) => i.op === 'COPY' || i.op === 'ADD')) {
      copies++;
      const words = ins.args.split(/\s+/);
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
      const paths = words.filter((w) => !w.startsWith('--'));
      const sources = paths.slice(0, -1);
      t.ok(sources.length > 0, `line ${ins.line}: COPY has a source and a destination`);
      if (from !== undefined) {
        const earlier = stages.slice(0, idx).map((s) => s.name);
        t.ok(earlier.includes(from), `line ${ins.line}: --from=${from} names an earlier stage (${earlier.join(', ')})`);
        continue;
      }
      for (const src of sources) {
        t.ok(existsSync(join(REPO, src)), `line ${ins.line}: COPY source ${src} exists in the repository`);
        const top = src.replace(/\/$/, '').split('/')[0]!;
        t.notOk(ignore.includes(top) || ignore.includes(src), `line ${ins.line}: ${src} is not excluded by .dockerignore`);
      }
    }
  });
  t.ok(copies >= 5, `the Dockerfile copies the sources and the build outputs (saw ${copies} COPY lines)`);
});

t.test('the runtime stage installs the libraries the native addon links and the tools ferry runs', async (t) => {
  const modules = pkgConfigModules(readFileSync(join(REPO, 'native', 'binding.gyp'), 'utf8'));
  t.ok(modules.includes('libnftables') && modules.includes('libnetfilter_conntrack'), `binding.gyp links libnftables and libnetfilter_conntrack (found ${modules.join(', ')})`);
  const runtime = stages.find((s) => s.name === 'runtime')!;
  const installed = runtime.body
    .filter((i) => i.op === 'RUN' && /apt-get install/.test(i.args))
    .flatMap((i) => i.args.split(/\s+/))
    .filter((w) => /^[a-z0-9][a-z0-9.+-]+$/.test(w));
  for (const m of modules) {
    const pkg = RUNTIME_PACKAGE[m];
    t.ok(pkg, `a known Debian runtime package for pkg-config module ${m}`);
    if (pkg) t.ok(installed.includes(pkg), `runtime installs ${pkg} (for ${m}); it installs ${installed.join(' ')}`);
  }
  for (const tool of ['nftables', 'iptables', 'conntrack', 'iproute2']) t.ok(installed.includes(tool), `runtime installs ${tool}`);
  const build = stages.find((s) => s.name === 'build')!;
  const buildRuns = build.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
  for (const dev of ['libnftables-dev', 'libnetfilter-conntrack-dev']) t.match(buildRuns, dev, `build stage installs ${dev}`);
  for (const step of ['npm ci', 'tsc', 'node-gyp rebuild', 'npm prune --omit=dev']) t.match(buildRuns, step, `build stage runs ${step}`);
});

t.test('the entrypoint runs ferry\'s launcher, which the runtime stage copies in', async (t) => {
  const runtime = stages.find((s) => s.name === 'runtime')!;
  const ep = runtime.body.find((i) => i.op === 'ENTRYPOINT');
  if (!ep) throw new Error('the runtime stage has no ENTRYPOINT');
  const flags = shebangFlags(join(REPO, 'bin', 'ferry'));
  t.ok(flags.some((f) => f.startsWith('--max-semi-space-size=')), `bin/ferry's shebang caps the young generation (${flags.join(' ')})`);
  t.same(JSON.parse(ep.args), ['node', ...flags, '/ferry/bin/ferry'], 'exec-form ENTRYPOINT with the node flags bin/ferry\'s own shebang sets (docs/memory.md)');
  t.ok(existsSync(join(REPO, 'bin', 'ferry')), 'bin/ferry exists in the repository');
  const workdir = runtime.body.find((i) => i.op === 'WORKDIR')?.args;
  t.equal(workdir, '/ferry');
  const copied = runtime.body.filter((i) => i.op === 'COPY').map((i) => i.args.split(/\s+/).pop());
  for (const dest of ['./bin', './dist', './node_modules', './native/build/Release/ferry_native.node', './native/bpf/out']) {
    t.ok(copied.includes(dest), `the runtime stage copies ${dest} (copies: ${copied.join(', ')})`);
  }
  // Every BPF object the Makefile builds (ebpf mode loads each; the tc one was once left out).
  const makefile = readFileSync(join(REPO, 'native', 'bpf', 'Makefile'), 'utf8');
  const objects = /^all:\s*(.*)$/m.exec(makefile)?.[1]?.split(/\s+/).filter((o) => o.startsWith('out/')) ?? [];
  t.ok(objects.length >= 2, `native/bpf/Makefile builds the cgroup and tc objects (${objects.join(' ')})`);
  const bpfCopy = runtime.body.find((i) => i.op === 'COPY' && i.args.split(/\s+/).pop() === './native/bpf/out');
  t.match(bpfCopy?.args ?? '', /--from=build \/ferry\/native\/bpf\/out\s/, 'the whole out/ directory of the build stage, so every object the Makefile builds is shipped');
  // bin/ferry loads dist/src/cli/main.js relative to itself: the build output must be at /ferry/dist.
  t.match(readFileSync(join(REPO, 'bin', 'ferry'), 'utf8'), "join(root, 'dist', 'src', 'cli', 'main.js')");
});
