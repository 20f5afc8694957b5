/**
 * The container image, built for real from the repository's Dockerfile by scripts/image-offline
 * (buildah; stand-in base images where docker.io cannot be reached) and run: the entrypoint's
 * `--version`, and `--cleanup` with NET_ADMIN in a namespace holding kube-proxy's leftovers,
 * which the script checks are gone. What it does not prove: a Docker engine, a registry push,
 * the image on a real node (see docs/deploy.md).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scaledMs } from '../../../src/util/timescale.js';
import { SCRUB, childEnv } from '../lib/child-env.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
t.setTimeout(scaledMs(20 * 60_000));

t.test('the Dockerfile builds and the image cleans up after kube-proxy', async (t) => {
  const r = spawnSync('env', [...SCRUB, join(ROOT, 'scripts', 'image-offline')], { encoding: 'utf8', env: childEnv(), timeout: scaledMs(19 * 60_000) });
  const tail = `${r.stderr ?? ''}`.split('\n').slice(-20).join('\n');
  t.equal(r.status, 0, `scripts/image-offline exits 0 (signal ${r.signal}):\n${tail}`);
  t.match(r.stdout, /^image ok localhost\/ferry:dev \d+\.\d+\.\d+$/m, 'built and smoked');
  t.match(r.stderr, /smoke passed/, 'the smoke ran');
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  t.notMatch(ns, /^fyimg/m, 'its namespace was removed');
});
