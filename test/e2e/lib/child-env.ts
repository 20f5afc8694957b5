/**
 * Spawning ferry (and helpers) from tests. tap's processinfo hook re-injects NODE_OPTIONS (its
 * --import loaders) into every child it sees spawned, whatever env we pass, and those loaders
 * break bin/ferry (an extension-less ES module). Children therefore start through
 * `env -u NODE_OPTIONS` (after the hook has run) with an environment scrubbed of tap's variables.
 */

/** Arguments for `env` that drop NODE_OPTIONS: `spawn('env', [...SCRUB, node, script])`. */
export const SCRUB = ['-u', 'NODE_OPTIONS'];

/** Our environment minus what the test runner injects. */
export function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('TAP') || k.startsWith('_TAPJS') || k.startsWith('NYC_')) continue;
    env[k] = v;
  }
  return env;
}
